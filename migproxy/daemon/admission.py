"""Admission: which accepted connections a route takes (sans-IO, no sockets).

Each route has an allow-list of networks (empty: every address), a cap on its open
connections and a cap per source address. A connection over a limit is closed at once,
before a byte is read or the target is contacted, and counted
(``migproxy_connections_refused_total{reason}``). One route port carries one migration at a
time (one destination ``-incoming``), i.e. a main channel, its multifd channels (QEMU allows
up to 255) and a postcopy preempt channel: the defaults leave room for that and bound the
rest. A range route has one Admission for all its ports: its limits bound the range as a
whole, as written in its ``[[route]]``.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MAX_CONNECTIONS = 512  # open connections per route
DEFAULT_MAX_PER_PEER = 300  # open connections per source address and route


class Refusal(enum.StrEnum):
    """Why a connection was refused (the ``reason`` label of the refused counter)."""

    NOT_ALLOWED = "not_allowed"  # the source address is outside the route's allow-list
    ROUTE_FULL = "route_full"  # the route has max_connections open
    PEER_FULL = "peer_full"  # this source address has max_per_peer open on the route
    # an admitted connection that had sent no migration's bytes, closed to make room for
    # one that had, when its route or address was full (migproxy.daemon.port)
    EVICTED = "evicted"
    # the source address failed too many TLS handshakes lately, refused before another
    # one (migproxy.daemon.handshake_budget)
    TLS_HANDSHAKE_BUDGET = "tls_handshake_budget"


@dataclass(frozen=True)
class AdmissionLimits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_peer: int = DEFAULT_MAX_PER_PEER
    allow: tuple[Network, ...] = ()  # empty: every address


def parse_networks(items: Sequence[str], what: str) -> tuple[Network, ...]:
    """CIDR strings (``10.0.0.0/8``, ``2001:db8::/32``, or one address) as networks."""
    out: list[Network] = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as e:
            raise ValueError(f"{what}: {item!r} is not an address or network: {e}") from None
    return tuple(out)


class Admission:
    """The open connections of one route, by source address."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.open = 0
        self._per_peer: Counter[str | None] = Counter()

    def admit(self, peer_host: str | None) -> Refusal | None:
        """Take the connection (None) or say why not. An admitted one must be released."""
        lim = self.limits
        if lim.allow and not allowed(peer_host, lim.allow):
            return Refusal.NOT_ALLOWED
        if self.open >= lim.max_connections:
            return Refusal.ROUTE_FULL
        if self._per_peer[peer_host] >= lim.max_per_peer:
            return Refusal.PEER_FULL
        self.open += 1
        self._per_peer[peer_host] += 1
        return None

    def release(self, peer_host: str | None) -> None:
        self.open -= 1
        self._per_peer[peer_host] -= 1
        if self._per_peer[peer_host] <= 0:
            del self._per_peer[peer_host]


def allowed(peer_host: str | None, allow: tuple[Network, ...]) -> bool:
    if peer_host is None:
        return False
    try:
        ip = ipaddress.ip_address(peer_host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 on a dual-stack socket is 10.0.0.1
    return any(ip.version == net.version and ip in net for net in allow)


_allowed = allowed
