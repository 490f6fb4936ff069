"""Unit tests of :mod:`migproxy.arm.cpu_section`: the cpreg arrays of the ARM ``cpu``
section and every layout check made before they may be rewritten."""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any

import pytest

from migproxy.arm.cpu_section import (
    F_IDX,
    F_LEN,
    F_VAL,
    PREFIX_SIZE,
    CpuLayoutError,
    encode_cpreg_arrays,
    parse_cpu_section,
)
from migproxy.stream import wire
from migproxy.stream.vmdesc import (
    FieldSpan,
    FullSection,
    encode_description,
    frame_device_state,
    with_array_lengths,
)
from testkit.synthetic import DEFAULT_CPREGS, cpu_payload

CPREGS = DEFAULT_CPREGS
IDS = [r for r, _ in CPREGS]
VALS = [v for _, v in CPREGS]
N = len(CPREGS)


def _header(sid: int, name: str, inst: int, ver: int) -> bytes:
    raw = name.encode()
    return bytes((wire.VM_SECTION_FULL,)) + struct.pack(">IB", sid, len(raw)) + raw + \
        struct.pack(">II", inst, ver)


def _frame(devices: list[tuple[dict[str, Any], bytes]],
           lead: bytes = b"") -> tuple[bytearray, list[FullSection], dict[str, Any]]:
    """Frame hand-built FULL sections (after ``lead``, a state-less command or b"")."""
    body = bytearray(lead)
    for sid, (dev, payload) in enumerate(devices, 2):
        body += _header(sid, dev["name"], dev["instance_id"], dev["version"]) + payload
        body += b"\x7e" + struct.pack(">I", sid)
    desc = {"page_size": 4096, "devices": [d for d, _ in devices]}
    js = encode_description(desc)
    eof = len(body)
    buf = body + b"\x00\x06" + struct.pack(">I", len(js)) + js
    layout = frame_device_state(buf, eof, desc)
    secs = [i for i in layout.items if isinstance(i, FullSection)]
    return buf, secs, desc


def _cpu(inst: int = 0, cpregs: tuple[tuple[int, int], ...] = CPREGS
         ) -> tuple[dict[str, Any], bytes]:
    payload, dev = cpu_payload(inst, cpregs)
    return dev, payload


def _framed_cpu(cpregs: tuple[tuple[int, int], ...] = CPREGS
                ) -> tuple[bytearray, FullSection, dict[str, Any]]:
    buf, (sec,), desc = _frame([_cpu(0, cpregs)])
    return buf, sec, desc


def _with_spans(sec: FullSection, **spans: FieldSpan | None) -> FullSection:
    """``sec`` with the named spans replaced (None: removed)."""
    fields = []
    for f in sec.fields:
        if f.name in spans:
            new = spans[f.name]
            if new is not None:
                fields.append(new)
        else:
            fields.append(f)
    return replace(sec, fields=fields)


def _span(sec: FullSection, name: str) -> FieldSpan:
    (s,) = [f for f in sec.fields if f.name == name]
    return s


# --- accepted sections ------------------------------------------------------------------


def test_parse_decodes_the_arrays() -> None:
    buf, sec, _ = _framed_cpu()
    cpu = parse_cpu_section(buf, sec)
    assert cpu.section is sec
    assert cpu.count_offset == sec.payload_offset + PREFIX_SIZE
    assert cpu.indexes == IDS
    assert cpu.values == VALS
    assert cpu.instance_id == 0
    assert cpu.arrays_end == cpu.count_offset + 4 + 16 * N
    assert bytes(buf[cpu.count_offset : cpu.arrays_end]) == encode_cpreg_arrays(IDS, VALS)
    assert cpu.encode_arrays(IDS, VALS) == bytes(buf[cpu.count_offset : cpu.arrays_end])


def test_prefix_size_is_568() -> None:
    assert PREFIX_SIZE == 568


def test_parse_works_on_bytes_and_memoryview() -> None:
    buf, sec, _ = _framed_cpu()
    assert parse_cpu_section(bytes(buf), sec).indexes == IDS
    assert parse_cpu_section(memoryview(buf), sec).values == VALS


