"""The TLS legs of a pair: what each leg runs and how a TLS leg ends (no sockets here; the
executor, :mod:`migproxy.daemon.relay`, runs a :class:`~migproxy.daemon.tls_layer.TlsLayer`
over each leg's plain TCP connection, :mod:`migproxy.daemon.side`).

**Source leg** (:func:`source_layer`: migproxy's server certificate, the source's client
certificate required). The pair starts at the TCP accept: admission (a refused address
costs no handshake), then the TLS handshake budget of the source address (an address that
failed too many handshakes lately is refused before another one,
:mod:`migproxy.daemon.handshake_budget`), then the handshake, bounded by the route's
handshake timeout. Success: the pair goes on as on a plaintext route (the session sees
plaintext). Failure (a wrong or missing client certificate, not TLS at all, more than
:data:`~migproxy.daemon.tls_layer.HELLO_LIMIT` bytes without a complete handshake, a
timeout): the connection is closed, logged (``tls_handshake_failed``) and counted
(``migproxy_connections_refused_total{reason="tls_handshake"}``); nothing is opened towards
the destination. The pair's session and accept order start at the TCP accept: its
connections reach the destination in the order the source opened them, whatever order
their handshakes end in (QEMU's main channel, with Nagle on, may end its handshake after
the multifd channels opened after it end theirs): until its handshake succeeds a
connection counts as silent for the port state (:class:`~migproxy.daemon.port.PortState`),
which orders the connections of every route. A connection whose handshake succeeded is a
QEMU channel (its certificate says so): it is admitted as one and connected on its first
bytes, or at once, without waiting for them, once a main channel from its host is open, as
the silent postcopy preempt channel needs.

**Destination leg** (:func:`destination_layer`: the destination's certificate checked
against the CA and ``tls_hostname``). TCP, then the client handshake, both inside the
port's connect slot, so the next connection of the port starts after this handshake.

**Ends.** What ends a leg is passed on as it came (:func:`passes_close_notify`): the peer's
close_notify as close_notify, a bare TCP close (QEMU 10.0 ends its main channel so) as a
bare TCP close; a destination that never reads past the end of the main channel would
otherwise close with an unread close_notify, i.e. reset the connection. Either way FIN
follows at once, and the leg goes on reading its peer until that one ends too (half-close,
as on a plaintext route): a destination's return-path messages after the end of the main
channel still reach the source. A peer's close_notify is answered at once with
migproxy's own (:func:`answers_close_notify`); a peer's bare close is not answered: that
leg's own end comes when the other leg ends, passed on as it came.
"""

from __future__ import annotations

from migproxy.daemon.session import Channel
from migproxy.daemon.tls import RouteTls
from migproxy.daemon.tls_layer import TlsLayer


def source_layer(tls: RouteTls) -> TlsLayer:
    """The TLS server session of an accepted connection."""
    assert tls.source is not None
    return TlsLayer(tls.source, server_side=True)


def destination_layer(tls: RouteTls) -> TlsLayer:
    """The TLS client session of a connection to the destination."""
    assert tls.destination is not None
    return TlsLayer(tls.destination, server_side=False, server_hostname=tls.hostname)


def timed_out(timeout: float) -> str:
    """Why a handshake failed that did not end in time."""
    return f"no TLS handshake within {timeout:g} s"


def answers_close_notify() -> bool:
    """Whether a leg answers its peer's close_notify at once with its own (that leg then
    carries nothing more towards its peer): yes. A peer that ends with a two-way shutdown
    (GnuTLS ``GNUTLS_SHUT_RDWR``, OpenSSL's ``SSL_shutdown`` called twice, Python's
    ``unwrap()``) waits for it before it goes on, and, with the destination in between,
    would otherwise wait for a connection that waits for it (accept order); TLS 1.2 asks
    for it. QEMU sends nothing towards a peer that ended its channel so."""
    return True


def passes_close_notify(peer_tls: bool, peer_close_notify: bool, channel: Channel | None) -> bool:
    """Whether the end of the peer leg is passed to a TLS leg as close_notify: what a TLS
    peer sent; for a plaintext peer's FIN, close_notify except on a main channel (QEMU
    ends a main channel without it, a 10.0+ multifd channel with it)."""
    if peer_tls:
        return peer_close_notify
    return channel != Channel.MAIN
