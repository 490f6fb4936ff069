"""The TLS handshake budget of source addresses (sans-IO: the caller gives the time).

A server handshake costs the event loop about 2.5 ms of CPU (the key exchange and the
signature of the server's certificate), whether it succeeds or not: a stream of
ClientHellos from one address would starve every migration relayed meanwhile. Each
source address has a bucket of ``failures`` tokens; a failed handshake (a wrong or missing
certificate, not TLS, closed or timed out before its end) takes one, and the bucket
regains ``per_second`` tokens a second, up to ``failures``. A connection from an address
whose bucket is empty is refused before its handshake
(``migproxy_connections_refused_total{reason="tls_handshake_budget"}``). A handshake that
succeeds costs nothing: a migration opening many channels at once is never refused for
it, and how many handshakes run at once from one address is bounded by ``max_per_peer``.
"""

from __future__ import annotations

DEFAULT_FAILURES = 16  # failed TLS handshakes a source address may have in a burst
PER_SECOND = 1.0  # then one more a second
KEEP_PEERS = 4096  # addresses kept before those with a full bucket are forgotten


class HandshakeBudget:
    """Failed handshakes per source address: a token bucket each (``failures`` 0: no
    limit)."""

    def __init__(self, failures: int, per_second: float = PER_SECOND) -> None:
        self.failures = failures
        self.per_second = per_second
        self._buckets: dict[str | None, tuple[float, float]] = {}  # tokens, at

    def tokens(self, peer: str | None, now: float) -> float:
        """The tokens ``peer`` has at ``now``."""
        tokens, at = self._buckets.get(peer, (float(self.failures), now))
        return min(float(self.failures), tokens + max(0.0, now - at) * self.per_second)

    def allows(self, peer: str | None, now: float) -> bool:
        """Whether a handshake from ``peer`` may start."""
        return self.failures == 0 or self.tokens(peer, now) >= 1.0

    def failed(self, peer: str | None, now: float) -> None:
        """A handshake from ``peer`` failed: it takes a token."""
        if self.failures == 0:
            return
        self._buckets[peer] = (max(0.0, self.tokens(peer, now) - 1.0), now)
        if len(self._buckets) > KEEP_PEERS:
            self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        full = float(self.failures)
        for p in [p for p in self._buckets if self.tokens(p, now) >= full]:
            del self._buckets[p]

    def __len__(self) -> int:
        return len(self._buckets)
