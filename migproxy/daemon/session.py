"""The sans-IO migration session: one accepted connection, events in, commands out.

A :class:`Session` owns everything about one accepted connection that is policy, not I/O:

* classification of the first bytes (``QEVM``: a main channel, whose source -> destination
  direction goes through the stream engine and whose other direction is read as the return
  path; the multifd magic: a multifd channel; anything else, such as the postcopy preempt
  channel: relayed untouched);
* when the target connection is opened: on the first byte from the source (a bare TCP
  probe never reaches the destination), or at once for a connection that follows an open
  main channel from the same source (``on_migration_open``: the postcopy preempt channel
  is silent until a page is urgent); when the target connection is actually opened, and
  everything else that depends on other connections, is decided by the listening port's
  sans-IO state (:mod:`migproxy.daemon.port`);
* both directions, half-close, the idle timer and the outcome;
* when nothing more of a connection needs parsing (:class:`Splice`: the executor may hand
  the rest to the kernel relay, :mod:`migproxy.daemon.splice`).

The executor (:mod:`migproxy.daemon.relay`) turns socket callbacks into calls of the
``on_*`` methods and carries out the commands they return, in order: :class:`Forward`,
:class:`HalfClose`, :class:`Close`, :class:`OpenTarget`, :class:`PauseReading` /
:class:`ResumeReading`, :class:`RequestTimer`, :class:`Splice`; :class:`Report`, :class:`Log` and
:class:`Finished` go to the observer (:mod:`migproxy.daemon.observe`: metrics and logs).
Nothing here touches a socket, a clock (times are passed in) or a metric.

Data handed to ``on_source_data`` / ``on_destination_data`` is only valid during the call
(the executor reuses its receive buffers); the session copies what it keeps.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from migproxy.daemon.quiet import QuietWindow
from migproxy.stream import wire
from migproxy.stream.engine import EngineConfig, FeedResult, Mode, RamWalk, StreamEngine
from migproxy.stream.events import Event
from migproxy.stream.returnpath import ReturnPathReader

Chunk = bytes | bytearray | memoryview
CLASSIFY_BYTES = 4
# Connections of one migration come from one source host within milliseconds (QEMU opens
# the multifd channels right after the main one): only those are kept in accept order.
ACCEPT_ORDER_WINDOW = 2.0  # seconds
TLS_HANDSHAKE = 0x16  # TLS record content type "handshake"
TLS_MAJOR = 0x03  # TLS record version major (SSL 3.0 and every TLS version)
TLS_NOT_TERMINATED = "tls_not_terminated"  # the reason a TLS channel is relayed untouched
TLS_NOTE = ("a TLS migration (tls-creds) on a route that does not terminate TLS: migproxy "
            "cannot read it, so nothing is rewritten and the channel is relayed untouched "
            "(set tls_source_creds and tls_destination_creds on the route)")


class Side(enum.StrEnum):
    SOURCE = "source"
    DESTINATION = "destination"

    @property
    def peer(self) -> Side:
        return Side.DESTINATION if self is Side.SOURCE else Side.SOURCE


class Channel(enum.StrEnum):
    """What an accepted connection carries (QEMU's channel kinds)."""

    MAIN = "main"  # the main migration channel (QEVM)
    MULTIFD = "multifd"  # a multifd channel
    TLS = "tls"  # a TLS handshake record: any channel of a TLS migration, relayed untouched
    OTHER = "other"  # anything else (postcopy preempt/recovery): relayed untouched


class Outcome(enum.StrEnum):
    """How a connection ended (the ``outcome`` label of ``migproxy_migrations_total``)."""

    COMPLETED = "completed"  # the whole stream framed and released
    DESTINATION_FAILED = "destination_failed"  # released, but the destination's SHUT != 0
    PASSTHROUGH = "passthrough"  # relayed untouched from some point on
    INCOMPLETE = "incomplete"  # the source stopped mid-stream (cancelled or failed)
    ABORTED = "aborted"  # stopped by the abort policy
    FAILED = "failed"  # a main channel that ended otherwise (reset, timeout, shutdown)
    RELAYED = "relayed"  # a multifd/other channel that ended cleanly
    EMPTY = "empty"  # closed before a byte arrived (a probe); the target never knew
    # (a connection whose bytes never reached the target, e.g. unreachable, is FAILED)


class CloseReason(enum.StrEnum):
    """Why the session closed the pair (the ``reason`` of the ``closed`` log line)."""

    NO_DATA = "no_data"  # the source closed without sending a byte
    CONNECT_FAILED = "connect_failed"  # the target could not be reached in time
    POLICY_ABORT = "policy_abort"  # the engine aborted (abort policy)
    SOURCE_ERROR = "source_error"  # a reset or error on the source connection
    DESTINATION_ERROR = "destination_error"  # a reset or error on the target connection
    SOURCE_CLOSED = "source_closed"  # the source closed while the other direction was open
    DESTINATION_CLOSED = "destination_closed"  # likewise the destination
    IDLE_TIMEOUT = "idle_timeout"  # no byte either way for idle_timeout seconds
    CLASSIFY_TIMEOUT = "classify_timeout"  # fewer than 4 bytes in classify_timeout seconds
    SHUTDOWN = "shutdown"  # the drain timeout ran out at daemon shutdown
    EVICTED = "evicted"  # no migration's bytes, closed to make room for a migration's


class SpliceEnd(enum.StrEnum):
    """How the kernel relay ended (:meth:`Session.on_splice_end`)."""

    CLOSED = "closed"  # both directions ended cleanly
    ERROR = "error"  # a connection failed
    IDLE = "idle"  # no byte either way for idle_timeout seconds
    STOPPED = "stopped"  # after Close (the session ended it)


class Timer(enum.StrEnum):
    IDLE = "idle"
    DEVICE_STATE_END = "device_state_end"  # confirm the end of the device state by quiet
    CLASSIFY = "classify"  # the first 4 bytes are due (classify_timeout)


# With the return path, how long a description that does not frame the device state must
# stand with no byte after it before it counts as the end (and the stream as not
# understood). QEMU sends the whole device state at once; a guest's planted fake is
# followed by the rest within the same burst.
END_CONFIRM_DELAY = 1.0  # seconds
# With the return path, how long a description that frames the device state and passed
# every check must stand with no byte after it before the device state is released, at
# least (the added switchover time; configurable per route as end_quiet). A device state
# that arrived in several reads stretches it (migproxy.daemon.quiet).
DEFAULT_END_QUIET = 0.001  # seconds


class ConnState(enum.StrEnum):
    """The target side of the session (as mitmproxy's tunnel layer has it)."""

    INACTIVE = "inactive"  # no target connection yet (nothing from the source so far)
    CONNECTING = "connecting"  # OpenTarget sent; the source is paused meanwhile
    OPEN = "open"  # both connections up
    CLOSED = "closed"  # Finished sent; every later event is ignored


# -- commands -----------------------------------------------------------------------------

@dataclass(slots=True)
class Forward:
    """Write ``chunks`` to ``to`` (slices of the engine's input: zero-copy)."""

    to: Side
    chunks: Sequence[Chunk]


@dataclass(slots=True)
class HalfClose:
    """Pass an EOF on: ``write_eof()`` on ``to``."""

    to: Side


@dataclass(slots=True)
class Close:
    """Close both connections; ``abort``: reset them (each QEMU sees the failure)."""

    abort: bool


@dataclass(slots=True)
class OpenTarget:
    """Open the target connection (the executor reports ``on_target_connected`` or
    ``on_target_failed``)."""


@dataclass(slots=True)
class PauseReading:
    side: Side
    reason: str


@dataclass(slots=True)
class ResumeReading:
    side: Side
    reason: str


@dataclass(slots=True)
class RequestTimer:
    """Call ``on_timer(timer, now)`` after ``delay`` seconds (replaces an armed one)."""

    timer: Timer
    delay: float


@dataclass(slots=True)
class Splice:
    """Nothing more of this connection needs parsing: the executor may relay the rest in
    the kernel (:mod:`migproxy.daemon.splice`), resetting both connections after
    ``idle_timeout`` seconds without a byte (0: never). If it does, it calls
    ``on_spliced`` and, at the end, ``on_splice_end``; if not, nothing changes."""

    idle_timeout: float


@dataclass(slots=True)
class Classified:
    """The channel kind is known (for the observer: counts, log context)."""

    channel: Channel


@dataclass(slots=True)
class Report:
    """Engine events, and the bytes it holds now (for the observer); only when there are
    events or the held bytes changed since the last one."""

    events: list[Event]
    held_bytes: int


LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(slots=True)
class Log:
    level: LogLevel
    event: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Finished:
    """The session is over: the executor cancels its timers and forgets it."""

    outcome: Outcome
    reason: CloseReason | None
    abort: bool
    channel: Channel | None
    seconds: float
    bytes_in: int | None  # main channels: bytes read from the source
    bytes_out: int | None  # main channels: bytes forwarded to the destination


Command = (Forward | HalfClose | Close | OpenTarget | PauseReading | ResumeReading
           | RequestTimer | Splice | Classified | Report | Log | Finished)


@dataclass(frozen=True)
class SessionSettings:
    engine: EngineConfig  # for main channels
    idle_timeout: float  # seconds without a byte either way; 0: never
    end_quiet: float = DEFAULT_END_QUIET  # seconds of quiet that confirm a framed end
    classify_timeout: float = 0.0  # seconds for the first 4 bytes; 0: no deadline
    splice: bool = False  # offer the executor the rest of untouched connections (Splice)


class Session:
    """One accepted connection and its connection to the target."""

    def __init__(self, settings: SessionSettings, now: float,
                 peer_host: str | None = None) -> None:
        self.settings = settings
        self.peer_host = peer_host  # the source's address (accept order groups by it)
        self.state = ConnState.INACTIVE
        self.channel: Channel | None = None
        self.engine: StreamEngine | None = None
        self.return_path: ReturnPathReader | None = None
        self.quiet: QuietWindow | None = None  # main channels: the end's quiet window
        self.outcome: Outcome | None = None
        self.started = now
        self.last_activity = now
        self._prefix = bytearray()  # the first bytes, until CLASSIFY_BYTES arrived
        self._pending: list[bytes] = []  # source bytes that arrived before the target
        self._source_eof_pending = False
        self._eof = {Side.SOURCE: False, Side.DESTINATION: False}
        self._splice_offered = False
        self._held_reported = 0  # the engine's held bytes in the last Report
        self._reached_target = False  # the target connection was up at some point
        self.spliced = False  # the executor relays the rest in the kernel
        self._spliced_bytes = {Side.SOURCE: 0, Side.DESTINATION: 0}  # moved there, by target

    @property
    def closed(self) -> bool:
        return self.state == ConnState.CLOSED

    # -- events in ------------------------------------------------------------------------

    def on_accepted(self) -> list[Command]:
        out = self._idle_timer(self.started)
        if self.settings.classify_timeout > 0:
            out.append(RequestTimer(Timer.CLASSIFY, self.settings.classify_timeout))
        return out

    def on_classify_deadline(self, now: float, *, main_open: bool) -> list[Command]:
        """The CLASSIFY timer fired. ``main_open``: a main channel from the same source
        address is open on this route (the executor knows the other sessions). A connection
        that has not sent its first 4 bytes by now is closed, unless it may be the silent
        channel of that migration: QEMU's postcopy preempt channel sends nothing until
        postcopy starts."""
        if self.closed or self.channel is not None or main_open:
            return []
        out: list[Command] = [Log("warning", "classify_timeout",
                                  {"seconds": self.settings.classify_timeout,
                                   "bytes": len(self._prefix) + sum(map(len, self._pending))})]
        out.extend(self._end(CloseReason.CLASSIFY_TIMEOUT, abort=True, now=now))
        return out

    def on_evicted(self, now: float) -> list[Command]:
        """The route or the source address is full, and a connection that sent a
        migration's first bytes needs this one's place (:mod:`migproxy.daemon.port`)."""
        if self.closed:
            return []
        out: list[Command] = [Log("warning", "evicted",
                                  {"bytes": len(self._prefix) + sum(map(len, self._pending)),
                                   "note": "closed to make room for a migration's channel"})]
        out.extend(self._end(CloseReason.EVICTED, abort=True, now=now))
        return out

    @property
    def head(self) -> bytes:
        """The first bytes the source sent, up to CLASSIFY_BYTES (what decides its kind)."""
        head = bytes(self._prefix[:CLASSIFY_BYTES])
        for chunk in self._pending:
            if len(head) >= CLASSIFY_BYTES:
                break
            head += chunk[:CLASSIFY_BYTES - len(head)]
        return head

    def on_source_data(self, data: memoryview, now: float) -> list[Command]:
        if self.closed:
            return []
        self.last_activity = now
        if self.state != ConnState.OPEN:
            self._pending.append(bytes(data))
            out: list[Command] = [PauseReading(Side.SOURCE, "connecting")]
            if self.state == ConnState.INACTIVE:
                out.append(OpenTarget())
                self.state = ConnState.CONNECTING
            return out
        out = []
        self._from_source(data, out, now)
        self._offer_splice(out)
        return out

    def on_destination_data(self, data: memoryview, now: float) -> list[Command]:
        if self.closed:
            return []
        self.last_activity = now
        out: list[Command] = [Forward(Side.SOURCE, [data])]
        rp = self.return_path
        if rp is not None and rp.stopped is None:
            before = rp.shut_status
            rp.feed(data)
            if rp.shut_status is not None and before is None:
                out.append(Log("info" if rp.shut_status == 0 else "warning", "destination_shut",
                               {"status": rp.shut_status}))
        return out

    def connect_now(self) -> list[Command]:
        """Open the target connection although no byte arrived: a later connection of the
        same route needs this one connected first (:class:`ConnectQueue`)."""
        if self.state != ConnState.INACTIVE:
            return []
        self.state = ConnState.CONNECTING
        return [PauseReading(Side.SOURCE, "connecting"), OpenTarget()]

    def on_migration_open(self) -> list[Command]:
        """A main channel from this connection's source address is open on its port, and
        this connection came after it: a channel of that migration. Connect it although it
        sent nothing: QEMU's postcopy preempt channel sends nothing until a page is
        urgent, and the destination waits for it before it serves page faults."""
        out = self.connect_now()
        if out:
            out.insert(0, Log("info", "connect_silent",
                              {"note": "a later connection of an open migration (the "
                               "postcopy preempt channel is silent until it is needed)"}))
        return out

    def on_target_connected(self, now: float) -> list[Command]:
        if self.closed:
            return [Close(abort=True)]
        self.state = ConnState.OPEN
        self._reached_target = True
        out: list[Command] = [Log("debug", "connected")]
        pending, self._pending = self._pending, []
        for chunk in pending:
            self._from_source(memoryview(chunk), out, now)
            if self.closed:
                return out
        if self._source_eof_pending:
            out.extend(self.on_eof(Side.SOURCE, now))
            if self.closed:
                return out
        out.append(ResumeReading(Side.SOURCE, "connecting"))
        self._offer_splice(out)
        return out

    def on_spliced(self, now: float) -> list[Command]:
        """The executor took the ``Splice`` offer: from now on the kernel relay moves the
        bytes, passes half-closes on and keeps the idle timeout; the session only hears
        how it ended (``on_splice_end``)."""
        if self.closed:
            return []
        self.spliced = True
        self.last_activity = now
        return [Log("debug", "spliced", {"channel": str(self.channel)})]

    def on_splice_end(self, how: SpliceEnd, failed: Side | None, error: str | None,
                      to_destination: int, to_source: int, now: float) -> list[Command]:
        """The kernel relay ended (``failed``: the connection that failed, for
        ``SpliceEnd.ERROR``). The byte counts are those since its last report."""
        self.on_splice_progress(to_destination, to_source)
        if self.closed:
            return []
        if how == SpliceEnd.CLOSED:
            self._eof = {Side.SOURCE: True, Side.DESTINATION: True}
            return self._end(None, abort=False, now=now)
        if how == SpliceEnd.IDLE:
            out: list[Command] = [Log("warning", "idle_timeout",
                                      {"seconds": self.settings.idle_timeout})]
            out.extend(self._end(CloseReason.IDLE_TIMEOUT, abort=True, now=now))
            return out
        side = failed or Side.SOURCE
        out = [Log("warning", "connection_lost", {"side": str(side), "error": error})]
        reason = (CloseReason.SOURCE_ERROR if side is Side.SOURCE
                  else CloseReason.DESTINATION_ERROR)
        out.extend(self._end(reason, abort=True, now=now))
        return out

    def on_splice_progress(self, to_destination: int, to_source: int) -> None:
        """Bytes the kernel relay moved (counted in ``Finished``)."""
        self._spliced_bytes[Side.DESTINATION] += to_destination
        self._spliced_bytes[Side.SOURCE] += to_source

    def ram_walk(self) -> RamWalk | None:
        """What the executor may move without the session, as the engine's
        :meth:`~migproxy.stream.engine.StreamEngine.ram_walk` (RAM records, forwarded
        unchanged), while the connection is open and nothing of the source waits; else
        None."""
        engine = self.engine
        if (engine is None or self.state != ConnState.OPEN or self.spliced or self._pending
                or self._eof[Side.SOURCE]):
            return None
        return engine.ram_walk()

    def on_source_walked(self, nbytes: int, walk: RamWalk, skip_left: int, pages: int,
                         zeros: int, now: float) -> None:
        """The executor moved ``nbytes`` source bytes to the destination as ``walk``
        allowed (:meth:`ram_walk`; the engine accounts for them: see
        :meth:`~migproxy.stream.engine.StreamEngine.walked`)."""
        engine = self.engine
        if engine is None or self.closed:
            return
        self.last_activity = now
        engine.walked(nbytes, walk, skip_left, pages, zeros)

    def on_target_failed(self, error: str, now: float) -> list[Command]:
        if self.closed:
            return []
        out: list[Command] = [Log("error", "connect_failed", {"error": error})]
        out.extend(self._end(CloseReason.CONNECT_FAILED, abort=True, now=now))
        return out

    def on_eof(self, side: Side, now: float) -> list[Command]:
        if self.closed:
            return []
        if side is Side.SOURCE and self.state != ConnState.OPEN:
            if self.state == ConnState.INACTIVE and not self._pending:
                # Nothing was ever sent: a probe. The target never hears of it.
                self._eof[Side.SOURCE] = True
                return self._end(CloseReason.NO_DATA, abort=False, now=now)
            self._source_eof_pending = True  # CONNECTING: handled once the target is up
            return []
        self._eof[side] = True
        out: list[Command] = []
        if side is Side.SOURCE:
            if self.channel is None and self._prefix:
                # Fewer than 4 bytes ever arrived: relay them as they are.
                prefix = bytes(self._prefix)
                self._classify(prefix.ljust(CLASSIFY_BYTES, b"\0"), out)
                self._prefix = bytearray()
                out.append(Forward(Side.DESTINATION, [prefix]))
            if self.engine is not None and not self._engine_result(self.engine.feed_eof(),
                                                                  out, now):
                return out
        out.append(Log("debug", "eof", {"side": str(side)}))
        out.append(HalfClose(side.peer))
        if self._eof[Side.SOURCE] and self._eof[Side.DESTINATION]:
            out.extend(self._end(None, abort=False, now=now))
        return out

    def on_lost(self, side: Side, error: str | None, now: float) -> list[Command]:
        """A connection is gone: reset (``error``) or closed by its peer."""
        if self.closed:
            return []
        if error is not None:
            out: list[Command] = [Log("warning", "connection_lost",
                                      {"side": str(side), "error": error})]
            reason = (CloseReason.SOURCE_ERROR if side is Side.SOURCE
                      else CloseReason.DESTINATION_ERROR)
            out.extend(self._end(reason, abort=True, now=now))
            return out
        # Closed cleanly by the peer while the other direction was still open (once both
        # directions have ended, the session is already over).
        closed = (CloseReason.SOURCE_CLOSED if side is Side.SOURCE
                  else CloseReason.DESTINATION_CLOSED)
        return self._end(closed, abort=False, now=now)

    def on_backpressure(self, side: Side, full: bool) -> list[Command]:
        """``side``'s write buffer went over (``full``) or under the high-water mark."""
        if self.closed:
            return []
        if full:
            return [PauseReading(side.peer, "backpressure")]
        return [ResumeReading(side.peer, "backpressure")]

    def on_timer(self, timer: Timer, now: float) -> list[Command]:
        if self.closed:
            return []
        if timer == Timer.DEVICE_STATE_END:
            out: list[Command] = []
            engine = self.engine
            if engine is not None and (engine.end_pending or engine.end_unconfirmed):
                self._engine_result(engine.conclude(), out, now)
            return out
        if timer == Timer.CLASSIFY:
            return []  # the port state decides (migproxy.daemon.port: Expire)
        if self.spliced:
            return []  # the kernel relay keeps the idle timeout now
        return self._idle_timer(now)

    def on_shutdown(self, now: float) -> list[Command]:
        """The daemon's drain timeout ran out."""
        if self.closed:
            return []
        return self._end(CloseReason.SHUTDOWN, abort=True, now=now)

    # -- inside -----------------------------------------------------------------------------

    def _idle_timer(self, now: float) -> list[Command]:
        idle = self.settings.idle_timeout
        if idle <= 0:
            return []
        due = self.last_activity + idle - now
        if due <= 0:
            out: list[Command] = [Log("warning", "idle_timeout", {"seconds": idle})]
            out.extend(self._end(CloseReason.IDLE_TIMEOUT, abort=True, now=now))
            return out
        return [RequestTimer(Timer.IDLE, due)]

    def _offer_splice(self, out: list[Command]) -> None:
        """Offer the executor the rest of the connection once nothing more needs parsing:
        a multifd, TLS or other channel, or a main channel whose engine relays the rest
        untouched; both directions open, nothing pending. Offered once."""
        if (not self.settings.splice or self._splice_offered or self.state != ConnState.OPEN
                or self.channel is None or self._pending or any(self._eof.values())):
            return
        engine = self.engine
        if engine is not None and engine.mode != Mode.PASSTHROUGH:
            return
        self._splice_offered = True
        out.append(Splice(self.settings.idle_timeout))

    def _from_source(self, data: memoryview, out: list[Command], now: float) -> None:
        if self.channel is None:
            self._prefix += data
            if len(self._prefix) < CLASSIFY_BYTES:
                return
            self._classify(bytes(self._prefix[:CLASSIFY_BYTES]), out)
            data = memoryview(bytes(self._prefix))
            self._prefix = bytearray()
        engine = self.engine
        if engine is None:
            out.append(Forward(Side.DESTINATION, [data]))
            return
        res = engine.feed(data)
        if engine.mode == Mode.HOLDING and self.quiet is not None:
            self.quiet.held(now)
        self._engine_result(res, out, now)

    def _engine_result(self, res: FeedResult, out: list[Command], now: float) -> bool:
        """Turn the engine's result into commands; False if the engine aborted."""
        engine = self.engine
        assert engine is not None
        if res.data:  # bytes first: logging and metrics must not delay the switchover
            out.append(Forward(Side.DESTINATION, res.data))
        held = engine.held_bytes
        if res.events or held != self._held_reported:  # (most reads of RAM report nothing)
            out.append(Report(res.events, held))
            self._held_reported = held
        if engine.mode == Mode.ABORTED:
            out.extend(self._end(CloseReason.POLICY_ABORT, abort=True, now=now))
            return False
        if engine.end_pending:
            quiet = self.quiet
            window = quiet.seconds() if quiet is not None else self.settings.end_quiet
            if quiet is not None:
                out.append(Log("debug", "device_state_end_pending", {
                    "quiet": window, "held_reads": quiet.held_reads,
                    "longest_pause": round(quiet.longest_pause, 6)}))
            out.append(RequestTimer(Timer.DEVICE_STATE_END, window))
        elif engine.end_unconfirmed:
            out.append(RequestTimer(Timer.DEVICE_STATE_END, END_CONFIRM_DELAY))
        return True

    def _classify(self, head: bytes, out: list[Command]) -> None:
        self.channel = classify(head)
        if self.channel == Channel.MAIN:
            self.engine = StreamEngine(self.settings.engine)
            self.return_path = ReturnPathReader()
            self.quiet = QuietWindow(self.settings.end_quiet)
        elif self.channel == Channel.TLS:
            out.append(Log("warning", "tls", {"reason": TLS_NOT_TERMINATED,
                                              "note": TLS_NOTE}))
        out.append(Classified(self.channel))

    def _outcome(self, error: CloseReason | None) -> Outcome:
        if self.channel is None:
            # A probe sent nothing; a connection that sent bytes the target never got
            # (unreachable, or fewer than 4 and then silent) failed. A silent channel of
            # an open migration reached the target (on_migration_open): relayed.
            sent = len(self._prefix) + sum(map(len, self._pending))
            if self._reached_target and sent == 0:
                return Outcome.RELAYED if error is None else Outcome.FAILED
            return Outcome.EMPTY if sent == 0 else Outcome.FAILED
        engine = self.engine
        if engine is None:
            return Outcome.RELAYED if error is None else Outcome.FAILED
        mode = engine.mode
        if mode == Mode.ABORTED:
            return Outcome.ABORTED
        if mode == Mode.PASSTHROUGH:
            # The source stopped sending mid-stream (a cancelled or failed migration)?
            reason = engine.stop_reason
            if reason is not None and reason.source_ended:
                return Outcome.INCOMPLETE
            return Outcome.PASSTHROUGH
        if mode == Mode.DONE:
            # With the return path, the destination says how its load ended (SHUT status).
            rp = self.return_path
            shut = rp.shut_status if rp is not None else None
            if shut not in (None, 0):
                return Outcome.DESTINATION_FAILED
            if error == CloseReason.DESTINATION_ERROR and shut != 0:
                # Everything was sent, but the destination reset the connection without
                # reporting a successful load: QEMU closes cleanly when it succeeds.
                return Outcome.FAILED
            return Outcome.COMPLETED
        return Outcome.FAILED

    def _end(self, reason: CloseReason | None, *, abort: bool, now: float) -> list[Command]:
        self.state = ConnState.CLOSED
        self.outcome = self._outcome(reason if abort else None)
        engine = self.engine
        if engine is not None:
            engine.close()  # gives held device state back to the shared budget
        spliced = self._spliced_bytes[Side.DESTINATION]
        return [Close(abort=abort), Finished(
            self.outcome, reason, abort, self.channel, now - self.started,
            engine.received + spliced if engine is not None else None,
            engine.sent + spliced if engine is not None else None)]


def classify(head: bytes) -> Channel:
    """What a connection carries, from its first CLASSIFY_BYTES bytes."""
    if head == wire.MAGIC_BYTES:
        return Channel.MAIN
    if head == wire.MULTIFD_MAGIC_BYTES:
        return Channel.MULTIFD
    if head[0] == TLS_HANDSHAKE and head[1] == TLS_MAJOR:
        return Channel.TLS
    return Channel.OTHER


class ConnectQueue:
    """Superseded by :class:`migproxy.daemon.port.PortState`, which never pulls a silent
    connection ahead of a main channel (M1); no longer used by the daemon.

    Accept order of one route: the connections of one migration reach the target in the
    order they were accepted (destinations that assign channels by arrival, QEMU 7.2 and
    TLS, must see the main channel first). A connection whose first byte arrives pulls in
    the connections still waiting that came from the same host at most
    ``ACCEPT_ORDER_WINDOW`` seconds before it. A silent connection from anywhere else (a
    port scanner, a health check) is never pulled in, so it cannot reach the destination
    ahead of a migration's main channel."""

    def __init__(self) -> None:
        self._waiting: list[Session] = []

    def __len__(self) -> int:
        return len(self._waiting)

    def accepted(self, session: Session) -> None:
        self._waiting.append(session)

    def connecting(self, session: Session) -> list[Session]:
        """``session`` starts connecting: the earlier waiting sessions that must connect
        before it, in accept order (``session`` itself is no longer waiting)."""
        try:
            i = self._waiting.index(session)
        except ValueError:
            return []
        since = session.started - ACCEPT_ORDER_WINDOW
        earlier = [s for s in self._waiting[:i]
                   if s.peer_host == session.peer_host and s.started >= since]
        self._waiting = [s for s in self._waiting if s is not session and s not in earlier]
        return earlier

    def remove(self, session: Session) -> None:
        if session in self._waiting:
            self._waiting.remove(session)

    def after(self, main: Session) -> list[Session]:
        """The waiting sessions from ``main``'s source address accepted after it: once
        ``main`` is known to be a main channel, these are channels of its migration."""
        return [s for s in self._waiting
                if s is not main and s.peer_host == main.peer_host and s.started >= main.started]
