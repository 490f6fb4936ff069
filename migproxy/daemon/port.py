"""The sans-IO state of the listening ports of a route: what spans connections.

A :class:`~migproxy.daemon.session.Session` decides one connection. What depends on the
other connections of a listening port (one port carries one migration: its main, multifd
and postcopy preempt channels) is decided here, in :class:`PortState`, and what depends on
every connection of a route (a range route: all its ports together) in
:class:`RouteAdmission`. Both take notifications from the executor about sessions
(accepted, authenticated, asked for the target with these first bytes, classified,
connected, closed, a classification deadline passed, a time came) and return commands
addressed to sessions by their connection id (:class:`Connect`, :class:`Wake`,
:class:`Expire`, :class:`Evict`, :class:`Refuse`) or to the executor (:class:`WakeAt`).
Nothing here touches a socket, a clock (times are passed in) or another session.

**The order in which connections reach the target** (destinations that assign channels by
arrival, QEMU 7.2 and TLS, must see the main channel first):

* A connection asks for its target connection on its first bytes (on a route that
  terminates TLS: its first bytes after the handshake). One connection of a port connects
  at a time (*the connect slot*), in accept order among those that may go.
* A main channel (``QEVM``) goes at once. Another connection waits while a connection
  from the same address accepted on the same port at most ``ACCEPT_ORDER_WINDOW`` before
  it has not gone yet (it may be its main channel, whose first bytes come later), unless a
  main channel from that address is already connected on the port; it waits at most
  ``ACCEPT_ORDER_WINDOW``.
* **A connection that has sent nothing never reaches the target before a main channel**,
  whoever opened it: a port scanner or health check on the source host, opened just before
  a migration, stays where it is (attack M1). Only two exceptions, both about a migration
  that is certainly on: once a main channel from the same address is classified on the
  port, the silent connections from there accepted after it are connected at once
  (:class:`Wake`: QEMU's postcopy preempt channel is silent until postcopy starts and the
  destination waits for it); and a multifd channel (which QEMU opens after its main
  channel) that has waited ``ACCEPT_ORDER_WINDOW`` without any main channel from its
  address having sent a byte pulls the silent connections it waited for in, in accept
  order, before itself (one of them must be its main channel: a real QEMU main channel
  sends within milliseconds, so this is the fallback of an odd source, never of a scan).
* A connection silent at its classification deadline is closed (:class:`Expire`), unless
  a main channel from the same address is open on the port.

**Admission** (attack M2: idle connections must never make a real migration be refused):
a route admits connections up to ``max_connections``, and ``max_per_peer`` per source
address. A connection over a limit is not refused at once: it waits, unadmitted, for its
first bytes, at most ``ADMISSION_GRACE`` seconds (*probation*). If they are a migration's
(``QEVM``, the multifd magic, a TLS handshake record; on a TLS route: a handshake with a
valid client certificate; or it is a silent channel of an open migration), the oldest
connection of the full scope that has not been recognised so (silent, or fewer than 4
bytes) is closed to make room (:class:`Evict`, counted as ``evicted``); if every admitted
connection is recognised, or its bytes are not a migration's, or none came in time, it is
refused with the limit's reason (:class:`Refuse`). At most ``PROBATION_MAX`` connections
of a route wait so; one more closes the oldest of them (also refused). Idle connections
can fill the limits, but never keep a migration out: its channels send their first bytes
at once and take the place of the oldest idle ones.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from migproxy.daemon.admission import Admission, AdmissionLimits, Refusal, allowed
from migproxy.daemon.session import ACCEPT_ORDER_WINDOW, Channel, classify

ADMISSION_GRACE = 2.0  # seconds an over-limit connection has to show a migration's bytes
PROBATION_MAX = 64  # over-limit connections of a route waiting for their first bytes
RECOGNISED = frozenset((Channel.MAIN, Channel.MULTIFD, Channel.TLS))


# -- commands -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Connect:
    """Open ``conn``'s target connection now (it holds the port's connect slot until
    ``connect_done``)."""

    conn: int


@dataclass(frozen=True, slots=True)
class Wake:
    """``conn`` is a silent channel of an open migration (or pulled in by its multifd
    channel): make its session ask for the target although it sent nothing
    (``Session.on_migration_open``)."""

    conn: int


@dataclass(frozen=True, slots=True)
class Expire:
    """``conn`` is still unclassified at its classification deadline and may not stay:
    close it (``Session.on_classify_deadline``)."""

    conn: int


@dataclass(frozen=True, slots=True)
class Evict:
    """Close ``conn``, an admitted connection that sent no migration's bytes, to make room
    for one that did (``Session.on_evicted``)."""

    conn: int


@dataclass(frozen=True, slots=True)
class Refuse:
    """Close ``conn`` at once; it was never admitted (its session does not finish)."""

    conn: int
    reason: Refusal


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Call ``tick(now)`` of this port at ``when`` (monotonic seconds; replaces the earlier
    request, which was later)."""

    when: float


