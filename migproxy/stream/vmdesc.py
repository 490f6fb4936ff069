"""Framing of the device-state tail with the JSON VM description.

Device state (FULL sections) has no length prefix; the only description of its layout in
the stream is the JSON VM description QEMU appends after EOF. Every ``field`` entry there
records the bytes the field actually wrote (``size``, times ``array_len`` for compressed
arrays), and every sent subsection is listed in order. This module walks the held bytes
with that description and accounts for each one: section headers must match the device
entries (name, instance, version), subsection markers must match by name and version,
nested structs must add up to their recorded size, and every footer must carry its
section's id. Anything else is a :class:`DescriptionMismatch`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from migproxy.stream import wire
from migproxy.stream.errors import MigproxyError

MAX_NESTING = 32


class DescriptionMismatch(MigproxyError):
    """The description does not frame the held bytes exactly."""

    def __init__(self, rel_offset: int, message: str) -> None:
        self.rel_offset = rel_offset
        super().__init__(message)


@dataclass
class FieldSpan:
    """Where one top-level field of a section lies (offsets relative to the held buffer)."""

    name: str
    offset: int
    size: int  # size of one element
    count: int  # number of elements the entry covers

    @property
    def end(self) -> int:
        return self.offset + self.size * self.count


@dataclass
class SubsectionSpan:
    """Where one top-level subsection of a section lies (offsets relative to the held
    buffer): its marker at ``offset``, its fields from ``payload_offset`` to ``end``."""

    name: str
    offset: int
    payload_offset: int
    end: int


@dataclass
class FullSection:
    """One FULL section of the tail, framed exactly."""

    offset: int  # of the 0x04 type byte, relative to the held buffer
    payload_offset: int
    payload_end: int  # the footer starts here
    end: int  # after the footer
    section_id: int
    idstr: str
    instance_id: int
    version_id: int
    device_index: int
    fields: list[FieldSpan] = field(default_factory=list)
    subsections: list[SubsectionSpan] = field(default_factory=list)


@dataclass
class DeviceStateCommand:
    offset: int
    end: int
    command: str


@dataclass
class DeviceStateLayout:
    """The whole tail: sections and commands up to EOF, then the description."""

    items: list[FullSection | DeviceStateCommand]
    eof_offset: int
    description_offset: int  # of the 0x06 byte
    description: dict[str, Any]
    end: int


def parse_description(raw: bytes | bytearray | memoryview) -> dict[str, Any] | None:
    """Decode the description JSON; ``None`` if it is not a description object."""
    try:
        text = bytes(raw).decode("utf-8")
        obj = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("devices"), list):
        return None
    return obj


def encode_description(desc: dict[str, Any]) -> bytes:
    """Serialise a description the way QEMU's JSON writer does (compact, ", " / ": ")."""
    return json.dumps(desc, separators=(", ", ": "), ensure_ascii=True).encode("ascii")


def _int(obj: dict[str, Any], key: str, where: int, *, default: int | None = None) -> int:
    v = obj.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise DescriptionMismatch(where, f"description entry has no valid {key!r}: {v!r}")
    return v


def _is_int(v: Any, want: int) -> bool:
    return type(v) is int and v == want


def _entries(obj: dict[str, Any], key: str, where: int) -> list[dict[str, Any]]:
    v = obj.get(key, [])
    if not isinstance(v, list) or not all(isinstance(e, dict) for e in v):
        raise DescriptionMismatch(where, f"description {key!r} is not a list of objects")
    return v


