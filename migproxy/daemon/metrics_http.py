"""The metrics endpoint, served from the daemon's event loop.

prometheus-client's own server starts a thread per connection and waits for a request
forever; a few hundred half-sent requests would park as many threads next to the event
loop. This one is a few lines of HTTP/1.0 on asyncio with bounds on everything: one request
of at most ``MAX_REQUEST`` bytes, read within ``timeout`` seconds, at most ``max_clients``
connections at once (more are closed at once), and the answer written within ``timeout``.
``GET /metrics`` (or ``/``) answers the registry in the Prometheus text format; anything
else gets 404 or 405.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MAX_REQUEST = 8192  # bytes of request line and headers
DEFAULT_TIMEOUT = 10.0  # seconds to receive a request, and to send the answer
DEFAULT_MAX_CLIENTS = 16  # connections served at once


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, *, timeout: float = DEFAULT_TIMEOUT,
                 max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        self.registry = registry
        self.timeout = timeout
        self.max_clients = max_clients
        self.active = 0
        self.server: asyncio.Server | None = None

    async def start(self, host: str | None, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, host, port, limit=MAX_REQUEST,
                                                 reuse_address=True)

    @property
    def address(self) -> tuple[Any, ...]:
        assert self.server is not None
        return tuple(self.server.sockets[0].getsockname())

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.max_clients:
            writer.transport.abort()
            return
        self.active += 1
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ConnectionError):
                return  # no complete request in time, or too long: just close
            status, body, ctype = self._answer(head)
            writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                         .encode("ascii") + (b"" if head.startswith(b"HEAD ") else body))
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(writer.drain(), self.timeout)
        finally:
            self.active -= 1
            writer.close()

    def _answer(self, head: bytes) -> tuple[str, bytes, str]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", b"bad request\n", "text/plain"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
        if target not in ("/metrics", "/"):
            return "404 Not Found", b"GET /metrics\n", "text/plain"
        return "200 OK", generate_latest(self.registry), CONTENT_TYPE_LATEST
