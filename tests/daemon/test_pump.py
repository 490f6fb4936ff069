"""The RAM pump (migproxy/daemon/pump.py, _rampump.c): the compiled pump on its own over
real loopback TCP, each data path (splice and copy), then the daemon with each of
``ram_pump = splice | copy | off``: the same bytes as the engine alone, whatever the reads.

Assertions are about bytes, counts and statuses, never about how fast anything is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migproxy.arm.profile import default_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.daemon import pump as pump_mod
from migproxy.daemon.metrics import PUMP_ENDS
from migproxy.daemon.pump import PumpPath, PumpRun, PumpStatus, RamPump, RamPumps
from migproxy.stream.engine import RamWalk, StreamEngine
from testkit.loopback import tcp_pair
from testkit.ramwalk import reference_walk
from testkit.streams import run_engine
from testkit.synthetic import SynthSpec, build
from tests.daemon.loopback import (
    Target,
    listen_port,
    received,
    sample,
    send_all,
    start_daemon,
    stop_daemon,
    until,
    wait_pairs_closed,
)

needs_pump = pytest.mark.skipif(not pump_mod.AVAILABLE,
                                reason="the compiled RAM pump is not built (or no Linux)")
PATHS = [PumpPath.SPLICE, PumpPath.COPY]
PS = 4096
BLOCK = 64 << 20
WALK = RamWalk(0, PS, BLOCK, True)
EOS = struct.pack(">Q", 0x10)


def page(offset: int, fill: int) -> bytes:
    return struct.pack(">Q", offset | 0x28) + bytes((fill,)) * PS


def zero(offset: int) -> bytes:
    return struct.pack(">Q", offset | 0x22) + b"\0"


def records(n: int, start: int = 0) -> bytes:
    """``n`` records, pages and zero pages mixed (every third a zero page)."""
    return b"".join(zero((start + i) * PS) if i % 3 == 2 else page((start + i) * PS, i % 251)
                    for i in range(n))


def counts(n: int) -> tuple[int, int]:
    zeros = sum(1 for i in range(n) if i % 3 == 2)
    return n - zeros, zeros


class Wires:
    """The source's sender, the pump's two sockets (non-blocking, as the event loop's)
    and the destination's reader (a thread that keeps what arrives)."""

    def __init__(self) -> None:
        self.sender, self.src = tcp_pair()
        self.dst, self.sink = tcp_pair()
        for s in (self.src, self.dst):
            s.setblocking(False)
        self.got = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                b = self.sink.recv(1 << 20)
            except OSError:
                return
            if not b:
                return
            self.got += b

    def send(self, data: bytes, *, end: bool = False) -> threading.Thread:
        def run() -> None:
            try:
                self.sender.sendall(data)
                if end:
                    self.sender.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the test closed the pump's side (a write error test)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def received(self) -> bytes:
        """What the destination got, once the pump's side of it is closed."""
        self.dst.shutdown(socket.SHUT_WR)
        self._reader.join(10)
        return bytes(self.got)

    def close(self) -> None:
        for s in (self.sender, self.src, self.dst, self.sink):
            s.close()


@pytest.fixture
def wires() -> Iterator[Wires]:
    w = Wires()
    yield w
    w.close()


def run_pump(w: Wires, path: PumpPath, walk: RamWalk = WALK,
             pipe_size: int = pump_mod.PIPE_SIZE) -> tuple[RamPump, PumpRun]:
    p = RamPump(w.src.fileno(), w.dst.fileno(), path, pipe_size=pipe_size)
    return p, p.run(walk)


@needs_pump
@pytest.mark.parametrize("path", PATHS)
def test_forwards_the_records_and_stops_at_a_record_the_framer_decides(
        wires: Wires, path: PumpPath) -> None:
    body = records(300)
    data = body + EOS + b"\x04" + records(5)  # the end of a section, then a footer...
    wires.send(data, end=True)
    p, run = run_pump(wires, path)
    p.close(reset=False)
    assert run.status == PumpStatus.RECORD, run
    assert (run.forwarded, run.pages, run.zeros) == (len(body), *counts(300))
    assert bytes(run.leftover).startswith(EOS)
    assert data.startswith(body + run.leftover)
    assert not run.lost_position
    assert run.error is None
    assert wires.received() == body


@needs_pump
@pytest.mark.parametrize("path", PATHS)
def test_the_prefix_goes_out_first(wires: Wires, path: PumpPath) -> None:
    """What the engine sent of the last run's leftover is written before anything else,
    and not counted as walked."""
    prefix = b"what the engine sent" * 1000
    body = records(30)
    wires.send(body + EOS, end=True)
    p = RamPump(wires.src.fileno(), wires.dst.fileno(), path)
    run = p.run(WALK, memoryview(prefix))
    p.close(reset=False)
    assert run.status == PumpStatus.RECORD
    assert (run.forwarded, run.pages, run.zeros) == (len(body), *counts(30))
    assert wires.received() == prefix + body


@needs_pump
@pytest.mark.parametrize("path", PATHS)
def test_the_rest_of_a_page_first_then_records(wires: Wires, path: PumpPath) -> None:
    rest = b"\xaa" * 1000  # the last 1000 bytes of a page the framer already framed
    body = records(10)
    wires.send(rest + body + EOS, end=True)
    p, run = run_pump(wires, path, RamWalk(1000, PS, BLOCK, True))
    p.close(reset=False)
    assert run.status == PumpStatus.RECORD, run
    assert (run.forwarded, run.skip_left, run.pages, run.zeros) == \
        (1000 + len(body), 0, *counts(10))
    assert run.leftover == EOS
    assert wires.received() == rest + body


@needs_pump
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("tail", "status"), [
    (page(BLOCK, 7), PumpStatus.RECORD),  # the page would end past the block
    (page(20 * PS, 9)[:2000], PumpStatus.EOF),  # the source ends inside a record
], ids=["outside-the-block", "incomplete-at-the-end"])
def test_what_the_walk_does_not_take_is_handed_back(wires: Wires, path: PumpPath, tail: bytes,
                                                    status: PumpStatus) -> None:
    body = records(20)
    wires.send(body + tail, end=True)
    p, run = run_pump(wires, path)
    p.close(reset=False)
    assert run.status == status
    assert run.forwarded == len(body)
    assert run.leftover == tail
    assert wires.received() == body


