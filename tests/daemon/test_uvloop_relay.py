"""The executor on uvloop, the daemon's loop, where it differs from asyncio's: uvloop starts
reading a connection after ``connection_made`` returns, so a pause asked for inside it is
lost unless asked again.

Assertions are about bytes and bounds, never about how fast anything is."""

from __future__ import annotations

import asyncio
import os

import pytest
import uvloop

from migproxy.daemon.buffers import READ_SIZE
from migproxy.daemon.relay import Pair
from tests.daemon.loopback import (
    STREAM,
    Target,
    listen_port,
    received,
    send_all,
    start_daemon,
    stop_daemon,
    until,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.filterwarnings(
    "ignore:Overriding the \"event_loop_policy\" fixture is deprecated")]


@pytest.fixture
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


async def test_a_connection_connected_at_accept_reads_nothing_until_connected(
        target: Target) -> None:
    """A connection that follows an open main channel from the same source is connected
    at once; while that connection is being made, reading its source is paused, so what
    the session holds stays one read, however much the source sends (the whole stream
    was held once: 700 MB for 8 migrations)."""
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    d = await start_daemon(await target.start())
    try:
        port = listen_port(d)
        _, main = await send_all(port, STREAM[:4096], close=False)
        first = await target.conn(0)
        while len(first.data) < 4096:
            await asyncio.sleep(0.01)
        (pair,) = d.registry.pairs
        lock = d.registry.connect_lock(pair)
        await lock.acquire()  # the next connection to the target waits: CONNECTING
        payload = os.urandom(16 << 20)
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(payload)

        def later() -> list[Pair]:
            return [p for p in d.registry.pairs if p is not pair]

        # The later connection is accepted and its source paused (at once, or after the one
        # read uvloop makes before a pause asked in connection_made takes effect): a source
        # whose pause was lost is read on and on, and never gets there.
        await until(lambda: len(later()) == 1 and not later()[0].src.transport.is_reading(),
                    "the connecting session's source is paused")
        held = sum(map(len, later()[0].session._pending))
        assert held <= READ_SIZE, held
        lock.release()
        await w.drain()
        w.write_eof()
        assert await received(target, 1) == payload
        main.close()
        w.close()
    finally:
        await stop_daemon(d, target)


async def test_the_metrics_endpoint_answers_on_uvloop() -> None:
    """uvloop's transports are no asyncio.Transport subclasses: the metrics endpoint must
    answer there (it closed every scrape unanswered while it asserted that)."""
    from migproxy.daemon.metrics import Metrics
    from migproxy.daemon.metrics_http import MetricsServer

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    s = MetricsServer(Metrics().registry, timeout=5)
    await s.start("127.0.0.1", 0)
    try:
        r, w = await asyncio.open_connection("127.0.0.1", s.address[1])
        w.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(r.read(), 10)
        w.close()
    finally:
        await s.close()
    assert data.startswith(b"HTTP/1.0 200 OK")
    assert b"migproxy_build_info" in data
