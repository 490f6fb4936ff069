"""The stream engine's state, its output and how it stops rewriting.

:class:`EngineState` is what the parts of :class:`~migproxy.stream.engine.StreamEngine`
share: the channel's :class:`Mode` (one state machine, :data:`TRANSITIONS`), the framer,
what has been received, forwarded and sent, the device state held, and the one way out of
rewriting (``_not_understood``: passthrough of everything not yet forwarded, or abort).
The parts: the writer of the held device state (:mod:`migproxy.stream.writer`), the
detection of its end (:mod:`migproxy.stream.enddetect`) and the streaming facade
(:mod:`migproxy.stream.engine`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from migproxy.stream.devstate import HeldDeviceState
from migproxy.stream.events import Aborted, Event, PassthroughEntered
from migproxy.stream.framer import RamStats, StreamFramer
from migproxy.stream.package import PackageLayouts
from migproxy.stream.policy import DEFAULT_HOLD_CAP, DEFAULT_MAX_DESCRIPTION, HoldBudget, Policy
from migproxy.stream.reasons import Reason, StopReason, stop_reasons
from migproxy.stream.rewriter import SectionRewriter
from migproxy.stream.vmdesc import DeviceStateLayout, StreamFacts

if TYPE_CHECKING:
    from migproxy.stream.writer import PreparedRelease

Chunk = bytes | bytearray | memoryview


class Mode(enum.StrEnum):
    """The state of the main channel (the engine's one state machine; the framer's
    :class:`~migproxy.stream.framerstate.Grammar` is only its position inside ``STREAMING``)."""

    STREAMING = "streaming"  # the streamed part: framed and forwarded as it arrives
    HOLDING = "holding"  # the non-iterable device state: held until it is framed
    PACKAGE = "package"  # postcopy's PACKAGED device state: held until all of it is in
    DONE = "done"  # the whole stream was framed and released
    PASSTHROUGH = "passthrough"  # not understood: the rest is relayed untouched
    ABORTED = "aborted"  # not understood (abort policy): nothing more is forwarded


# Every transition the engine makes; anything else is a bug (asserted).
TRANSITIONS: dict[Mode, frozenset[Mode]] = {
    Mode.STREAMING: frozenset({Mode.HOLDING, Mode.PACKAGE, Mode.DONE, Mode.PASSTHROUGH,
                               Mode.ABORTED}),
    Mode.PACKAGE: frozenset({Mode.STREAMING, Mode.PASSTHROUGH, Mode.ABORTED}),
    Mode.HOLDING: frozenset({Mode.DONE, Mode.PASSTHROUGH, Mode.ABORTED}),
    Mode.DONE: frozenset({Mode.PASSTHROUGH, Mode.ABORTED}),
    Mode.PASSTHROUGH: frozenset(),
    Mode.ABORTED: frozenset(),
}


@dataclass
class EngineConfig:
    rewriters: Sequence[SectionRewriter] = ()  # section plug-ins (none: frame and report)
    policy: Policy = Policy.PASSTHROUGH
    dry_run: bool = False  # compute and report rewrites, forward the original bytes
    hold_cap: int = DEFAULT_HOLD_CAP
    max_description: int = DEFAULT_MAX_DESCRIPTION  # bytes of description JSON parsed
    hold_budget: HoldBudget | None = None  # shared with other engines (None: no sum bound)
    legacy_page_bits: int | None = None
    # Where the stream starts in a file read at its own offsets (the offline tools): the
    # mapped-ram layout is then framed. None (a channel): mapped-ram is refused.
    file_offset: int | None = None
    # postcopy: the layouts of the sections in a PACKAGED command (from the plug-in). With
    # rewriters but none, postcopy is refused at POSTCOPY_ADVISE, before the guest stops.
    package_layouts: PackageLayouts | None = None

    @property
    def stop_reasons(self) -> tuple[StopReason, ...]:
        """Every reason this engine may stop rewriting for: the core's and its plug-ins'."""
        return stop_reasons(*self.rewriters)


@dataclass
class FeedResult:
    data: list[Chunk] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def joined(self) -> bytes:
        return b"".join(self.data)


class EngineState:
    """The state of one main channel's engine (source -> destination) and its stop."""

    # The engine's state is ``mode`` (see TRANSITIONS); ``stop_reason`` says why it left
    # STREAMING/HOLDING for PASSTHROUGH or ABORTED.

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.framer = StreamFramer(legacy_page_bits=self.config.legacy_page_bits,
                                   file_offset=self.config.file_offset)
        self.framer.frame_packages = self.config.package_layouts is not None
        self.framer.refuse_postcopy = bool(self.config.rewriters) and \
            self.config.package_layouts is None
        self.mode = Mode.STREAMING
        self.received = 0  # bytes fed so far (absolute offset of the next input byte)
        self.forwarded_in = 0  # input bytes already represented in the output
        self.sent = 0  # bytes output so far
        self._carry = bytearray()  # unforwarded start of an incomplete item (streaming)
        self._need = 0
        self._held: HeldDeviceState | None = None
        self._rewritten_release = False
        self._oversized = 0  # size of a description candidate not parsed (over the caps)
        # the last candidate not taken for the end: (why, message, offset)
        self.unframed: tuple[StopReason, str, int] | None = None
        self.pending: DeviceStateLayout | None = None  # a framed end awaiting confirmation
        self.prepared: PreparedRelease | None = None  # its release, computed ahead
        self.reports: list[Event] = []  # what the rewriters decoded (e.g. ARM CpuSeen)
        self.layout: DeviceStateLayout | None = None
        self.stop_reason: StopReason | None = None

    # -- public API ---------------------------------------------------------------------

    @property
    def stats(self) -> RamStats:
        return self.framer.stats

    @property
    def held_bytes(self) -> int:
        return len(self._held) if self._held is not None else 0

    # -- output helpers -------------------------------------------------------------------

    def _out(self, res: FeedResult, data: Chunk) -> None:
        if len(data):
            res.data.append(data)
            self.sent += len(data)

    def _events(self, res: FeedResult) -> None:
        ev = self.framer.events
        if ev:
            res.events.extend(ev)
            ev.clear()

    def _unforwarded(self, mv: memoryview, chunk_start: int) -> list[Chunk]:
        """The input bytes not yet output: the carry's older part and the chunk's rest."""
        pieces: list[Chunk] = []
        first = self.forwarded_in
        if self._carry and first < chunk_start:
            pieces.append(bytes(self._carry[: chunk_start - first]))
        rel = max(0, first - chunk_start)
        if rel < len(mv):
            pieces.append(mv[rel:])
        return pieces

    def _internal_error(self, res: FeedResult, e: Exception, mv: memoryview,
                        chunk_start: int) -> None:
        """The engine raised (a bug): stop as for anything not understood. Bytes already in
        ``res`` are accounted for; the rest goes out untouched (or nothing, under abort)."""
        message = f"internal error: {type(e).__name__}: {e}"
        if self.mode in (Mode.PASSTHROUGH, Mode.ABORTED):
            return  # already stopped: nothing more to decide
        if self.mode == Mode.DONE and self._rewritten_release:
            self._enter(Mode.ABORTED)  # a rewritten release is out: never append to it
            self.stop_reason = Reason.INTERNAL_ERROR
            res.events.append(Aborted(Reason.INTERNAL_ERROR, message, chunk_start))
            return
        self._not_understood(res, Reason.INTERNAL_ERROR, message, self.forwarded_in, mv,
                             chunk_start)

    def _drop_held(self) -> None:
        if self._held is not None:
            self._held.free()
            self._held = None

    def close(self) -> None:
        """The channel is gone (closed mid-stream): give back what is held. Idempotent."""
        self._drop_held()

    def _enter(self, mode: Mode) -> None:
        assert mode in TRANSITIONS[self.mode], f"engine: {self.mode} -> {mode}"
        self.mode = mode

    def _not_understood(self, res: FeedResult, reason: StopReason, message: str, offset: int,
                        mv: memoryview, chunk_start: int) -> None:
        """Stop rewriting: forward everything not yet forwarded untouched, or abort."""
        self.stop_reason = reason
        if self.config.policy == Policy.ABORT:
            self._enter(Mode.ABORTED)
            res.events.append(Aborted(reason, message, offset))
        else:
            # Everything from the first byte not yet forwarded: what is held, then the part
            # of ``mv`` (input from ``chunk_start`` on) that was not added to it.
            held = self._held
            pieces: list[Chunk]
            if held is not None:
                skip = max(0, held.start_offset + len(held.buf) - chunk_start)
                pieces = [memoryview(held.buf), mv[skip:]]
            else:
                pieces = self._unforwarded(mv, chunk_start)
            self._enter(Mode.PASSTHROUGH)
            res.events.append(PassthroughEntered(reason, message, offset))
            for piece in pieces:
                self._out(res, piece)
            self.forwarded_in = self.received
        self._carry = bytearray()
        self._drop_held()

    def _facts(self) -> StreamFacts:
        fr = self.framer
        return StreamFacts(fr.page_size, fr.machine, tuple(fr.config_subsections))
