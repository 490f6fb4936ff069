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

This module is the facade (``StreamEngine``: feeding, streaming, holding); the rest is in
:mod:`migproxy.stream.enginestate` (``Mode``, ``EngineConfig``, ``FeedResult``, the state
and the stop), :mod:`migproxy.stream.enddetect` (the end of the device state) and
:mod:`migproxy.stream.writer` (its release, rewritten).
"""

from __future__ import annotations

from migproxy.stream.devstate import HeldDeviceState, HoldBudgetExhausted, HoldCapExceeded
from migproxy.stream.enddetect import EndDetection
from migproxy.stream.enginestate import TRANSITIONS, Chunk, EngineConfig, FeedResult, Mode
from migproxy.stream.errors import FormatError, TruncatedError, Unsupported
from migproxy.stream.events import Aborted, DeviceStateHeld, StreamComplete
from migproxy.stream.framer import ST_AFTER_EOF, ST_DONE, ST_HOLD, ST_PACKAGE
from migproxy.stream.framerstate import RamWalk
from migproxy.stream.packagewriter import PackageWriter
from migproxy.stream.policy import DEFAULT_HOLD_CAP, MAX_DESCRIPTION_CONTAINERS, MAX_ITEM, Policy
from migproxy.stream.reasons import Reason

__all__ = ["DEFAULT_HOLD_CAP", "MAX_ITEM", "TRANSITIONS", "EngineConfig", "FeedResult", "Mode",
           "Policy", "RamWalk", "StreamEngine"]


class StreamEngine(EndDetection, PackageWriter):
    """Frames, rewrites and forwards one main migration channel (source -> destination).

    This class feeds the streamed part to the framer and holds the device state; its
    parts: :class:`~migproxy.stream.enginestate.EngineState` (state, output, stopping),
    :class:`~migproxy.stream.writer.DeviceStateWriter` (release and rewrite),
    :class:`~migproxy.stream.enddetect.EndDetection` (the end of the device state) and
    :class:`~migproxy.stream.packagewriter.PackageWriter` (postcopy's package).
    """

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
            elif mode == Mode.PACKAGE:
                self._package(mv, chunk_start, res)
            elif mode == Mode.DONE:
                self._after_done(mv, chunk_start, res)
        except Exception as e:  # a bug must stop rewriting, never crash the caller
            self._internal_error(res, e, mv, chunk_start)
        self.forwarded_in = self.received if self.mode == Mode.PASSTHROUGH else \
            self.forwarded_in
        return res

    def ram_walk(self) -> RamWalk | None:
        """Whether the next bytes may be walked and forwarded outside the engine (the
        daemon's RAM pump), and how: a :class:`~migproxy.stream.framerstate.RamWalk` while
        the engine streams RAM records and carries no incomplete item; else None."""
        if self.mode != Mode.STREAMING or self._carry:
            return None
        return self.framer.ram_walk()

    def walked(self, nbytes: int, walk: RamWalk, skip_left: int, pages: int,
               zeros: int) -> None:
        """``nbytes`` bytes from the source were forwarded unchanged outside the engine
        as :meth:`ram_walk` allowed: the first ``walk.skip - skip_left`` of them the rest
        of a page, then ``pages`` PAGE|CONTINUE and ``zeros`` ZERO|CONTINUE records
        (all the bytes were of these; the caller feeds what follows)."""
        ps = walk.page_size
        taken = walk.skip - skip_left
        if (self.ram_walk() != walk or not 0 <= skip_left <= walk.skip
                or (skip_left and (pages or zeros))
                or nbytes != taken + pages * (8 + ps) + zeros * 9):
            raise ValueError(f"walked: {nbytes} bytes do not match {walk} "
                             f"(skip left {skip_left}, {pages} pages, {zeros} zero pages)")
        self.framer.walked(skip_left, pages, zeros)
        self.received += nbytes
        self.forwarded_in += nbytes
        self.sent += nbytes

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
        elif self.mode == Mode.PACKAGE:
            assert self._held is not None
            self._not_understood(res, Reason.TRUNCATED,
                                 "the stream ended inside the postcopy package "
                                 f"({len(self._held)} of "
                                 f"{9 + self.framer.package_length} bytes)",
                                 self._held.start_offset, memoryview(b""), self.received)
            return
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

    # -- streaming ----------------------------------------------------------------------

    def _stream(self, mv: memoryview, chunk_start: int, res: FeedResult) -> None:
        fr = self.framer
        n = len(mv)
        try:
            pos = self._stream_carry(mv, res) if self._carry else 0
            if pos is None:
                return
            fr.base = chunk_start
            p = fr.advance(mv, pos, n)
            self._events(res)
            if p > pos:
                self._out(res, mv[pos:p])
            self.forwarded_in = chunk_start + p
            if fr.state == ST_HOLD:
                self._start_hold(res, [mv[p:]])
            elif fr.state == ST_PACKAGE:
                self._start_package(res, mv[p:], chunk_start + p)
            elif self._postcopy_end(res):
                return
            elif fr.need:
                self._need = self._item_size()
                self._carry = bytearray(mv[p:])
        except (FormatError, Unsupported) as e:
            self._events(res)
            reason = e.reason if isinstance(e, Unsupported) else Reason.FORMAT_ERROR
            offset = e.offset if e.offset is not None else self.forwarded_in
            self._not_understood(res, reason, str(e), offset, mv, chunk_start)

    def _stream_carry(self, mv: memoryview, res: FeedResult) -> int | None:
        """Complete the item the carry holds the start of, with the chunk's first bytes,
        and frame it (and the items after it in the carry). The chunk's position to go on
        from, or None when the chunk is used up or the engine left streaming."""
        fr = self.framer
        n = len(mv)
        pos = 0
        while self._carry:
            c = self._carry
            take = min(n - pos, self._need - len(c))
            if take > 0:
                c += mv[pos : pos + take]
                pos += take
            if len(c) < self._need:
                self._events(res)
                return None
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
                return None
            if fr.state == ST_PACKAGE:
                # The package starts at forwarded_in: rest of carry + rest of chunk.
                data = memoryview(bytes(c) + bytes(mv[pos:]))
                self._carry = bytearray()
                self._start_package(res, data, self.forwarded_in)
                return None
            self._postcopy_end(res)
            if fr.need:
                self._need = self._item_size()
                continue
            if c:  # cannot happen: advance consumes all of a carry it does not need more of
                raise AssertionError("framer left bytes without asking for more")
        return pos

    def _item_size(self) -> int:
        """The size of the item the framer waits for, within MAX_ITEM."""
        need = self.framer.need
        if need > MAX_ITEM:
            raise FormatError(self.forwarded_in, f"an item of at most {MAX_ITEM} bytes",
                              f"{need} bytes")
        return need

    def _postcopy_end(self, res: FeedResult) -> bool:
        """After postcopy's package, EOF ends the stream (there is no VM description)."""
        fr = self.framer
        if fr.state != ST_DONE or not fr.package_seen or self.mode != Mode.STREAMING:
            return False
        self._enter(Mode.DONE)
        res.events.append(StreamComplete(self.forwarded_in))
        return True

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
        self.prepared = None
        self._try_end(res)

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