def test_parse_second_cpu_after_other_sections() -> None:
    timer = ({"name": "timer", "instance_id": 0, "vmsd_name": "timer", "version": 2,
              "fields": [{"name": "t", "type": "uint64", "size": 8}]}, bytes(8))
    regs = ((0x10, 1), (0x20, 2))
    ping = b"\x08" + struct.pack(">HH", wire.CMD_PING, 4) + bytes(4)
    buf, secs, _ = _frame([timer, _cpu(0), _cpu(1, regs)], lead=ping)
    cpu1 = parse_cpu_section(buf, secs[2])
    assert cpu1.instance_id == 1
    assert cpu1.indexes == [0x10, 0x20]
    assert cpu1.values == [1, 2]
    assert cpu1.count_offset == secs[2].payload_offset + PREFIX_SIZE
    assert parse_cpu_section(buf, secs[1]).indexes == IDS


def test_parse_empty_arrays() -> None:
    buf, sec, _ = _framed_cpu(())
    assert _span(sec, F_LEN).size == 4
    assert [f.name for f in sec.fields if f.name in (F_IDX, F_VAL)] == []
    cpu = parse_cpu_section(buf, sec)
    assert cpu.indexes == []
    assert cpu.values == []
    assert cpu.arrays_end == cpu.count_offset + 4


def test_parse_single_register() -> None:
    buf, sec, _ = _framed_cpu(((0x6030000000139828, 0xDEAD),))
    cpu = parse_cpu_section(buf, sec)
    assert cpu.indexes == [0x6030000000139828]
    assert cpu.values == [0xDEAD]


# --- rejected layouts -------------------------------------------------------------------


@pytest.mark.parametrize("ver", [0, 21, 23, 99])
def test_parse_rejects_unsupported_versions(ver: int) -> None:
    buf, sec, _ = _framed_cpu()
    with pytest.raises(CpuLayoutError, match=f"version {ver} is not supported"):
        parse_cpu_section(buf, replace(sec, version_id=ver))


def test_parse_rejects_unsupported_version_from_the_stream() -> None:
    dev, payload = _cpu()
    dev["version"] = 21
    buf, (sec,), _ = _frame([(dev, payload)])
    assert sec.version_id == 21
    with pytest.raises(CpuLayoutError, match="version 21 is not supported"):
        parse_cpu_section(buf, sec)


def test_parse_rejects_a_missing_count_field() -> None:
    buf, sec, _ = _framed_cpu()
    with pytest.raises(CpuLayoutError, match=f"no 4-byte {F_LEN} field"):
        parse_cpu_section(buf, _with_spans(sec, **{F_LEN: None}))


@pytest.mark.parametrize(("size", "count"), [(8, 1), (2, 1), (4, 2), (4, 0), (1, 4)])
def test_parse_rejects_an_odd_count_field(size: int, count: int) -> None:
    buf, sec, _ = _framed_cpu()
    at = _span(sec, F_LEN).offset
    with pytest.raises(CpuLayoutError, match=f"no 4-byte {F_LEN} field"):
        parse_cpu_section(buf, _with_spans(sec, **{F_LEN: FieldSpan(F_LEN, at, size, count)}))


@pytest.mark.parametrize("delta", [-8, -4, -1, 1, 4, 8])
def test_parse_rejects_the_count_at_another_offset(delta: int) -> None:
    buf, sec, _ = _framed_cpu()
    s = _span(sec, F_LEN)
    moved = _with_spans(sec, **{F_LEN: FieldSpan(F_LEN, s.offset + delta, 4, 1)})
    with pytest.raises(CpuLayoutError,
                       match=f"at payload offset {PREFIX_SIZE + delta}, not {PREFIX_SIZE}"):
        parse_cpu_section(buf, moved)


@pytest.mark.parametrize("extra", [-1, 1])
def test_parse_rejects_a_description_that_moves_the_count(extra: int) -> None:
    # one element more or less in env.regs: the stream frames, but the layout is not ours
    dev, payload = _cpu()
    regs = dev["fields"][0]
    assert regs["name"] == "env.regs"
    assert regs["array_len"] == 16
    regs["array_len"] = 16 + extra
    payload = payload[4:] if extra < 0 else bytes(4) + payload
    buf, (sec,), _ = _frame([(dev, payload)])
    assert _span(sec, F_LEN).offset - sec.payload_offset == PREFIX_SIZE + 4 * extra
    with pytest.raises(CpuLayoutError, match=f"not {PREFIX_SIZE}"):
        parse_cpu_section(buf, sec)


