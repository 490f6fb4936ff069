"""The executor (relay.py) over real loopback TCP, without QEMU: bytes, half-close, resets,
backpressure, classification, policies, timers and accept order through real sockets.

Assertions are about bytes, events, states and bounds — never about how fast anything is.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from migproxy.arm.profile import default_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream import wire
from testkit.streams import run_engine
from testkit.synthetic import SynthSpec, build
from tests.daemon.loopback import (
    REWRITTEN,
    STREAM,
    Target,
    listen_port,
    reader_closed,
    received,
    sample,
    send_all,
    start_daemon,
    stop_daemon,
    wait_accepted,
    wait_pairs_closed,
)

pytestmark = pytest.mark.asyncio


async def test_main_channel_is_rewritten_end_to_end(target: Target) -> None:
    d = await start_daemon(await target.start())
    try:
        r, _w = await send_all(listen_port(d), STREAM)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert bytes(c.data) == REWRITTEN
        c.writer.close()  # the destination closes: the pair ends
        assert await asyncio.wait_for(r.read(), 10) == b""
        await wait_pairs_closed(d)
        assert sample(d, "migproxy_cpregs_dropped_total", register="BOGUS_DBGDTRTX") == 2
        assert sample(d, "migproxy_migrations_total", outcome="completed") == 1
        assert sample(d, "migproxy_bytes_total", direction="to_destination",
                       channel="main") == len(REWRITTEN)
        assert sample(d, "migproxy_connections_classified_total", channel="main") == 1
        assert sample(d, "migproxy_migrations_active") == 0
        assert sample(d, "migproxy_ram_records_total", type="zero") == 2000
        assert sample(d, "migproxy_holdback_seconds_count") == 1
        assert sample(d, "migproxy_holdback_bytes") == 0
    finally:
        await stop_daemon(d, target)


async def test_return_path_is_relayed_at_once_and_half_close_is_passed_on(
        target: Target) -> None:
    d = await start_daemon(await target.start())
    try:
        # Only the first half of the stream: the source is mid-migration.
        r, w = await send_all(listen_port(d), STREAM[: len(STREAM) // 2], close=False)
        c = await target.conn()
        pong = struct.pack(">HHI", 2, 4, 1)
        c.writer.write(pong)
        await c.writer.drain()
        assert await asyncio.wait_for(r.readexactly(len(pong)), 10) == pong
        # The source half-closes: the destination sees EOF, and can still answer.
        w.write(STREAM[len(STREAM) // 2 :])
        w.write_eof()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert bytes(c.data) == REWRITTEN
        shut = struct.pack(">HHI", 1, 4, 0)
        c.writer.write(shut)
        await c.writer.drain()
        assert await asyncio.wait_for(r.readexactly(len(shut)), 10) == shut
        c.writer.close()
        assert await asyncio.wait_for(r.read(), 10) == b""
        await wait_pairs_closed(d)
    finally:
        await stop_daemon(d, target)


@pytest.mark.parametrize("cut", [0, 3, 100, len(STREAM) // 2, len(STREAM) - 7])
async def test_source_reset_at_any_point_closes_the_destination(target: Target,
                                                                 cut: int) -> None:
    d = await start_daemon(await target.start())
    try:
        s = socket.create_connection(("127.0.0.1", listen_port(d)))
        s.sendall(STREAM[:cut])
        if cut == 0:
            await wait_accepted(d, 1)  # the daemon has the connection, then it is reset
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # RST before any byte: the target never hears of it
            await wait_pairs_closed(d)
            assert target.conns == []
            return
        c = await target.conn()
        await asyncio.sleep(0.05)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST
        await asyncio.wait_for(c.eof.wait(), 10)
        await wait_pairs_closed(d)
        # Whatever arrived is a prefix of the input: nothing invented, nothing rewritten
        # half-way.
        assert STREAM.startswith(bytes(c.data))
        assert sample(d, "migproxy_connections_active", channel="main") == 0
    finally:
        await stop_daemon(d, target)


@pytest.mark.parametrize("cut", [0, 5000, len(STREAM) // 2])
async def test_destination_reset_closes_the_source(target: Target, cut: int) -> None:
    d = await start_daemon(await target.start())
    try:
        r, w = await asyncio.open_connection("127.0.0.1", listen_port(d))
        w.write(STREAM[: max(cut, 4)])
        await w.drain()
        c = await target.conn()
        sock = c.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.writer.transport.abort()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(r.readexactly(1), 10)
        await wait_pairs_closed(d)
        assert sample(d, "migproxy_migrations_total", outcome="failed") == 1
    finally:
        await stop_daemon(d, target)


async def test_slow_destination_keeps_memory_bounded() -> None:
    """The source is paused while the destination side is above the high-water mark."""
    target = Target(read_delay=0.002, read_size=16384)
    port = await target.start()
    big = build(SynthSpec(ram_bytes=256 << 20, full_pages=6000, zero_pages=0,
                          part_sections=4))
    d = await start_daemon(port, high_water=256 * 1024, ram_pump="off")  # the event loop's
    peak = 0
    try:
        async def watch() -> None:
            nonlocal peak
            while True:
                for p in list(d.registry.pairs):
                    t = p.dst.transport
                    if t is not None and not t.is_closing():
                        peak = max(peak, t.get_write_buffer_size())
                await asyncio.sleep(0.001)

        watcher = asyncio.create_task(watch())
        _r, _w = await send_all(listen_port(d), big, chunk=1 << 20)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 60)
        watcher.cancel()
        assert len(c.data) == len(big) - 16  # one cpu, BOGUS_DBGDTRTX dropped
        # Byte for byte: receive buffers still referenced by queued writes are not reused.
        expected = run_engine([big], arm_engine_config(default_profile()))[0]
        assert bytes(c.data) == expected
        # Queued towards the destination: at most the high-water mark plus one read.
        assert 0 < peak <= 256 * 1024 + (1 << 20)
    finally:
        target.close()
        await stop_daemon(d, target)


async def test_several_migrations_at_once_are_independent(target: Target) -> None:
    d = await start_daemon(await target.start())
    streams = [build(SynthSpec(cpus=n, zero_pages=500 * n, full_pages=10 * n, seed=n))
               for n in (1, 2, 3, 4)]
    try:
        results = await asyncio.gather(*(send_all(listen_port(d), s, chunk=7000) for s in streams))
        for _ in streams:
            await target.conn(len(streams) - 1)
        for c in target.conns:
            await asyncio.wait_for(c.eof.wait(), 20)
        expected = {run_engine([s], arm_engine_config(default_profile()))[0]
                    for s in streams}
        assert {bytes(c.data) for c in target.conns} == expected
        assert sample(d, "migproxy_cpregs_dropped_total", register="BOGUS_DBGDTRTX") == 10
        for _, w in results:
            w.close()
    finally:
        await stop_daemon(d, target)


async def test_multifd_and_other_channels_are_relayed_untouched(target: Target) -> None:
    d = await start_daemon(await target.start())
    multifd = wire.MULTIFD_MAGIC_BYTES + struct.pack(">I", 1) + bytes(56) + STREAM[:5000]
    other = b"\x00\x00\x00\x00\x00\x00\x00\x08" + STREAM[5000:9000]
    tiny = b"ab"
    try:
        for payload in (multifd, other, tiny):
            await send_all(listen_port(d), payload)
        for i, payload in enumerate((multifd, other, tiny)):
            c = await target.conn(i)
            await asyncio.wait_for(c.eof.wait(), 10)
            assert bytes(c.data) == payload
        assert sample(d, "migproxy_connections_classified_total", channel="multifd") == 1
        assert sample(d, "migproxy_connections_classified_total", channel="other") == 2
        assert sample(d, "migproxy_connections_classified_total", channel="main") == 0
    finally:
        await stop_daemon(d, target)


async def test_abort_policy_closes_both_sides(target: Target) -> None:
    d = await start_daemon(await target.start(), policy="abort")
    bad = STREAM.replace(struct.pack(">BHH", 8, 11, 0), struct.pack(">BHH", 8, 99, 0), 1)
    try:
        r, _w = await send_all(listen_port(d), bad, close=False)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert bad.startswith(bytes(c.data))
        assert len(c.data) < len(bad)
        assert await reader_closed(r)
        await wait_pairs_closed(d)
        assert sample(d, "migproxy_aborts_total", reason="unknown_command") == 1
        assert sample(d, "migproxy_migrations_total", outcome="aborted") == 1
    finally:
        await stop_daemon(d, target)


async def test_passthrough_policy_forwards_the_rest_untouched(target: Target) -> None:
    d = await start_daemon(await target.start())
    bad = STREAM.replace(struct.pack(">BHH", 8, 11, 0), struct.pack(">BHH", 8, 99, 0), 1)
    try:
        await send_all(listen_port(d), bad)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert bytes(c.data) == bad
        assert sample(d, "migproxy_passthrough_total", reason="unknown_command") == 1
    finally:
        await stop_daemon(d, target)


async def test_dry_run_forwards_unchanged_and_counts(target: Target) -> None:
    d = await start_daemon(await target.start(), dry_run=True)
    try:
        await send_all(listen_port(d), STREAM)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert bytes(c.data) == STREAM
        assert sample(d, "migproxy_cpu_sections_rewritten_total", mode="dry_run") == 2
        assert sample(d, "migproxy_cpregs_dropped_total", register="BOGUS_DBGDTRTX") == 0
    finally:
        await stop_daemon(d, target)


async def test_unreachable_target_closes_the_source() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, not listening: connection refused
        d = await start_daemon(dead)
        try:
            r, w = await asyncio.open_connection("127.0.0.1", listen_port(d))
            w.write(STREAM[:100])
            assert await reader_closed(r)
            await wait_pairs_closed(d)
            assert sample(d, "migproxy_connect_errors_total") == 1
        finally:
            await stop_daemon(d)


async def test_idle_pairs_are_closed(target: Target) -> None:
    d = await start_daemon(await target.start(), idle_timeout=0.2)
    try:
        r, w = await asyncio.open_connection("127.0.0.1", listen_port(d))
        w.write(STREAM[:1000])
        await w.drain()
        c = await target.conn()
        assert await reader_closed(r)
        await asyncio.wait_for(c.eof.wait(), 10)
        await wait_pairs_closed(d)
    finally:
        await stop_daemon(d, target)


async def test_a_bare_probe_never_reaches_the_target(target: Target) -> None:
    """Health checks (connect, close) must not open a connection to the destination."""
    d = await start_daemon(await target.start())
    try:
        for _ in range(3):
            _r, w = await asyncio.open_connection("127.0.0.1", listen_port(d))
            w.close()
            await w.wait_closed()
        await wait_pairs_closed(d)
        # A real stream afterwards is the first (and only) connection the target sees.
        await send_all(listen_port(d), STREAM)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert len(target.conns) == 1
        assert bytes(c.data) == REWRITTEN
    finally:
        await stop_daemon(d, target)


async def test_target_connections_are_opened_in_accept_order(target: Target) -> None:
    """A main channel that has not sent a byte yet still reaches the target before a
    multifd channel accepted after it (destinations that assign channels by arrival order)."""
    d = await start_daemon(await target.start())
    try:
        _r1, w1 = await asyncio.open_connection("127.0.0.1", listen_port(d))  # main, silent for now
        await wait_accepted(d, 1)
        multifd = wire.MULTIFD_MAGIC_BYTES + struct.pack(">I", 1) + bytes(56)
        await send_all(listen_port(d), multifd)
        first = await target.conn(0)
        second = await target.conn(1)
        w1.write(STREAM)
        w1.write_eof()
        await asyncio.wait_for(first.eof.wait(), 10)
        await asyncio.wait_for(second.eof.wait(), 10)
        assert bytes(first.data) == REWRITTEN
        assert bytes(second.data) == multifd
    finally:
        await stop_daemon(d, target)


async def test_a_silent_connection_from_another_host_never_reaches_the_target(
        target: Target) -> None:
    """A port scanner or health check accepted before a migration stays where it is: the
    main channel is the destination's first connection (accept order groups by host)."""
    d = await start_daemon(await target.start())
    try:
        _rp, wp = await asyncio.open_connection("127.0.0.1", listen_port(d),
                                                local_addr=("127.0.0.2", 0))
        await wait_accepted(d, 1)  # accepted first (the order of accepts, not a timing test)
        _r, _w = await send_all(listen_port(d), STREAM)
        first = await target.conn(0)
        await asyncio.wait_for(first.eof.wait(), 10)
        assert bytes(first.data) == REWRITTEN
        assert len(target.conns) == 1
        wp.close()
    finally:
        await stop_daemon(d, target)