def _walk_vmsd(buf: wire.Buffer, pos: int, end: int, vmsd: dict[str, Any], depth: int,
               spans: list[FieldSpan] | None,
               subs: list[SubsectionSpan] | None = None) -> int:
    """Consume one vmsd level (fields, then subsections); return the end position."""
    if depth > MAX_NESTING:
        raise DescriptionMismatch(pos, "description nests too deeply")
    for f in _entries(vmsd, "fields", pos):
        size = _int(f, "size", pos)
        count = _int(f, "array_len", pos, default=1)
        total = size * count
        if pos + total > end:
            raise DescriptionMismatch(pos, f"field {f.get('name')!r} ({total} bytes) runs past "
                                      "the end of its section")
        nested = f.get("struct") if f.get("type") == "struct" else None
        if nested is None and f.get("type") == "vstruct" and "fields" in f:
            nested = f
        if isinstance(nested, dict) and count >= 1:
            inner_end = _walk_vmsd(buf, pos, pos + size, nested, depth + 1, None)
            if inner_end != pos + size:
                raise DescriptionMismatch(pos, f"struct field {f.get('name')!r} does not add up "
                                          f"to its recorded size {size}")
        if spans is not None:
            spans.append(FieldSpan(str(f.get("name")), pos, size, count))
        pos += total
    for sub in _entries(vmsd, "subsections", pos):
        name = sub.get("vmsd_name")
        if not isinstance(name, str):
            raise DescriptionMismatch(pos, "subsection without a vmsd_name")
        version = _int(sub, "version", pos)
        raw_name = name.encode("ascii", "replace")
        hdr = 2 + len(raw_name) + 4
        if pos + hdr > end:
            raise DescriptionMismatch(pos, f"subsection {name!r} runs past the section end")
        if buf[pos] != wire.VM_SUBSECTION or buf[pos + 1] != len(raw_name) or \
                bytes(buf[pos + 2 : pos + 2 + len(raw_name)]) != raw_name:
            raise DescriptionMismatch(pos, f"expected subsection {name!r} here")
        if wire.BE32.unpack_from(buf, pos + 2 + len(raw_name))[0] != version:
            raise DescriptionMismatch(pos, f"subsection {name!r} version differs from the "
                                      "description")
        start = pos
        pos = _walk_vmsd(buf, pos + hdr, end, sub, depth + 1, None)
        if subs is not None:
            subs.append(SubsectionSpan(name, start, start + hdr, pos))
    return pos


def frame_device_state(buf: wire.Buffer, eof_offset: int,
                       desc: dict[str, Any]) -> DeviceStateLayout:
    """Frame ``buf[0:eof_offset]`` (FULL sections and commands) with ``desc``.

    ``buf[eof_offset]`` must be EOF, followed by the description record.
    """
    if len(buf) < eof_offset + 6 or buf[eof_offset] != wire.VM_EOF or \
            buf[eof_offset + 1] != wire.VM_VMDESCRIPTION:
        raise DescriptionMismatch(eof_offset, "no EOF and VM description record here")
    devices = _entries(desc, "devices", 0)
    items: list[FullSection | DeviceStateCommand] = []
    pos = 0
    dev_i = 0
    while pos < eof_offset:
        item: FullSection | DeviceStateCommand
        if buf[pos] == wire.VM_COMMAND:
            item = _frame_command(buf, pos, eof_offset)
        else:
            item = _frame_full_section(buf, pos, eof_offset, devices, dev_i)
            dev_i += 1
        items.append(item)
        pos = item.end
    if pos != eof_offset:
        raise DescriptionMismatch(pos, "the tail does not end at EOF")
    if dev_i != len(devices):
        raise DescriptionMismatch(pos, f"{len(devices) - dev_i} device entries have no section")
    n = wire.BE32.unpack_from(buf, eof_offset + 2)[0]
    return DeviceStateLayout(items, eof_offset, eof_offset + 1, desc, eof_offset + 6 + n)


def _frame_command(buf: wire.Buffer, pos: int, eof_offset: int) -> DeviceStateCommand:
    """The command at ``pos`` in the device state."""
    if pos + 5 > eof_offset:
        raise DescriptionMismatch(pos, "truncated command in the tail")
    cmd = wire.BE16.unpack_from(buf, pos + 1)[0]
    length = wire.BE16.unpack_from(buf, pos + 3)[0]
    spec = wire.COMMANDS.get(cmd)
    if spec is None or cmd in (wire.CMD_PACKAGED, wire.CMD_ENABLE_COLO):
        raise DescriptionMismatch(pos, f"command {cmd} cannot appear in the tail")
    if spec[1] is not None and spec[1] != length:
        raise DescriptionMismatch(pos, f"command {spec[0]} with length {length}")
    return DeviceStateCommand(pos, pos + 5 + length, spec[0])