@pytest.mark.parametrize("n", [-1, -2, -(2**31)])
def test_parse_rejects_a_negative_count(n: int) -> None:
    buf, sec, _ = _framed_cpu()
    struct.pack_into(">i", buf, _span(sec, F_LEN).offset, n)
    with pytest.raises(CpuLayoutError, match=f"negative cpreg count {n}"):
        parse_cpu_section(buf, sec)


@pytest.mark.parametrize("drop", [(), (F_IDX,), (F_VAL,)])
def test_parse_rejects_arrays_described_with_count_zero(drop: tuple[str, ...]) -> None:
    buf, sec, _ = _framed_cpu()
    struct.pack_into(">i", buf, _span(sec, F_LEN).offset, 0)
    with pytest.raises(CpuLayoutError, match="described although the count is 0"):
        parse_cpu_section(buf, _with_spans(sec, **dict.fromkeys(drop)))


@pytest.mark.parametrize("name", [F_IDX, F_VAL])
def test_parse_rejects_a_missing_array_description(name: str) -> None:
    buf, sec, _ = _framed_cpu()
    with pytest.raises(CpuLayoutError, match=f"description of {name} does not match count {N}"):
        parse_cpu_section(buf, _with_spans(sec, **{name: None}))


@pytest.mark.parametrize("name", [F_IDX, F_VAL])
@pytest.mark.parametrize(("size", "count"), [(8, N - 1), (8, N + 1), (4, N), (16, N), (8, 1)])
def test_parse_rejects_an_array_description_not_matching_the_count(
        name: str, size: int, count: int) -> None:
    buf, sec, _ = _framed_cpu()
    s = _span(sec, name)
    bad = _with_spans(sec, **{name: FieldSpan(name, s.offset, size, count)})
    with pytest.raises(CpuLayoutError, match=f"description of {name} does not match count {N}"):
        parse_cpu_section(buf, bad)


def test_parse_rejects_a_count_not_matching_the_description() -> None:
    buf, sec, _ = _framed_cpu()
    struct.pack_into(">i", buf, _span(sec, F_LEN).offset, N - 1)
    with pytest.raises(CpuLayoutError, match=f"does not match count {N - 1}"):
        parse_cpu_section(buf, sec)


@pytest.mark.parametrize(("name", "delta"), [(F_IDX, 8), (F_IDX, -4), (F_IDX, 1), (F_VAL, 8),
                                             (F_VAL, -8), (F_VAL, 16 * N)])
def test_parse_rejects_arrays_that_are_not_adjacent(name: str, delta: int) -> None:
    buf, sec, _ = _framed_cpu()
    s = _span(sec, name)
    moved = _with_spans(sec, **{name: FieldSpan(name, s.offset + delta, 8, N)})
    with pytest.raises(CpuLayoutError, match="not where the layout puts them"):
        parse_cpu_section(buf, moved)


@pytest.mark.parametrize("gap", [8, 16, -4])
def test_parse_rejects_arrays_not_right_after_the_count(gap: int) -> None:
    # both arrays moved together: adjacent to each other, but not to the count
    buf, sec, _ = _framed_cpu()
    i = _span(sec, F_IDX)
    moved = _with_spans(sec, **{F_IDX: FieldSpan(F_IDX, i.offset + gap, 8, N),
                                F_VAL: FieldSpan(F_VAL, i.offset + gap + 8 * N, 8, N)})
    with pytest.raises(CpuLayoutError, match="not where the layout puts them"):
        parse_cpu_section(buf, moved)


def test_parse_rejects_values_before_indexes() -> None:
    buf, sec, _ = _framed_cpu()
    i, v = _span(sec, F_IDX), _span(sec, F_VAL)
    swapped = _with_spans(sec, **{F_IDX: FieldSpan(F_IDX, v.offset, 8, N),
                                  F_VAL: FieldSpan(F_VAL, i.offset, 8, N)})
    with pytest.raises(CpuLayoutError, match="not where the layout puts them"):
        parse_cpu_section(buf, swapped)


@pytest.mark.parametrize("short", [1, 8, 16 * N])
def test_parse_rejects_arrays_past_the_section_end(short: int) -> None:
    buf, sec, _ = _framed_cpu()
    arrays_end = _span(sec, F_LEN).offset + 4 + 16 * N
    with pytest.raises(CpuLayoutError, match="run past the end of the section"):
        parse_cpu_section(buf, replace(sec, payload_end=arrays_end - short))
    # ending exactly at the section end is fine
    assert parse_cpu_section(buf, replace(sec, payload_end=arrays_end)).indexes == IDS