async def test_idle_connections_hold_small_buffers_and_bulk_ones_grow() -> None:
    """Receive buffers start at 64 KiB and grow only while reads fill them: 50 idle
    connections cost a few MiB, not 2 MiB each; a bulk transfer still reads 1 MiB at once."""
    import tracemalloc

    from migproxy.daemon.buffers import INITIAL_READ_SIZE, READ_SIZE

    target = Target()
    d = await start_daemon(await target.start())
    writers = []
    try:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(50):
            _r, w = await asyncio.open_connection("127.0.0.1", listen_port(d))
            writers.append(w)
        while len(d.registry.pairs) < 50:
            await asyncio.sleep(0.01)
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert grown < 50 * 4 * INITIAL_READ_SIZE, grown  # was 50 x 2 MiB
        assert {p.src.read_size for p in d.registry.pairs} == {INITIAL_READ_SIZE}
        # A bulk transfer on another connection: its source side's buffer grows.
        _r, w = await send_all(listen_port(d), STREAM, chunk=len(STREAM), close=False)
        conn = await target.conn(0)  # the 50 silent ones never go before it (M1)
        while len(conn.data) < len(STREAM) // 2:
            await asyncio.sleep(0.01)
        sizes = {p.src.read_size for p in d.registry.pairs}
        assert max(sizes) > INITIAL_READ_SIZE
        assert max(sizes) <= READ_SIZE
        w.close()
    finally:
        for w in writers:
            w.close()
        await stop_daemon(d, target)


