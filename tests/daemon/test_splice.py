"""The kernel relay (splice.py) over real loopback TCP, alone and inside the daemon: bytes
exact both ways, half-close, resets, idle timeout, stop, back-pressure, the thread cap,
and which channels the daemon hands over.

Assertions are about bytes, ends and bounds, never about how fast anything is."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import structlog.testing

from migproxy.daemon import splice
from migproxy.daemon.server import Daemon
from migproxy.daemon.session import Channel
from migproxy.daemon.splice import AVAILABLE, PIPE_SIZE, KernelRelays, RelayEnd
from migproxy.stream import wire
from testkit.loopback import tcp_pair
from tests.daemon.loopback import (
    STREAM,
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

pytestmark = [pytest.mark.asyncio,
              pytest.mark.skipif(not AVAILABLE, reason="splice(2) is Linux only")]

MULTIFD = wire.MULTIFD_MAGIC_BYTES + struct.pack(">I", 1) + bytes(56)


class Relayed:
    """source peer <-> [relay: source end, destination end] <-> destination peer."""

    def __init__(self, relays: KernelRelays, idle_timeout: float = 0,
                 bufsize: int | None = None) -> None:
        self.source, src_end = tcp_pair(bufsize)
        dst_end, self.destination = tcp_pair(bufsize)
        # What the four sockets of the path may buffer (as the kernel counts it).
        self.buffered = sum(s.getsockopt(socket.SOL_SOCKET, opt)
                            for s, opt in ((self.source, socket.SO_SNDBUF),
                                           (src_end, socket.SO_RCVBUF),
                                           (dst_end, socket.SO_SNDBUF),
                                           (self.destination, socket.SO_RCVBUF)))
        for s in (src_end, dst_end):
            s.setblocking(False)
        self.progress = [0, 0]
        loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[RelayEnd] = loop.create_future()
        self.relay = relays.start(src_end.detach(), dst_end.detach(),
                                  idle_timeout=idle_timeout,
                                  call_soon_threadsafe=loop.call_soon_threadsafe,
                                  on_progress=self._progress, on_end=self.ended.set_result)

    def _progress(self, to_destination: int, to_source: int) -> None:
        self.progress[0] += to_destination
        self.progress[1] += to_source

    async def end(self) -> RelayEnd:
        return await asyncio.wait_for(asyncio.shield(self.ended), 20)

    def close(self) -> None:
        self.source.close()
        self.destination.close()


@pytest_asyncio.fixture(params=["compiled", "python"])
async def relays(request: pytest.FixtureRequest,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[KernelRelays]:
    """Kernel relays with the compiled loop (_kernelrelay.c) and with the Python one."""
    if request.param == "python":
        monkeypatch.setattr(splice, "COMPILED", None)
    elif splice.COMPILED is None:
        pytest.skip("the kernel relay's compiled loop is not built")
    r = KernelRelays(4)
    yield r
    for relay in list(r.running):
        relay.stop()
        relay.join(5)


def read_all(s: socket.socket) -> bytes:
    out = bytearray()
    while chunk := s.recv(1 << 20):
        out += chunk
    return bytes(out)


async def in_thread(fn, *args):  # type: ignore[no-untyped-def]
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def test_both_directions_exact_with_half_close(relays: KernelRelays) -> None:
    r = Relayed(relays)
    try:
        up = os.urandom(12 << 20)
        down = os.urandom(3 << 20)

        def source() -> bytes:
            r.source.sendall(up)
            r.source.shutdown(socket.SHUT_WR)  # half-close: the reply still comes back
            return read_all(r.source)

        def destination() -> bytes:
            got = read_all(r.destination)  # ends with the source's EOF, passed on
            r.destination.sendall(down)
            r.destination.shutdown(socket.SHUT_WR)
            return got

        at_source, at_destination = await asyncio.gather(in_thread(source),
                                                         in_thread(destination))
        assert at_destination == up
        assert at_source == down
        end = await r.end()
        assert end.how == "closed"
        assert end.error is None
        assert r.progress[0] + end.to_destination == len(up)
        assert r.progress[1] + end.to_source == len(down)
        assert not relays.running
    finally:
        r.close()


async def test_a_reset_is_passed_on_as_a_reset(relays: KernelRelays) -> None:
    r = Relayed(relays)
    try:
        r.source.sendall(b"x" * 1000)
        assert await in_thread(r.destination.recv, 1000) == b"x" * 1000
        r.destination.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        r.destination.close()  # a reset from the destination
        end = await r.end()
        assert end.how == "error"
        assert end.side == "destination"
        r.source.settimeout(10)
        with pytest.raises(ConnectionResetError):
            await in_thread(read_all, r.source)
    finally:
        r.close()


async def test_idle_timeout_resets_both(relays: KernelRelays) -> None:
    r = Relayed(relays, idle_timeout=0.2)
    try:
        end = await r.end()
        assert end.how == "idle"
        for peer in (r.source, r.destination):
            peer.settimeout(10)
            with pytest.raises(ConnectionResetError):
                await in_thread(read_all, peer)
    finally:
        r.close()


async def test_stop_resets_both_and_is_idempotent(relays: KernelRelays) -> None:
    r = Relayed(relays)
    try:
        r.relay.stop()
        r.relay.stop()
        end = await r.end()
        assert end.how == "stopped"
        r.relay.stop()  # after the end: nothing happens
        r.source.settimeout(10)
        with pytest.raises(ConnectionResetError):
            await in_thread(read_all, r.source)
    finally:
        r.close()


async def test_back_pressure_holds_no_more_than_the_pipe(relays: KernelRelays) -> None:
    """A destination that reads nothing: the relay stops reading the source once its pipe
    and the sockets' buffers are full; what it accepted is bounded, and all of it arrives
    once the destination reads. The sockets' buffers are fixed (256 KiB as the kernel
    counts them), so the bound does not depend on autotuning."""
    r = Relayed(relays, bufsize=128 << 10)
    try:
        r.source.setblocking(False)
        sent = 0
        stalled = 0
        block = os.urandom(1 << 16)
        limit = 256 << 20  # far beyond the bound: a relay that buffers would get here
        while stalled < 50 and sent < limit:  # 50 x 20 ms without progress: path full
            try:
                sent += r.source.send(block)
                stalled = 0
            except BlockingIOError:
                stalled += 1
                await asyncio.sleep(0.02)
        # The kernel may let a socket go over its buffer by up to one segment (64 KiB).
        assert sent <= PIPE_SIZE + r.buffered + 4 * (64 << 10), (sent, r.buffered)
        r.source.setblocking(True)
        r.source.shutdown(socket.SHUT_WR)
        got = await in_thread(read_all, r.destination)
        assert len(got) == sent
        r.destination.shutdown(socket.SHUT_WR)
        assert (await r.end()).how == "closed"
    finally:
        r.close()


async def test_progress_is_reported_while_the_relay_runs(
        relays: KernelRelays, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts reach the event loop every PROGRESS_INTERVAL, not only at the end; the
    reports and the end add up to the bytes moved."""
    monkeypatch.setattr(splice, "PROGRESS_INTERVAL", 0.01)
    r = Relayed(relays)
    try:
        r.source.sendall(b"a" * 5000)
        assert await in_thread(r.destination.recv, 5000) == b"a" * 5000
        # A report after the bytes moved and before the end (the relay still runs).
        await until(lambda: r.progress[0] == 5000, "a progress report")
        assert not r.ended.done()
        r.destination.sendall(b"b" * 300)
        assert await in_thread(r.source.recv, 300) == b"b" * 300
        await until(lambda: r.progress[1] == 300, "a progress report back")
        for peer in (r.source, r.destination):
            peer.shutdown(socket.SHUT_WR)
        end = await r.end()
        assert end.how == "closed"
        assert (r.progress[0] + end.to_destination, r.progress[1] + end.to_source) == \
            (5000, 300)
    finally:
        r.close()


