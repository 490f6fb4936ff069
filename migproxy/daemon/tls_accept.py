"""The TLS handshake of an accepted connection on a route that terminates TLS towards the
source, before the connection becomes the source side of its pair.

:class:`TlsAccept` is the protocol of the accepted TCP connection while it has no TLS
session yet. It stops reading (the source's ClientHello waits in the socket), checks the
route's allow-list (a refused address costs no handshake), then runs the server handshake
(``loop.start_tls``: migproxy's server certificate, the source's client certificate
required) bounded by the route's handshake timeout. Success: the pair's source side takes
the TLS transport and the pair starts as on a plaintext route (admission, accept order,
the session). Failure (a wrong or missing client certificate, not TLS at all, a timeout):
the connection is closed, logged (``tls_handshake_failed``) and counted
(``migproxy_connections_refused_total{reason="tls_handshake"}``); nothing is opened
towards the destination.

Handshakes in progress on a route are capped at its ``max_connections``: more are refused
at once (``route_full``).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any

from migproxy.daemon.addresses import format_host_port
from migproxy.daemon.admission import Refusal
from migproxy.daemon.session import Side
from migproxy.daemon.tls import SHUTDOWN_TIMEOUT, RouteTls, handshake_error

if TYPE_CHECKING:
    from migproxy.daemon.relay import Pair

EARLY_READ_SIZE = 64 << 10  # bytes per read of data that arrives with the handshake's end


class _Early(asyncio.BufferedProtocol):
    """What the TLS layer delivers between the end of the handshake and the moment the
    pair's side takes over (asyncio reads right after the handshake, uvloop one loop turn
    later): kept, then handed to the side. At most what the last TCP reads carried."""

    def __init__(self) -> None:
        self._buf = bytearray(EARLY_READ_SIZE)
        self.data = bytearray()
        self.eof = False
        self.lost: list[Exception | None] = []

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buf)

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self._buf[:nbytes]

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


class Handshakes:
    """The TLS handshakes in progress on one route."""

    def __init__(self) -> None:
        self.running = 0


class TlsAccept(asyncio.Protocol):
    """An accepted connection of a TLS route until its handshake is done."""

    def __init__(self, pair: Pair, tls: RouteTls, handshakes: Handshakes) -> None:
        assert tls.source is not None
        self.pair = pair
        self.context: ssl.SSLContext = tls.source
        self.timeout = tls.handshake_timeout
        self.handshakes = handshakes
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: Any) -> None:
        transport.pause_reading()  # the ClientHello waits for start_tls
        pair = self.pair
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else None
        refusal = pair.registry.admission(pair.route).admit(host)
        if refusal is None:
            pair.registry.admission(pair.route).release(host)  # taken for real once up
            if self.handshakes.running >= pair.route.settings.max_connections:
                refusal = Refusal.ROUTE_FULL
        if refusal is not None:
            transport.abort()
            pair.refused = True
            pair.observer.bind(peer=format_host_port(peer))
            pair.observer.refused(refusal)
            return
        self.handshakes.running += 1
        self.task = asyncio.get_event_loop().create_task(self._handshake(transport, peer))

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # before the handshake: start_tls fails and says why

    async def _handshake(self, transport: Any, peer: Any) -> None:
        loop = asyncio.get_event_loop()
        early = _Early()
        try:
            tls: Any = await loop.start_tls(transport, early, self.context, server_side=True,
                                       ssl_handshake_timeout=self.timeout,
                                       ssl_shutdown_timeout=SHUTDOWN_TIMEOUT)
        except (OSError, TimeoutError, ssl.SSLError) as e:  # start_tls closed the transport
            transport.abort()
            pair = self.pair
            pair.refused = True
            pair.observer.bind(peer=format_host_port(peer))
            pair.observer.tls_refused(handshake_error(e))
            return
        finally:
            self.handshakes.running -= 1
        side = self.pair.src
        tls.set_protocol(side)
        side.connection_made(tls)
        if early.data:
            self.pair.data_from(Side.SOURCE, memoryview(early.data))
        if early.eof:
            side.eof_received()
        for exc in early.lost:
            side.connection_lost(exc)
