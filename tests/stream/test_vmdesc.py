"""Unit tests of :mod:`migproxy.stream.vmdesc`: the description JSON and the framing of the
device-state tail with it. Every byte is built by hand, so each rejection branch is hit on
purpose."""

from __future__ import annotations

import copy
import json
import struct
from typing import Any

import pytest

from migproxy.stream import wire
from migproxy.stream.vmdesc import (
    MAX_NESTING,
    DescriptionMismatch,
    DeviceStateCommand,
    FieldSpan,
    FullSection,
    encode_description,
    frame_device_state,
    parse_description,
    with_array_lengths,
)

# --- builders ---------------------------------------------------------------------------


def _be32(v: int) -> bytes:
    return struct.pack(">I", v)


def _header(sid: int, name: str, inst: int, ver: int) -> bytes:
    raw = name.encode("ascii")
    return bytes((wire.VM_SECTION_FULL,)) + _be32(sid) + bytes((len(raw),)) + raw + \
        _be32(inst) + _be32(ver)


def _footer(sid: int) -> bytes:
    return bytes((wire.VM_SECTION_FOOTER,)) + _be32(sid)


def _section(sid: int, name: str, inst: int, ver: int, payload: bytes,
             footer_sid: int | None = None) -> bytes:
    return _header(sid, name, inst, ver) + payload + \
        _footer(sid if footer_sid is None else footer_sid)


def _subsection(name: str, ver: int, payload: bytes) -> bytes:
    raw = name.encode("ascii")
    return bytes((wire.VM_SUBSECTION, len(raw))) + raw + _be32(ver) + payload