PortCommand = Connect | Wake | Expire | Evict | Refuse | WakeAt


# -- state ----------------------------------------------------------------------------------

class Stage(enum.StrEnum):
    SILENT = "silent"  # accepted; has not asked for the target
    WAITING = "waiting"  # asked (or woken, pulled in): waits for the connect slot
    CONNECTING = "connecting"  # holds the slot
    CONNECTED = "connected"  # its target connection is up (or failed: closing)


@dataclass(slots=True)
class _Conn:
    id: int
    peer: str | None
    accepted: float
    stage: Stage = Stage.SILENT
    asked: bool = False  # its session asked for the target (Connect may be sent)
    kind: Channel | None = None  # what its first bytes say (None: fewer than 4, or none)
    channel: Channel | None = None  # what its session classified it as
    authenticated: bool = False  # a TLS route: its handshake succeeded
    woken: bool = False  # a silent channel connected for an open migration
    wait_until: float | None = None  # waits for earlier connections at most until then
    waited: bool = False  # that time came


@dataclass(slots=True)
class _Member:
    peer: str | None
    port: PortState
    recognised: bool = False  # a migration's channel: never evicted
    probation: float | None = None  # over a limit: unadmitted until then
    refusal: Refusal | None = None  # the limit it is over


class RouteAdmission:
    """Admission of one route (for a range: of all its ports), with probation and eviction
    (see the module docstring). Connections are known by id, in accept order."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.counts = Admission(limits)  # the admitted connections, by source address
        self._members: dict[int, _Member] = {}  # admitted and on probation, accept order

    @property
    def limits(self) -> AdmissionLimits:
        return self.counts.limits

    def __len__(self) -> int:
        return len(self._members)

    def on_probation(self, conn: int) -> bool:
        m = self._members.get(conn)
        return m is not None and m.probation is not None

    def probation_deadline(self, conn: int) -> float | None:
        m = self._members.get(conn)
        return None if m is None else m.probation

    def accept(self, conn: int, peer: str | None, port: PortState,
               now: float) -> list[PortCommand]:
        """A new connection: admitted, on probation, or refused (not allowed)."""
        if self.limits.allow and not allowed(peer, self.limits.allow):
            return [Refuse(conn, Refusal.NOT_ALLOWED)]
        member = _Member(peer, port)
        refusal = self.counts.admit(peer)
        out: list[PortCommand] = []
        if refusal is not None:
            waiting = [c for c, m in self._members.items() if m.probation is not None]
            if len(waiting) >= PROBATION_MAX:
                out.extend(self._refuse(waiting[0]))
            member.probation = now + ADMISSION_GRACE
            member.refusal = refusal
        self._members[conn] = member
        return out

    def recognise(self, conn: int) -> list[PortCommand]:
        """``conn`` showed a migration's bytes: it is never evicted; one on probation is
        admitted in place of the oldest unrecognised connection of the full scope, or
        refused."""
        m = self._members.get(conn)
        if m is None or m.recognised:
            return []
        m.recognised = True
        if m.probation is None:
            return []
        out: list[PortCommand] = []
        for _ in range(3):  # the address's limit, the route's, then admitted
            refusal = self.counts.admit(m.peer)
            if refusal is None:
                m.probation = m.refusal = None
                return out
            victim = self._oldest_unrecognised(m.peer if refusal == Refusal.PEER_FULL
                                               else None)
            if victim is None:
                return out + self._refuse(conn, refusal)
            out.extend(self._evict(victim))
        return out + self._refuse(conn, m.refusal or Refusal.ROUTE_FULL)

    def unrecognised(self, conn: int) -> list[PortCommand]:
        """``conn`` sent bytes that are no migration's: one on probation is refused now."""
        m = self._members.get(conn)
        if m is None or m.probation is None:
            return []
        return self._refuse(conn, m.refusal or Refusal.ROUTE_FULL)

    def expired(self, now: float) -> list[PortCommand]:
        """Probations that ran out by ``now``."""
        out: list[PortCommand] = []
        for c, m in list(self._members.items()):
            if m.probation is not None and m.probation <= now:
                out.extend(self._refuse(c, m.refusal or Refusal.ROUTE_FULL))
        return out

    def release(self, conn: int) -> None:
        """``conn`` is gone (idempotent)."""
        m = self._members.pop(conn, None)
        if m is not None and m.probation is None:
            self.counts.release(m.peer)

    def _oldest_unrecognised(self, peer: str | None) -> int | None:
        for c, m in self._members.items():
            if not m.recognised and m.probation is None and (peer is None or m.peer == peer):
                return c
        return None

    def _evict(self, conn: int) -> list[PortCommand]:
        m = self._members[conn]
        self.release(conn)
        m.port.forget(conn)
        return [Evict(conn)]

    def _refuse(self, conn: int, reason: Refusal | None = None) -> list[PortCommand]:
        m = self._members.pop(conn)
        m.port.forget(conn)
        return [Refuse(conn, reason or m.refusal or Refusal.ROUTE_FULL)]