@needs_pump
@pytest.mark.parametrize("path", PATHS)
def test_a_skip_not_yet_come_is_reported(wires: Wires, path: PumpPath) -> None:
    wires.send(b"\x11" * 300, end=True)
    p, run = run_pump(wires, path, RamWalk(4000, PS, BLOCK, True))
    p.close(reset=False)
    assert run.status == PumpStatus.EOF
    assert (run.forwarded, run.skip_left, run.pages, run.leftover) == (300, 3700, 0, b"")
    assert wires.received() == b"\x11" * 300


@needs_pump
@pytest.mark.parametrize("path", PATHS)
def test_a_quiet_source_hands_back(wires: Wires, path: PumpPath,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pump_mod, "QUIET_SECONDS", 0.02)
    body = records(6)
    half = page(6 * PS, 1)[:100]
    wires.send(body + half).join(10)  # and the source stays open
    p, run = run_pump(wires, path)
    p.close(reset=False)
    assert run.status == PumpStatus.QUIET
    assert run.forwarded == len(body)
    assert run.leftover == half
    assert wires.received() == body


@needs_pump
@pytest.mark.parametrize("path", PATHS)
def test_the_budget_ends_a_run_at_a_record_boundary(wires: Wires, path: PumpPath,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pump_mod, "BUDGET", 10 * (PS + 8))
    data = records(2000)
    bounds = sorted({len(records(i)) for i in range(2001)})  # where each record starts
    wires.send(data, end=True)
    p = RamPump(wires.src.fileno(), wires.dst.fileno(), path)
    out = b""
    runs = 0
    walk = WALK
    while True:
        run = p.run(walk)
        runs += 1
        assert run.status in (PumpStatus.BUDGET, PumpStatus.EOF), run
        assert run.skip_left == 0
        # whole records (after the skip), then what it read beyond them, in order
        assert len(out) + run.forwarded in bounds
        assert data[len(out) + run.forwarded:].startswith(bytes(run.leftover))
        out = data[:len(out) + run.forwarded + len(run.leftover)]
        if run.leftover:
            # the engine would frame these; the test forwards them itself and starts the
            # next run after the record they begin
            wires.dst.setblocking(True)
            wires.dst.sendall(bytes(run.leftover))
            wires.dst.setblocking(False)
        nxt = next(b for b in bounds if b >= len(out))
        walk = RamWalk(nxt - len(out), PS, BLOCK, True)
        if run.status == PumpStatus.EOF:
            break
    p.close(reset=False)
    assert runs > 1
    assert out == data
    assert wires.received() == data


