"""The TLS legs of a pair: the handshake of an accepted connection (:class:`TlsAccept`),
the connection to a TLS destination (:func:`connect`) and how a TLS leg ends.

**Source leg.** :class:`TlsAccept` is the protocol of an accepted TCP connection while it
has no TLS session yet. It stops reading (the source's ClientHello waits in the socket),
starts the pair (admission: a refused address costs no handshake), then runs the server
handshake (``loop.start_tls``: migproxy's server certificate, the source's client
certificate required) bounded by the route's handshake timeout. Success: the pair's source
side takes the TLS transport and the pair starts as on a plaintext route (admission, accept
order, the session). Failure (a wrong or missing client certificate, not TLS at all, a
timeout): the connection is closed, logged (``tls_handshake_failed``) and counted
(``migproxy_connections_refused_total{reason="tls_handshake"}``); nothing is opened towards
the destination. The pair starts at the TCP accept (admission, accept order, the
session's timers): its connections reach the destination in the order the source opened
them, whatever order their handshakes end in (QEMU's main channel, with Nagle on, may end
its handshake after the multifd channels opened after it end theirs): until its handshake
succeeds a connection counts as silent for the port state
(:class:`~migproxy.daemon.port.PortState`), which orders the connections of every route. A
connection whose handshake succeeded is a QEMU channel (its certificate says so): it is
admitted as one and connected on its first bytes, or at once, without waiting for them,
once a main channel from its host is open, as the silent postcopy preempt channel needs.

**Destination leg.** :func:`connect` opens TCP, then runs the client handshake (the
destination's certificate checked against the CA and ``tls_hostname``); both inside the
port's connect slot, so the next connection of the port starts after this handshake.

**Ends.** TLS has no half-close in asyncio/uvloop: a TLS leg ends as a whole. What ends a
leg is passed on as it came (:func:`passes_close_notify`): the peer's close_notify as
close_notify (``close()``: after the queued data), a bare TCP close (QEMU 10.0 ends its
main channel so) as a bare TCP close (:func:`end_without_close_notify`: FIN after the
queued data). A destination that never reads past the end of the main channel would
otherwise close with an unread close_notify, i.e. reset the connection.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any

from migproxy.daemon.config import Address
from migproxy.daemon.session import Channel
from migproxy.daemon.tls import SHUTDOWN_TIMEOUT, RouteTls, handshake_error

if TYPE_CHECKING:
    from migproxy.daemon.relay import Pair

EARLY_READ_SIZE = 64 << 10  # bytes per read of data that arrives with the handshake's end
# uvloop reads an accepted connection once before the handshake can start (it starts reading
# after connection_made, whatever that did): those first bytes of the ClientHello are handed
# to the TLS layer. A client's first flight is one ClientHello (at most 16 KiB + 5 bytes).
HELLO_LIMIT = 64 << 10
DRAIN_POLL = 0.005  # seconds between two looks at a TLS leg's queue before its bare FIN


class _Early(asyncio.BufferedProtocol):
    """The TLS transport's protocol during the handshake: a failure ends here, and what the
    TLS layer delivers between the end of the handshake and the moment the pair's side
    takes over (asyncio reads right after the handshake) is kept, then handed to the side.
    At most what the last TCP reads carried."""

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

    def hand_over(self, transport: Any, protocol: asyncio.BufferedProtocol) -> None:
        """``protocol`` takes the TLS transport, and what arrived meanwhile."""
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        _feed(protocol, self.data)
        if self.eof:
            protocol.eof_received()
        for exc in self.lost:
            protocol.connection_lost(exc)


def _feed(protocol: Any, data: bytes | bytearray) -> None:
    """Give ``data`` to a buffered protocol as if it had been read."""
    view = memoryview(data)
    while view:
        buf = protocol.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


class TlsAccept(asyncio.Protocol):
    """An accepted connection of a TLS route until its handshake is done."""

    def __init__(self, pair: Pair, tls: RouteTls) -> None:
        assert tls.source is not None
        self.pair = pair
        self.context: ssl.SSLContext = tls.source
        self.timeout = tls.handshake_timeout
        self.task: asyncio.Task[None] | None = None
        self.transport: Any = None
        self.hello = bytearray()  # read before the TLS layer took the connection

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.pause_reading()  # the ClientHello waits for start_tls (asyncio)
        pair = self.pair
        pair.src.tcp = transport
        pair.accepted(transport)  # admission, accept order and the session start now
        if pair.refused:
            return
        self.task = asyncio.get_event_loop().create_task(self._handshake(transport))

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
        if tls_protocol is not self and not started.done():
            _feed(tls_protocol, self.hello)
        return await started

    async def _handshake(self, transport: Any) -> None:
        early = _Early()
        try:
            tls: Any = await self._start_tls(transport, early)
        except Exception as e:  # OSError, SSLError, TimeoutError: start_tls closed it
            transport.abort()
            self.pair.tls_failed(handshake_error(e))
            return
        if self.pair.session.closed or self.pair.refused:  # ended meanwhile (shutdown,
            tls.abort()  # the target unreachable, refused)
            return
        # An authenticated source channel: the port state admits it as a channel and
        # connects it on its first bytes, or at once if a main channel from its host is
        # open (the postcopy preempt channel is silent until a page is urgent, and the
        # destination waits for it before serving page faults).
        self.pair.authenticated()
        if self.pair.session.closed or self.pair.refused:
            tls.abort()
            return
        early.hand_over(tls, self.pair.src)


async def connect(protocol: asyncio.BufferedProtocol, target: Address,
                  tls: RouteTls | None) -> Any:
    """Connect ``protocol`` to the target, with TLS if the route has destination
    credentials; returns the TCP transport under the TLS one (None without TLS)."""
    loop = asyncio.get_event_loop()
    if tls is None or tls.destination is None:
        await loop.create_connection(lambda: protocol, target.host, target.port)
        return None
    tcp, _ = await loop.create_connection(asyncio.Protocol, target.host, target.port)
    early = _Early()  # a failed handshake is reported to it, not to the pair
    try:
        transport = await loop.start_tls(
            tcp, early, tls.destination, server_hostname=tls.hostname,
            ssl_handshake_timeout=tls.handshake_timeout, ssl_shutdown_timeout=SHUTDOWN_TIMEOUT)
    except BaseException:
        tcp.abort()
        raise
    early.hand_over(transport, protocol)
    return tcp


def passes_close_notify(peer_tls: bool, peer_close_notify: bool, channel: Channel | None) -> bool:
    """Whether the end of the peer leg is passed to a TLS leg as close_notify: what a TLS
    peer sent; for a plaintext peer's FIN, close_notify except on a main channel (QEMU
    ends a main channel without it, a 10.0+ multifd channel with it)."""
    if peer_tls:
        return peer_close_notify
    return channel != Channel.MAIN


async def end_without_close_notify(transport: Any, tcp: Any) -> None:
    """End a TLS leg as a bare TCP close: once the TLS layer handed every queued byte to
    TCP, FIN after them (the TLS layer sends nothing more); then wait for the peer to
    close, at most SHUTDOWN_TIMEOUT seconds, else drop the connection."""
    loop = asyncio.get_event_loop()
    deadline = loop.time() + SHUTDOWN_TIMEOUT
    while transport.get_write_buffer_size() and not tcp.is_closing() and \
            loop.time() < deadline:
        await asyncio.sleep(DRAIN_POLL)
    if tcp.is_closing():
        return
    if transport.get_write_buffer_size():
        tcp.abort()
        return
    tcp.write_eof()
    while not tcp.is_closing() and loop.time() < deadline:
        await asyncio.sleep(DRAIN_POLL * 10)
    if not tcp.is_closing():
        tcp.abort()