async def test_memory_does_not_grow_with_the_stream_under_backpressure() -> None:
    """200 MB to a destination that reads slowly: the daemon's allocations stay bounded
    (what it queues towards the destination, plus a few receive buffers)."""
    import hashlib
    import tracemalloc

    from testkit.synthetic import generate

    received = 0
    digest = hashlib.sha256()
    done = asyncio.Event()

    async def slow_sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal received
        while True:
            await asyncio.sleep(0.001)
            b = await r.read(65536)
            if not b:
                break
            received += len(b)
            digest.update(b)
        done.set()
        w.close()

    server = await asyncio.start_server(slow_sink, "127.0.0.1", 0)
    spec = SynthSpec(ram_bytes=1 << 30, full_pages=48_000, zero_pages=4000, part_sections=8)
    d = await start_daemon(server.sockets[0].getsockname()[1], high_water=1 << 20)
    tracemalloc.start()
    try:
        _, w = await asyncio.open_connection("127.0.0.1", listen_port(d))
        total = 0
        for chunk in generate(spec):
            w.write(chunk)
            total += len(chunk)
            await w.drain()
        w.write_eof()
        await asyncio.wait_for(done.wait(), 120)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        server.close()
        await stop_daemon(d)
    assert total > 190_000_000
    assert received == total - 16  # BOGUS_DBGDTRTX dropped from the one cpu
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB"
    print(f"peak traced memory {peak / 2**20:.1f} MiB for {total / 1e6:.0f} MB")


