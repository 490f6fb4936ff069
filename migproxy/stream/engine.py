"""The sans-IO stream engine for the main migration channel.

Feed it bytes as they arrive from the source; it returns the bytes to forward to the
destination and the events it saw. No sockets, no clocks, no asyncio: the daemon, the
offline tools and the tests all drive this one object.

* Everything before the device-state tail (header, configuration, commands, RAM) is framed
  record by record and forwarded as slices of the input (never copied, never buffered
  beyond an incomplete record header).
* The tail (FULL sections after the last iterable END) is held back under a cap until EOF
  and the VM description have arrived, framed exactly with the description, the ARM
  ``cpu`` sections rewritten by the profile, the description updated, and released at once
  (without waiting for the source to close the connection).
* Whatever is not understood switches the engine to ``passthrough`` (the rest is forwarded
  untouched, including anything held) or ``abort`` (nothing more is forwarded), as the
  policy says, with an event naming the reason. A partially rewritten stream is never
  emitted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from migproxy.arm.cpu_section import (
    F_IDX,
    F_VAL,
    CpuLayoutError,
    CpuSection,
    is_arm_cpu,
    parse_cpu_section,
)
from migproxy.arm.profile import Profile
from migproxy.stream import wire
from migproxy.stream.devstate import HeldDeviceState, HoldCapExceeded
from migproxy.stream.errors import FormatError, RewriteRefused, TruncatedError, Unsupported
from migproxy.stream.events import (
    Aborted,
    CpuRewritten,
    CpuSeen,
    CpuState,
    Event,
    HoldStarted,
    ItemFramed,
    PassthroughEntered,
    StreamComplete,
    TailReleased,
)
from migproxy.stream.framer import ST_AFTER_EOF, ST_DONE, ST_HOLD, RamStats, StreamFramer
from migproxy.stream.vmdesc import (
    DescriptionMismatch,
    DeviceStateLayout,
    FullSection,
    encode_description,
    frame_device_state,
    parse_description,
    with_array_lengths,
)

Chunk = bytes | bytearray | memoryview

DEFAULT_HOLD_CAP = 64 * 1024 * 1024
MAX_ITEM = 1024 * 1024  # largest item (record header, command) buffered contiguously


class Policy(enum.StrEnum):
    PASSTHROUGH = "passthrough"
    ABORT = "abort"


class Mode(enum.StrEnum):
    STREAMING = "streaming"
    HOLDING = "holding"
    DONE = "done"
    PASSTHROUGH = "passthrough"
    ABORTED = "aborted"


@dataclass
class EngineConfig:
    profile: Profile | None = None  # None: frame and report only, never rewrite
    policy: Policy = Policy.PASSTHROUGH
    dry_run: bool = False  # compute and report rewrites, forward the original bytes
    hold_cap: int = DEFAULT_HOLD_CAP
    legacy_page_bits: int | None = None


@dataclass
class FeedResult:
    data: list[Chunk] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def joined(self) -> bytes:
        return b"".join(self.data)


class StreamEngine:
    """Frames, rewrites and forwards one main migration channel (source -> destination)."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.framer = StreamFramer(legacy_page_bits=self.config.legacy_page_bits)
        self.mode = Mode.STREAMING
        self.received = 0  # bytes fed so far (absolute offset of the next input byte)
        self.forwarded_in = 0  # input bytes already represented in the output
        self.sent = 0  # bytes output so far
        self._carry = bytearray()  # unforwarded start of an incomplete item (streaming)
        self._need = 0
        self._tail: HeldDeviceState | None = None
        self._rewritten_release = False
        self.cpus: list[CpuState] = []
        self.layout: DeviceStateLayout | None = None
        self.stop_reason: str | None = None

    # -- public API ---------------------------------------------------------------------

    @property
    def stats(self) -> RamStats:
        return self.framer.stats

    @property
    def held_bytes(self) -> int:
        return len(self._tail) if self._tail is not None else 0

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
        if mode == Mode.PASSTHROUGH:
            self._out(res, mv)
        elif mode == Mode.STREAMING:
            self._stream(mv, chunk_start, res)
        elif mode == Mode.HOLDING:
            self._hold(mv, res)
        elif mode == Mode.DONE:
            self._after_done(mv, chunk_start, res)
        self.forwarded_in = self.received if self.mode == Mode.PASSTHROUGH else \
            self.forwarded_in
        return res

    def feed_eof(self) -> FeedResult:
        """The source closed its side. Flush or report what is incomplete."""
        res = FeedResult()
        if self.mode == Mode.STREAMING:
            fr = self.framer
            at = self.received
            if self._carry or fr.need:
                err = TruncatedError(self.forwarded_in,
                                     f"{max(self._need, fr.need)} bytes of an item",
                                     f"the end of the stream after {len(self._carry)}")
            elif fr.state in (ST_DONE, ST_AFTER_EOF):
                return res  # complete (EOF without device state needs no description)
            else:
                err = TruncatedError(at, "more records (the stream ended before EOF)",
                                     "the end of the stream")
            self._not_understood(res, "truncated", str(err), err.offset, memoryview(b""),
                                 at)
        elif self.mode == Mode.HOLDING:
            assert self._tail is not None
            self._not_understood(
                res, "no_description",
                "the stream ended before a VM description that frames the device state "
                f"({len(self._tail)} bytes held)", self._tail.start_offset, memoryview(b""),
                self.received)
        return res

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
                    # The tail starts at forwarded_in: held = rest of carry + rest of chunk.
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
            reason = e.reason if isinstance(e, Unsupported) else "format_error"
            offset = e.offset if e.offset is not None else self.forwarded_in
            self._not_understood(res, reason, str(e), offset, mv, chunk_start)

    def _not_understood(self, res: FeedResult, reason: str, message: str, offset: int,
                        mv: memoryview, chunk_start: int) -> None:
        """Stop rewriting: forward everything not yet forwarded untouched, or abort."""
        self.stop_reason = reason
        if self.config.policy == Policy.ABORT:
            self.mode = Mode.ABORTED
            res.events.append(Aborted(reason, message, offset))
        else:
            pieces: list[Chunk] = []
            if self._tail is not None:
                pieces.append(memoryview(self._tail.buf))
                pieces.append(mv)
            else:
                pieces = self._unforwarded(mv, chunk_start)
            self.mode = Mode.PASSTHROUGH
            res.events.append(PassthroughEntered(reason, message, offset))
            for piece in pieces:
                self._out(res, piece)
            self.forwarded_in = self.received
        self._carry = bytearray()
        self._tail = None

    # -- holding the tail ------------------------------------------------------------------

    def _start_hold(self, res: FeedResult, pieces: list[Chunk]) -> None:
        self.mode = Mode.HOLDING
        self._tail = HeldDeviceState(self.forwarded_in, self.config.hold_cap)
        res.events.append(HoldStarted(self.forwarded_in))
        for piece in pieces:
            if len(piece):
                self._hold(memoryview(piece), res)
                if self.mode != Mode.HOLDING:
                    return

    def _hold(self, mv: memoryview, res: FeedResult) -> None:
        tail = self._tail
        assert tail is not None
        try:
            tail.add(mv)
        except HoldCapExceeded as e:
            self._not_understood(res, "hold_cap_exceeded", str(e), tail.start_offset, mv,
                                 self.received - len(mv))
            return
        for p in tail.candidates():
            desc = parse_description(memoryview(tail.buf)[p + 6 :])
            if desc is None:
                continue  # not a description: keep waiting
            try:
                layout = frame_device_state(tail.buf, p, desc)
            except DescriptionMismatch as e:
                self._not_understood(
                    res, "tail_not_framed",
                    f"the VM description does not frame the device state: {e}",
                    tail.start_offset + e.rel_offset, memoryview(b""), self.received)
                return
            self._release(res, layout)
            return

    def _release(self, res: FeedResult, layout: DeviceStateLayout) -> None:
        tail = self._tail
        assert tail is not None
        buf = tail.buf
        base = tail.start_offset
        self.layout = layout
        for item in layout.items:
            if isinstance(item, FullSection):
                res.events.append(ItemFramed(
                    base + item.offset, item.end - item.offset, "section",
                    {"type": "FULL", "section_id": item.section_id, "idstr": item.idstr,
                     "instance_id": item.instance_id, "version_id": item.version_id}))
            else:
                res.events.append(ItemFramed(base + item.offset, item.end - item.offset,
                                             "command", {"command": item.command}))
        res.events.append(ItemFramed(base + layout.eof_offset, 1, "eof"))
        res.events.append(ItemFramed(base + layout.description_offset,
                                     layout.end - layout.description_offset, "vmdescription",
                                     {"length": layout.end - layout.description_offset - 5}))
        # Decode every ARM cpu section; rewrite if a profile is set.
        cpus: list[CpuSection] = []
        try:
            for item in layout.items:
                if isinstance(item, FullSection) and is_arm_cpu(item, layout.description):
                    cpu = parse_cpu_section(buf, item)
                    cpus.append(cpu)
                    state = CpuState(item.instance_id, base + item.offset, tuple(cpu.indexes),
                                     tuple(cpu.values))
                    self.cpus.append(state)
                    res.events.append(CpuSeen(state))
        except CpuLayoutError as e:
            self._not_understood(res, "cpu_layout", f"cpu section not understood: {e}", base,
                                 memoryview(b""), self.received)
            return
        out = self._rewrite(res, buf, layout, cpus)
        if out is None:
            return
        if self.mode != Mode.HOLDING:
            return
        rewritten = out is not buf
        self._rewritten_release = rewritten
        self._out(res, out if rewritten else memoryview(buf))
        res.events.append(TailReleased(base, len(buf), len(out), rewritten))
        res.events.append(StreamComplete(base + layout.end))
        self.forwarded_in = self.received
        self.mode = Mode.DONE
        self.framer.state = ST_DONE
        self._tail = None

    def _rewrite(self, res: FeedResult, buf: bytearray, layout: DeviceStateLayout,
                 cpus: list[CpuSection]) -> bytes | bytearray | None:
        profile = self.config.profile
        if profile is None or not cpus:
            return buf
        results = []
        try:
            for cpu in cpus:
                results.append(profile.apply(cpu.indexes, cpu.values))
        except RewriteRefused as e:
            assert self._tail is not None
            self._not_understood(res, "profile_refused", str(e), self._tail.start_offset,
                                 memoryview(b""), self.received)
            return None
        applied = not self.config.dry_run
        for cpu, r in zip(cpus, results, strict=True):
            if r.changed:
                res.events.append(CpuRewritten(
                    cpu.instance_id, len(cpu.indexes), len(r.indexes), tuple(r.dropped),
                    tuple(r.inserted), tuple(r.set), applied))
        if not applied or not any(r.changed for r in results):
            return buf
        for cpu, r in zip(cpus, results, strict=True):
            if r.changed and (not cpu.indexes or not r.indexes):
                self._not_understood(res, "cpu_layout", "cannot rewrite an empty cpreg list "
                                     "or empty it", cpu.section.offset, memoryview(b""),
                                     self.received)
                return None
        pieces: list[bytes | memoryview] = []
        mvb = memoryview(buf)
        pos = 0
        lengths: dict[int, dict[str, int]] = {}
        for cpu, r in zip(cpus, results, strict=True):
            if not r.changed:
                continue
            pieces.append(mvb[pos : cpu.count_offset])
            pieces.append(cpu.encode_arrays(r.indexes, r.values))
            pos = cpu.arrays_end
            n = len(r.indexes)
            lengths[cpu.section.device_index] = {F_IDX: n, F_VAL: n}
        pieces.append(mvb[pos : layout.eof_offset])
        body = encode_description(with_array_lengths(layout.description, lengths))
        pieces.append(bytes((wire.VM_EOF, wire.VM_VMDESCRIPTION)))
        pieces.append(wire.BE32.pack(len(body)))
        pieces.append(body)
        return b"".join(pieces)

    def _after_done(self, mv: memoryview, chunk_start: int, res: FeedResult) -> None:
        message = (f"{len(mv)} bytes arrived after the end of the stream (after the VM "
                   "description)")
        if self._rewritten_release:
            # A rewritten tail is already out; appending more would splice two streams.
            self.mode = Mode.ABORTED
            self.stop_reason = "data_after_end"
            res.events.append(Aborted("data_after_end", message, chunk_start))
            return
        self._not_understood(res, "data_after_end", message, chunk_start, mv, chunk_start)
