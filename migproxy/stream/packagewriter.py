"""The writer of postcopy's package: hold the PACKAGED command whole, frame it with the
section layouts (:mod:`migproxy.stream.package`), rewrite the sections the rewriters claim,
and release it with its new length; then the streamed part goes on (RAM pages, EOF).

The package is held from its command's first byte until its last: the length comes first,
so nothing of it can go out before the rewrite is known. It is bounded by ``hold_cap`` and
the shared ``hold_budget`` (a package longer than the cap is refused at once, by its
length, before anything is held). A package that does not frame, or a rewriter that
refuses, stops rewriting exactly as for the precopy device state: the package and the
rest go out untouched (passthrough) or nothing does (abort).
"""

from __future__ import annotations

from migproxy.stream import wire
from migproxy.stream.devstate import HeldDeviceState, HoldBudgetExhausted, HoldCapExceeded
from migproxy.stream.enginestate import FeedResult, Mode
from migproxy.stream.events import DeviceStateHeld, DeviceStateReleased, PackageRestKept
from migproxy.stream.framerstate import ST_TOP
from migproxy.stream.package import (
    PACKAGE_HEADER,
    PackageLayout,
    PackageLayouts,
    PackageNotFramed,
    frame_package,
)
from migproxy.stream.reasons import Reason
from migproxy.stream.rewriter import SectionEdit, SectionRewriter
from migproxy.stream.vmdesc import FullSection
from migproxy.stream.writer import DeviceStateWriter, item_events


class PackageWriter(DeviceStateWriter):
    """Holds, frames, rewrites and releases postcopy's package (a part of
    :class:`~migproxy.stream.engine.StreamEngine`)."""

    def _start_package(self, res: FeedResult, data: memoryview, start: int) -> None:
        """The framer stopped at a PACKAGED command at ``start`` (== ``forwarded_in``);
        ``data`` is the input from there on."""
        total = PACKAGE_HEADER + self.framer.package_length
        if total > self.config.hold_cap:
            self._not_understood(
                res, Reason.HOLD_CAP_EXCEEDED,
                f"the postcopy package ({total} bytes) exceeds the hold-back cap of "
                f"{self.config.hold_cap} bytes", start, data, start)
            return
        self._enter(Mode.PACKAGE)
        self._held = HeldDeviceState(start, self.config.hold_cap, self.config.hold_budget)
        res.events.append(DeviceStateHeld(start))
        self._package(data, start, res)

    def _package(self, mv: memoryview, chunk_start: int, res: FeedResult) -> None:
        """More input while the package is held (``mv`` starts at ``chunk_start``)."""
        held = self._held
        assert held is not None
        total = PACKAGE_HEADER + self.framer.package_length
        take = min(total - len(held), len(mv))
        try:
            held.add(mv[:take])
        except (HoldCapExceeded, HoldBudgetExhausted) as e:
            reason = (Reason.HOLD_CAP_EXCEEDED if isinstance(e, HoldCapExceeded)
                      else Reason.HOLD_BUDGET_EXHAUSTED)
            self._not_understood(res, reason, str(e), held.start_offset, mv, chunk_start)
            return
        if len(held) < total:
            return
        if self._release_package(res, mv, chunk_start) and take < len(mv):
            self._stream(mv[take:], chunk_start + take, res)

    def _stream(self, mv: memoryview, chunk_start: int, res: FeedResult) -> None:
        raise NotImplementedError  # the engine's (StreamEngine._stream)

    def _release_package(self, res: FeedResult, mv: memoryview, chunk_start: int) -> bool:
        """The whole package is held: frame, rewrite and release it. True when streaming
        goes on after it; False when the engine stopped rewriting."""
        held = self._held
        layouts = self.config.package_layouts
        assert held is not None
        assert layouts is not None
        buf = held.buf
        base = held.start_offset
        try:
            pkg = frame_package(buf, PACKAGE_HEADER, len(buf) - PACKAGE_HEADER, layouts)
        except PackageNotFramed as e:
            self._not_understood(res, e.reason, f"postcopy package not framed: {e}",
                                 base + e.rel_offset, mv, chunk_start)
            return False
        res.events.extend(item_events(pkg.items, base))
        if pkg.framed_end < len(buf):
            res.events.append(PackageRestKept(base + pkg.framed_end, len(buf) - pkg.framed_end))
        out: bytes | bytearray = buf
        if self.config.rewriters:
            edits = self._plan_edits(res, buf, base, self._claimed_in(pkg), mv, chunk_start)
            if edits is None:
                return False
            if edits and not self.config.dry_run:
                out = splice_package(buf, pkg, edits)
                check_package(out, pkg, layouts)
        rewritten = out is not buf
        self._rewritten_release = self._rewritten_release or rewritten
        self._out(res, out if rewritten else memoryview(buf))
        res.events.append(DeviceStateReleased(base, len(buf), len(out), rewritten))
        self.forwarded_in = base + len(buf)
        self._drop_held()
        self._enter(Mode.STREAMING)
        self.framer.state = ST_TOP
        self.framer.package_seen = True
        return True

    def _claimed_in(self, pkg: PackageLayout) -> list[tuple[FullSection, SectionRewriter]]:
        """Each framed section of the package with the first rewriter that claims it."""
        out = []
        for index, item in enumerate(pkg.items):
            if isinstance(item, FullSection):
                entry = pkg.entries[index]
                rw = next((r for r in self.config.rewriters if r.claims(item, entry)), None)
                if rw is not None:
                    out.append((item, rw))
        return out


def splice_package(buf: bytearray, pkg: PackageLayout, edits: list[SectionEdit]) -> bytes:
    """The new PACKAGED command: the splices in order (all inside the framed part), and the
    command's be32 length adjusted; the rest of the package is kept byte for byte."""
    splices = sorted((s for e in edits for s in e.splices), key=lambda s: s.start)
    pieces: list[bytes | memoryview] = []
    mvb = memoryview(buf)
    pos = PACKAGE_HEADER
    for s in splices:
        if s.start < pos or s.end > pkg.framed_end:
            raise AssertionError("section rewriters produced overlapping splices or splices "
                                 "outside the framed sections of the package")
        pieces.append(mvb[pos : s.start])
        pieces.append(s.data)
        pos = s.end
    pieces.append(mvb[pos:])
    body = b"".join(pieces)
    return bytes(buf[:5]) + wire.BE32.pack(len(body)) + body


def check_package(out: bytes, pkg: PackageLayout, layouts: PackageLayouts) -> None:
    """Frame the rewritten package again, as the destination will read it: the same
    sections and commands in the same order, and the same unframed rest. Raises if not (a
    bug: the engine then releases the original untouched, ``internal_error``)."""
    length = wire.BE32.unpack_from(out, 5)[0]
    if length != len(out) - PACKAGE_HEADER:
        raise AssertionError("the rewritten package's length is not its size")
    try:
        new = frame_package(out, PACKAGE_HEADER, length, layouts)
    except PackageNotFramed as e:
        raise AssertionError(f"the rewritten package does not frame: {e}") from e
    before = [(type(i), getattr(i, "idstr", None), getattr(i, "instance_id", None))
              for i in pkg.items]
    after = [(type(i), getattr(i, "idstr", None), getattr(i, "instance_id", None))
             for i in new.items]
    if before != after or len(out) - new.framed_end != pkg.length + PACKAGE_HEADER - \
            pkg.framed_end:
        raise AssertionError("the rewritten package frames into other items")
