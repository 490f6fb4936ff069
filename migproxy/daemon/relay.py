"""The asyncio/uvloop executor of migration sessions: sockets in, session commands out.

Each accepted connection gets a :class:`Pair`: two ``BufferedProtocol`` sides (source and
destination) and one sans-IO :class:`~migproxy.daemon.session.Session` that decides
everything. The pair turns transport callbacks into session events and carries out the
commands the session returns; metrics and logs go through a
:class:`~migproxy.daemon.observe.PairObserver`. What spans connections (accept order, the
connect slot, open main channels, classification deadlines, admission) is decided by the
sans-IO :class:`~migproxy.daemon.port.PortState` of the listening port: the pair tells it
what its session did and carries out the commands it returns. Session and port commands go
through one queue (:class:`PairRegistry`): a command that leads to another session's
commands appends them, and nothing runs inside another pair's commands.

I/O uses ``BufferedProtocol`` with large receive buffers. Data handed to a transport may
still be referenced by it after ``write()`` returns (when it could not all be sent at
once), so a side only reuses its receive buffer when the peer transport has nothing queued;
otherwise it takes a fresh one.

A connection the session offers (``Splice``) is handed to a kernel relay
(:mod:`migproxy.daemon.splice`) once nothing is queued towards either side: its sockets
leave the event loop, and the session hears only how the relay ended.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from migproxy.daemon.addresses import format_host_port
from migproxy.daemon.admission import Refusal
from migproxy.daemon.observe import PairObserver
from migproxy.daemon.port import (
    Connect,
    Evict,
    Expire,
    PortCommand,
    PortState,
    Refuse,
    RouteAdmission,
    Wake,
    WakeAt,
)
from migproxy.daemon.session import (
    Classified,
    Close,
    Command,
    Finished,
    Forward,
    HalfClose,
    Log,
    OpenTarget,
    PauseReading,
    Report,
    RequestTimer,
    ResumeReading,
    Session,
    SessionSettings,
    Side,
    Splice,
    Timer,
)
from migproxy.daemon.splice import KernelRelay, KernelRelays, RelayEnd
from migproxy.daemon.tls import handshake_error
from migproxy.daemon.tls_legs import connect, end_without_close_notify, passes_close_notify
from migproxy.stream.policy import HoldBudget

if TYPE_CHECKING:
    from migproxy.daemon.config import Route
    from migproxy.daemon.metrics import Metrics

INITIAL_READ_SIZE = 64 << 10  # an idle or small connection never holds more
READ_SIZE = 1 << 20  # a side's receive buffer grows to this while reads fill it
RETIRED_BUFFERS = 4  # receive buffers a side keeps for reuse once no write refers to them
# Before a connection goes to the kernel relay, what its transports still queue must be
# written: reading pauses, and the handover waits this long at most (polling), else the
# connection stays on the event-loop path.
HANDOVER_WAIT = 5.0  # seconds
HANDOVER_POLL = 0.002  # seconds


def unreferenced(buf: bytearray) -> bool:
    """Whether no view of ``buf`` exists any more (no queued write can read it): a
    bytearray cannot be resized while it is exported, so try a resize that changes
    nothing in the end."""
    try:
        buf.append(0)
    except BufferError:
        return False
    del buf[-1]
    return True


def next_buffer(retired: list[bytearray], old: bytearray, size: int) -> bytearray:
    """A receive buffer of ``size`` bytes to read into instead of ``old``, which a queued
    write may still refer to: an earlier one from ``retired`` that nothing refers to any
    more, else a new one. ``old`` joins ``retired`` (at most RETIRED_BUFFERS are kept; one
    dropped is freed when its last write is done). The caller must not hold a view of
    ``old`` or of the buffers in ``retired``."""
    reuse = next((b for b in retired if len(b) == size and unreferenced(b)), None)
    if reuse is not None:
        retired.remove(reuse)
    retired.append(old)
    if len(retired) > RETIRED_BUFFERS:
        del retired[0]
    return reuse if reuse is not None else bytearray(size)
_ids = itertools.count(1)
_DIRECTION = {Side.DESTINATION: "to_destination", Side.SOURCE: "to_source"}


class _Side(asyncio.BufferedProtocol):
    """One TCP connection of a pair."""

    def __init__(self, pair: Pair, side: Side) -> None:
        self.pair = pair
        self.side = side
        self.transport: Any = None  # asyncio or uvloop transport
        self.read_size = INITIAL_READ_SIZE
        self._buf = bytearray(self.read_size)
        self._mv = memoryview(self._buf)
        self._retired: list[bytearray] = []  # earlier buffers, maybe still being written
        self.closed = False
        self.handed_over = False  # the socket belongs to a kernel relay now
        self.eof = False  # the peer ended its direction (FIN, or TLS close_notify)
        self.tcp: Any = None  # a TLS leg: the TCP transport under ``transport``
        self.bare = False  # a TLS peer that ended with a bare TCP close, no close_notify
        # migproxy ends this TLS leg with a bare TCP close (then it takes no close()):
        self.ending: asyncio.Task[None] | None = None
        self._pause_reasons: set[str] = set()

    # reading control ------------------------------------------------------------------
    def pause(self, reason: str) -> None:
        # Asked again on every read that should not have come: uvloop starts reading
        # after connection_made returns, so a pause requested inside it is lost, and a
        # connecting session would then take in the whole stream (pause_reading() on a
        # paused transport does nothing).
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def fresh_buffer(self) -> None:
        """The peer transport still queues data that may point into the current buffer:
        read into another one. The old one lives as long as the transport needs it; an
        earlier one that no write refers to any more is reused (allocating and zeroing a
        1 MiB buffer per read cost an eighth of the daemon's time under backpressure)."""
        del self._mv  # our own view: the reuse test must see only the transport's
        self._buf = next_buffer(self._retired, self._buf, self.read_size)
        self._mv = memoryview(self._buf)

    # protocol callbacks -----------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        hw = self.pair.route.settings.high_water
        transport.set_write_buffer_limits(high=hw, low=hw // 4)
        if self._pause_reasons:  # paused before the transport existed
            transport.pause_reading()
        if self.side is Side.SOURCE and not self.pair.admitted:
            self.pair.accepted()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._mv

    def buffer_updated(self, nbytes: int) -> None:
        full = nbytes == self.read_size
        self.pair.data_from(self.side, self._mv[:nbytes])
        if full and self.read_size < READ_SIZE:
            # Reads fill the buffer: a bulk transfer. Read into a larger one from now on
            # (the old one stays alive as long as a queued write refers to it).
            self.read_size = min(self.read_size * 4, READ_SIZE)
            self.fresh_buffer()

    def eof_received(self) -> bool:
        if self.handed_over:
            return True
        self.eof = True
        self.pair.run(self.pair.session.on_eof(self.side, time.monotonic()))
        if self.ending:  # TLS, already ended with a bare FIN: close_notify cannot be
            self.transport.abort()  # answered (uvloop would try, and fail)
        # Keep the other direction open (half-close); a TLS transport closes anyway (and
        # warns if asked not to).
        return self.transport.get_extra_info("ssl_object") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.handed_over:
            return  # the transport let go of its socket; the kernel relay has a duplicate
        if exc is None and self.transport is not None and \
                self.transport.get_extra_info("ssl_object") is not None:
            # A TLS leg ends as a whole (no half-close): after the peer's close_notify, or
            # a bare TCP close (QEMU 10.0 ends its main channel so; uvloop then reports
            # no EOF, only this). Either way the end of that direction, not a loss: the
            # other leg goes on until it ends too.
            if not self.eof:
                self.eof = self.bare = True
                self.pair.run(self.pair.session.on_eof(self.side, time.monotonic()))
            return
        error = None if exc is None else (str(exc) or type(exc).__name__)
        self.pair.run(self.pair.session.on_lost(self.side, error, time.monotonic()))

    def pause_writing(self) -> None:
        if not self.handed_over:
            self.pair.run(self.pair.session.on_backpressure(self.side, True))

    def resume_writing(self) -> None:
        if not self.handed_over:
            self.pair.run(self.pair.session.on_backpressure(self.side, False))


class Pair:
    """An accepted connection and its connection to the target: executes one session.
    ``offset`` is the listening port's place in the route's range (0 for a one-port
    route): the connection goes to the target port at the same offset."""

    def __init__(self, route: Route, metrics: Metrics, registry: PairRegistry,
                 offset: int = 0) -> None:
        self.route = route
        self.offset = offset
        self.target = route.target.at(offset)
        self.registry = registry
        self.conn = next(_ids)  # its id for the port state
        self.id = f"{self.conn:04d}"
        self.port = registry.port(route, offset)
        st = route.settings
        self.session = Session(SessionSettings(
            route.engine_config(registry.hold_budget),
            st.idle_timeout, end_quiet=st.end_quiet, classify_timeout=st.classify_timeout,
            splice=registry.kernel_relays.threads > 0),
            time.monotonic())
        self.sides = {Side.SOURCE: _Side(self, Side.SOURCE),
                      Side.DESTINATION: _Side(self, Side.DESTINATION)}
        self.src = self.sides[Side.SOURCE]
        self.dst = self.sides[Side.DESTINATION]
        self.observer = PairObserver(
            metrics, structlog.get_logger("migproxy").bind(
                conn=self.id, route=str(route.listen.at(offset)), target=str(self.target)),
            profile=route.profile.name if route.profile else
            (f"destination:{route.destination.name}" if route.destination else None),
            dry_run=st.dry_run)
        self._timers: dict[Timer, asyncio.TimerHandle] = {}
        self.kernel: KernelRelay | None = None  # relays the rest, once handed over
        self.admitted = False
        self.refused = False
        self._connect_task: asyncio.Task[None] | None = None
        self.done: asyncio.Future[str] = asyncio.get_event_loop().create_future()

    @property
    def outcome(self) -> str | None:
        return self.session.outcome

    # events in ------------------------------------------------------------------------------
    def accepted(self, transport: Any = None) -> None:
        """The source connected (``transport``: its TCP transport, on a TLS route whose
        handshake follows; the session starts now, so accept order is the order in which
        the source opened its connections, whatever order their handshakes end in)."""
        transport = transport or self.src.transport
        peer = transport.get_extra_info("peername")
        self.observer.accepted(peer=format_host_port(peer))
        if isinstance(peer, tuple) and peer:
            self.session.peer_host = str(peer[0])
        self.admitted = True
        self.registry.add(self)
        port = self.port.accepted(self.conn, self.session.peer_host, time.monotonic())
        mine = [c for c in port if isinstance(c, Refuse) and c.conn == self.conn]
        if mine:
            # Closed at once: no byte read, no timer, nothing towards the target.
            self.refuse(mine[0].reason, transport)
            return
        self.run(self.session.on_accepted())
        if port:
            # Not from inside connection_made, where uvloop would lose the pause that
            # connecting (a woken channel) asks for.
            asyncio.get_event_loop().call_soon(self.registry.execute_port, self.port, port)

    def authenticated(self) -> None:
        """A TLS route: the source's handshake succeeded (a valid client certificate)."""
        self.registry.execute_port(self.port,
                                   self.port.authenticated(self.conn, time.monotonic()))

    def refuse(self, reason: Refusal, transport: Any = None) -> None:
        """Close the connection at once; it was never admitted (its session never ends)."""
        if self.refused:
            return
        self.refused = True
        for t in (transport, self.src.transport, self.src.tcp):
            if t is not None and not t.is_closing():
                t.abort()
        self.observer.refused(reason)
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        self.registry.remove(self)
        if not self.done.done():
            self.done.set_result("refused")

    def data_from(self, side: Side, data: memoryview) -> None:
        if self.refused:
            return
        s = self.session
        now = time.monotonic()
        if side is Side.SOURCE:
            self.run(s.on_source_data(data, now))
        else:
            self.run(s.on_destination_data(data, now))

    def tls_failed(self, error: str) -> None:
        """The source's TLS handshake failed (the connection is closed)."""
        if self.refused:
            return
        if not self.session.closed:
            self.observer.tls_refused(error)
        self.run(self.session.on_lost(Side.SOURCE, error, time.monotonic()))

    def abort_for_shutdown(self) -> None:
        self.run(self.session.on_shutdown(time.monotonic()))

    # commands out ---------------------------------------------------------------------------
    def run(self, commands: list[Command]) -> None:
        """Carry out the session's commands (after what the queue holds already)."""
        self.registry.execute(self, commands)

    def execute(self, commands: list[Command]) -> None:
        if self.refused:
            return  # closed at accept: the session never started
        obs = self.observer
        for c in commands:
            if isinstance(c, Forward):
                self._forward(c)
            elif isinstance(c, Report):
                obs.report(c)
            elif isinstance(c, PauseReading):
                self.sides[c.side].pause(c.reason)
            elif isinstance(c, ResumeReading):
                self.sides[c.side].resume(c.reason)
            elif isinstance(c, HalfClose):
                self._half_close(self.sides[c.to])
            elif isinstance(c, OpenTarget):
                # The port decides when (Connect): accept order, one at a time.
                self.registry.execute_port(self.port, self.port.requested(
                    self.conn, self.session.head, time.monotonic()))
            elif isinstance(c, RequestTimer):
                self._request_timer(c)
            elif isinstance(c, Splice):
                self._hand_over(c.idle_timeout)
            elif isinstance(c, Close):
                if self.kernel is not None:
                    self.kernel.stop()  # resets both (a clean end needs no command)
                for side in self.sides.values():
                    t = side.transport or side.tcp  # (tcp: a TLS handshake under way)
                    if t is not None and not t.is_closing():
                        if c.abort:
                            t.abort()
                        elif side.ending is None:  # (that one ends by itself)
                            t.close()
            elif isinstance(c, Classified):
                obs.classified(c)
                self.registry.execute_port(self.port, self.port.classified(
                    self.conn, c.channel, time.monotonic()))
            elif isinstance(c, Log):
                obs.logged(c)
            elif isinstance(c, Finished):
                self._finished(c)

    def port_command(self, c: PortCommand, now: float) -> None:
        """Carry out what the port state asked of this pair."""
        if self.refused:
            return
        s = self.session
        if isinstance(c, Connect):
            if self._connect_task is None:
                self._connect_task = asyncio.get_event_loop().create_task(self._connect())
        elif isinstance(c, Wake):
            self.run(s.on_migration_open())
        elif isinstance(c, Expire):
            self.run(s.on_classify_deadline(now, main_open=False))
        elif isinstance(c, Evict):
            self.run(s.on_evicted(now))
        elif isinstance(c, Refuse):
            self.refuse(c.reason)

    def _forward(self, c: Forward) -> None:
        to = self.sides[c.to]
        t = to.transport
        if t is None or to.closed or t.is_closing():
            return
        n = 0
        for chunk in c.chunks:
            if len(chunk):
                t.write(chunk)
                n += len(chunk)
        if n:
            self.observer.forwarded(_DIRECTION[c.to], n)
        if t.get_write_buffer_size():
            # The transport may hold references into the reading side's buffer.
            self.sides[c.to.peer].fresh_buffer()

    # the kernel relay --------------------------------------------------------------------
    def _hand_over(self, idle_timeout: float, deadline: float | None = None) -> None:
        """Give both sockets to a kernel relay once nothing is queued towards either; the
        session is told only if that happened (else it goes on as it was)."""
        relays = self.registry.kernel_relays
        transports = [side.transport for side in (self.src, self.dst)]
        now = time.monotonic()
        if deadline is None:
            if any(t is None for t in transports) or \
                    any(side.tcp is not None for side in self.sides.values()):
                return  # a TLS leg (tcp: under it): the kernel cannot move what Python decrypts
            for side in self.sides.values():
                side.pause("handover")
            deadline = now + HANDOVER_WAIT
        usable = (not self.session.closed and relays.has_room() and
                  all(t is not None and not t.is_closing() for t in transports))
        if usable and any(t.get_write_buffer_size() for t in transports):
            if now < deadline:
                asyncio.get_event_loop().call_later(HANDOVER_POLL, self._hand_over,
                                                    idle_timeout, deadline)
                return
            usable = False
        if not usable:
            self._resume_all("handover")
            return
        loop = asyncio.get_event_loop()
        fds: list[int] = []
        try:
            for t in transports:
                fds.append(os.dup(t.get_extra_info("socket").fileno()))
            # Reading is paused and nothing is queued: the thread may start first.
            self.kernel = relays.start(fds[0], fds[1], idle_timeout=idle_timeout,
                                       call_soon_threadsafe=loop.call_soon_threadsafe,
                                       on_progress=self._spliced, on_end=self._splice_ended)
        except (OSError, RuntimeError) as e:  # no descriptor, pipe or thread left
            for fd in fds:
                os.close(fd)
            self._resume_all("handover")
            self.observer.logged(Log("warning", "splice_unavailable",
                                     {"error": str(e) or type(e).__name__,
                                      "note": "relayed on the event loop instead"}))
            return
        for side in self.sides.values():
            side.handed_over = True
            side.transport.abort()  # closes its descriptor; the duplicates keep the sockets
        self.observer.spliced()
        self.run(self.session.on_spliced(now))

    def _resume_all(self, reason: str) -> None:
        for side in self.sides.values():
            side.resume(reason)

    def _spliced(self, to_destination: int, to_source: int) -> None:
        self.session.on_splice_progress(to_destination, to_source)
        self._count_spliced(to_destination, to_source)

    def _count_spliced(self, to_destination: int, to_source: int) -> None:
        if to_destination:
            self.observer.forwarded("to_destination", to_destination)
        if to_source:
            self.observer.forwarded("to_source", to_source)

    def _splice_ended(self, end: RelayEnd) -> None:
        self._count_spliced(end.to_destination, end.to_source)
        self.run(self.session.on_splice_end(end.how, end.side, end.error, end.to_destination,
                                            end.to_source, time.monotonic()))

    def _half_close(self, to: _Side) -> None:
        """Pass an EOF on to ``to``: FIN; on a TLS leg (no half-close) close_notify or a
        bare TCP close, as the peer leg ended (:mod:`migproxy.daemon.tls_legs`)."""
        t = to.transport
        if t is None or t.is_closing():
            return
        if t.can_write_eof():
            t.write_eof()
            return
        peer = self.sides[to.side.peer]
        if to.tcp is not None and not passes_close_notify(
                peer.tcp is not None, not peer.bare, self.session.channel):
            to.ending = asyncio.get_event_loop().create_task(
                end_without_close_notify(t, to.tcp))
        else:
            t.close()  # close_notify after the queued data

    async def _connect(self) -> None:
        t = self.target
        try:
            # The port gave this connection its connect slot: the next connection of the
            # port starts after this one is up (with TLS, after the handshake).
            self.dst.tcp = await asyncio.wait_for(
                connect(self.dst, t, self.route.tls),
                timeout=self.route.settings.connect_timeout)
        except (OSError, TimeoutError) as e:
            self.run(self.session.on_target_failed(handshake_error(e), time.monotonic()))
        else:
            self.run(self.session.on_target_connected(time.monotonic()))
        self.registry.execute_port(self.port,
                                   self.port.connect_done(self.conn, time.monotonic()))

    def _request_timer(self, c: RequestTimer) -> None:
        old = self._timers.pop(c.timer, None)
        if old is not None:
            old.cancel()
        session = self.session

        def fire() -> None:
            now = time.monotonic()
            if c.timer == Timer.CLASSIFY:  # the port decides (it knows the other pairs)
                self.registry.execute_port(self.port,
                                           self.port.classify_deadline(self.conn, now))
            else:
                self.run(session.on_timer(c.timer, now))

        self._timers[c.timer] = asyncio.get_event_loop().call_later(c.delay, fire)

    def _finished(self, c: Finished) -> None:
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        self.observer.finished(c)
        self.registry.remove(self)
        if not self.done.done():
            self.done.set_result(str(c.outcome))


PortKey = tuple[int, int]  # (id of the route, offset of the listening port in its range)


class _SlotHold:
    """Holds a port's connect slot from outside, like a lock (for tests of the executor:
    the next connection of the port stays CONNECTING meanwhile)."""

    def __init__(self, registry: PairRegistry, port: PortState) -> None:
        self.registry = registry
        self.port = port

    async def acquire(self) -> bool:
        while not self.port.take_slot():
            await asyncio.sleep(0.005)
        return True

    def release(self) -> None:
        self.registry.execute_port(self.port, self.port.release_slot(time.monotonic()))


class PairRegistry:
    """The live pairs of a daemon; the sans-IO state of each listening port (one
    migration's channels all arrive on one port of a route) and the admission of each
    route (for a range: of all its ports together); the one queue through which session
    and port commands are carried out."""

    def __init__(self, hold_budget: HoldBudget | None = None,
                 kernel_relays: KernelRelays | None = None) -> None:
        self.hold_budget = hold_budget  # shared by every pair's engine
        self.kernel_relays = kernel_relays or KernelRelays(0)
        self.pairs: set[Pair] = set()
        self._by_conn: dict[int, Pair] = {}
        self._ports: dict[PortKey, PortState] = {}
        self._admission: dict[int, RouteAdmission] = {}
        self._ticks: dict[int, asyncio.TimerHandle] = {}  # by id of the port state
        self._queue: deque[tuple[Pair, list[Command]] | tuple[PortState, list[PortCommand]]]
        self._queue = deque()
        self._draining = False
        self.changed = asyncio.Event()
        self.on_idle: Callable[[], None] | None = None  # called when the last pair closed

    def port(self, route: Route, offset: int) -> PortState:
        """The state of listening port ``offset`` of ``route``."""
        key = (id(route), offset)
        p = self._ports.get(key)
        if p is None:
            a = self._admission.get(id(route))
            if a is None:
                a = self._admission[id(route)] = RouteAdmission(route.settings.admission)
            tls_source = route.tls is not None and route.tls.source is not None
            p = self._ports[key] = PortState(a, tls_source=tls_source)
        return p

    def connect_lock(self, pair: Pair) -> _SlotHold:
        """Hold ``pair``'s port's connect slot (for tests)."""
        return _SlotHold(self, pair.port)

    # the queue ------------------------------------------------------------------------------
    def execute(self, pair: Pair, commands: list[Command]) -> None:
        """Carry out a session's commands, after those queued before them."""
        if commands:
            self._queue.append((pair, commands))
            self._drain()

    def execute_port(self, port: PortState, commands: list[PortCommand]) -> None:
        """Carry out a port state's commands, after those queued before them."""
        if commands:
            self._queue.append((port, commands))
            self._drain()

    def _drain(self) -> None:
        if self._draining:
            return  # the loop below takes it
        self._draining = True
        try:
            while self._queue:
                owner, commands = self._queue.popleft()
                if isinstance(owner, Pair):
                    owner.execute(commands)  # type: ignore[arg-type]
                else:
                    self._port_commands(owner, commands)  # type: ignore[arg-type]
        finally:
            self._draining = False

    def _port_commands(self, port: PortState, commands: list[PortCommand]) -> None:
        now = time.monotonic()
        for c in commands:
            if isinstance(c, WakeAt):
                self._tick_at(port, c.when, now)
                continue
            pair = self._by_conn.get(c.conn)
            if pair is not None:
                pair.port_command(c, now)
            elif isinstance(c, Connect):  # gone meanwhile: the slot is free again
                self.execute_port(port, port.connect_done(c.conn, now))

    def _tick_at(self, port: PortState, when: float, now: float) -> None:
        old = self._ticks.pop(id(port), None)
        if old is not None:
            old.cancel()

        def tick() -> None:
            self._ticks.pop(id(port), None)
            self.execute_port(port, port.tick(time.monotonic()))

        self._ticks[id(port)] = asyncio.get_event_loop().call_later(max(0.0, when - now),
                                                                    tick)

    # pairs ----------------------------------------------------------------------------------
    def add(self, pair: Pair) -> None:
        self.pairs.add(pair)
        self._by_conn[pair.conn] = pair
        self.changed.set()

    def remove(self, pair: Pair) -> None:
        if pair.admitted:
            pair.admitted = False
            self.execute_port(pair.port, pair.port.closed(pair.conn, time.monotonic()))
        self.pairs.discard(pair)
        self._by_conn.pop(pair.conn, None)
        self.changed.set()
        if not self.pairs and self.on_idle is not None:
            self.on_idle()