@dataclass(slots=True)
class PortState:
    """One listening port of a route: accept order, the connect slot, its main channels,
    classification deadlines (see the module docstring). ``wake_silent``: a plaintext
    source (on a TLS route only a connection whose handshake succeeded is woken)."""

    admission: RouteAdmission
    tls_source: bool = False
    _conns: dict[int, _Conn] = field(default_factory=dict)  # accept order
    _slot: int | None = None  # the connection that holds the connect slot
    _armed: float | None = None  # the WakeAt last asked for

    def __len__(self) -> int:
        return len(self._conns)

    # -- notifications ---------------------------------------------------------------------

    def accepted(self, conn: int, peer: str | None, now: float) -> list[PortCommand]:
        out = self.admission.accept(conn, peer, self, now)
        if any(isinstance(c, Refuse) and c.conn == conn for c in out):
            return out
        c = self._conns[conn] = _Conn(conn, peer, now)
        if not self.tls_source and self._main_open(c):
            out.extend(self._wake(c))
        out.extend(self._settle(now))
        return out

    def authenticated(self, conn: int, now: float) -> list[PortCommand]:
        """A TLS route: ``conn``'s handshake succeeded (a valid client certificate)."""
        c = self._conns.get(conn)
        if c is None:
            return []
        c.authenticated = True
        out = self.admission.recognise(conn)
        if conn in self._conns and self._main_open(c):
            out.extend(self._wake(c))
        out.extend(self._settle(now))
        return out

    def requested(self, conn: int, head: bytes, now: float) -> list[PortCommand]:
        """``conn``'s session asks for its target connection; ``head``: the first bytes
        it sent (empty for a woken one)."""
        c = self._conns.get(conn)
        if c is None:
            return []
        out: list[PortCommand] = []
        c.asked = True
        if c.stage == Stage.SILENT:
            c.kind = classify(head) if len(head) >= 4 else None
            if c.kind in RECOGNISED or c.authenticated:
                out.extend(self.admission.recognise(conn))
            else:
                out.extend(self.admission.unrecognised(conn))
            if conn not in self._conns:
                return out
            c.stage = Stage.WAITING
            if c.kind != Channel.MAIN:  # (a main channel never waits)
                c.wait_until = now + ACCEPT_ORDER_WINDOW
        out.extend(self._settle(now))
        return out

    def classified(self, conn: int, channel: Channel, now: float) -> list[PortCommand]:
        """``conn``'s session classified it (once connected, from its first 4 bytes). A
        main channel's later silent connections from its address are its channels."""
        c = self._conns.get(conn)
        if c is None:
            return []
        c.channel = channel
        out: list[PortCommand] = []
        if channel == Channel.MAIN:
            for o in list(self._conns.values()):
                if (o.id in self._conns and o.stage == Stage.SILENT and o.peer == c.peer
                        and o.accepted >= c.accepted and o.id != c.id
                        and (not self.tls_source or o.authenticated)):
                    out.extend(self._wake(o))
        out.extend(self._settle(now))
        return out

    def connect_done(self, conn: int, now: float) -> list[PortCommand]:
        """``conn``'s target connection is up, or failed: the slot is free."""
        c = self._conns.get(conn)
        if c is not None:
            c.stage = Stage.CONNECTED
        if self._slot == conn:
            self._slot = None
        return self._settle(now)

    def closed(self, conn: int, now: float) -> list[PortCommand]:
        """``conn``'s session is over."""
        self.admission.release(conn)
        self.forget(conn)
        return self._settle(now)

    def classify_deadline(self, conn: int, now: float) -> list[PortCommand]:
        """``conn``'s classification deadline passed (its session armed it)."""
        c = self._conns.get(conn)
        if c is None or c.channel is not None or self._main_open(c):
            return []
        return [Expire(conn)]

    def tick(self, now: float) -> list[PortCommand]:
        """A time asked for with :class:`WakeAt` came."""
        self._armed = None
        out = self.admission.expired(now)
        out.extend(self._settle(now))
        return out

    # -- for the executor's tests -----------------------------------------------------------

    def take_slot(self) -> bool:
        """Hold the connect slot from outside (no connection gets it meanwhile)."""
        if self._slot is not None:
            return False
        self._slot = -1
        return True

    def release_slot(self, now: float) -> list[PortCommand]:
        if self._slot == -1:
            self._slot = None
        return self._settle(now)

    # -- inside -----------------------------------------------------------------------------

    def forget(self, conn: int) -> None:
        self._conns.pop(conn, None)

    def _main_open(self, c: _Conn) -> bool:
        """A main channel from ``c``'s address is open on this port."""
        return any(o.channel == Channel.MAIN and o.peer == c.peer and o.id != c.id
                   for o in self._conns.values())

    def _main_connected(self, c: _Conn) -> bool:
        return any(o.peer == c.peer and o.id != c.id and Channel.MAIN in (o.kind, o.channel)
                   and o.stage in (Stage.CONNECTING, Stage.CONNECTED)
                   for o in self._conns.values())

    def _wake(self, c: _Conn) -> list[PortCommand]:
        c.woken = True
        out = self.admission.recognise(c.id)
        if c.id not in self._conns:
            return out
        c.stage = Stage.WAITING
        c.wait_until = None
        out.append(Wake(c.id))
        return out

    def _before(self, c: _Conn) -> list[_Conn]:
        """The connections ``c`` waits for: accepted before it on this port from its
        address within the window, that have not gone yet."""
        since = c.accepted - ACCEPT_ORDER_WINDOW
        out = []
        for o in self._conns.values():
            if o is c:
                break
            if o.peer == c.peer and o.accepted >= since and \
                    o.stage in (Stage.SILENT, Stage.WAITING):
                out.append(o)
        return out

    def _ready(self, c: _Conn, now: float, out: list[PortCommand]) -> bool:
        """Whether ``c`` may take the slot now (may wake the connections it pulls in)."""
        if c.stage != Stage.WAITING:
            return False
        if c.kind == Channel.MAIN or c.woken or self._main_connected(c):
            return True
        before = self._before(c)
        if not c.waited and c.wait_until is not None and now >= c.wait_until:
            c.waited = True
            if c.kind == Channel.MULTIFD:
                # Its main channel came before it and must be one of these: the silent
                # ones are pulled in, in accept order, ahead of it.
                for o in before:
                    if o.stage == Stage.SILENT:
                        out.extend(self._wake(o))
        if c.waited:
            return not any(o.stage == Stage.WAITING for o in before)
        return not before

    def _settle(self, now: float) -> list[PortCommand]:
        """Give the free slot to the first connection that may go, in accept order; ask
        for the next time something changes by itself."""
        out: list[PortCommand] = []
        again = self._slot is None
        while again:
            again = False
            for c in list(self._conns.values()):
                woke = len(out)
                ready = c.id in self._conns and self._ready(c, now, out)
                if len(out) != woke:
                    again = True  # it pulled earlier ones in: they go first
                    break
                if ready:
                    if c.asked:
                        self._slot = c.id
                        c.stage = Stage.CONNECTING
                        out.append(Connect(c.id))
                    break  # an earlier one that may go goes first: wait for it to ask
        due = [c.wait_until for c in self._conns.values()
               if c.stage == Stage.WAITING and c.wait_until is not None and not c.waited]
        due += [d for d in (self.admission.probation_deadline(c) for c in self._conns)
                if d is not None]
        when = min(due, default=None)
        if when is not None and (self._armed is None or when < self._armed):
            # (a later one is asked for when the earlier one comes: tick)
            self._armed = when
            out.append(WakeAt(when))
        return out
