"""IdleTrim: the heap is given back once the daemon has no pair left, never while one is
open."""

from __future__ import annotations

import asyncio

import pytest

from migproxy.daemon import memory
from migproxy.daemon.memory import IdleTrim, _malloc_trim
from tests.daemon.loopback import (
    STREAM,
    Target,
    listen_port,
    send_all,
    start_daemon,
    stop_daemon,
    wait_pairs_closed,
)

pytestmark = pytest.mark.asyncio


async def test_trims_only_when_still_idle_after_the_delay() -> None:
    busy = [True]
    calls: list[int] = []
    t = IdleTrim(lambda: not busy[0], delay=0.0)
    t.trim = lambda: calls.append(1)
    t.maybe_idle()  # a pair is open: nothing scheduled
    await asyncio.sleep(0.01)
    assert calls == []
    assert t.trims == 0
    busy[0] = False
    t.maybe_idle()
    t.maybe_idle()  # coalesced: one trim per idle period
    await asyncio.sleep(0.01)
    assert calls == [1]
    assert t.trims == 1
    t.maybe_idle()
    busy[0] = True  # a new pair before the timer fired
    await asyncio.sleep(0.01)
    assert calls == [1]


async def test_cancel_drops_a_scheduled_trim() -> None:
    calls: list[int] = []
    t = IdleTrim(lambda: True, delay=0.0)
    t.trim = lambda: calls.append(1)
    t.maybe_idle()
    t.cancel()
    await asyncio.sleep(0.01)
    assert calls == []


class _Libc:
    """A C library as ctypes sees it; ``malloc_trim`` only if it has one."""

    def __init__(self, has_trim: bool) -> None:
        self.calls: list[int] = []
        if has_trim:
            def malloc_trim(pad: int) -> int:
                self.calls.append(pad)
                return 1
            self.malloc_trim = malloc_trim


def _with_libc(monkeypatch: pytest.MonkeyPatch, libc: _Libc | None) -> None:
    monkeypatch.setattr(memory.ctypes.util, "find_library",
                        lambda name: None if libc is None else "libc.so.6")
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: libc)


async def test_the_trim_gives_back_everything_it_can(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = _Libc(has_trim=True)
    _with_libc(monkeypatch, libc)
    trim = _malloc_trim()
    assert trim is not None
    trim()
    assert libc.calls == [0]  # no padding kept at the top of the heap


@pytest.mark.parametrize("libc", [None, _Libc(has_trim=False)], ids=["no-libc", "musl"])
async def test_without_malloc_trim_nothing_is_scheduled(
        monkeypatch: pytest.MonkeyPatch, libc: _Libc | None) -> None:
    _with_libc(monkeypatch, libc)
    assert _malloc_trim() is None
    t = IdleTrim(lambda: True, delay=0.0)
    assert t.trim is None
    t.maybe_idle()
    assert t._handle is None


async def test_the_daemon_trims_after_its_last_pair_closed(target: Target) -> None:
    d = await start_daemon(await target.start())
    d.idle_trim.delay = 0.0
    try:
        await send_all(listen_port(d), STREAM)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert c.writer is not None
        c.writer.close()  # as the destination QEMU does when it has loaded the stream
        await wait_pairs_closed(d)
        for _ in range(100):
            if d.idle_trim.trims:
                break
            await asyncio.sleep(0.01)
        assert d.idle_trim.trims == 1
    finally:
        await stop_daemon(d, target)
