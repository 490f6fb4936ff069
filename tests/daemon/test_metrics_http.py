"""The metrics endpoint on the event loop: answers, and bounds on slow or many clients."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from prometheus_client import CONTENT_TYPE_LATEST

from migproxy.daemon.metrics import Metrics
from migproxy.daemon.metrics_http import MAX_REQUEST, MetricsServer, _Client

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def server() -> AsyncIterator[MetricsServer]:
    m = Metrics()
    m.connections.inc()
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
    assert head.startswith(b"HTTP/1.0 200 OK")
    assert CONTENT_TYPE_LATEST.encode() in head
    assert b'migproxy_connections_total 1.0' in body
    assert f"Content-Length: {len(body)}".encode() in head
    assert (await _get(server, b"GET /?x=1 HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 200")
    head_only = await _get(server, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert head_only.startswith(b"HTTP/1.0 200")
    assert head_only.endswith(b"\r\n\r\n")


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


async def _until(predicate: Callable[[], bool]) -> None:
    """Let the loop run until ``predicate`` holds (no wall-clock ordering: it yields to the
    loop and checks again; the bound only turns a hang into a failure)."""
    async def wait() -> None:
        while not predicate():
            await asyncio.sleep(0)
    await asyncio.wait_for(wait(), 10)


async def _closed_by_server(r: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(r.read(), 10) == b""
    except ConnectionResetError:
        return True


def _scrape_sent_at_connect(s: MetricsServer) -> socket.socket:
    """A scraper's connection whose request is in the server's socket before the server
    can accept it (no await between connect and send: what Prometheus does)."""
    sock = socket.create_connection(("127.0.0.1", s.address[1]), timeout=10)
    sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    sock.setblocking(False)
    return sock


async def _answer_of(sock: socket.socket) -> bytes:
    r, w = await asyncio.open_connection(sock=sock)
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    return data


async def test_a_client_over_the_cap_takes_the_place_of_the_oldest_waiting_one(
        server: MetricsServer) -> None:
    idle = [await asyncio.open_connection("127.0.0.1", server.address[1]) for _ in range(3)]
    await _until(lambda: server.displaceable == 3)
    data = await _get(server, b"GET /metrics HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.0 200")  # not refused while three others are held
    assert await _closed_by_server(idle[0][0])  # the oldest made room
    assert server.displaced == 1
    # The two others are still held, with nothing answered.
    assert [r.at_eof() for r, _w in idle[1:]] == [False, False]
    for _r, w in idle:
        w.close()
    await _until(lambda: server.active == 0)


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False
        self.written = b""

    def abort(self) -> None:
        self.aborted = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass


async def test_waiting_clients_make_room_before_answering_ones() -> None:
    """The order in which held connections make room (transports stubbed: an answer that
    a client does not take stays in the server's buffer)."""
    s = MetricsServer(Metrics().registry, timeout=600, max_clients=2)
    clients = []
    for _ in range(2):
        c = _Client(s)
        c.connection_made(_Transport())
        clients.append(c)
    answering, waiting = clients
    answering.data_received(b"GET /metrics HTTP/1.0\r\n\r\n")
    assert answering.transport.written.startswith(b"HTTP/1.0 200")  # type: ignore[union-attr]
    newest = _Client(s)
    newest.connection_made(_Transport())
    assert s.active == 3
    assert s.displaced == 0
    await _until(lambda: s.displaceable >= 2)  # polled: now the waiting one makes room
    assert waiting.transport.aborted
    assert not answering.transport.aborted
    assert s.active == 2
    assert s.displaced == 1
    third = _Client(s)
    third.connection_made(_Transport())
    await _until(lambda: s.active == 2)
    # The oldest waiting connection goes first, the answering one only when none waits.
    assert newest.transport.aborted
    assert not answering.transport.aborted
    for c in (answering, third):
        c.abort()
    assert s.active == 0


async def test_scrapes_work_while_slow_clients_come_back_as_they_are_dropped() -> None:
    """L1: twice as many slow clients as places, each reopened as soon as it is dropped,
    with a timeout that never fires here: every scrape is answered."""
    m = Metrics()
    s = MetricsServer(m.registry, timeout=600, max_clients=4)
    await s.start("127.0.0.1", 0)
    stop = asyncio.Event()
    dropped = 0

    async def slow_client() -> None:
        nonlocal dropped
        while not stop.is_set():
            r, w = await asyncio.open_connection("127.0.0.1", s.address[1])
            w.write(b"GET /metrics HTTP/1.1\r\nHost:")  # never finished
            if await _closed_by_server(r):
                dropped += 1
            w.close()

    attackers = [asyncio.create_task(slow_client()) for _ in range(8)]
    try:
        await _until(lambda: s.displaceable >= 4 and dropped >= 8)  # churning
        for _ in range(20):
            data = await _answer_of(_scrape_sent_at_connect(s))
            assert data.startswith(b"HTTP/1.0 200 OK"), data[:100]
            assert b"migproxy_connections_total" in data
    finally:
        stop.set()
        for t in attackers:
            t.cancel()
        await asyncio.gather(*attackers, return_exceptions=True)
        await s.close()
    assert s.displaced >= 8