@needs_pump
@pytest.mark.parametrize("path", PATHS)
def test_the_event_loop_takes_a_waiting_pump_back(wires: Wires, path: PumpPath) -> None:
    p = RamPump(wires.src.fileno(), wires.dst.fileno(), path)
    p.stop()  # before anything came: the pump must not wait for the source
    run = p.run(WALK)
    p.close(reset=True)
    assert run.status == PumpStatus.WAKE
    assert run.lost_position


@needs_pump
@pytest.mark.parametrize("path", PATHS)
def test_a_destination_gone_is_a_write_error(wires: Wires, path: PumpPath) -> None:
    wires.sink.close()
    wires.send(records(3000), end=True)
    p, run = run_pump(wires, path)
    p.close(reset=True)
    assert run.status == PumpStatus.WRITE_ERROR
    assert run.lost_position
    assert run.error is not None
    assert "Errno" in run.error


@needs_pump
def test_a_pipe_full_of_an_incomplete_record_hands_back(wires: Wires) -> None:
    # A one-page pipe holds less than one page record: splicing cannot complete it.
    body = page(0, 3) + EOS
    wires.send(body, end=True)
    p, run = run_pump(wires, PumpPath.SPLICE, pipe_size=4096)
    p.close(reset=False)
    assert run.status in (PumpStatus.FULL, PumpStatus.RECORD), run
    if run.status == PumpStatus.FULL:
        assert run.forwarded == 0
        assert body.startswith(bytes(run.leftover))
        assert run.leftover
    else:  # the kernel gave the pipe more than a page: it walked the record
        assert run.forwarded == PS + 8
        assert run.leftover == EOS


def test_the_pump_is_built_where_the_suite_requires_it() -> None:
    """scripts/test.sh builds the extensions and sets MIGPROXY_REQUIRE_EXTENSIONS=1: then
    the tests above must not skip for want of the pump."""
    if os.environ.get("MIGPROXY_REQUIRE_EXTENSIONS") != "1":
        pytest.skip("MIGPROXY_REQUIRE_EXTENSIONS is not set")
    assert pump_mod.AVAILABLE, "the compiled RAM pump is not built (_rampump.c)"


@needs_pump
def test_a_pump_holds_a_worker_thread_until_it_is_closed(wires: Wires) -> None:
    """At most ``threads`` pumps have a worker thread; closing one frees its place and
    ends its thread."""
    pumps = RamPumps(PumpPath.COPY, 1)
    p = RamPump(wires.src.fileno(), wires.dst.fileno(), PumpPath.COPY)
    results: list[PumpRun | BaseException] = []

    async def one_run() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        wires.send(records(3) + EOS)
        pumps.start(p, WALK, None, lambda r: (results.append(r), done.set_result(None)))
        await asyncio.wait_for(done, 10)

    before = set(threading.enumerate())
    asyncio.run(one_run())
    assert isinstance(results[0], PumpRun)
    assert results[0].status == PumpStatus.RECORD
    assert pumps.has_room(p)  # its own thread
    assert not pumps.has_room()  # no second one
    threads = [t for t in threading.enumerate()
               if t.name == "migproxy-pump" and t not in before]
    assert len(threads) == 1
    pumps.close(p, reset=False)
    assert pumps.has_room()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)


def test_no_pump_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pump_mod, "AVAILABLE", False)
    pumps = RamPumps(PumpPath.SPLICE, 4)
    assert pumps.path == PumpPath.OFF
    assert not pumps.has_room()
    assert RamPumps(PumpPath.COPY, 0).path == PumpPath.OFF or not pump_mod.AVAILABLE


@needs_pump
@pytest.mark.parametrize("page_size", [100, 3000, 1 << 20])
def test_the_compiled_pump_refuses_a_page_it_cannot_hold(page_size: int) -> None:
    """Not a power of two of at least 512, or two records do not fit the buffer: refused
    before any I/O (and the buffers it took are given back: the buffer can grow again)."""
    from migproxy.daemon import _rampump  # type: ignore[attr-defined]

    buf = bytearray(1 << 20)
    with pytest.raises(ValueError, match="page size"):
        _rampump.pump(-1, -1, -1, buf, 0, page_size, BLOCK, True, 1, 1, 1, None, b"prefix")
    buf.append(0)  # no view of it left


def test_no_pump_object_on_the_event_loop_path() -> None:
    with pytest.raises(ValueError, match="event-loop"):
        RamPump(0, 1, PumpPath.OFF)


# -- the daemon -------------------------------------------------------------------------------

FRAGMENTED = build(SynthSpec(cpus=2, part_sections=12, full_pages=3000, zero_pages=1500,
                             zero_ratio=0.3, multifd_flush=True, seed=5))
