"""The metrics endpoint, served from the daemon's event loop.

prometheus-client's own server starts a thread per connection and waits for a request
forever; a few hundred half-sent requests would park as many threads next to the event
loop. This one is a few lines of HTTP/1.0 on an asyncio protocol with bounds on everything:

* one request of at most ``MAX_REQUEST`` bytes;
* each client gets ``timeout`` seconds in all, to send its request and take the answer;
* at most ``max_clients`` connections at once. A connection over the cap is not refused:
  it takes the place of the oldest connection still waiting for its request (or, if every
  connection has sent one, of the oldest one still taking its answer). So slow clients,
  however many and however often they come back, cannot keep a scraper out: a scraper
  sends its request as soon as it connects, and a request that is already there when the
  connection is accepted is always read before the connection can be displaced (a
  connection becomes displaceable only once the loop has polled it; until then it may
  hold a place over the cap, for a loop iteration or two).

``GET /metrics`` (or ``/``) answers the registry in the Prometheus text format; anything
else gets 404 or 405.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MAX_REQUEST = 8192  # bytes of request line and headers
DEFAULT_TIMEOUT = 10.0  # seconds a client has in all: to send its request, take its answer
DEFAULT_MAX_CLIENTS = 16  # connections held at once


class _Client(asyncio.Protocol):
    """One connection: reads one request head, writes one answer, closes."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.answered = False  # the request is in; the answer is being written
        self.ripe = False  # polled at least once since it was accepted: displaceable
        self.closed = False
        self._deadline: asyncio.TimerHandle | None = None

    # asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is no subclass of asyncio.Transport, though it is one.
        self.transport = cast(asyncio.Transport, transport)
        self.server.admit(self)
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.server.timeout, self.abort)
        # Ripe after the next poll of the loop has been handled: the first call runs at the
        # start of the next iteration (its poll results queued behind it), the second one
        # after them. Data already waiting at accept is therefore always read first.
        loop.call_soon(loop.call_soon, self._ripen)

    def data_received(self, data: bytes) -> None:
        if self.answered or self.closed:
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_REQUEST:
                self.abort()  # too long: just close
            return
        if end + 4 > MAX_REQUEST:
            self.abort()
            return
        self._answer(bytes(self.head[:end + 4]))

    def eof_received(self) -> bool | None:
        if not self.answered:
            self.abort()  # no complete request: just close
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()

    # --------------------------------------------------------------------------------------
    def _ripen(self) -> None:
        if not self.closed:
            self.ripe = True
            self.server.trim()

    def _answer(self, head: bytes) -> None:
        assert self.transport is not None
        self.answered = True
        self.head = bytearray()
        self.server.answering(self)
        with contextlib.suppress(Exception):
            self.transport.pause_reading()
        status, body, ctype = answer(self.server.registry, head)
        self.transport.write(f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
                             f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                             .encode("ascii") + (b"" if head.startswith(b"HEAD ") else body))
        self.transport.close()  # once the answer is written; the deadline still holds

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._done()

    def _done(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if not self.closed:
            self.closed = True
            self.server.release(self)


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, *, timeout: float = DEFAULT_TIMEOUT,
                 max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        self.registry = registry
        self.timeout = timeout
        self.max_clients = max_clients
        self.server: asyncio.Server | None = None
        # Held connections in the order they came: waiting for their request, answering.
        self._waiting: dict[_Client, None] = {}
        self._answering: dict[_Client, None] = {}
        self.displaced = 0  # connections closed to make room for a newer one

    @property
    def active(self) -> int:
        """Connections held now."""
        return len(self._waiting) + len(self._answering)

    async def start(self, host: str | None, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Client(self), host, port,
                                               reuse_address=True)

    @property
    def address(self) -> tuple[Any, ...]:
        assert self.server is not None
        return tuple(self.server.sockets[0].getsockname())

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for c in [*self._waiting, *self._answering]:
                c.abort()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None

    # bookkeeping of the clients -----------------------------------------------------------
    def admit(self, client: _Client) -> None:
        """Hold ``client``, making room for it if there are too many."""
        self._waiting[client] = None
        self.trim()

    def trim(self) -> None:
        """Over the cap, close the oldest displaceable connections: waiting ones, or when
        none waits, answering ones. Connections too new to displace (not yet polled) may
        exceed the cap until they are."""
        while self.active > self.max_clients:
            victim = (next((c for c in self._waiting if c.ripe), None) if self._waiting
                      else next((c for c in self._answering if c.ripe), None))
            if victim is None:
                return
            self.displaced += 1
            victim.abort()

    @property
    def displaceable(self) -> int:
        """Held connections that a newer one may displace (polled at least once)."""
        return sum(c.ripe for c in (*self._waiting, *self._answering))

    def answering(self, client: _Client) -> None:
        self._waiting.pop(client, None)
        self._answering[client] = None

    def release(self, client: _Client) -> None:
        self._waiting.pop(client, None)
        self._answering.pop(client, None)


def answer(registry: CollectorRegistry, head: bytes) -> tuple[str, bytes, str]:
    """Status line, body and content type for the request head ``head``."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return "400 Bad Request", b"bad request\n", "text/plain"
    method, target = parts[0], parts[1].split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
    if target not in ("/metrics", "/"):
        return "404 Not Found", b"GET /metrics\n", "text/plain"
    return "200 OK", generate_latest(registry), CONTENT_TYPE_LATEST