async def test_the_compiled_loop_is_built_where_the_suite_requires_it() -> None:
    """scripts/test.sh builds the extensions and sets MIGPROXY_REQUIRE_EXTENSIONS=1: then
    the relay tests above run the compiled loop too."""
    if os.environ.get("MIGPROXY_REQUIRE_EXTENSIONS") != "1":
        pytest.skip("MIGPROXY_REQUIRE_EXTENSIONS is not set")
    assert splice.COMPILED is not None, "the kernel relay's loop is not built (_kernelrelay.c)"


async def test_the_compiled_loop_refuses_a_bad_state() -> None:
    if splice.COMPILED is None:
        pytest.skip("the kernel relay's compiled loop is not built")
    good = (-1, -1, -1, -1, 1 << 16, 0, False, False, False)
    over = (-1, -1, -1, -1, 1 << 16, (1 << 16) + 1, False, False, False)
    with pytest.raises(ValueError, match="pipe fill"):
        splice.COMPILED(-1, -1, -1, over, good, 0, 0, 1000)
    with pytest.raises(ValueError, match="report interval"):
        splice.COMPILED(-1, -1, -1, good, good, 0, 0, 0)


# -- inside the daemon ----------------------------------------------------------------------

def spliced(d: Daemon) -> float:
    return sum(sample(d, "migproxy_spliced_connections_total", channel=ch) for ch in Channel)