@pytest.mark.parametrize(("status", "outcome"), [(0, "completed"), (1, "destination_failed")])
async def test_the_destinations_verdict_on_the_return_path_sets_the_outcome(
        target: Target, status: int, outcome: str) -> None:
    d = await start_daemon(await target.start())
    try:
        r, w = await send_all(listen_port(d), STREAM, close=False)
        c = await target.conn()
        # PONG 1 (answering PING 1), then SHUT with the load's status, as QEMU sends them.
        rp = struct.pack(">HHI", 2, 4, 1) + struct.pack(">HHI", 1, 4, status)
        c.writer.write(rp[:5])
        await c.writer.drain()
        await asyncio.sleep(0.01)
        c.writer.write(rp[5:])
        await c.writer.drain()
        assert await asyncio.wait_for(r.readexactly(len(rp)), 10) == rp
        w.write_eof()
        await asyncio.wait_for(c.eof.wait(), 10)
        c.writer.close()
        await wait_pairs_closed(d)
        assert sample(d, "migproxy_migrations_total", outcome=outcome) == 1
    finally:
        await stop_daemon(d, target)


async def test_connections_over_the_per_peer_limit_are_closed_at_once(target: Target) -> None:
    d = await start_daemon(await target.start(), max_per_peer=2)
    try:
        held = [await asyncio.open_connection("127.0.0.1", listen_port(d)) for _ in range(2)]
        while len(d.registry.pairs) < 2:
            await asyncio.sleep(0.01)
        r3, w3 = await asyncio.open_connection("127.0.0.1", listen_port(d))
        assert await asyncio.wait_for(reader_closed(r3), 10)
        assert sample(d, "migproxy_connections_refused_total", reason="peer_full") == 1
        assert len(d.registry.pairs) == 2
        assert not target.conns
        for _r, w in held:
            w.close()
        await wait_pairs_closed(d)
        # The limit counts open connections: with the others gone, a migration goes through.
        _r, _w = await send_all(listen_port(d), STREAM)
        assert await received(target, 0) == REWRITTEN
        w3.close()
    finally:
        await stop_daemon(d, target)


async def test_sources_outside_the_allow_list_are_refused(target: Target) -> None:
    d = await start_daemon(await target.start(), allow=["192.0.2.0/24"])
    try:
        r, w = await asyncio.open_connection("127.0.0.1", listen_port(d))
        w.write(STREAM[:4096])
        assert await asyncio.wait_for(reader_closed(r), 10)
        assert sample(d, "migproxy_connections_refused_total", reason="not_allowed") == 1
        assert sample(d, "migproxy_connections_classified_total", channel="main") == 0
        assert not target.conns
        w.close()
    finally:
        await stop_daemon(d, target)


