"""The metrics endpoint on the event loop: answers, and bounds on slow or many clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from prometheus_client import CONTENT_TYPE_LATEST

from migproxy.daemon.metrics import Metrics
from migproxy.daemon.metrics_http import MAX_REQUEST, MetricsServer

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def server() -> AsyncIterator[MetricsServer]:
    m = Metrics()
    m.connections.labels("main").inc()
    s = MetricsServer(m.registry, timeout=0.3, max_clients=3)
    await s.start("127.0.0.1", 0)
    yield s
    await s.close()


async def _get(s: MetricsServer, request: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", s.address[1])
    w.write(request)
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    return data


async def test_get_metrics_answers_the_registry(server: MetricsServer) -> None:
    data = await _get(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200 OK") and CONTENT_TYPE_LATEST.encode() in head
    assert b'migproxy_connections_total{channel="main"} 1.0' in body
    assert f"Content-Length: {len(body)}".encode() in head
    assert (await _get(server, b"GET /?x=1 HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 200")
    head_only = await _get(server, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert head_only.startswith(b"HTTP/1.0 200") and head_only.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /other HTTP/1.0\r\n\r\n", b"404"),
    (b"POST /metrics HTTP/1.0\r\n\r\n", b"405"),
    (b"nonsense\r\n\r\n", b"400"),
])
async def test_anything_else_is_refused(server: MetricsServer, request_bytes: bytes,
                                        status: bytes) -> None:
    assert (await _get(server, request_bytes)).startswith(b"HTTP/1.0 " + status)


async def test_a_half_sent_request_is_closed_after_the_timeout(server: MetricsServer) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", server.address[1])
    w.write(b"GET /metrics HTTP/1.1\r\nHost:")  # never finished
    assert await asyncio.wait_for(r.read(), 10) == b""  # closed by the server, no answer
    w.close()
    assert server.active == 0


async def test_a_request_over_the_size_cap_is_closed(server: MetricsServer) -> None:
    data = await _get(server, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST + b"\r\n\r\n")
    assert data == b""


async def test_clients_over_the_cap_are_closed_at_once(server: MetricsServer) -> None:
    idle = [await asyncio.open_connection("127.0.0.1", server.address[1]) for _ in range(3)]
    while server.active < 3:
        await asyncio.sleep(0.01)
    r, w = await asyncio.open_connection("127.0.0.1", server.address[1])
    w.write(b"GET /metrics HTTP/1.0\r\n\r\n")
    try:
        extra = await asyncio.wait_for(r.read(), 10)
    except ConnectionResetError:
        extra = b""
    assert extra == b""  # refused while three others are being served
    for _r, iw in idle:
        iw.close()
    w.close()
    # Once they are gone (closed, or timed out), it answers again.
    while server.active:
        await asyncio.sleep(0.01)
    assert (await _get(server, b"GET /metrics HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 200")