def _frame_full_section(buf: wire.Buffer, pos: int, eof_offset: int,
                        devices: list[dict[str, Any]], dev_i: int) -> FullSection:
    """The FULL section at ``pos``, framed by the device entry ``devices[dev_i]``."""
    t = buf[pos]
    if t != wire.VM_SECTION_FULL:
        raise DescriptionMismatch(pos, f"expected a FULL section, found type 0x{t:02x}")
    if pos + 6 > eof_offset:
        raise DescriptionMismatch(pos, "truncated section header")
    nlen = buf[pos + 5]
    hdr = 6 + nlen + 8
    if pos + hdr > eof_offset:
        raise DescriptionMismatch(pos, "truncated section header")
    sid = wire.BE32.unpack_from(buf, pos + 1)[0]
    idstr = bytes(buf[pos + 6 : pos + 6 + nlen]).decode("ascii", "replace")
    inst = wire.BE32.unpack_from(buf, pos + 6 + nlen)[0]
    ver = wire.BE32.unpack_from(buf, pos + 10 + nlen)[0]
    if dev_i >= len(devices):
        raise DescriptionMismatch(pos, f"section {idstr!r} has no device entry")
    dev = devices[dev_i]
    # Exact ints: JSON true and 1.0 compare equal to 1 in Python, QEMU writes neither.
    if dev.get("name") != idstr or not _is_int(dev.get("instance_id"), inst) or \
            not _is_int(dev.get("version"), ver):
        raise DescriptionMismatch(
            pos, f"section {idstr!r} instance {inst} version {ver} does not match device "
            f"entry {dev.get('name')!r} instance {dev.get('instance_id')!r} version "
            f"{dev.get('version')!r}")
    spans: list[FieldSpan] = []
    subs: list[SubsectionSpan] = []
    payload = pos + hdr
    payload_end = _walk_vmsd(buf, payload, eof_offset, dev, 0, spans, subs)
    if payload_end + 5 > eof_offset or buf[payload_end] != wire.VM_SECTION_FOOTER:
        raise DescriptionMismatch(payload_end, f"expected the footer of section {idstr!r}")
    if wire.BE32.unpack_from(buf, payload_end + 1)[0] != sid:
        raise DescriptionMismatch(payload_end, f"footer of section {idstr!r} has another id")
    return FullSection(pos, payload, payload_end, payload_end + 5, sid, idstr, inst, ver,
                       dev_i, spans, subs)


def with_array_lengths(desc: dict[str, Any], changes: dict[int, dict[str, int]],
                       removed: dict[int, frozenset[str]] | None = None,
                       ) -> dict[str, Any]:
    """A copy of ``desc`` whose named fields describe new element counts.

    ``changes`` maps a device index to ``{field name: count}``. A count of 1 drops
    ``array_len`` (QEMU writes a scalar entry), 0 removes the entry. ``removed`` maps a
    device index to the names of top-level subsections no longer sent (QEMU then writes
    no entry for them; with none left, no ``subsections`` key). Only the changed devices
    are copied.
    """
    out = dict(desc)
    devices = list(desc["devices"])
    for device_index, names in (removed or {}).items():
        dev = dict(devices[device_index])
        kept = [s for s in dev.get("subsections", []) if s.get("vmsd_name") not in names]
        if kept:
            dev["subsections"] = kept
        else:
            dev.pop("subsections", None)
        devices[device_index] = dev
    for device_index, lengths in changes.items():
        dev = dict(devices[device_index])  # shallow: only the changed entries are new
        fields_out: list[dict[str, Any]] = []
        for f in dev.get("fields", []):
            name = f.get("name")
            if name in lengths:
                n = lengths[name]
                if n == 0:
                    continue
                # QEMU's key order: name, array_len (only for more than one), type, size
                g: dict[str, Any] = {}
                for k, v in f.items():
                    if k == "array_len":
                        continue
                    g[k] = v
                    if k == "name" and n != 1:
                        g["array_len"] = n
                f = g
            fields_out.append(f)
        dev["fields"] = fields_out
        devices[device_index] = dev
    out["devices"] = devices
    return out


# -- is this QEMU's description of this stream? ------------------------------------------
#
# With the return path the end of the device state is recognised by content, so a
# description that frames the held bytes could still be one a guest wrote into its own
# device state (followed by the rest of the real one). Before such a candidate is taken,
# it must look the way QEMU's JSON writer (migration/vmstate.c, vmstate_save_state and
# savevm.c's vmdesc) writes it and agree with what the stream itself said earlier. A
# guest can copy all of this, so it is a filter, not proof: the device-specific checks of
# the section rewriters and the session's quiet window do the rest.