async def until_spliced(d: Daemon, n: int = 1) -> None:
    """Wait until ``n`` connections of ``d`` are in the kernel (the handover follows the
    first bytes)."""
    async def wait() -> None:
        while spliced(d) < n:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(wait(), 10)


async def test_multifd_and_other_channels_go_to_the_kernel(target: Target) -> None:
    d = await start_daemon(await target.start())
    try:
        payloads = [MULTIFD + os.urandom(6 << 20), b"\x00\x01\x02\x03" + os.urandom(1 << 20)]
        for i, payload in enumerate(payloads):
            r, w = await send_all(listen_port(d), payload, close=False)
            conn = await target.conn(i)
            await until_spliced(d, i + 1)  # before its EOF: the kernel passes that on too
            w.write_eof()
            assert await received(target, i) == payload
            assert conn.writer is not None
            conn.writer.write(b"reply")  # the other direction still works after the EOF
            conn.writer.close()
            assert await asyncio.wait_for(r.read(), 10) == b"reply"
            w.close()
        await wait_pairs_closed(d)
        for channel, payload in zip(("multifd", "other"), payloads, strict=True):
            assert sample(d, "migproxy_spliced_connections_total", channel=channel) == 1
            assert sample(d, "migproxy_bytes_total", direction="to_destination",
                          channel=channel) == len(payload)
            assert sample(d, "migproxy_bytes_total", direction="to_source",
                          channel=channel) == len(b"reply")
    finally:
        await stop_daemon(d, target)


async def test_a_main_channel_being_parsed_stays_on_the_event_loop(target: Target) -> None:
    d = await start_daemon(await target.start())
    try:
        _, w = await send_all(listen_port(d), STREAM)
        assert len(await received(target, 0)) > 0
        assert spliced(d) == 0
        w.close()
    finally:
        await stop_daemon(d, target)


async def test_main_channel_not_understood_goes_to_the_kernel(target: Target) -> None:
    """Once the engine relays the rest untouched, so can the kernel: bytes exact."""
    d = await start_daemon(await target.start())
    try:
        broken = bytearray(STREAM[:20000])
        broken[9] ^= 0xFF  # the first section's header no longer parses
        tail = os.urandom(4 << 20)
        _, w = await send_all(listen_port(d), bytes(broken), close=False)
        await until_spliced(d)
        w.write(tail)
        w.write_eof()
        assert await received(target, 0) == bytes(broken) + tail
        conn = await target.conn(0)
        assert conn.writer is not None
        conn.writer.close()  # the destination ends its direction too: the pair is over
        await wait_pairs_closed(d)
        assert sample(d, "migproxy_migrations_total", outcome="passthrough") == 1
        w.close()
    finally:
        await stop_daemon(d, target)