EXPECTED = run_engine([FRAGMENTED], arm_engine_config(default_profile()))[0]


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["splice", "copy", "off"])
@pytest.mark.parametrize("chunk", [4099, 1 << 20])
async def test_the_daemon_relays_the_same_bytes_on_every_path(path: str, chunk: int) -> None:
    if path != "off" and not pump_mod.AVAILABLE:
        pytest.skip("the compiled RAM pump is not built")
    target = Target()
    d = await start_daemon(await target.start(), ram_pump=path)
    try:
        await send_all(listen_port(d), FRAGMENTED, chunk=chunk)
        assert await received(target, 0, timeout=60) == EXPECTED
        pumps = d.registry.ram_pumps
        assert pumps.path == PumpPath(path)
        # every byte sent counted once, whoever wrote it (the pump, a prefix, the loop)
        assert sample(d, "migproxy_bytes_total", direction="to_destination",
                      channel="main") == len(EXPECTED)
        runs = {e: sample(d, "migproxy_ram_pump_runs_total", ended=e) for e in PUMP_ENDS}
        if path == "off":
            assert pumps.runs == 0
            assert not any(runs.values())
        else:
            assert pumps.runs > 0  # it did move RAM (and handed back every time)
            assert sum(runs.values()) == pumps.runs
            assert runs["record"] > 0  # at least at every section end
            assert runs["read_error"] == runs["write_error"] == runs["internal_error"] == 0
        assert pumps.running == 0
    finally:
        await stop_daemon(d, target)


def _not_understood_midway() -> bytes:
    """FRAGMENTED with an unknown RAM flag (0x400) in a record word past its middle."""
    e = StreamEngine(arm_engine_config(default_profile()))
    half = len(FRAGMENTED) // 2
    e.feed(FRAGMENTED[:half])
    for i in range(half, len(FRAGMENTED)):
        walk = e.ram_walk()
        if walk is not None and walk.skip == 0:
            at = e.received
            return FRAGMENTED[:at + 6] + bytes((FRAGMENTED[at + 6] | 0x04,)) + \
                FRAGMENTED[at + 7:]
        e.feed(FRAGMENTED[i:i + 1])
    raise AssertionError("no record boundary in the second half")


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["copy", "off"])
async def test_a_stream_not_understood_after_the_pump_is_relayed_as_it_came(path: str) -> None:
    """The record the pump stops at is not understood: the engine relays the rest
    untouched, and the daemon hands the connection to the kernel relay. What the engine
    sent of the pump's leftover goes out before that (not after the handover)."""
    if path != "off" and not pump_mod.AVAILABLE:
        pytest.skip("the compiled RAM pump is not built")
    stream = _not_understood_midway()
    target = Target()
    d = await start_daemon(await target.start(), ram_pump=path)
    try:
        await send_all(listen_port(d), stream, chunk=1 << 20)
        assert await received(target, 0, timeout=60) == stream  # passthrough: unchanged
        assert (d.registry.ram_pumps.runs > 0) == (path != "off")
    finally:
        await stop_daemon(d, target)


