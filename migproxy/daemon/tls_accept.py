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
# uvloop reads an accepted connection once before the handshake can start (it starts reading
# after connection_made, whatever that did): those first bytes of the ClientHello are handed
# to the TLS layer. A client's first flight is one ClientHello (at most 16 KiB + 5 bytes).
HELLO_LIMIT = 64 << 10


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
        self.transport: Any = None
        self.hello = bytearray()  # read before the TLS layer took the connection

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.pause_reading()  # the ClientHello waits for start_tls (asyncio)
        pair = self.pair
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else None
        admission = pair.registry.admission(pair.route)
        refusal = admission.admit(host)
        if refusal is None:
            admission.release(host)  # taken for real once the handshake is done
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

    def data_received(self, data: bytes) -> None:
        self.transport.pause_reading()  # uvloop: the one read before start_tls
        self.hello += data

    def eof_received(self) -> bool:
        return True  # the handshake fails and says so

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # before the handshake: start_tls fails and says why

    async def _start_tls(self, transport: Any, protocol: _Early) -> Any:
        """``loop.start_tls``, with the bytes already read handed to the TLS layer first."""
        loop = asyncio.get_event_loop()
        if len(self.hello) > HELLO_LIMIT:
            raise ssl.SSLError(f"no TLS handshake in the first {HELLO_LIMIT} bytes")
        started = asyncio.ensure_future(loop.start_tls(
            transport, protocol, self.context, server_side=True,
            ssl_handshake_timeout=self.timeout, ssl_shutdown_timeout=SHUTDOWN_TIMEOUT))
        while transport.get_protocol() is self and not started.done():
            await asyncio.sleep(0)  # start_tls installs its protocol, schedules its start
        await asyncio.sleep(0)  # call_soon is FIFO: the TLS protocol's connection_made ran
        tls_protocol = transport.get_protocol()
        hello = memoryview(self.hello)
        while hello and tls_protocol is not self and not started.done():
            buf = tls_protocol.get_buffer(len(hello))
            n = min(len(buf), len(hello))
            buf[:n] = hello[:n]
            tls_protocol.buffer_updated(n)
            hello = hello[n:]
        return await started

    async def _handshake(self, transport: Any, peer: Any) -> None:
        early = _Early()
        try:
            tls: Any = await self._start_tls(transport, early)
        except Exception as e:  # OSError, SSLError, TimeoutError: start_tls closed it
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