_TOP_KEYS = ("configuration", "page_size", "devices")
_DEVICE_KEYS = ("name", "instance_id", "vmsd_name", "version", "fields", "subsections")
_VMSD_KEYS = ("vmsd_name", "version", "fields", "subsections")
_FIELD_KEYS = ("name", "array_len", "type", "struct", "size")


@dataclass(frozen=True)
class StreamFacts:
    """What the streamed part said about the stream (from the framer)."""

    page_size: int | None
    machine: str | None
    config_subsections: tuple[str, ...]


def _key_order(obj: dict[str, Any], order: tuple[str, ...], required: tuple[str, ...],
               what: str) -> str | None:
    keys = list(obj)
    if any(k not in order for k in keys) or keys != sorted(keys, key=order.index):
        return f"{what} has keys {keys}, not in QEMU's order {list(order)}"
    missing = [k for k in required if k not in obj]
    if missing:
        return f"{what} lacks {missing}"
    return None


def _vmsd_shape(vmsd: dict[str, Any], what: str, depth: int) -> str | None:
    if depth > MAX_NESTING:
        return f"{what} nests too deeply"
    for f in vmsd.get("fields", []):
        if not isinstance(f, dict):
            return f"{what} has a field that is not an object"
        why = _key_order(f, _FIELD_KEYS, ("name", "type", "size"), f"a field of {what}")
        if why is None and "array_len" in f and f["array_len"] in (0, 1):
            why = f"field {f.get('name')!r} of {what} has array_len {f['array_len']}"
        if why is None and isinstance(f.get("struct"), dict):
            why = _vmsd_shape(f["struct"], f"struct {f.get('name')!r}", depth + 1)
        if why is not None:
            return why
    for sub in vmsd.get("subsections", []):
        if not isinstance(sub, dict):
            return f"{what} has a subsection that is not an object"
        why = _key_order(sub, _VMSD_KEYS, ("vmsd_name", "version"), f"a subsection of {what}")
        if why is None:
            why = _vmsd_shape(sub, f"subsection {sub.get('vmsd_name')!r}", depth + 1)
        if why is not None:
            return why
    return None


def unlike_qemus(raw: wire.Buffer, desc: dict[str, Any], facts: StreamFacts) -> str | None:
    """Why ``desc`` (parsed from ``raw``) is not what QEMU writes for this stream, or None.

    Checked: the bytes are exactly QEMU's serialisation (key order, separators, no
    whitespace or escapes beyond its own); the page size is the stream's; the
    configuration entry (QEMU 8.0+ writes one) describes the stream's machine name and
    lists the configuration subsections the stream sent, in order; every entry has
    QEMU's keys in QEMU's order (array_len only above 1).
    """
    if bytes(raw) != encode_description(desc):
        return "the JSON is not byte for byte as QEMU writes it"
    why = _key_order(desc, _TOP_KEYS, ("page_size", "devices"), "the description")
    if why is not None:
        return why
    if facts.page_size is not None and desc.get("page_size") != facts.page_size:
        return (f"page_size {desc.get('page_size')!r} differs from the stream's "
                f"{facts.page_size}")
    conf = desc.get("configuration")
    if conf is not None:
        if not isinstance(conf, dict) or conf.get("vmsd_name") != "configuration":
            return "the configuration entry is not QEMU's"
        names = [f.get("size") for f in conf.get("fields", []) if isinstance(f, dict)
                 and f.get("name") == "name"]
        if facts.machine is not None and names != [len(facts.machine)]:
            return (f"the configuration entry describes a machine name of {names} bytes, "
                    f"the stream's is {len(facts.machine)}")
        subs = [s.get("vmsd_name") for s in conf.get("subsections", []) if isinstance(s, dict)]
        if subs != list(facts.config_subsections):
            return (f"the configuration entry lists subsections {subs}, the stream sent "
                    f"{list(facts.config_subsections)}")
    for i, dev in enumerate(desc["devices"]):
        why = _key_order(dev, _DEVICE_KEYS, ("name", "instance_id", "vmsd_name", "version"),
                         f"device entry {i}")
        if why is None:
            why = _vmsd_shape(dev, f"device {dev.get('name')!r}", 0)
        if why is not None:
            return why
    return None
