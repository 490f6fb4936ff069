"""Postcopy's device state: the contents of ``MIG_CMD_PACKAGED``, framed by known layouts.

When postcopy starts, QEMU sends the whole non-iterable device state inside one command:
``08 | be16 7 | be16 4 | be32 length`` and then ``length`` bytes, a stream of its own
(``qemu_savevm_send_packaged``, migration/savevm.c; built in ``postcopy_start``,
migration/migration.c):

* ``POSTCOPY_LISTEN``;
* every non-iterable FULL section with its footer (``timer``, ``pflash_cfi01``, then each
  vCPU's ``cpu_common`` and ``cpu``, then the other devices);
* ``PING 3`` (postcopy-ram), ``PING 0x42`` (newer QEMU: the package was loaded);
* ``POSTCOPY_RUN``, always last.

There is no EOF and no VM description in postcopy, and nothing else in the stream carries
the package's length. So a section's end cannot come from a description: this module frames
the sections with layouts a plug-in knows exactly (:class:`SectionLayout`: each field's
element size and count, the count of a variable array taken from an earlier field, and the
subsections that may follow, recognised by their marker, name and version at the position
the fields end). Each boundary is computed from the layouts and checked against the footer
(``0x7e`` + the section's id); no boundary is taken from the bytes a guest controls.

One shape has no count on the wire: an array of structs whose length is a property of the
device (QEMU's ``VMSTATE_STRUCT_VARRAY_POINTER_UINT32``, e.g. the GICv3's per-vCPU state).
Its layout names the subsection of the enclosing level that always follows it
(:attr:`FieldLayout.ends_before`): the array ends where that marker and name stand at an
element boundary. This is exact only where the plug-in knows that no element can start
with that marker (the first byte of an element is a value the guest cannot set to it);
the plug-in then checks the element count against facts of its own
(:attr:`PackageLayouts.check`, with :meth:`PackageLayout.elements`).

Framing stops at the first section with no known layout: the rest of the package, up to
``POSTCOPY_RUN``, is kept byte for byte. The plug-in says whether what was framed is enough
(:attr:`PackageLayouts.check`: for ARM, every vCPU's sections, so that the first unknown
section comes right after the last ``cpu``). A rewrite changes only sections inside the
framed part, and the command's ``be32 length`` with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migproxy.stream import wire
from migproxy.stream.errors import MigproxyError
from migproxy.stream.reasons import Reason
from migproxy.stream.vmdesc import DeviceStateCommand, FieldSpan, FullSection, SubsectionSpan

PACKAGE_HEADER = 9  # 08 | be16 cmd | be16 4 | be32 length
MAX_LAYOUT_NESTING = 8
MAX_ELEMENTS = 4096  # of an array with no count on the wire (QEMU's virt: at most 512 vCPUs)
# The commands QEMU puts in a package (and nothing else).
PACKAGE_COMMANDS = frozenset({wire.CMD_POSTCOPY_LISTEN, wire.CMD_PING, wire.CMD_POSTCOPY_RUN})
RUN_COMMAND = bytes((wire.VM_COMMAND, 0, wire.CMD_POSTCOPY_RUN, 0, 0))


class PackageNotFramed(MigproxyError):
    """The package cannot be framed exactly with the layouts known (``reason`` says how)."""

    def __init__(self, reason: Reason, rel_offset: int, message: str) -> None:
        self.reason = reason
        self.rel_offset = rel_offset
        super().__init__(message)


@dataclass(frozen=True)
class FieldLayout:
    """One field of a section layout: ``count`` elements of ``size`` bytes, or, with
    ``count_field``, as many elements as that earlier field of the same level holds
    (a be32 signed integer on the wire, as QEMU's ``VMSTATE_VARRAY_INT32``)."""

    name: str
    size: int
    count: int = 1
    count_field: str | None = None
    # An array of structs with no count on the wire: each element is ``element`` (its fields
    # and subsections), and the array ends where the enclosing level's subsection
    # ``ends_before`` starts (``size`` and ``count`` are not used).
    element: SectionLayout | None = None
    ends_before: str | None = None

    def __post_init__(self) -> None:
        if (self.element is None) != (self.ends_before is None):
            raise ValueError(f"field {self.name!r}: element and ends_before go together")


@dataclass(frozen=True)
class SectionLayout:
    """A vmstate description as it is on the wire: its fields in order, then any of the
    ``subsections`` (each at most once; QEMU's loader looks them up by name)."""

    name: str  # the vmsd name (a subsection's full name, "cpu/vfp")
    version: int
    fields: tuple[FieldLayout, ...]
    subsections: tuple[SectionLayout, ...] = ()

    def entry(self) -> dict[str, Any]:
        """The layout as a VM description entry (fields with their fixed sizes)."""
        return {"vmsd_name": self.name, "version": self.version,
                "fields": [_field_entry(f) for f in self.fields]}


def _field_entry(f: FieldLayout) -> dict[str, Any]:
    if f.element is not None:
        return {"name": f.name, "type": "struct", "struct": f.element.entry()}
    return {"name": f.name, "size": f.size, **({"array_len": f.count} if f.count != 1 else {})}


@dataclass(frozen=True)
class PackageLayouts:
    """What a plug-in knows of the sections in a package: a layout per ``(idstr,
    version)`` and the check of the framed part (None: enough; else why not)."""

    sections: Mapping[tuple[str, int], SectionLayout]
    check: Callable[[PackageLayout], str | None] = lambda _framed: None


@dataclass
class PackageLayout:
    """A package framed: its items up to the first section with no known layout
    (``framed_end``), offsets relative to the first byte after the be32 length."""

    items: list[FullSection | DeviceStateCommand]
    framed_end: int
    length: int
    entries: dict[int, dict[str, Any]] = field(default_factory=dict)  # item index -> entry
    # (item index, field name) -> elements of an array with no count on the wire
    arrays: dict[tuple[int, str], int] = field(default_factory=dict)

    @property
    def sections(self) -> list[FullSection]:
        return [i for i in self.items if isinstance(i, FullSection)]

    def elements(self, section: FullSection, name: str) -> int | None:
        """How many elements the framing found in ``section``'s array ``name`` (an array
        with no count on the wire), or None."""
        return self.arrays.get((section.device_index, name))


def frame_package(buf: wire.Buffer, start: int, length: int,
                  layouts: PackageLayouts) -> PackageLayout:
    """Frame the package ``buf[start : start + length]`` with ``layouts``. Offsets in the
    result are relative to ``buf`` (like the held buffer's)."""
    end = start + length
    if length < len(RUN_COMMAND) or bytes(buf[end - len(RUN_COMMAND) : end]) != RUN_COMMAND:
        raise PackageNotFramed(Reason.POSTCOPY_PACKAGED, 0,
                               "the package does not end with POSTCOPY_RUN")
    out = PackageLayout([], start, length)
    pos = start
    while pos < end:
        t = buf[pos]
        if t == wire.VM_COMMAND:
            cmd = _package_command(buf, pos, end)
            out.items.append(cmd)
            pos = cmd.end
            if cmd.command == "POSTCOPY_RUN" and pos != end:
                raise PackageNotFramed(Reason.POSTCOPY_PACKAGED, pos - start,
                                       "bytes after POSTCOPY_RUN in the package")
            continue
        if t != wire.VM_SECTION_FULL:
            raise PackageNotFramed(Reason.POSTCOPY_PACKAGED, pos - start,
                                   f"a FULL section or a command, found 0x{t:02x}")
        section = _section_header(buf, pos, end, len(out.items))
        layout = layouts.sections.get((section.idstr, section.version_id))
        if layout is None:
            break  # framing stops here: the rest is kept as it is
        counts: dict[str, int] = {}
        _frame_section(buf, section, layout, end, counts)
        out.arrays.update(((len(out.items), k), v) for k, v in counts.items())
        out.entries[len(out.items)] = {"name": section.idstr,
                                       "instance_id": section.instance_id,
                                       **layout.entry()}
        out.items.append(section)
        pos = section.end
    out.framed_end = pos
    why = layouts.check(out)
    if why is not None:
        raise PackageNotFramed(Reason.POSTCOPY_LAYOUT, pos - start, why)
    return out


def _package_command(buf: wire.Buffer, pos: int, end: int) -> DeviceStateCommand:
    if pos + 5 > end:
        raise PackageNotFramed(Reason.POSTCOPY_PACKAGED, pos, "truncated command")
    cmd = wire.BE16.unpack_from(buf, pos + 1)[0]
    length = wire.BE16.unpack_from(buf, pos + 3)[0]
    spec = wire.COMMANDS.get(cmd)
    if spec is None or cmd not in PACKAGE_COMMANDS or spec[1] != length:
        raise PackageNotFramed(Reason.POSTCOPY_PACKAGED, pos,
                               f"command {cmd} (length {length}) does not belong in a package")
    return DeviceStateCommand(pos, pos + 5 + length, spec[0])


def _section_header(buf: wire.Buffer, pos: int, end: int, index: int) -> FullSection:
    if pos + 6 > end or pos + 6 + buf[pos + 5] + 8 > end:
        raise PackageNotFramed(Reason.POSTCOPY_PACKAGED, pos, "truncated section header")
    nlen = buf[pos + 5]
    idstr = bytes(buf[pos + 6 : pos + 6 + nlen]).decode("ascii", "replace")
    inst, ver = wire.BE32.unpack_from(buf, pos + 6 + nlen)[0], \
        wire.BE32.unpack_from(buf, pos + 10 + nlen)[0]
    payload = pos + 14 + nlen
    return FullSection(pos, payload, payload, payload, wire.BE32.unpack_from(buf, pos + 1)[0],
                       idstr, inst, ver, index)


def _frame_section(buf: wire.Buffer, section: FullSection, layout: SectionLayout,
                   end: int, counts: dict[str, int]) -> None:
    """Walk the section's payload with ``layout``; set its end, fields and subsections
    (``counts``: the element counts of its arrays with no count on the wire)."""
    pos = _walk(buf, section.payload_offset, end, layout, 0, section.fields,
                section.subsections, counts)
    if pos + 5 > end or buf[pos] != wire.VM_SECTION_FOOTER or \
            wire.BE32.unpack_from(buf, pos + 1)[0] != section.section_id:
        raise PackageNotFramed(
            Reason.POSTCOPY_LAYOUT, pos,
            f"section {section.idstr!r} instance {section.instance_id} does not end where "
            f"its layout {layout.name!r} version {layout.version} ends (no footer there)")
    section.payload_end = pos
    section.end = pos + 5


def _walk(buf: wire.Buffer, pos: int, end: int, layout: SectionLayout, depth: int,
          spans: list[FieldSpan] | None, subs: list[SubsectionSpan] | None,
          counts: dict[str, int] | None = None) -> int:
    """Consume one level of ``layout`` (fields, then subsections); return where it ends."""
    if depth > MAX_LAYOUT_NESTING:
        raise PackageNotFramed(Reason.POSTCOPY_LAYOUT, pos, "layouts nest too deeply")
    pos = _walk_fields(buf, pos, end, layout, depth, spans, counts)
    return _walk_subsections(buf, pos, end, layout, depth, subs)


def _walk_fields(buf: wire.Buffer, pos: int, end: int, layout: SectionLayout, depth: int,
                 spans: list[FieldSpan] | None, counts: dict[str, int] | None) -> int:
    values: dict[str, int] = {}
    for f in layout.fields:
        if f.element is not None:
            start = pos
            pos, n = _walk_elements(buf, pos, end, f, depth)
            if counts is not None:
                counts[f.name] = n
            if spans is not None and pos > start:
                spans.append(FieldSpan(f.name, start, pos - start, 1))
            continue
        count = f.count
        if f.count_field is not None:
            count = values.get(f.count_field, -1)
            if count < 0:
                raise PackageNotFramed(Reason.POSTCOPY_LAYOUT, pos,
                                       f"field {f.name!r}: no valid count in {f.count_field!r}")
        total = f.size * count
        if pos + total > end:
            raise PackageNotFramed(Reason.POSTCOPY_LAYOUT, pos,
                                   f"field {f.name!r} of {layout.name!r} runs past the package")
        if f.size == 4 and count == 1:
            v = wire.BE32.unpack_from(buf, pos)[0]
            values[f.name] = v - (1 << 32) if v >= 1 << 31 else v
        if spans is not None and count:
            spans.append(FieldSpan(f.name, pos, f.size, count))
        pos += total
    return pos


def _walk_subsections(buf: wire.Buffer, pos: int, end: int, layout: SectionLayout,
                      depth: int, subs: list[SubsectionSpan] | None) -> int:
    known = {s.name.encode("ascii"): s for s in layout.subsections}
    seen: set[bytes] = set()
    while pos < end and buf[pos] == wire.VM_SUBSECTION:
        if pos + 2 > end:
            break
        nlen = buf[pos + 1]
        name = bytes(buf[pos + 2 : pos + 2 + nlen])
        sub = known.get(name)
        if sub is None:
            # QEMU's loader leaves a marker whose name is not this level's to its parent.
            if name.startswith(layout.name.encode("ascii") + b"/"):
                raise PackageNotFramed(
                    Reason.POSTCOPY_LAYOUT, pos,
                    f"subsection {name.decode('ascii', 'replace')!r} has no known layout")
            break
        if name in seen or pos + 6 + nlen > end or \
                wire.BE32.unpack_from(buf, pos + 2 + nlen)[0] != sub.version:
            raise PackageNotFramed(Reason.POSTCOPY_LAYOUT, pos,
                                   f"subsection {sub.name!r}: repeated or another version")
        seen.add(name)
        start = pos
        pos = _walk(buf, pos + 6 + nlen, end, sub, depth + 1, None, None)
        if subs is not None:
            subs.append(SubsectionSpan(sub.name, start, start + 6 + nlen, pos))
    return pos


def _walk_elements(buf: wire.Buffer, pos: int, end: int, f: FieldLayout,
                   depth: int) -> tuple[int, int]:
    """Consume the elements of an array with no count on the wire, up to the marker of
    the enclosing level's subsection ``f.ends_before``; return the end and the count."""
    assert f.element is not None
    assert f.ends_before is not None
    name = f.ends_before.encode("ascii")
    marker = bytes((wire.VM_SUBSECTION, len(name))) + name
    n = 0
    while bytes(buf[pos : pos + len(marker)]) != marker:
        if n == MAX_ELEMENTS or pos >= end:
            raise PackageNotFramed(
                Reason.POSTCOPY_LAYOUT, pos,
                f"array {f.name!r}: no subsection {f.ends_before!r} after {n} elements")
        pos = _walk(buf, pos, end, f.element, depth + 1, None, None)
        n += 1
    return pos, n