async def test_a_connection_silent_past_classify_timeout_is_closed(target: Target) -> None:
    """A probe that connects and says nothing is closed at the classification deadline and
    counted; it never reaches the target."""
    d = await start_daemon(await target.start(), classify_timeout=0.2)
    try:
        r, w = await asyncio.open_connection("127.0.0.1", listen_port(d))
        assert await reader_closed(r)
        await wait_pairs_closed(d)
        assert sample(d, "migproxy_connections_refused_total",
                      reason="classify_timeout") == 1
        assert target.conns == []
        w.close()
    finally:
        await stop_daemon(d, target)


async def test_a_silent_connection_beside_a_migration_outlives_classify_timeout(
        target: Target) -> None:
    """QEMU's postcopy preempt channel is silent until postcopy starts: while a main channel
    from the same address is open, the deadline does not close it."""
    d = await start_daemon(await target.start(), classify_timeout=0.2)
    try:
        _r, wmain = await asyncio.open_connection("127.0.0.1", listen_port(d))
        wmain.write(STREAM[:5000])  # a main channel in progress
        await wmain.drain()
        await target.conn(0)
        rs, ws = await asyncio.open_connection("127.0.0.1", listen_port(d))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(rs.read(1), 0.6)  # well past the deadline: still open
        assert sample(d, "migproxy_connections_refused_total",
                      reason="classify_timeout") == 0
        wmain.write(STREAM[5000:])
        wmain.write_eof()
        assert await received(target, 0) == REWRITTEN
        ws.close()
    finally:
        await stop_daemon(d, target)


async def test_a_buffer_is_reusable_only_when_no_view_of_it_is_left() -> None:
    from migproxy.daemon.buffers import unreferenced

    buf = bytearray(b"abc")
    view = memoryview(buf)[1:]
    assert not unreferenced(buf)
    del view
    assert unreferenced(buf)
    assert buf == b"abc"


async def test_receive_buffers_are_reused_under_backpressure_and_bytes_stay_exact() -> None:
    """A destination that reads slowly keeps writes queued: the source side reads into
    other buffers, and reuses the ones no queued write refers to any more."""
    from migproxy.daemon import side as side_mod

    made: list[int] = []
    real = side_mod.SideProtocol.fresh_buffer

    def counting(self: side_mod.SideProtocol) -> None:
        before = {id(b) for b in self._retired} | {id(self._buf)}
        real(self)
        made.append(0 if id(self._buf) in before else 1)

    big = build(SynthSpec(cpus=2, full_pages=4000, zero_pages=4000))
    expected = run_engine([big], arm_engine_config(default_profile()))[0]
    slow = Target(read_delay=0.005, read_size=64 << 10)  # ~13 MB/s: writes must queue
    d = await start_daemon(await slow.start(), ram_pump="off")  # the event-loop path
    side_mod.SideProtocol.fresh_buffer = counting  # type: ignore[method-assign]
    try:
        await send_all(listen_port(d), big)
        assert await received(slow, 0, timeout=60) == expected
        assert made, made
        assert made.count(0) > 0, made  # some buffers were reused
    finally:
        side_mod.SideProtocol.fresh_buffer = real  # type: ignore[method-assign]
        await stop_daemon(d, slow)


async def test_a_silent_connection_after_an_open_main_channel_reaches_the_target(
        target: Target) -> None:
    """The postcopy preempt channel sends nothing until a page is urgent; the destination
    waits for it. Once a main channel from the same source is open, a later connection
    from there is connected at once."""
    d = await start_daemon(await target.start())
    try:
        port = listen_port(d)
        _, main = await send_all(port, STREAM[:4096], close=False)
        first = await target.conn(0)
        while len(first.data) < 4096:  # the main channel is classified
            await asyncio.sleep(0.01)
        _, silent = await asyncio.open_connection("127.0.0.1", port)
        await target.conn(1)  # connected although it sends nothing
        main.close()
        silent.close()
        assert await received(target, 1) == b""
        assert sample(d, "migproxy_connections_classified_total", channel="main") == 1
    finally:
        await stop_daemon(d, target)


async def test_the_executor_carries_out_every_command_of_the_session() -> None:
    """Each command type of the session but Forward (the hot path) has its handler."""
    import typing

    from migproxy.daemon import relay, session

    kinds = set(typing.get_args(session.Command))
    assert session.Forward in kinds
    assert set(relay._COMMANDS) == kinds - {session.Forward}
