"""The asyncio/uvloop executor of migration sessions: sockets in, session commands out.

Each accepted connection gets a :class:`Pair`: two sides (source and destination, each a
``BufferedProtocol`` over a plain TCP transport, :mod:`migproxy.daemon.side`) and one
sans-IO :class:`~migproxy.daemon.session.Session` that decides everything. The pair turns
what its sides report into session events and carries out the commands the session
returns; metrics and logs go through a :class:`~migproxy.daemon.observe.PairObserver`.
What spans connections (accept order, the connect slot, open main channels,
classification deadlines, admission) is decided by the sans-IO
:class:`~migproxy.daemon.port.PortState` of the listening port: the pair tells it what its
session did and carries out the commands it returns, through the one queue of the
:class:`~migproxy.daemon.registry.PairRegistry`.

A TLS leg is a side with a sans-IO :class:`~migproxy.daemon.tls_layer.TlsLayer` between
TCP and the session (:mod:`migproxy.daemon.tls_legs`): the pair starts its handshakes,
bounds them in time, and passes the end of each direction on as it came.

Receive buffers (:mod:`migproxy.daemon.buffers`): data handed to a transport may still be
referenced by it after ``write()`` returns, so a side only reuses its receive buffer when
the peer transport has nothing of it queued; otherwise it takes a fresh one.

While the session says that the next source bytes are RAM records forwarded unchanged
(:meth:`~migproxy.daemon.session.Session.ram_walk`) and nothing is queued towards the
destination, a plaintext main channel's source reading and destination writing go to its
RAM pump (:mod:`migproxy.daemon.pump`), in a worker thread, until it hands back; the
session then hears what it forwarded and gets what it read beyond that as source data.

A connection the session offers (``Splice``) is handed to a kernel relay
(:mod:`migproxy.daemon.splice`) once nothing is queued towards either side: its sockets
leave the event loop, and the session hears only how the relay ended.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
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
    Refuse,
    Wake,
)
from migproxy.daemon.pump import PumpRun, PumpStatus, RamPump
from migproxy.daemon.registry import PairRegistry
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
from migproxy.daemon.side import SideProtocol
from migproxy.daemon.splice import KernelRelay, RelayEnd
from migproxy.daemon.tls import handshake_error
from migproxy.daemon.tls_legs import (
    destination_layer,
    passes_close_notify,
    source_layer,
    timed_out,
)

if TYPE_CHECKING:
    from migproxy.daemon.config import Route
    from migproxy.daemon.metrics import Metrics
    from migproxy.stream.enginestate import Chunk

# Before a connection goes to the kernel relay, what its transports still queue must be
# written: reading pauses, and the handover waits this long at most (polling), else the
# connection stays on the event-loop path.
HANDOVER_WAIT = 5.0  # seconds
HANDOVER_POLL = 0.002  # seconds
# A quiet window this short (the end of the device state, with the return path) is waited
# out on the event loop's thread, watching the source's socket, instead of sleeping: a
# loaded host wakes a sleeping daemon late (a 1 ms timer fired after 9-10 ms with both
# CPUs busy), and all of it is switchover time, the guest's downtime. Once per migration;
# the loop's other connections wait that long at most.
QUIET_SPIN_MAX = 0.005  # seconds

_ids = itertools.count(1)
_DIRECTION = {Side.DESTINATION: "to_destination", Side.SOURCE: "to_source"}


class _TlsHandshakeError(ConnectionError):
    """The destination leg's TLS handshake failed (the message says why)."""


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
        self.sides = {side: SideProtocol(self, side, st.high_water)
                      for side in (Side.SOURCE, Side.DESTINATION)}
        self.src = self.sides[Side.SOURCE]
        self.dst = self.sides[Side.DESTINATION]
        self.observer = PairObserver(
            metrics, structlog.get_logger("migproxy").bind(
                conn=self.id, route=str(route.listen.at(offset)), target=str(self.target)),
            profile=route.profile.name if route.profile else
            (f"destination:{route.destination.name}" if route.destination else None),
            dry_run=st.dry_run)
        self._timers: dict[Timer, asyncio.Handle] = {}
        self._source_read_at = 0.0  # when the last read from the source arrived
        self.kernel: KernelRelay | None = None  # relays the rest, once handed over
        self.pump: RamPump | None = None  # moves RAM records in a worker thread, at times
        self._pumping = False  # the pump runs: it reads the source and writes the target
        self._pump_off = False  # no more pump runs (the source ended, or no pump)
        self._pump_reset = True  # how the pump's sockets close once a run ends
        # While a run's leftover is fed to the session: what it sends to the destination,
        # for the next run to write first (None: not feeding a leftover)
        self._capture: list[Chunk] | None = None
        self.admitted = False
        self.refused = False
        self._connect_task: asyncio.Task[None] | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None  # the source leg's
        self._dst_handshake: asyncio.Future[None] | None = None
        self.done: asyncio.Future[str] = asyncio.get_event_loop().create_future()

    @property
    def outcome(self) -> str | None:
        return self.session.outcome

    # events in ------------------------------------------------------------------------------
    def accepted(self) -> None:
        """The source connected (on a TLS route the session starts now, before the
        handshake, so accept order is the order in which the source opened its
        connections, whatever order their handshakes end in)."""
        transport = self.src.transport
        assert transport is not None
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
            self.refuse(mine[0].reason)
            return
        tls = self.route.tls
        if tls is not None and tls.source is not None:
            if not self.registry.handshakes.allows(self.session.peer_host, time.monotonic()):
                self.refuse(Refusal.TLS_HANDSHAKE_BUDGET)  # before its handshake
                return
            self.src.start_tls(source_layer(tls))
            self._handshake_timer = asyncio.get_event_loop().call_later(
                tls.handshake_timeout, self._handshake_timed_out, tls.handshake_timeout)
        self.run(self.session.on_accepted())
        if port:
            # Not from inside connection_made, where uvloop would lose the pause that
            # connecting (a woken channel) asks for.
            asyncio.get_event_loop().call_soon(self.registry.execute_port, self.port, port)

    def authenticated(self) -> None:
        """A TLS route: the source's handshake succeeded (a valid client certificate)."""
        self.registry.execute_port(self.port,
                                   self.port.authenticated(self.conn, time.monotonic()))

    def refuse(self, reason: Refusal) -> None:
        """Close the connection at once; it was never admitted (its session never ends)."""
        if self.refused:
            return
        self.refused = True
        self.src.close(abort=True)
        self._cancel_handshake_timer()
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
            self._source_read_at = now
            self.run(s.on_source_data(data, now))
        else:
            self.run(s.on_destination_data(data, now))

    def ended(self, side: Side) -> None:
        self.run(self.session.on_eof(side, time.monotonic()))

    def lost(self, side: Side, error: str | None) -> None:
        self.run(self.session.on_lost(side, error, time.monotonic()))

    def backpressure(self, side: Side, full: bool) -> None:
        self.run(self.session.on_backpressure(side, full))

    def handshake_done(self, side: Side) -> None:
        if side is Side.DESTINATION:
            if self._dst_handshake is not None and not self._dst_handshake.done():
                self._dst_handshake.set_result(None)
            return
        self._cancel_handshake_timer()
        if self.session.closed or self.refused:  # ended meanwhile (shutdown, the target
            self.src.close(abort=True)  # unreachable, refused)
            return
        # An authenticated source channel: the port state admits it as a channel and
        # connects it on its first bytes, or at once if a main channel from its host is
        # open (the postcopy preempt channel is silent until a page is urgent, and the
        # destination waits for it before serving page faults).
        self.authenticated()
        if self.session.closed or self.refused:
            self.src.close(abort=True)

    def handshake_failed(self, side: Side, reason: str) -> None:
        if side is Side.DESTINATION:
            if self._dst_handshake is not None and not self._dst_handshake.done():
                self._dst_handshake.set_exception(_TlsHandshakeError(reason))
            return
        self._cancel_handshake_timer()
        if self.refused or self.session.closed:  # closed by migproxy (shutdown, refused)
            self.src.close(abort=True)
            return
        self.src.reset()
        self.registry.handshakes.failed(self.session.peer_host, time.monotonic())
        self.tls_failed(reason)

    def _handshake_timed_out(self, timeout: float) -> None:
        self._handshake_timer = None
        layer = self.src.tls
        if layer is None or layer.established or layer.failed or self.refused or \
                self.session.closed:
            return
        layer.failed = True
        self.src.close(abort=True)
        self.registry.handshakes.failed(self.session.peer_host, time.monotonic())
        self.tls_failed(timed_out(timeout))

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

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
        for c in commands:
            if isinstance(c, Forward):  # the hot path first
                self._forward(c)
            else:
                if self._capture is not None and type(c) not in _CAPTURE_KEEPS:
                    self._flush_capture()  # what it does must come after those bytes
                _COMMANDS[type(c)](self, c)
        if not self._pumping and not self._pump_off and self._capture is None:
            self._maybe_pump()

    def _report(self, c: Report) -> None:
        self.observer.report(c)

    def _pause(self, c: PauseReading) -> None:
        self.sides[c.side].pause(c.reason)

    def _resume(self, c: ResumeReading) -> None:
        self.sides[c.side].resume(c.reason)

    def _half_close_to(self, c: HalfClose) -> None:
        self._half_close(self.sides[c.to])

    def _target_requested(self, c: OpenTarget) -> None:
        # The port decides when (Connect): accept order, one at a time.
        self.registry.execute_port(self.port, self.port.requested(
            self.conn, self.session.head, time.monotonic()))

    def _splice(self, c: Splice) -> None:
        self._hand_over(c.idle_timeout)

    def _close(self, c: Close) -> None:
        if self.kernel is not None:
            self.kernel.stop()  # resets both (a clean end needs no command)
        self._pump_off = True
        if self.pump is not None:
            if self._pumping:
                self._pump_reset = c.abort
                self.pump.stop()  # its sockets close when the run ends (_pumped)
            else:
                self.registry.ram_pumps.close(self.pump, reset=c.abort)
        for side in self.sides.values():
            side.close(abort=c.abort)

    def _classified(self, c: Classified) -> None:
        self.observer.classified(c)
        self.registry.execute_port(self.port, self.port.classified(
            self.conn, c.channel, time.monotonic()))

    def _log(self, c: Log) -> None:
        self.observer.logged(c)

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
        if c.to is Side.DESTINATION:
            # The pump writes the destination while it runs; the session sends it nothing
            # meanwhile (the source is read by the pump, and nothing else sends there).
            assert not self._pumping, "a Forward to the destination while the pump runs"
            if self._capture is not None:
                self._capture.extend(c.chunks)  # counted when written (or handed over)
                return
        to = self.sides[c.to]
        t = to.transport
        if t is None or to.closed or t.is_closing() or to.write_ended:
            return
        n = 0
        for chunk in c.chunks:
            if len(chunk):
                to.write(chunk)
                n += len(chunk)
        if n:
            self.observer.forwarded(_DIRECTION[c.to], n)
        if to.holds_references():
            # The transport may hold references into the reading side's buffer.
            self.sides[c.to.peer].fresh_buffer()

    # the RAM pump ------------------------------------------------------------------------
    def _maybe_pump(self, prefix: list[Chunk] | None = None) -> bool:
        """Start a pump run if the session allows one now (RAM records next), both legs
        are plaintext and open, the source is read for no other reason than this, nothing
        is queued towards the destination, and a worker is free. The run writes
        ``prefix`` first. Whether it started."""
        pumps = self.registry.ram_pumps
        if not pumps.has_room(self.pump) or self.kernel is not None or self.refused:
            return False
        walk = self.session.ram_walk()
        if walk is None or not RamPump.can_walk(walk):
            return False
        src, dst = self.src, self.dst
        ts, td = src.transport, dst.transport
        if (ts is None or td is None or src.tls is not None or dst.tls is not None
                or src.closed or dst.closed or src.eof or dst.write_ended or ts.is_closing()
                or td.is_closing() or src.paused_except("pump")
                or td.get_write_buffer_size()):
            return False
        if self.pump is None:
            try:
                self.pump = RamPump(ts.get_extra_info("socket").fileno(),
                                    td.get_extra_info("socket").fileno(), pumps.path)
            except (OSError, AttributeError) as e:  # no descriptor left, no socket
                self._pump_off = True
                self.observer.logged(Log("warning", "ram_pump_unavailable", {
                    "error": str(e) or type(e).__name__,
                    "note": "RAM relayed on the event loop instead"}))
                return False
            self.observer.logged(Log("debug", "ram_pump", {"path": str(self.pump.path)}))
        src.pause("pump")
        self._pumping = True
        data: Chunk | None = None
        if prefix:
            data = prefix[0] if len(prefix) == 1 else b"".join(prefix)
            if len(data):
                self.observer.forwarded("to_destination", len(data))
        pumps.start(self.pump, walk, data, self._pumped)
        return True

    def _pumped(self, run: PumpRun | BaseException) -> None:
        """A pump run ended (on the event loop): account for what it forwarded, feed what
        it read beyond that, and run it again or read on the event loop."""
        self._pumping = False
        pump = self.pump
        assert pump is not None
        self.observer.pumped("internal_error" if isinstance(run, BaseException)
                             else run.status.name.lower())
        if self.session.closed or self.refused:
            self.registry.ram_pumps.close(pump, reset=self._pump_reset)
            return
        now = time.monotonic()
        if isinstance(run, BaseException):  # a bug: where the stream is is not known
            self._pump_off = True
            self.lost(Side.SOURCE, f"the RAM pump failed: {run!r}")
            return
        if run.forwarded:
            self._source_read_at = now
            self.observer.forwarded("to_destination", run.forwarded)
        if run.lost_position:
            self._pump_off = True
            side = Side.DESTINATION if run.status == PumpStatus.WRITE_ERROR else Side.SOURCE
            self.lost(side, run.error or f"the RAM pump stopped ({run.status.name})")
            return
        if run.forwarded:
            try:
                self.session.on_source_walked(run.forwarded, run.walk, run.skip_left,
                                              run.pages, run.zeros, now)
            except ValueError as e:  # a bug: the engine cannot say where the stream is
                self._pump_off = True
                self.lost(Side.SOURCE, f"the RAM pump and the engine disagree: {e}")
                return
        if run.status == PumpStatus.PIPE_ERROR:
            pump.stop_splicing()
            self.observer.logged(Log("warning", "ram_pump_splice_failed", {
                "error": run.error, "note": "the RAM pump copies from now on"}))
        elif run.status == PumpStatus.EOF:
            self._pump_off = True  # the event loop reads the end (it stays readable)
        captured: list[Chunk] = []
        if run.leftover:
            # What the session sends of it goes to the next run, to write first (not to
            # the transport, whose queue would keep the pump from running again). The
            # leftover is a view of the pump's buffer: the engine keeps no reference to
            # what it is fed, the next run writes its prefix before it reads, and a run
            # starts only when the transport queues nothing.
            self._capture = captured
            try:
                self.data_from(Side.SOURCE, run.leftover)
            finally:
                self._capture = None
        started = (not self._pump_off and not self.session.closed
                   and self._maybe_pump(captured))
        if not started:
            self._forward(Forward(Side.DESTINATION, captured))
            if not self.session.closed:
                self.src.resume("pump")

    def _flush_capture(self) -> None:
        """Write what was captured so far, and capture no more (a command that must come
        after those bytes, or the pair's end)."""
        captured = self._capture
        self._capture = None
        if captured:
            self._forward(Forward(Side.DESTINATION, captured))
            captured.clear()

    # the kernel relay --------------------------------------------------------------------
    def _hand_over(self, idle_timeout: float, deadline: float | None = None) -> None:
        """Give both sockets to a kernel relay once nothing is queued towards either; the
        session is told only if that happened (else it goes on as it was)."""
        relays = self.registry.kernel_relays
        transports = [side.transport for side in (self.src, self.dst)]
        now = time.monotonic()
        if deadline is None:
            if any(t is None for t in transports) or \
                    any(side.tls is not None for side in self.sides.values()):
                return  # a TLS leg: the kernel cannot move what Python decrypts
            for side in self.sides.values():
                side.pause("handover")
            deadline = now + HANDOVER_WAIT
        usable = (not self.session.closed and relays.has_room() and
                  all(t is not None and not t.is_closing() for t in transports))
        if usable and any(t is not None and t.get_write_buffer_size() for t in transports):
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
                assert t is not None
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
            side.close(abort=True)  # closes its descriptor; the duplicates keep the sockets
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

    def _half_close(self, to: SideProtocol) -> None:
        """Pass an EOF on to ``to``: FIN; on a TLS leg close_notify then FIN, or a bare
        FIN, as the peer leg ended (:func:`~migproxy.daemon.tls_legs.passes_close_notify`)."""
        peer = self.sides[to.side.peer]
        to.end_direction(close_notify=to.tls is not None and passes_close_notify(
            peer.tls is not None, not peer.bare, self.session.channel))

    async def _connect(self) -> None:
        try:
            # The port gave this connection its connect slot: the next connection of the
            # port starts after this one is up (with TLS, after the handshake).
            await asyncio.wait_for(self._open_target(),
                                   timeout=self.route.settings.connect_timeout)
        except (OSError, TimeoutError) as e:
            self.dst.close(abort=True)
            self.run(self.session.on_target_failed(handshake_error(e), time.monotonic()))
        except BaseException:
            self.dst.close(abort=True)
            raise
        else:
            self.run(self.session.on_target_connected(time.monotonic()))
        self.registry.execute_port(self.port,
                                   self.port.connect_done(self.conn, time.monotonic()))

    async def _open_target(self) -> None:
        """TCP to the target; with TLS towards it, then the client handshake."""
        loop = asyncio.get_event_loop()
        t = self.target
        await loop.create_connection(lambda: self.dst, t.host, t.port)
        tls = self.route.tls
        if tls is None or tls.destination is None:
            return
        self._dst_handshake = loop.create_future()
        self.dst.start_tls(destination_layer(tls))
        try:
            await asyncio.wait_for(self._dst_handshake, tls.handshake_timeout)
        except TimeoutError:
            raise TimeoutError(timed_out(tls.handshake_timeout)) from None

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

        loop = asyncio.get_event_loop()
        if c.timer == Timer.DEVICE_STATE_END and c.delay <= QUIET_SPIN_MAX:
            # Quiet since the last byte came: counted from the read that asked for it,
            # so the engine's work on that read is part of the window, not added to it.
            deadline = min(time.monotonic(), self._source_read_at) + c.delay
            self._timers[c.timer] = loop.call_soon(self._wait_quiet, deadline, fire)
            return
        self._timers[c.timer] = loop.call_later(c.delay, fire)

    def _wait_quiet(self, deadline: float, fire: Callable[[], None]) -> None:
        """The DEVICE_STATE_END timer, short: wait until ``deadline`` without sleeping
        while the source sends nothing, then fire. Once a byte has come (or the source
        cannot be watched) the loop goes on, to read it, and the timer fires at the
        deadline as any other (the session withdrew the end meanwhile)."""
        while self.src.quiet():
            if time.monotonic() >= deadline:
                self._timers.pop(Timer.DEVICE_STATE_END, None)
                fire()
                return
        self._timers[Timer.DEVICE_STATE_END] = asyncio.get_event_loop().call_later(
            max(0.0, deadline - time.monotonic()), fire)

    def _finished(self, c: Finished) -> None:
        self._cancel_handshake_timer()
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        self.observer.finished(c)
        self.registry.remove(self)
        if not self.done.done():
            self.done.set_result(str(c.outcome))


# Commands that may come while a pump run's leftover is fed without writing what it
# sent to the destination first (the others flush it: see Pair.execute).
_CAPTURE_KEEPS = frozenset({Report, Log, RequestTimer, PauseReading, ResumeReading})

# What the executor does for each of the session's commands but Forward.
_COMMANDS: dict[type[Any], Callable[[Pair, Any], None]] = {
    Report: Pair._report,
    PauseReading: Pair._pause,
    ResumeReading: Pair._resume,
    HalfClose: Pair._half_close_to,
    OpenTarget: Pair._target_requested,
    RequestTimer: Pair._request_timer,
    Splice: Pair._splice,
    Close: Pair._close,
    Classified: Pair._classified,
    Log: Pair._log,
    Finished: Pair._finished,
}