@pytest.mark.asyncio
async def test_a_pump_run_the_engine_refuses_ends_the_pair(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the engine ever refuse what a run reports (a bug: it no longer knows where
    the stream is), the pair ends with an error instead of going on."""
    if not pump_mod.AVAILABLE:
        pytest.skip("the compiled RAM pump is not built")

    def refuse(*_args: object) -> None:
        raise ValueError("walked: (refused by the test)")

    monkeypatch.setattr(StreamEngine, "walked", refuse)
    target = Target()
    d = await start_daemon(await target.start(), ram_pump="copy")
    try:
        with contextlib.suppress(ConnectionError):  # the daemon resets the source
            await send_all(listen_port(d), FRAGMENTED, chunk=1 << 20)
        c = await target.conn(0)
        await asyncio.wait_for(c.eof.wait(), 20)
        assert len(c.data) < len(EXPECTED)  # cut short, not completed
        await wait_pairs_closed(d, timeout=20)
        assert sample(d, "migproxy_migrations_total", outcome="failed") == 1
    finally:
        await stop_daemon(d, target)


@pytest.mark.asyncio
async def test_a_slow_destination_holds_the_pump_back_and_every_byte_arrives() -> None:
    """A destination that reads 16 KiB every 2 ms: the pump waits for it in poll(2) (the
    socket is the back-pressure; nothing is queued in the daemon beyond its buffer)."""
    if not pump_mod.AVAILABLE:
        pytest.skip("the compiled RAM pump is not built")
    target = Target(read_delay=0.002, read_size=16384)
    d = await start_daemon(await target.start(), ram_pump="copy", high_water=256 * 1024)
    try:
        await send_all(listen_port(d), FRAGMENTED, chunk=1 << 20)
        assert await received(target, 0, timeout=120) == EXPECTED
        assert d.registry.ram_pumps.runs > 0
    finally:
        await stop_daemon(d, target)


@pytest.mark.asyncio
async def test_a_reset_source_ends_a_pumping_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    """The source resets while its pump waits for more RAM: the pair ends (the target is
    reset too) and the pump's thread and descriptors are released."""
    if not pump_mod.AVAILABLE:
        pytest.skip("the compiled RAM pump is not built")
    monkeypatch.setattr(pump_mod, "QUIET_SECONDS", 30.0)  # the pump keeps waiting
    target = Target()
    d = await start_daemon(await target.start(), ram_pump="splice")
    try:
        cut = len(FRAGMENTED) // 2
        _, w = await send_all(listen_port(d), FRAGMENTED[:cut], close=False)
        pumps = d.registry.ram_pumps
        await until(lambda: pumps.running, "the pump waits for the source")
        assert pumps.running == 1
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()
        await wait_pairs_closed(d, timeout=20)
        assert pumps.running == 0
        c = await target.conn(0)
        await asyncio.wait_for(c.eof.wait(), 10)
        assert isinstance(c.error, ConnectionResetError), c.error  # reset, as the source was
        assert len(c.data) <= cut
    finally:
        await stop_daemon(d, target)


# -- random streams against a reference walk ---------------------------------------------------

_record = st.tuples(st.sampled_from(["page", "zero"]), st.just(0), st.integers(0, 255))


@needs_pump
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records_=st.lists(_record, max_size=300),
       stop=st.sampled_from([b"", EOS, page(BLOCK, 1), struct.pack(">Q", 0x400 | 0x28)]),
       cut=st.integers(0, 4200),
       skip=st.integers(0, 4096),
       pieces=st.lists(st.integers(1, 70000), min_size=1, max_size=8),
       path=st.sampled_from(PATHS))
def test_random_streams_walk_as_the_grammar_says(
        records_: list[tuple[str, int, int]], stop: bytes, cut: int, skip: int,
        pieces: list[int], path: PumpPath) -> None:
    """Random records (in random pieces, so reads end anywhere), then either a record the
    framer decides or the end (possibly inside a record): the pump forwards exactly the
    walk's records, counts them, and hands back the rest it read, in order."""
    body = b"\x5a" * skip + b"".join(
        page(i * PS, fill) if kind == "page" else zero(i * PS)
        for i, (kind, _, fill) in enumerate(records_))
    data = body + stop + b"\x00" * 100 if stop else body[:max(0, len(body) - cut)]
    walk = RamWalk(skip, PS, BLOCK, True)
    want_pos, want_pages, want_zeros, at_record = reference_walk(data, walk)
    w = Wires()
    try:
        def send() -> None:
            at = 0
            for n in pieces * (1 + len(data) // max(1, sum(pieces))):
                if at >= len(data):
                    break
                w.sender.sendall(data[at:at + n])
                at += n
            w.sender.sendall(data[at:])
            w.sender.shutdown(socket.SHUT_WR)
        t = threading.Thread(target=send, daemon=True)
        t.start()
        p = RamPump(w.src.fileno(), w.dst.fileno(), path)
        run = p.run(walk)
        p.close(reset=False)
        t.join(10)
        got = w.received()
    finally:
        w.close()
    rest = bytes(run.leftover)
    fwd = run.forwarded
    assert got == data[:fwd]
    assert data[fwd:].startswith(rest)
    if run.status == PumpStatus.FULL:
        # Splicing, tiny segments filled the pipe's slots before a record was whole: the
        # engine takes it from there. Whole records so far, counted as the walk counts.
        assert path == PumpPath.SPLICE
        assert fwd <= want_pos
        assert reference_walk(data[:fwd], walk)[:3] == (fwd, run.pages, run.zeros)
        assert rest
        return
    assert run.status == (PumpStatus.RECORD if at_record else PumpStatus.EOF)
    assert run.skip_left == max(0, skip - len(data))
    assert (fwd, run.pages, run.zeros) == (want_pos, want_pages, want_zeros)
    if not at_record:
        assert rest == data[want_pos:]  # everything up to the end came back
    else:
        assert rest