def _command(cmd: int, payload: bytes, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return bytes((wire.VM_COMMAND,)) + struct.pack(">HH", cmd, n) + payload


def _fld(name: str, size: int, count: int = 1, typ: str = "uint32") -> dict[str, Any]:
    f: dict[str, Any] = {"name": name}
    if count != 1:
        f["array_len"] = count
    f["type"] = typ
    f["size"] = size
    return f


def _dev(name: str, inst: int = 0, ver: int = 1, fields: list[dict[str, Any]] | None = None,
         subsections: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "instance_id": inst, "vmsd_name": name, "version": ver,
                         "fields": fields or []}
    if subsections is not None:
        d["subsections"] = subsections
    return d


def _desc(*devices: dict[str, Any]) -> dict[str, Any]:
    return {"page_size": 4096, "devices": list(devices)}


def _tail(body: bytes, desc: dict[str, Any]) -> tuple[bytes, int]:
    """``body`` + EOF + VMDESCRIPTION record; returns the buffer and the EOF offset."""
    js = encode_description(desc)
    return body + bytes((wire.VM_EOF, wire.VM_VMDESCRIPTION)) + _be32(len(js)) + js, len(body)


def _frame(body: bytes, desc: dict[str, Any]) -> Any:
    buf, eof = _tail(body, desc)
    return frame_device_state(buf, eof, desc)


def _mismatch(body: bytes, desc: dict[str, Any], match: str) -> DescriptionMismatch:
    buf, eof = _tail(body, desc)
    with pytest.raises(DescriptionMismatch, match=match) as ei:
        frame_device_state(buf, eof, desc)
    return ei.value


ONE = _dev("one", 0, 1, [_fld("a", 4)])
ONE_BODY = _section(5, "one", 0, 1, b"\x00\x00\x00\x2a")

# --- parse_description ------------------------------------------------------------------


def test_parse_description_returns_the_object() -> None:
    desc = _desc(ONE)
    raw = encode_description(desc)
    assert parse_description(raw) == desc
    assert parse_description(bytearray(raw)) == desc
    assert parse_description(memoryview(raw)) == desc


def test_parse_description_accepts_an_empty_device_list() -> None:
    assert parse_description(b'{"devices": []}') == {"devices": []}


@pytest.mark.parametrize("raw", [
    b"",
    b"not json",
    b"{",
    b'{"devices": [}',
    b'{"devices": []} trailing',
])
def test_parse_description_rejects_non_json(raw: bytes) -> None:
    assert parse_description(raw) is None


@pytest.mark.parametrize("raw", [b"[]", b'[{"devices": []}]', b'"devices"', b"42", b"null",
                                 b"true"])
def test_parse_description_rejects_non_objects(raw: bytes) -> None:
    json.loads(raw)  # valid JSON, just not an object
    assert parse_description(raw) is None


@pytest.mark.parametrize("raw", [
    b"{}",
    b'{"page_size": 4096}',
    b'{"devices": null}',
    b'{"devices": {}}',
    b'{"devices": "cpu"}',
    b'{"devices": 3}',
])
def test_parse_description_needs_a_devices_list(raw: bytes) -> None:
    assert parse_description(raw) is None


def test_parse_description_rejects_bad_utf8() -> None:
    raw = b'{"devices": [], "x": "\xff\xfe"}'
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert parse_description(raw) is None


def test_parse_description_survives_deep_nesting() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(RecursionError):
        json.loads(deep)
    assert parse_description(deep.encode()) is None
    assert parse_description(('{"devices": [], "x": ' + deep + "}").encode()) is None
    assert parse_description(('{"devices": ' + deep + "}").encode()) is None


# --- encode_description -----------------------------------------------------------------


def test_encode_description_uses_qemu_separators() -> None:
    desc = {"page_size": 4096, "devices": [{"name": "a", "instance_id": 0, "x": [1, 2]}]}
    assert encode_description(desc) == (
        b'{"page_size": 4096, "devices": [{"name": "a", "instance_id": 0, "x": [1, 2]}]}')


def test_encode_description_keeps_key_order_and_escapes_non_ascii() -> None:
    desc = {"z": 1, "a": "\u00e9", "devices": []}
    out = encode_description(desc)
    assert out == b'{"z": 1, "a": "\\u00e9", "devices": []}'
    out.decode("ascii")
    assert parse_description(out) == desc


def test_encode_description_round_trips_through_parse() -> None:
    desc = _desc(ONE, _dev("two", 1, 3, [_fld("b", 8, 4, "uint64")]))
    assert parse_description(encode_description(desc)) == desc


# --- frame_device_state: accepted tails -------------------------------------------------


def test_frame_empty_tail() -> None:
    desc = _desc()
    buf, eof = _tail(b"", desc)
    layout = frame_device_state(buf, eof, desc)
    assert layout.items == []
    assert layout.eof_offset == 0
    assert layout.description_offset == 1
    assert layout.end == len(buf)
    assert layout.description is desc


def test_frame_sections_commands_fields_structs_and_subsections() -> None:
    inner = {"vmsd_name": "inner", "version": 1,
             "fields": [_fld("x", 4), _fld("y", 2, 1, "uint16")]}
    gic = _dev("gic", 0, 12,
               [{"name": "irq", "array_len": 3, "type": "struct", "struct": inner, "size": 6},
                _fld("enabled", 1, 1, "uint8")],
               [{"vmsd_name": "gic/extra", "version": 2, "fields": [_fld("e", 2, 2, "uint16")],
                 "subsections": [{"vmsd_name": "gic/extra/deeper", "version": 7,
                                  "fields": [_fld("d", 1)]}]}])
    vstruct = {"name": "vs", "type": "vstruct", "size": 3, "version": 1,
               "fields": [_fld("p", 1, 1, "uint8"), _fld("q", 2, 1, "uint16")]}
    cpu = _dev("cpu", 1, 22, [_fld("regs", 8, 2, "uint64"), vstruct])
    desc = _desc(ONE, gic, cpu)

    ping = _command(wire.CMD_PING, b"\x00\x00\x00\x01")
    gic_payload = bytes(range(18)) + b"\x01" + _subsection(
        "gic/extra", 2, b"\xaa\xbb\xcc\xdd" + _subsection("gic/extra/deeper", 7, b"\x09"))
    gic_sec = _section(6, "gic", 0, 12, gic_payload)
    advise = _command(wire.CMD_POSTCOPY_ADVISE, bytes(16))
    cpu_sec = _section(9, "cpu", 1, 22, bytes(16) + b"\x01\x00\x02")
    body = ONE_BODY + ping + gic_sec + advise + cpu_sec
    buf, eof = _tail(body, desc)
    layout = frame_device_state(buf, eof, desc)

    assert layout.eof_offset == eof == len(body)
    assert layout.description_offset == eof + 1
    assert layout.end == len(buf)
    assert [type(i) for i in layout.items] == [FullSection, DeviceStateCommand, FullSection,
                                               DeviceStateCommand, FullSection]
    s1, c1, s2, c2, s3 = layout.items
    assert isinstance(s1, FullSection)
    assert isinstance(s2, FullSection)
    assert isinstance(s3, FullSection)
    assert isinstance(c1, DeviceStateCommand)
    assert isinstance(c2, DeviceStateCommand)

    hdr_one = len(_header(5, "one", 0, 1))
    assert (s1.offset, s1.payload_offset, s1.payload_end, s1.end) == (
        0, hdr_one, hdr_one + 4, len(ONE_BODY))
    assert (s1.section_id, s1.idstr, s1.instance_id, s1.version_id, s1.device_index) == (
        5, "one", 0, 1, 0)
    assert s1.fields == [FieldSpan("a", hdr_one, 4, 1)]

    assert (c1.offset, c1.end, c1.command) == (len(ONE_BODY), len(ONE_BODY) + 9, "PING")

    gic_at = len(ONE_BODY) + len(ping)
    gic_payload_at = gic_at + len(_header(6, "gic", 0, 12))
    assert (s2.offset, s2.payload_offset) == (gic_at, gic_payload_at)
    assert s2.payload_end == gic_payload_at + len(gic_payload)
    assert s2.end == gic_at + len(gic_sec)
    assert (s2.section_id, s2.idstr, s2.version_id, s2.device_index) == (6, "gic", 12, 1)
    # only top-level fields are listed; subsection contents are not
    assert s2.fields == [FieldSpan("irq", gic_payload_at, 6, 3),
                         FieldSpan("enabled", gic_payload_at + 18, 1, 1)]
    assert s2.fields[0].end == gic_payload_at + 18

    assert (c2.offset, c2.end, c2.command) == (s2.end, s2.end + 21, "POSTCOPY_ADVISE")

    cpu_payload_at = c2.end + len(_header(9, "cpu", 1, 22))
    assert (s3.offset, s3.section_id, s3.instance_id, s3.device_index) == (c2.end, 9, 1, 2)
    assert s3.fields == [FieldSpan("regs", cpu_payload_at, 8, 2),
                         FieldSpan("vs", cpu_payload_at + 16, 3, 1)]
    assert s3.end == eof


def test_frame_accepts_zero_length_arrays_and_empty_commands() -> None:
    desc = _desc(_dev("z", 0, 1, [_fld("none", 8, 0), _fld("b", 1)]))
    body = _command(wire.CMD_OPEN_RETURN_PATH, b"") + _section(1, "z", 0, 1, b"\x07")
    layout = _frame(body, desc)
    cmd, sec = layout.items
    assert isinstance(cmd, DeviceStateCommand)
    assert cmd.command == "OPEN_RETURN_PATH"
    assert isinstance(sec, FullSection)
    assert [(f.name, f.size, f.count) for f in sec.fields] == [("none", 8, 0), ("b", 1, 1)]
    assert sec.fields[0].offset == sec.fields[1].offset == sec.payload_offset


def test_frame_accepts_nesting_up_to_the_limit() -> None:
    level: dict[str, Any] = {"vmsd_name": "leaf", "version": 1, "fields": [_fld("x", 1)]}
    for _ in range(MAX_NESTING - 1):
        level = {"vmsd_name": "s", "version": 1,
                 "fields": [{"name": "n", "type": "struct", "struct": level, "size": 1}]}
    desc = _desc(_dev("deep", 0, 1, [{"name": "n", "type": "struct", "struct": level,
                                      "size": 1}]))
    layout = _frame(_section(1, "deep", 0, 1, b"\x01"), desc)
    assert len(layout.items) == 1


# --- frame_device_state: commands -------------------------------------------------------


@pytest.mark.parametrize("cmd", [0, 99, 0xFFFF, wire.CMD_PACKAGED, wire.CMD_ENABLE_COLO])
def test_frame_rejects_commands_that_cannot_be_in_the_tail(cmd: int) -> None:
    length = 4 if cmd == wire.CMD_PACKAGED else 0
    body = ONE_BODY + _command(cmd, bytes(length))
    err = _mismatch(body, _desc(ONE), f"command {cmd} cannot appear in the tail")
    assert err.rel_offset == len(ONE_BODY)


@pytest.mark.parametrize(("cmd", "length"), [
    (wire.CMD_PING, 0), (wire.CMD_PING, 5), (wire.CMD_OPEN_RETURN_PATH, 1),
    (wire.CMD_SWITCHOVER_START, 4), (wire.CMD_POSTCOPY_RUN, 2),
])
def test_frame_rejects_fixed_length_commands_with_another_length(cmd: int, length: int) -> None:
    name = wire.COMMANDS[cmd][0]
    err = _mismatch(_command(cmd, bytes(length)), _desc(), f"command {name} with length "
                    f"{length}")
    assert err.rel_offset == 0


@pytest.mark.parametrize("partial", [b"\x08", b"\x08\x00", b"\x08\x00\x02", b"\x08\x00\x02\x00"])
def test_frame_rejects_a_truncated_command(partial: bytes) -> None:
    err = _mismatch(ONE_BODY + partial, _desc(ONE), "truncated command")
    assert err.rel_offset == len(ONE_BODY)


def test_frame_rejects_a_command_payload_running_past_eof() -> None:
    # PING declares its 4 bytes, only 2 are there before EOF
    body = _command(wire.CMD_PING, b"\x00\x00", length=4)
    _mismatch(body, _desc(), "does not end at EOF")


# --- frame_device_state: section headers ------------------------------------------------


@pytest.mark.parametrize("t", [wire.VM_EOF, wire.VM_SECTION_START, wire.VM_SECTION_PART,
                               wire.VM_SECTION_END, wire.VM_SUBSECTION,
                               wire.VM_VMDESCRIPTION, wire.VM_CONFIGURATION,
                               wire.VM_SECTION_FOOTER, 0xFF])
def test_frame_rejects_non_full_records(t: int) -> None:
    body = ONE_BODY + bytes((t,)) + bytes(12)
    err = _mismatch(body, _desc(ONE), f"expected a FULL section, found type 0x{t:02x}")
    assert err.rel_offset == len(ONE_BODY)


@pytest.mark.parametrize("cut", [1, 3, 5, 6, 8, 9, 12, 16])
def test_frame_rejects_a_truncated_section_header(cut: int) -> None:
    hdr = _header(1, "one", 0, 1)  # 6 + 3 + 8 = 17 bytes
    assert cut < len(hdr)
    err = _mismatch(hdr[:cut], _desc(ONE), "truncated section header")
    assert err.rel_offset == 0


def test_frame_needs_the_eof_and_description_record() -> None:
    for tail in (b"", b"\x00", b"\x00\x05" + bytes(4), b"\x01\x06" + bytes(4),
                 b"\x00\x06\x00"):
        with pytest.raises(DescriptionMismatch, match="no EOF and VM description record"):
            frame_device_state(tail, 0, _desc())


@pytest.mark.parametrize("field", ["instance_id", "version"])
@pytest.mark.parametrize("lookalike", [True, 1.0])
def test_frame_wants_exact_ints_where_json_lookalikes_compare_equal(
        field: str, lookalike: object) -> None:
    """JSON ``true`` and ``1.0`` compare equal to 1 in Python; QEMU writes neither."""
    body = _section(5, "one", 1, 1, b"\x00\x00\x00\x2a")
    dev = _dev("one", 1, 1, [_fld("a", 4)])
    assert _frame(body, _desc(dev)).items
    dev[field] = lookalike
    _mismatch(body, _desc(dev), "does not match device entry")


@pytest.mark.parametrize("cut", [1, 3, 5])
def test_frame_detects_a_truncated_header_without_reading_past_eof(cut: int) -> None:
    # only the EOF record follows: the name length byte must not be read beyond it
    buf = _header(1, "one", 0, 1)[:cut] + b"\x00\x06" + bytes(4)
    with pytest.raises(DescriptionMismatch, match="truncated section header"):
        frame_device_state(buf, cut, _desc(ONE))


def test_frame_rejects_a_name_length_running_past_eof() -> None:
    body = bytes((wire.VM_SECTION_FULL,)) + _be32(1) + b"\xff" + b"abc"
    _mismatch(body, _desc(ONE), "truncated section header")


def test_frame_rejects_a_section_without_device_entry() -> None:
    body = ONE_BODY + _section(6, "two", 0, 1, b"")
    err = _mismatch(body, _desc(ONE), "section 'two' has no device entry")
    assert err.rel_offset == len(ONE_BODY)
    _mismatch(ONE_BODY, _desc(), "section 'one' has no device entry")


@pytest.mark.parametrize(("name", "inst", "ver"), [
    ("onf", 0, 1),  # name
    ("on", 0, 1),
    ("one", 1, 1),  # instance
    ("one", 0, 2),  # version
    ("one", 0, 0),
])
def test_frame_rejects_a_header_not_matching_its_device(name: str, inst: int, ver: int) -> None:
    body = _section(5, name, inst, ver, b"\x00\x00\x00\x2a")
    err = _mismatch(body, _desc(ONE), "does not match device entry 'one' instance 0 version 1")
    assert err.rel_offset == 0


def test_frame_matches_devices_in_order() -> None:
    two = _dev("two", 0, 1, [_fld("b", 1)])
    body = _section(1, "two", 0, 1, b"\x01") + ONE_BODY
    _mismatch(body, _desc(ONE, two), "section 'two' .* does not match device entry 'one'")


# --- frame_device_state: fields and structs ---------------------------------------------


def test_frame_rejects_a_field_running_past_the_section_end() -> None:
    desc = _desc(_dev("one", 0, 1, [_fld("a", 4), _fld("big", 64)]))
    err = _mismatch(ONE_BODY, desc, "field 'big' \\(64 bytes\\) runs past the end")
    assert err.rel_offset == len(_header(5, "one", 0, 1)) + 4


def test_frame_rejects_an_array_running_past_the_section_end() -> None:
    desc = _desc(_dev("one", 0, 1, [_fld("a", 4, 1000)]))
    _mismatch(ONE_BODY, desc, "field 'a' \\(4000 bytes\\) runs past")


def test_frame_rejects_a_field_covering_the_footer() -> None:
    # 4 payload bytes + the 5-byte footer are there, but not the footer after 9 bytes
    desc = _desc(_dev("one", 0, 1, [_fld("a", 9)]))
    _mismatch(ONE_BODY, desc, "expected the footer of section 'one'")


def _struct_dev(size: int, inner_fields: list[dict[str, Any]], typ: str = "struct",
                count: int = 1) -> dict[str, Any]:
    if typ == "struct":
        f: dict[str, Any] = {"name": "st", "type": "struct",
                             "struct": {"vmsd_name": "in", "version": 1, "fields": inner_fields},
                             "size": size}
    else:
        f = {"name": "st", "type": "vstruct", "size": size, "fields": inner_fields}
    if count != 1:
        f["array_len"] = count
    return _dev("s", 0, 1, [f])


@pytest.mark.parametrize("typ", ["struct", "vstruct"])
def test_frame_rejects_a_struct_smaller_than_its_size(typ: str) -> None:
    desc = _desc(_struct_dev(6, [_fld("x", 4)], typ))
    err = _mismatch(_section(1, "s", 0, 1, bytes(6)), desc,
                    "struct field 'st' does not add up to its recorded size 6")
    assert err.rel_offset == len(_header(1, "s", 0, 1))


@pytest.mark.parametrize("typ", ["struct", "vstruct"])
def test_frame_rejects_a_struct_larger_than_its_size(typ: str) -> None:
    desc = _desc(_struct_dev(4, [_fld("x", 4), _fld("y", 2)], typ))
    _mismatch(_section(1, "s", 0, 1, bytes(4)), desc, "field 'y' \\(2 bytes\\) runs past")


def test_frame_checks_struct_arrays() -> None:
    desc = _desc(_struct_dev(6, [_fld("x", 4)], count=2))
    _mismatch(_section(1, "s", 0, 1, bytes(12)), desc, "does not add up")
    good = _desc(_struct_dev(6, [_fld("x", 4), _fld("y", 2)], count=2))
    (sec,) = _frame(_section(1, "s", 0, 1, bytes(12)), good).items
    assert isinstance(sec, FullSection)
    assert sec.fields == [FieldSpan("st", sec.payload_offset, 6, 2)]


def test_frame_rejects_a_subsection_inside_a_struct_that_is_not_there() -> None:
    inner = {"vmsd_name": "in", "version": 1, "fields": [_fld("x", 2)],
             "subsections": [{"vmsd_name": "in/sub", "version": 1, "fields": []}]}
    desc = _desc(_dev("s", 0, 1, [{"name": "st", "type": "struct", "struct": inner,
                                   "size": 2 + len(_subsection("in/sub", 1, b""))}]))
    body = _section(1, "s", 0, 1, b"\x00\x00" + _subsection("in/XYZ", 1, b""))
    _mismatch(body, desc, "expected subsection 'in/sub'")


def test_frame_rejects_nesting_deeper_than_max() -> None:
    level: dict[str, Any] = {"vmsd_name": "leaf", "version": 1, "fields": [_fld("x", 1)]}
    for _ in range(MAX_NESTING):
        level = {"vmsd_name": "s", "version": 1,
                 "fields": [{"name": "n", "type": "struct", "struct": level, "size": 1}]}
    desc = _desc(_dev("deep", 0, 1, [{"name": "n", "type": "struct", "struct": level,
                                      "size": 1}]))
    _mismatch(_section(1, "deep", 0, 1, b"\x01"), desc, "nests too deeply")


def test_frame_rejects_subsections_nested_deeper_than_max() -> None:
    names = [f"s{i}" for i in range(MAX_NESTING + 1)]
    sub: dict[str, Any] = {"vmsd_name": names[-1], "version": 1, "fields": []}
    for name in reversed(names[:-1]):
        sub = {"vmsd_name": name, "version": 1, "fields": [], "subsections": [sub]}
    payload = b""
    for name in reversed(names):
        payload = _subsection(name, 1, payload)
    desc = _desc(_dev("deep", 0, 1, [], [sub]))
    _mismatch(_section(1, "deep", 0, 1, payload), desc, "nests too deeply")
    # one level less is accepted
    desc_ok = _desc(_dev("deep", 0, 1, [], [sub["subsections"][0]]))
    payload_ok = b""
    for name in reversed(names[1:]):
        payload_ok = _subsection(name, 1, payload_ok)
    assert len(_frame(_section(1, "deep", 0, 1, payload_ok), desc_ok).items) == 1


# --- frame_device_state: malformed description entries ----------------------------------


@pytest.mark.parametrize("bad", [
    {"name": "a", "type": "uint32"},  # no size
    {"name": "a", "size": -1},
    {"name": "a", "size": "4"},
    {"name": "a", "size": 4.0},
    {"name": "a", "size": True},
    {"name": "a", "size": None},
])
def test_frame_rejects_fields_without_a_valid_size(bad: dict[str, Any]) -> None:
    _mismatch(ONE_BODY, _desc(_dev("one", 0, 1, [bad])), "no valid 'size'")


@pytest.mark.parametrize("array_len", [-1, "2", 2.0, False, None])
def test_frame_rejects_fields_without_a_valid_array_len(array_len: Any) -> None:
    f = {"name": "a", "array_len": array_len, "type": "uint8", "size": 1}
    _mismatch(ONE_BODY, _desc(_dev("one", 0, 1, [f])), "no valid 'array_len'")


@pytest.mark.parametrize("fields", [{"a": 1}, "a", 3, [1], [{"name": "a", "size": 4}, "b"]])
def test_frame_rejects_fields_that_are_not_a_list_of_objects(fields: Any) -> None:
    dev = _dev("one", 0, 1)
    dev["fields"] = fields
    _mismatch(ONE_BODY, _desc(dev), "'fields' is not a list of objects")


def test_frame_rejects_subsections_that_are_not_a_list_of_objects() -> None:
    dev = _dev("one", 0, 1, [_fld("a", 4)])
    dev["subsections"] = "x"
    _mismatch(ONE_BODY, _desc(dev), "'subsections' is not a list of objects")
    dev["subsections"] = [{"vmsd_name": "one/sub", "version": 1}, 2]
    _mismatch(ONE_BODY, _desc(dev), "'subsections' is not a list of objects")


@pytest.mark.parametrize("devices", [{"one": 1}, ["one"], [ONE, 1]])
def test_frame_rejects_devices_that_are_not_a_list_of_objects(devices: Any) -> None:
    desc = {"devices": devices}
    buf, eof = _tail(ONE_BODY, _desc(ONE))
    with pytest.raises(DescriptionMismatch, match="'devices' is not a list of objects") as ei:
        frame_device_state(buf, eof, desc)
    assert ei.value.rel_offset == 0


# --- frame_device_state: subsections -----------------------------------------------------

SUB_DEV = _dev("one", 0, 1, [_fld("a", 4)],
               [{"vmsd_name": "one/sub", "version": 3, "fields": [_fld("s", 2, 1, "uint16")]}])
SUB_AT = len(_header(5, "one", 0, 1)) + 4


def test_frame_accepts_the_subsection() -> None:
    body = _section(5, "one", 0, 1, b"\x00\x00\x00\x2a" + _subsection("one/sub", 3, b"\x01\x02"))
    (sec,) = _frame(body, _desc(SUB_DEV)).items
    assert isinstance(sec, FullSection)
    assert sec.payload_end == SUB_AT + len(_subsection("one/sub", 3, b"\x01\x02"))
    assert sec.end == len(body)


def test_frame_rejects_a_missing_subsection() -> None:
    # the footer comes where the subsection should be; enough bytes follow for its header
    body = ONE_BODY + ONE_BODY
    err = _mismatch(body, _desc(SUB_DEV, ONE), "expected subsection 'one/sub' here")
    assert err.rel_offset == SUB_AT


def test_frame_rejects_a_subsection_header_running_past_eof() -> None:
    err = _mismatch(ONE_BODY, _desc(SUB_DEV), "subsection 'one/sub' runs past the section end")
    assert err.rel_offset == SUB_AT


@pytest.mark.parametrize("sub", [
    _subsection("one/suc", 3, b"\x01\x02"),  # same length, other name
    _subsection("one/subx", 3, b"\x01"),  # longer name
    _subsection("one/su", 3, b"\x01\x02\x03"),  # shorter name
    bytes((wire.VM_SECTION_FULL,)) + _subsection("one/sub", 3, b"\x01\x02")[1:],  # marker
])
def test_frame_rejects_a_subsection_with_another_name(sub: bytes) -> None:
    body = _section(5, "one", 0, 1, b"\x00\x00\x00\x2a" + sub)
    err = _mismatch(body, _desc(SUB_DEV), "expected subsection 'one/sub' here")
    assert err.rel_offset == SUB_AT


@pytest.mark.parametrize("ver", [0, 2, 4, 0x03000000])
def test_frame_rejects_a_subsection_with_another_version(ver: int) -> None:
    body = _section(5, "one", 0, 1, b"\x00\x00\x00\x2a" + _subsection("one/sub", ver, b"\x01\x02"))
    err = _mismatch(body, _desc(SUB_DEV), "subsection 'one/sub' version differs")
    assert err.rel_offset == SUB_AT


@pytest.mark.parametrize("entry", [{"version": 3, "fields": []},
                                   {"vmsd_name": 5, "version": 3},
                                   {"vmsd_name": None, "version": 3}])
def test_frame_rejects_a_subsection_without_a_name(entry: dict[str, Any]) -> None:
    dev = _dev("one", 0, 1, [_fld("a", 4)], [entry])
    _mismatch(ONE_BODY, _desc(dev), "subsection without a vmsd_name")


@pytest.mark.parametrize("ver", [None, -1, "3", True])
def test_frame_rejects_a_subsection_without_a_valid_version(ver: Any) -> None:
    dev = _dev("one", 0, 1, [_fld("a", 4)], [{"vmsd_name": "one/sub", "version": ver}])
    _mismatch(ONE_BODY, _desc(dev), "no valid 'version'")


def test_frame_rejects_a_subsection_whose_fields_run_past_the_section() -> None:
    dev = _dev("one", 0, 1, [_fld("a", 4)],
               [{"vmsd_name": "one/sub", "version": 3, "fields": [_fld("s", 100)]}])
    body = _section(5, "one", 0, 1, b"\x00\x00\x00\x2a" + _subsection("one/sub", 3, b"\x01\x02"))
    _mismatch(body, _desc(dev), "field 's' \\(100 bytes\\) runs past")


# --- frame_device_state: footers and the end --------------------------------------------


def test_frame_rejects_a_missing_footer() -> None:
    body = _header(5, "one", 0, 1) + b"\x00\x00\x00\x2a" + b"\x00" * 5
    err = _mismatch(body, _desc(ONE), "expected the footer of section 'one'")
    assert err.rel_offset == SUB_AT


def test_frame_rejects_a_truncated_footer() -> None:
    body = ONE_BODY[:-1]
    _mismatch(body, _desc(ONE), "expected the footer of section 'one'")


def test_frame_rejects_extra_payload_before_the_footer() -> None:
    body = _section(5, "one", 0, 1, b"\x00\x00\x00\x2a\x00")
    err = _mismatch(body, _desc(ONE), "expected the footer of section 'one'")
    assert err.rel_offset == SUB_AT


@pytest.mark.parametrize("other", [0, 4, 6, 0x05000000])
def test_frame_rejects_a_footer_with_another_id(other: int) -> None:
    body = _section(5, "one", 0, 1, b"\x00\x00\x00\x2a", footer_sid=other)
    err = _mismatch(body, _desc(ONE), "footer of section 'one' has another id")
    assert err.rel_offset == SUB_AT


def test_frame_rejects_device_entries_without_section() -> None:
    two = _dev("two", 0, 1, [])
    three = _dev("three", 0, 1, [])
    err = _mismatch(ONE_BODY, _desc(ONE, two), "1 device entries have no section")
    assert err.rel_offset == len(ONE_BODY)
    _mismatch(ONE_BODY, _desc(ONE, two, three), "2 device entries have no section")
    _mismatch(b"", _desc(ONE), "1 device entries have no section")


# --- with_array_lengths -----------------------------------------------------------------


def _array_desc() -> dict[str, Any]:
    return {"page_size": 4096, "devices": [
        _dev("timer", 0, 2, [_fld("t", 8, 1, "uint64")]),
        _dev("cpu", 0, 22, [_fld("len", 4, 1, "int32"), _fld("idx", 8, 4, "uint64"),
                            _fld("val", 8, 4, "uint64"), _fld("tail", 1, 1, "uint8")]),
        _dev("cpu", 1, 22, [_fld("len", 4, 1, "int32"), _fld("idx", 8, 4, "uint64")]),
    ]}


def test_with_array_lengths_sets_a_new_count_after_the_name() -> None:
    desc = _array_desc()
    out = with_array_lengths(desc, {1: {"idx": 7, "val": 7}})
    idx, val = out["devices"][1]["fields"][1:3]
    assert idx == {"name": "idx", "array_len": 7, "type": "uint64", "size": 8}
    assert list(idx) == ["name", "array_len", "type", "size"]
    assert list(val) == ["name", "array_len", "type", "size"]
    assert val["array_len"] == 7


def test_with_array_lengths_inserts_array_len_into_a_scalar_entry() -> None:
    out = with_array_lengths(_array_desc(), {1: {"tail": 3}})
    tail = out["devices"][1]["fields"][3]
    assert list(tail.items()) == [("name", "tail"), ("array_len", 3), ("type", "uint8"),
                                  ("size", 1)]


def test_with_array_lengths_puts_array_len_after_name_wherever_it_is() -> None:
    desc = {"devices": [{"name": "d", "fields": [{"type": "uint8", "name": "f", "size": 1}]}]}
    out = with_array_lengths(desc, {0: {"f": 2}})
    assert list(out["devices"][0]["fields"][0].items()) == [
        ("type", "uint8"), ("name", "f"), ("array_len", 2), ("size", 1)]


def test_with_array_lengths_count_one_drops_array_len() -> None:
    out = with_array_lengths(_array_desc(), {1: {"idx": 1}})
    idx = out["devices"][1]["fields"][1]
    assert idx == {"name": "idx", "type": "uint64", "size": 8}
    assert "array_len" not in idx
    # a scalar entry stays scalar
    out = with_array_lengths(_array_desc(), {1: {"len": 1}})
    assert out["devices"][1]["fields"][0] == {"name": "len", "type": "int32", "size": 4}


def test_with_array_lengths_count_zero_removes_the_entry() -> None:
    out = with_array_lengths(_array_desc(), {1: {"idx": 0, "val": 0}})
    assert [f["name"] for f in out["devices"][1]["fields"]] == ["len", "tail"]


def test_with_array_lengths_copies_only_changed_devices() -> None:
    desc = _array_desc()
    before = copy.deepcopy(desc)
    out = with_array_lengths(desc, {1: {"idx": 2, "val": 0}})
    assert desc == before  # the original is not mutated
    assert out is not desc
    assert out["devices"] is not desc["devices"]
    assert out["devices"][0] is desc["devices"][0]
    assert out["devices"][2] is desc["devices"][2]
    assert out["devices"][1] is not desc["devices"][1]
    # No deep copy: an unchanged field entry is shared, a changed one is new.
    assert out["devices"][1]["fields"][0] is desc["devices"][1]["fields"][0]
    assert out["devices"][1]["fields"][1] is not desc["devices"][1]["fields"][1]
    assert out["page_size"] == 4096
    assert out["devices"][2]["fields"][1]["array_len"] == 4  # same names, other device


def test_with_array_lengths_ignores_unknown_names_and_keeps_other_fields() -> None:
    desc = _array_desc()
    out = with_array_lengths(desc, {2: {"missing": 5, "idx": 2}})
    assert out["devices"][2]["fields"] == [_fld("len", 4, 1, "int32"),
                                           _fld("idx", 8, 2, "uint64")]
    assert with_array_lengths(desc, {}) == desc


def test_with_array_lengths_result_frames_the_rewritten_bytes() -> None:
    dev = _dev("arr", 0, 1, [_fld("n", 4), _fld("ids", 8, 3, "uint64"), _fld("end", 1)])
    desc = _desc(dev)
    body = _section(1, "arr", 0, 1, struct.pack(">I2QB", 2, 10, 20, 0xEE))
    _mismatch(body, desc, "field 'ids' \\(24 bytes\\) runs past")
    new = with_array_lengths(desc, {0: {"ids": 2}})
    (sec,) = _frame(body, new).items
    assert isinstance(sec, FullSection)
    assert [(f.name, f.size, f.count) for f in sec.fields] == [("n", 4, 1), ("ids", 8, 2),
                                                               ("end", 1, 1)]
    assert desc["devices"][0]["fields"][1]["array_len"] == 3