async def test_the_daemon_says_which_relay_loop_it_runs(target: Target) -> None:
    with structlog.testing.capture_logs() as logs:
        d = await start_daemon(await target.start())
    try:
        line = [e for e in logs if e["event"] == "kernel_relay"]
        assert len(line) == 1
        assert line[0]["loop"] == ("c" if splice.COMPILED is not None else "python")
        assert line[0]["threads"] == 16
    finally:
        await stop_daemon(d, target)


async def test_no_threads_no_kernel_relay(target: Target) -> None:
    d = await start_daemon(await target.start(), splice_threads=0)
    try:
        payload = MULTIFD + os.urandom(1 << 20)
        _, w = await send_all(listen_port(d), payload)
        assert await received(target, 0) == payload
        assert spliced(d) == 0
        w.close()
    finally:
        await stop_daemon(d, target)


async def test_beyond_the_thread_cap_channels_stay_on_the_event_loop(target: Target) -> None:
    d = await start_daemon(await target.start(), splice_threads=1)
    try:
        first = MULTIFD + os.urandom(1 << 20)
        second = MULTIFD + os.urandom(1 << 20)
        _, w1 = await send_all(listen_port(d), first, close=False)
        await until_spliced(d)
        _, w2 = await send_all(listen_port(d), second)  # while the first holds the thread
        assert await received(target, 1) == second
        w1.write_eof()
        assert await received(target, 0) == first
        assert spliced(d) == 1
        for w in (w1, w2):
            w.close()
    finally:
        await stop_daemon(d, target)


async def test_shutdown_stops_kernel_relays(target: Target) -> None:
    d = await start_daemon(await target.start())
    try:
        r, w = await send_all(listen_port(d), MULTIFD + bytes(1000), close=False)
        await until_spliced(d)
        await d.close_servers()
        assert await d.drain(0.1) == 1  # a channel still open is aborted at the timeout
        await wait_pairs_closed(d)
        with pytest.raises(ConnectionResetError):  # aborted: a reset, as without splice
            await asyncio.wait_for(r.read(), 10)
        async def relays_gone() -> None:
            while d.registry.kernel_relays.running:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(relays_gone(), 10)  # the thread ended and said so
        w.close()
    finally:
        await stop_daemon(d, target)


@pytest.mark.parametrize("failure", ["pipe", "thread"])
async def test_no_pipe_or_thread_keeps_the_connection_on_the_event_loop(
        target: Target, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    """Out of descriptors or threads at the handover: nothing is left open, the connection
    goes on through the event loop, exact."""
    import threading
    import types

    from migproxy.daemon import splice

    def no_pipe(flags: int) -> tuple[int, int]:
        raise OSError(24, "Too many open files")

    class NoThread(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    if failure == "pipe":  # only the kernel relay's module sees these
        monkeypatch.setattr(splice, "os", types.SimpleNamespace(
            **{**vars(os), "pipe2": no_pipe}))
    else:
        monkeypatch.setattr(splice, "threading", types.SimpleNamespace(Thread=NoThread))
    open_before = len(os.listdir("/proc/self/fd"))
    d = await start_daemon(await target.start())
    try:
        payload = MULTIFD + os.urandom(4 << 20)
        _, w = await send_all(listen_port(d), payload)
        assert await received(target, 0) == payload
        assert spliced(d) == 0
        assert not d.registry.kernel_relays.running
        w.close()
    finally:
        await stop_daemon(d, target)
    # No pipe or socket leaked: the descriptors go as the loop finishes closing them.
    await until(lambda: len(os.listdir("/proc/self/fd")) <= open_before + 2,
                "the descriptors closed", timeout=2)
    assert len(os.listdir("/proc/self/fd")) <= open_before + 2
