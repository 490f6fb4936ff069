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

MAX_NESTING = 32


class DescriptionMismatch(Exception):
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


def _entries(obj: dict[str, Any], key: str, where: int) -> list[dict[str, Any]]:
    v = obj.get(key, [])
    if not isinstance(v, list) or not all(isinstance(e, dict) for e in v):
        raise DescriptionMismatch(where, f"description {key!r} is not a list of objects")
    return v


def _walk_vmsd(buf: wire.Buffer, pos: int, end: int, vmsd: dict[str, Any], depth: int,
               spans: list[FieldSpan] | None) -> int:
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
        pos = _walk_vmsd(buf, pos + hdr, end, sub, depth + 1, None)
    return pos


def frame_device_state(buf: wire.Buffer, eof_offset: int,
                       desc: dict[str, Any]) -> DeviceStateLayout:
    """Frame ``buf[0:eof_offset]`` (FULL sections and commands) with ``desc``.

    ``buf[eof_offset]`` must be EOF, followed by the description record.
    """
    devices = _entries(desc, "devices", 0)
    items: list[FullSection | DeviceStateCommand] = []
    pos = 0
    dev_i = 0
    while pos < eof_offset:
        t = buf[pos]
        if t == wire.VM_COMMAND:
            if pos + 5 > eof_offset:
                raise DescriptionMismatch(pos, "truncated command in the tail")
            cmd = wire.BE16.unpack_from(buf, pos + 1)[0]
            length = wire.BE16.unpack_from(buf, pos + 3)[0]
            spec = wire.COMMANDS.get(cmd)
            if spec is None or cmd in (wire.CMD_PACKAGED, wire.CMD_ENABLE_COLO):
                raise DescriptionMismatch(pos, f"command {cmd} cannot appear in the tail")
            if spec[1] is not None and spec[1] != length:
                raise DescriptionMismatch(pos, f"command {spec[0]} with length {length}")
            items.append(DeviceStateCommand(pos, pos + 5 + length, spec[0]))
            pos += 5 + length
            continue
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
        if dev.get("name") != idstr or dev.get("instance_id") != inst or \
                dev.get("version") != ver:
            raise DescriptionMismatch(
                pos, f"section {idstr!r} instance {inst} version {ver} does not match device "
                f"entry {dev.get('name')!r} instance {dev.get('instance_id')!r} version "
                f"{dev.get('version')!r}")
        spans: list[FieldSpan] = []
        payload = pos + hdr
        payload_end = _walk_vmsd(buf, payload, eof_offset, dev, 0, spans)
        if payload_end + 5 > eof_offset or buf[payload_end] != wire.VM_SECTION_FOOTER:
            raise DescriptionMismatch(payload_end, f"expected the footer of section {idstr!r}")
        if wire.BE32.unpack_from(buf, payload_end + 1)[0] != sid:
            raise DescriptionMismatch(payload_end, f"footer of section {idstr!r} has another id")
        items.append(FullSection(pos, payload, payload_end, payload_end + 5, sid, idstr, inst,
                                 ver, dev_i, spans))
        dev_i += 1
        pos = payload_end + 5
    if pos != eof_offset:
        raise DescriptionMismatch(pos, "the tail does not end at EOF")
    if dev_i != len(devices):
        raise DescriptionMismatch(pos, f"{len(devices) - dev_i} device entries have no section")
    n = wire.BE32.unpack_from(buf, eof_offset + 2)[0]
    return DeviceStateLayout(items, eof_offset, eof_offset + 1, desc, eof_offset + 6 + n)


def with_array_lengths(desc: dict[str, Any],
                       changes: dict[int, dict[str, int]]) -> dict[str, Any]:
    """A copy of ``desc`` whose named fields describe new element counts.

    ``changes`` maps a device index to ``{field name: count}``. A count of 1 drops
    ``array_len`` (QEMU writes a scalar entry), 0 removes the entry. Only the changed
    devices are copied.
    """
    out = dict(desc)
    devices = list(desc["devices"])
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