def test_parse_rejects_an_empty_section_past_its_end() -> None:
    buf, sec, _ = _framed_cpu(())
    count_at = _span(sec, F_LEN).offset
    with pytest.raises(CpuLayoutError, match="run past the end of the section"):
        parse_cpu_section(buf, replace(sec, payload_end=count_at + 3))


@pytest.mark.parametrize(("i", "j"), [(0, 1), (3, 4), (N - 2, N - 1), (0, N - 1)])
def test_parse_rejects_ids_out_of_order(i: int, j: int) -> None:
    buf, sec, _ = _framed_cpu()
    at = _span(sec, F_IDX).offset
    ids = list(IDS)
    ids[i], ids[j] = ids[j], ids[i]
    struct.pack_into(f">{N}Q", buf, at, *ids)
    with pytest.raises(CpuLayoutError, match="not strictly ascending"):
        parse_cpu_section(buf, sec)


def test_parse_rejects_duplicate_ids() -> None:
    buf, sec, _ = _framed_cpu()
    at = _span(sec, F_IDX).offset
    struct.pack_into(">Q", buf, at + 8 * 5, IDS[4])
    with pytest.raises(CpuLayoutError, match="not strictly ascending"):
        parse_cpu_section(buf, sec)


# --- encode_cpreg_arrays ----------------------------------------------------------------


def test_encode_exact_bytes() -> None:
    out = encode_cpreg_arrays([0x10, 0x6030000000139828], [0xFFFFFFFFFFFFFFFF, 7])
    assert out == (b"\x00\x00\x00\x02"
                   b"\x00\x00\x00\x00\x00\x00\x00\x10"
                   b"\x60\x30\x00\x00\x00\x13\x98\x28"
                   b"\xff\xff\xff\xff\xff\xff\xff\xff"
                   b"\x00\x00\x00\x00\x00\x00\x00\x07")


def test_encode_empty_and_single() -> None:
    assert encode_cpreg_arrays([], []) == b"\x00\x00\x00\x00"
    assert encode_cpreg_arrays([5], [6]) == b"\x00\x00\x00\x01" + struct.pack(">QQ", 5, 6)


@pytest.mark.parametrize(("ids", "vals"), [([1], []), ([], [1]), ([1, 2], [1]),
                                           ([1], [1, 2])])
def test_encode_rejects_length_mismatch(ids: list[int], vals: list[int]) -> None:
    with pytest.raises(ValueError, match="differ in length"):
        encode_cpreg_arrays(ids, vals)


@pytest.mark.parametrize("ids", [[2, 1], [1, 1], [1, 3, 2], [1, 2, 2]])
def test_encode_rejects_non_ascending_ids(ids: list[int]) -> None:
    with pytest.raises(ValueError, match="strictly ascending"):
        encode_cpreg_arrays(ids, [0] * len(ids))


def test_encoded_arrays_replace_the_original_and_parse_back() -> None:
    buf, sec, desc = _framed_cpu()
    cpu = parse_cpu_section(buf, sec)
    new_ids, new_vals = IDS[:2] + IDS[3:], VALS[:2] + VALS[3:]
    new = cpu.encode_arrays(new_ids, new_vals)
    assert len(new) == 4 + 16 * (N - 1)
    assert struct.unpack_from(">i", new)[0] == N - 1
    assert struct.unpack_from(f">{N - 1}Q", new, 4) == tuple(new_ids)
    assert struct.unpack_from(f">{N - 1}Q", new, 4 + 8 * (N - 1)) == tuple(new_vals)
    # splice the arrays in, describe the new counts, frame and parse again
    body = bytes(buf[: cpu.count_offset]) + new + bytes(buf[cpu.arrays_end : sec.end])
    new_desc = with_array_lengths(desc, {0: {F_IDX: N - 1, F_VAL: N - 1}})
    js = encode_description(new_desc)
    new_buf = body + b"\x00\x06" + struct.pack(">I", len(js)) + js
    (new_sec,) = frame_device_state(new_buf, len(body), new_desc).items
    assert isinstance(new_sec, FullSection)
    again = parse_cpu_section(new_buf, new_sec)
    assert again.indexes == new_ids
    assert again.values == new_vals
    assert again.count_offset == cpu.count_offset
