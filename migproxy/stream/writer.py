"""The writer of the held device state: release it, rewritten or not.

Once the end of the device state is known (:mod:`migproxy.stream.enddetect`), the writer
reports every item the VM description framed, hands each FULL section to the first section
rewriter that claims it (decode all, then plan all), splices the planned edits in with the
updated description (:func:`splice`), frames the result again as a reader of the stream
would (:func:`check_rewrite`) and releases it. A rewriter's refusal stops rewriting (the
held bytes go out untouched, or nothing does under abort); a rewrite that does not frame is
a bug, which the engine turns into ``internal_error``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from migproxy.stream import vmdesc, wire
from migproxy.stream.enginestate import EngineState, FeedResult, Mode
from migproxy.stream.errors import SectionRefused
from migproxy.stream.events import (
    CommandFramed,
    DeviceStateReleased,
    EofFramed,
    Event,
    SectionFramed,
    StreamComplete,
    VmDescriptionFramed,
)
from migproxy.stream.rewriter import Decoded, SectionEdit, SectionRewriter
from migproxy.stream.vmdesc import (
    DeviceStateCommand,
    DeviceStateLayout,
    FullSection,
    encode_description,
    with_array_lengths,
)


@dataclass
class PreparedRelease:
    """The release of a framed device state, computed before it is due
    (:meth:`DeviceStateWriter._prepare`): emitting it (:meth:`DeviceStateWriter._emit`)
    then changes the engine as releasing at once would have, with the same events in the
    same order. Valid while nothing more is held (``length``)."""

    layout: DeviceStateLayout
    length: int  # the held bytes it was computed for
    events: list[Event] = field(default_factory=list)  # up to the outcome, in order
    reports: list[Event] = field(default_factory=list)  # what the rewriters decoded
    out: bytes | bytearray | None = None  # the device state to release
    refused: SectionRefused | None = None  # a rewriter refused: not understood
    error: Exception | None = None  # a bug: internal_error when emitted


class DeviceStateWriter(EngineState):
    """Releases the held device state (a part of
    :class:`~migproxy.stream.engine.StreamEngine`)."""

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
        self._emit(res, self._prepare(layout))

    def _prepare(self, layout: DeviceStateLayout) -> PreparedRelease:
        """Everything of a release that leaves the engine as it is: the events, the
        rewriters' decode and plan, the splice and its check. Done while a candidate end
        awaits confirmation, so that confirming it only emits."""
        held = self._held
        assert held is not None
        buf = held.buf
        base = held.start_offset
        prep = PreparedRelease(layout, len(buf))
        prep.events.extend(item_events(layout.items, base))
        prep.events.append(EofFramed(base + layout.eof_offset, 1))
        prep.events.append(VmDescriptionFramed(
            base + layout.description_offset, layout.end - layout.description_offset,
            layout.end - layout.description_offset - 5))
        try:
            prep.out = self._rewrite(prep, buf, base, layout)
        except SectionRefused as e:
            prep.refused = e
        except Exception as e:  # a bug: raised again when the release is emitted
            prep.error = e
        return prep

    def _emit(self, res: FeedResult, prep: PreparedRelease) -> None:
        """Release what :meth:`_prepare` computed (or stop, as it found)."""
        held = self._held
        assert held is not None
        assert len(held.buf) == prep.length
        buf = held.buf
        base = held.start_offset
        layout = prep.layout
        self.layout = layout
        res.events.extend(prep.events)
        self.reports.extend(prep.reports)
        if prep.error is not None:
            raise prep.error
        if prep.refused is not None:
            e = prep.refused
            self._not_understood(res, e.reason, f"{e.context}{e}", base, memoryview(b""),
                                 self.received)
            return
        out = prep.out
        assert out is not None
        rewritten = out is not buf
        self._rewritten_release = rewritten
        self._out(res, out if rewritten else memoryview(buf))
        res.events.append(DeviceStateReleased(base, len(buf), len(out), rewritten))
        res.events.append(StreamComplete(base + layout.end))
        self.forwarded_in = self.received
        self._enter(Mode.DONE)
        self._drop_held()

    def _rewrite(self, prep: PreparedRelease, buf: bytearray, base: int,
                 layout: DeviceStateLayout) -> bytes | bytearray:
        """Hand every section to the rewriters that claim it: decode all, then plan all.
        Returns the device state to release (``buf`` itself when unchanged); raises
        SectionRefused when a rewriter refused."""
        if not self.config.rewriters:
            return buf
        edits = self._decode_and_plan(buf, base, self._claimed(layout), prep.reports,
                                      prep.events)
        for edit in edits:
            prep.events.extend(edit.events)
        if self.config.dry_run or not edits:
            return buf
        out, eof = splice(buf, layout, edits)
        check_rewrite(out, eof, layout)
        return out

    def _plan_edits(self, res: FeedResult, buf: bytearray, base: int,
                    claimed: list[tuple[FullSection, SectionRewriter]], mv: memoryview,
                    chunk_start: int) -> list[SectionEdit] | None:
        """Decode every claimed section, then plan each (``base``: the stream offset of
        ``buf[0]``). None when a rewriter refused: the engine has then stopped rewriting
        (``mv`` from ``chunk_start``: the input not held, passed on with what is held)."""
        try:
            edits = self._decode_and_plan(buf, base, claimed, self.reports, res.events)
        except SectionRefused as e:
            self._not_understood(res, e.reason, f"{e.context}{e}", base, mv, chunk_start)
            return None
        for edit in edits:
            res.events.extend(edit.events)
        return edits

    def _decode_and_plan(self, buf: bytearray, base: int,
                         claimed: list[tuple[FullSection, SectionRewriter]],
                         reports: list[Event], events: list[Event]) -> list[SectionEdit]:
        """Decode every claimed section (its events to ``reports`` and ``events`` as they
        come), then plan each; raises SectionRefused when a rewriter refuses."""
        decoded_all: list[tuple[SectionRewriter, Decoded]] = []
        edits: list[SectionEdit] = []
        facts = self._facts()
        for rw in self.config.rewriters:
            rw.begin(facts)
        for item, rw in claimed:
            decoded = rw.decode(buf, item, base)
            decoded_all.append((rw, decoded))
            reports.extend(decoded.events)
            events.extend(decoded.events)
        apply = not self.config.dry_run
        for rw, decoded in decoded_all:
            edit = rw.plan(decoded, apply=apply)
            if edit is not None:
                edits.append(edit)
        return edits


def item_events(items: Sequence[FullSection | DeviceStateCommand], base: int) -> list[Event]:
    """The events of framed device-state items (``base``: the stream offset of their
    buffer's first byte)."""
    out: list[Event] = []
    for item in items:
        if isinstance(item, FullSection):
            out.append(SectionFramed(base + item.offset, item.end - item.offset, "FULL",
                                     item.section_id, item.idstr, item.instance_id,
                                     item.version_id))
        else:
            out.append(CommandFramed(base + item.offset, item.end - item.offset, item.command,
                                     item.end - item.offset - 5))
    return out


def check_rewrite(out: bytes, eof: int, layout: DeviceStateLayout) -> None:
    """Frame the rewritten device state with its new description, field by field, as
    a reader of the stream (scripts/analyze-migration.py) would: the same sections in
    the same order, every byte accounted for. Raises if not (a bug in a rewriter or
    the splicing: the caller then releases the original untouched, internal_error)."""
    desc = vmdesc.parse_description(memoryview(out)[eof + 6 :])
    if desc is None:
        raise AssertionError("the rewritten VM description does not parse")
    new = vmdesc.frame_device_state(out, eof, desc)
    if new.end != len(out):
        raise AssertionError("the rewritten VM description does not end the stream")
    before = [(type(i), getattr(i, "idstr", None), getattr(i, "instance_id", None))
              for i in layout.items]
    after = [(type(i), getattr(i, "idstr", None), getattr(i, "instance_id", None))
             for i in new.items]
    if before != after:
        raise AssertionError("the rewritten device state frames into other items")


def splice(buf: bytearray, layout: DeviceStateLayout,
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
    body = encode_description(with_array_lengths(layout.description, lengths, removed))
    pieces.append(bytes((wire.VM_EOF, wire.VM_VMDESCRIPTION)))
    pieces.append(wire.BE32.pack(len(body)))
    pieces.append(body)
    return b"".join(pieces), eof
