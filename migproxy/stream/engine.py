"""The sans-IO stream engine for the main migration channel.

Feed it bytes as they arrive from the source; it returns the bytes to forward to the
destination and the events it saw. No sockets, no clocks, no asyncio: the daemon, the
offline tools and the tests all drive this one object.

* The streamed part (header, configuration, commands, RAM) is framed record by record and
  forwarded as slices of the input (never copied, never buffered beyond an incomplete
  record header or command).
* The non-iterable device state (FULL sections after the last iterable END) is held back
  under a cap until EOF and the VM description have arrived, and framed exactly with the
  description. Each FULL section goes to the section rewriters configured
  (:mod:`migproxy.stream.rewriter`; the engine itself knows no architecture), the
  description is updated, and the device state is released. Without the return path
  that is when the source closes, which QEMU does right after the description (so the
  end is never taken from content a guest could have planted). With it, the source waits
  for the destination instead: a description that frames what is held must also be QEMU's
  own for this stream and name only section layouts the rewriters know field for field,
  and the driver confirms it by a short quiet window (:attr:`StreamEngine.end_pending`,
  :meth:`StreamEngine.conclude`).
* Whatever is not understood switches the engine to ``passthrough`` (the rest is forwarded
  untouched, including anything held) or ``abort`` (nothing more is forwarded), as the
  policy says, with an event naming the reason. A partially rewritten stream is never
  emitted.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from migproxy.stream import wire
from migproxy.stream.devstate import HeldDeviceState, HoldBudgetExhausted, HoldCapExceeded
from migproxy.stream.errors import FormatError, SectionRefused, TruncatedError, Unsupported
from migproxy.stream.events import (
    Aborted,
    CommandFramed,
    DeviceStateHeld,
    DeviceStateReleased,
    EofFramed,
    Event,
    PassthroughEntered,
    SectionFramed,
    StreamComplete,
    VmDescriptionFramed,
)
from migproxy.stream.framer import ST_AFTER_EOF, ST_DONE, ST_HOLD, RamStats, StreamFramer
from migproxy.stream.policy import (
    DEFAULT_HOLD_CAP,
    DEFAULT_MAX_DESCRIPTION,
    MAX_DESCRIPTION_CONTAINERS,
    MAX_ITEM,
    HoldBudget,
    Policy,
)
from migproxy.stream.reasons import Reason
from migproxy.stream.rewriter import Decoded, SectionEdit, SectionRewriter
from migproxy.stream.vmdesc import (
    DescriptionMismatch,
    DeviceStateLayout,
    FullSection,
    StreamFacts,
    encode_description,
    frame_device_state,
    parse_description,
    unlike_qemus,
    with_array_lengths,
)

__all__ = ["DEFAULT_HOLD_CAP", "MAX_ITEM", "EngineConfig", "FeedResult", "Mode", "Policy",
           "StreamEngine"]

Chunk = bytes | bytearray | memoryview



class Mode(enum.StrEnum):
    """The state of the main channel (the engine's one state machine; the framer's
    :class:`~migproxy.stream.framer.Grammar` is only its position inside ``STREAMING``)."""

    STREAMING = "streaming"  # the streamed part: framed and forwarded as it arrives
    HOLDING = "holding"  # the non-iterable device state: held until it is framed
    DONE = "done"  # the whole stream was framed and released
    PASSTHROUGH = "passthrough"  # not understood: the rest is relayed untouched
    ABORTED = "aborted"  # not understood (abort policy): nothing more is forwarded


# Every transition the engine makes; anything else is a bug (asserted).
TRANSITIONS: dict[Mode, frozenset[Mode]] = {
    Mode.STREAMING: frozenset({Mode.HOLDING, Mode.PASSTHROUGH, Mode.ABORTED}),
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


@dataclass
class FeedResult:
    data: list[Chunk] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def joined(self) -> bytes:
        return b"".join(self.data)


class StreamEngine:
    """Frames, rewrites and forwards one main migration channel (source -> destination)."""

    # The engine's state is ``mode`` (see TRANSITIONS); ``stop_reason`` says why it left
    # STREAMING/HOLDING for PASSTHROUGH or ABORTED.

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.framer = StreamFramer(legacy_page_bits=self.config.legacy_page_bits)
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
        self.unframed: tuple[Reason, str, int] | None = None
        self.pending: DeviceStateLayout | None = None  # a framed end awaiting confirmation
        self.reports: list[Event] = []  # what the rewriters decoded (e.g. ARM CpuSeen)
        self.layout: DeviceStateLayout | None = None
        self.stop_reason: Reason | None = None

    # -- public API ---------------------------------------------------------------------

    @property
    def stats(self) -> RamStats:
        return self.framer.stats

    @property
    def held_bytes(self) -> int:
        return len(self._held) if self._held is not None else 0

    def feed(self, data: Chunk) -> FeedResult:
        """Take the next bytes from the source; return what to forward and what happened."""
        res = FeedResult()
        mv = memoryview(data)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        n = len(mv)
        chunk_start = self.received
        self.received += n
        if n == 0:
            return res
        mode = self.mode
        try:
            if mode == Mode.PASSTHROUGH:
                self._out(res, mv)
            elif mode == Mode.STREAMING:
                self._stream(mv, chunk_start, res)
            elif mode == Mode.HOLDING:
                self._hold(mv, res)
            elif mode == Mode.DONE:
                self._after_done(mv, chunk_start, res)
        except Exception as e:  # a bug must stop rewriting, never crash the caller
            self._internal_error(res, e, mv, chunk_start)
        self.forwarded_in = self.received if self.mode == Mode.PASSTHROUGH else \
            self.forwarded_in
        return res

    def feed_eof(self) -> FeedResult:
        """The source closed its side. Flush or report what is incomplete."""
        res = FeedResult()
        try:
            self._eof(res)
        except Exception as e:  # a bug must stop rewriting, never crash the caller
            self._internal_error(res, e, memoryview(b""), self.received)
        return res

    def _eof(self, res: FeedResult) -> None:
        if self.mode == Mode.STREAMING:
            fr = self.framer
            at = self.received
            if self._carry or fr.need:
                err = TruncatedError(self.forwarded_in,
                                     f"{max(self._need, fr.need)} bytes of an item",
                                     f"the end of the stream after {len(self._carry)}")
            elif fr.state in (ST_DONE, ST_AFTER_EOF):
                return  # complete (EOF without device state needs no description)
            else:
                err = TruncatedError(at, "more records (the stream ended before EOF)",
                                     "the end of the stream")
            self._not_understood(res, Reason.TRUNCATED, str(err), err.offset, memoryview(b""),
                                 at)
        elif self.mode == Mode.HOLDING and self.end_at_source_eof:
            self._try_end(res)
        elif self.end_pending:
            self._confirm(res)  # the source closed: nothing else can follow
        if self.end_unconfirmed:
            self._unframed_verdict(res)
        if self.mode == Mode.HOLDING:
            assert self._held is not None
            self._not_understood(
                res, Reason.NO_DESCRIPTION,
                "the stream ended before a VM description that frames the device state "
                f"({len(self._held)} bytes held"
                + (f"; a {self._oversized}-byte description was not parsed: over "
                   f"max_description ({self.config.max_description}) or "
                   f"{MAX_DESCRIPTION_CONTAINERS} objects and arrays"
                   if self._oversized else "") + ")",
                self._held.start_offset, memoryview(b""), self.received)

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

    # -- streaming ----------------------------------------------------------------------

    def _stream(self, mv: memoryview, chunk_start: int, res: FeedResult) -> None:
        fr = self.framer
        n = len(mv)
        pos = 0
        try:
            while self._carry:
                c = self._carry
                take = min(n - pos, self._need - len(c))
                if take > 0:
                    c += mv[pos : pos + take]
                    pos += take
                if len(c) < self._need:
                    self._events(res)
                    return
                fr.base = self.forwarded_in
                p = fr.advance(c, 0, len(c))
                self._events(res)
                if p:
                    self._out(res, bytes(c[:p]))
                    self.forwarded_in += p
                    del c[:p]
                if fr.state == ST_HOLD:
                    # The device state starts at forwarded_in: rest of carry + rest of chunk.
                    rest = bytes(c)
                    self._carry = bytearray()
                    self._start_hold(res, [rest, mv[pos:]])
                    return
                if fr.need:
                    if fr.need > MAX_ITEM:
                        raise FormatError(self.forwarded_in,
                                          f"an item of at most {MAX_ITEM} bytes",
                                          f"{fr.need} bytes")
                    self._need = fr.need
                    continue
                if c:  # cannot happen: advance consumes all of a carry it does not need more of
                    raise AssertionError("framer left bytes without asking for more")
            fr.base = chunk_start
            p = fr.advance(mv, pos, n)
            self._events(res)
            if p > pos:
                self._out(res, mv[pos:p])
            self.forwarded_in = chunk_start + p
            if fr.state == ST_HOLD:
                self._start_hold(res, [mv[p:]])
            elif fr.need:
                if fr.need > MAX_ITEM:
                    raise FormatError(self.forwarded_in, f"an item of at most {MAX_ITEM} bytes",
                                      f"{fr.need} bytes")
                self._carry = bytearray(mv[p:])
                self._need = fr.need
        except (FormatError, Unsupported) as e:
            self._events(res)
            reason = e.reason if isinstance(e, Unsupported) else Reason.FORMAT_ERROR
            offset = e.offset if e.offset is not None else self.forwarded_in
            self._not_understood(res, reason, str(e), offset, mv, chunk_start)

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

    def _not_understood(self, res: FeedResult, reason: Reason, message: str, offset: int,
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

    # -- holding the device state ---------------------------------------------------------------

    def _start_hold(self, res: FeedResult, pieces: list[Chunk]) -> None:
        self._enter(Mode.HOLDING)
        self._held = HeldDeviceState(self.forwarded_in, self.config.hold_cap,
                                     self.config.hold_budget)
        res.events.append(DeviceStateHeld(self.forwarded_in))
        for piece in pieces:
            if len(piece):
                self._hold(memoryview(piece), res)
                if self.mode != Mode.HOLDING:
                    return

    def _hold(self, mv: memoryview, res: FeedResult) -> None:
        held = self._held
        assert held is not None
        try:
            held.add(mv)
        except (HoldCapExceeded, HoldBudgetExhausted) as e:
            reason = (Reason.HOLD_CAP_EXCEEDED if isinstance(e, HoldCapExceeded)
                      else Reason.HOLD_BUDGET_EXHAUSTED)
            self._not_understood(res, reason, str(e), held.start_offset, mv,
                                 self.received - len(mv))
            return
        if self.end_at_source_eof:
            return  # the end of the stream is the source closing: see feed_eof
        self.unframed = None  # more bytes: an earlier candidate was not the end
        self.pending = None
        self._try_end(res)

    @property
    def end_unconfirmed(self) -> bool:
        """A description at the end of what is held parsed but does not frame it, and no
        byte has come since: the driver should call :meth:`conclude` if none comes within
        a short delay (the source, waiting on the return path, will send nothing more)."""
        return self.mode == Mode.HOLDING and self.unframed is not None

    @property
    def end_pending(self) -> bool:
        """With the return path: a description at the end of what is held frames it and
        passed every check, and no byte has come since. The driver calls :meth:`conclude`
        when none comes within a short quiet window (the source, waiting on the return
        path, sends nothing after the real description; a planted one is followed by the
        rest of the device state in the same burst)."""
        return self.mode == Mode.HOLDING and self.pending is not None

    def conclude(self) -> FeedResult:
        """No byte came within the driver's window after the end of what is held: release
        a pending end (:attr:`end_pending`), or take an unframed one as the verdict
        (:attr:`end_unconfirmed`: passthrough of everything held, or abort). Nothing to do
        otherwise."""
        res = FeedResult()
        try:
            if self.end_pending:
                self._confirm(res)
            elif self.end_unconfirmed:
                self._unframed_verdict(res)
        except Exception as e:  # a bug must stop rewriting, never crash the caller
            self._internal_error(res, e, memoryview(b""), self.received)
        return res

    def _confirm(self, res: FeedResult) -> None:
        layout = self.pending
        assert layout is not None
        self.pending = None
        self._release(res, layout)

    def _unframed_verdict(self, res: FeedResult) -> None:
        assert self.unframed is not None
        reason, message, offset = self.unframed
        self._not_understood(res, reason, message, offset,
                             memoryview(b""), self.received)

    @property
    def end_at_source_eof(self) -> bool:
        """Without the return path the source closes the connection right after the VM
        description, so the end of the device state is a fact of the transport: it is
        framed at the source's EOF, and guest bytes that imitate a description (they can
        only be in the device state, before the real one) can never be taken for the end.
        With the return path the source waits for the destination instead, and the end is
        recognised by content (:meth:`_try_end`)."""
        return "OPEN_RETURN_PATH" not in self.framer.commands_seen

    def _try_end(self, res: FeedResult) -> None:
        """Release the device state if a description at the end of what is held frames it."""
        held = self._held
        assert held is not None
        for p in held.candidates():
            raw = memoryview(held.buf)[p + 6 :]
            if len(raw) > self.config.max_description:
                self._oversized = len(raw)  # not parsed: said at the end if nothing frames
                continue
            if held.buf.count(b"{", p + 6) + held.buf.count(b"[", p + 6) > \
                    MAX_DESCRIPTION_CONTAINERS:
                self._oversized = len(raw)
                continue
            desc = parse_description(raw)
            if desc is None:
                continue  # not a description: keep waiting
            try:
                layout = frame_device_state(held.buf, p, desc)
            except DescriptionMismatch as e:
                self.unframed = (Reason.DEVICE_STATE_NOT_FRAMED,
                                 f"the VM description does not frame the device state: {e}",
                                 held.start_offset + e.rel_offset)
                if self.end_at_source_eof:
                    self._unframed_verdict(res)  # the end is known: this is the verdict
                    return
                # With the return path the end is only a hypothesis: a description a guest
                # planted, followed by the rest of the real device state, looks like this
                # until the next byte. Not a verdict: wait (conclude() decides if nothing
                # more arrives).
                continue
            if not self.end_at_source_eof:
                why = self._unlike_the_end(raw, desc, layout)
                if why is not None:
                    self.unframed = (Reason.DESCRIPTION_NOT_RECOGNISED,
                                     f"the VM description at the end is not taken for the "
                                     f"stream's own: {why}", held.start_offset + p)
                    continue
                self.pending = layout  # confirmed by the quiet window (or the source's EOF)
                return
            self._release(res, layout)
            return

    def _unlike_the_end(self, raw: memoryview, desc: dict[str, object],
                        layout: DeviceStateLayout) -> str | None:
        """Why a framing description, with the return path, is not taken for the end:
        not QEMU's serialisation or not this stream's (:func:`unlike_qemus`), or a section
        a rewriter claims is not in a layout it knows field for field."""
        why = unlike_qemus(raw, desc, self._facts())
        if why is not None:
            return why
        devices = layout.description["devices"]
        for item, rw in self._claimed(layout):
            why = rw.recognises(item, devices[item.device_index])
            if why is not None:
                return f"section {item.idstr!r} instance {item.instance_id}: {why}"
        return None

    def _facts(self) -> StreamFacts:
        fr = self.framer
        return StreamFacts(fr.page_size, fr.machine, tuple(fr.config_subsections))

    def _claimed(self, layout: DeviceStateLayout) -> list[tuple[FullSection, SectionRewriter]]:
        """Each FULL section with the first rewriter that claims it."""
        devices = layout.description["devices"]
        out = []
        for item in layout.items:
            if isinstance(item, FullSection):
                rw = next((r for r in self.config.rewriters
                           if r.claims(item, devices[item.device_index])), None)
                if rw is not None:
                    out.append((item, rw))
        return out

    def _release(self, res: FeedResult, layout: DeviceStateLayout) -> None:
        held = self._held
        assert held is not None
        buf = held.buf
        base = held.start_offset
        self.layout = layout
        for item in layout.items:
            if isinstance(item, FullSection):
                res.events.append(SectionFramed(
                    base + item.offset, item.end - item.offset, "FULL", item.section_id,
                    item.idstr, item.instance_id, item.version_id))
            else:
                res.events.append(CommandFramed(base + item.offset, item.end - item.offset,
                                                item.command, item.end - item.offset - 5))
        res.events.append(EofFramed(base + layout.eof_offset, 1))
        res.events.append(VmDescriptionFramed(
            base + layout.description_offset, layout.end - layout.description_offset,
            layout.end - layout.description_offset - 5))
        out = self._rewrite(res, buf, layout)
        if out is None:  # not understood or refused: handled
            return
        rewritten = out is not buf
        self._rewritten_release = rewritten
        self._out(res, out if rewritten else memoryview(buf))
        res.events.append(DeviceStateReleased(base, len(buf), len(out), rewritten))
        res.events.append(StreamComplete(base + layout.end))
        self.forwarded_in = self.received
        self._enter(Mode.DONE)
        self._drop_held()

    def _rewrite(self, res: FeedResult, buf: bytearray,
                 layout: DeviceStateLayout) -> bytes | bytearray | None:
        """Hand every section to the rewriters that claim it: decode all, then plan all.
        Returns the device state to release (``buf`` itself when unchanged), or None when a
        rewriter refused (the engine has then stopped rewriting)."""
        rewriters = self.config.rewriters
        if not rewriters:
            return buf
        base = self._held.start_offset if self._held is not None else 0
        claimed: list[tuple[SectionRewriter, Decoded]] = []
        edits: list[SectionEdit] = []
        facts = self._facts()
        try:
            for rw in rewriters:
                rw.begin(facts)
            for item, rw in self._claimed(layout):
                decoded = rw.decode(buf, item, base)
                claimed.append((rw, decoded))
                self.reports.extend(decoded.events)
                res.events.extend(decoded.events)
            apply = not self.config.dry_run
            for rw, decoded in claimed:
                edit = rw.plan(decoded, apply=apply)
                if edit is not None:
                    edits.append(edit)
        except SectionRefused as e:
            self._not_understood(res, e.reason, f"{e.context}{e}", base,
                                 memoryview(b""), self.received)
            return None
        for edit in edits:
            res.events.extend(edit.events)
        if self.config.dry_run or not edits:
            return buf
        out, eof = self._splice(buf, layout, edits)
        self._check_rewrite(out, eof, layout)
        return out

    @staticmethod
    def _check_rewrite(out: bytes, eof: int, layout: DeviceStateLayout) -> None:
        """Frame the rewritten device state with its new description, field by field, as
        a reader of the stream (scripts/analyze-migration.py) would: the same sections in
        the same order, every byte accounted for. Raises if not (a bug in a rewriter or
        the splicing: the caller then releases the original untouched, internal_error)."""
        desc = parse_description(memoryview(out)[eof + 6 :])
        if desc is None:
            raise AssertionError("the rewritten VM description does not parse")
        new = frame_device_state(out, eof, desc)
        if new.end != len(out):
            raise AssertionError("the rewritten VM description does not end the stream")
        before = [(type(i), getattr(i, "idstr", None), getattr(i, "instance_id", None))
                  for i in layout.items]
        after = [(type(i), getattr(i, "idstr", None), getattr(i, "instance_id", None))
                 for i in new.items]
        if before != after:
            raise AssertionError("the rewritten device state frames into other items")

    @staticmethod
    def _splice(buf: bytearray, layout: DeviceStateLayout,
                edits: list[SectionEdit]) -> tuple[bytes, int]:
        """The new device state (the splices in stream order, then EOF and the updated VM
        description) and where its EOF is."""
        splices = sorted((s for e in edits for s in e.splices), key=lambda s: s.start)
        pieces: list[bytes | memoryview] = []
        mvb = memoryview(buf)
        pos = 0
        for s in splices:
            if s.start < pos or s.end > layout.eof_offset:
                raise AssertionError("section rewriters produced overlapping splices")
            pieces.append(mvb[pos : s.start])
            pieces.append(s.data)
            pos = s.end
        pieces.append(mvb[pos : layout.eof_offset])
        eof = sum(len(p) for p in pieces)
        lengths = {e.section.device_index: e.field_counts for e in edits if e.field_counts}
        removed = {e.section.device_index: e.removed_subsections for e in edits
                   if e.removed_subsections}
        added = {e.section.device_index: [(dict(a.entry), a.after)
                                          for a in e.added_subsections]
                 for e in edits if e.added_subsections}
        body = encode_description(with_array_lengths(layout.description, lengths, removed,
                                                     added))
        pieces.append(bytes((wire.VM_EOF, wire.VM_VMDESCRIPTION)))
        pieces.append(wire.BE32.pack(len(body)))
        pieces.append(body)
        return b"".join(pieces), eof

    def _after_done(self, mv: memoryview, chunk_start: int, res: FeedResult) -> None:
        message = (f"{len(mv)} bytes arrived after the end of the stream (after the VM "
                   "description)")
        if self._rewritten_release:
            # Rewritten device state is already out; more would splice two streams.
            self._enter(Mode.ABORTED)
            self.stop_reason = Reason.DATA_AFTER_END
            res.events.append(Aborted(Reason.DATA_AFTER_END, message, chunk_start))
            return
        self._not_understood(res, Reason.DATA_AFTER_END, message, chunk_start, mv, chunk_start)
