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
        held = self._held
        assert held is not None
        buf = held.buf
        base = held.start_offset
        self.layout = layout
        res.events.extend(item_events(layout.items, base))
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
        if not self.config.rewriters:
            return buf
        base = self._held.start_offset if self._held is not None else 0
        edits = self._plan_edits(res, buf, base, self._claimed(layout), memoryview(b""),
                                 self.received)
        if edits is None:
            return None
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
        decoded_all: list[tuple[SectionRewriter, Decoded]] = []
        edits: list[SectionEdit] = []
        facts = self._facts()
        try:
            for rw in self.config.rewriters:
                rw.begin(facts)
            for item, rw in claimed:
                decoded = rw.decode(buf, item, base)
                decoded_all.append((rw, decoded))
                self.reports.extend(decoded.events)
                res.events.extend(decoded.events)
            apply = not self.config.dry_run
            for rw, decoded in decoded_all:
                edit = rw.plan(decoded, apply=apply)
                if edit is not None:
                    edits.append(edit)
        except SectionRefused as e:
            self._not_understood(res, e.reason, f"{e.context}{e}", base, mv, chunk_start)
            return None
        for edit in edits:
            res.events.extend(edit.events)
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
