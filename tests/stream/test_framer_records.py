"""RAM records and configuration variants, built byte by byte and spliced into a stream.

Covers what QEMU 7.2-11.x can send but the synthetic generator does not: XBZRLE and
compressed pages, ``x-ignore-shared`` block lists, the capabilities and uuid subsections,
postcopy ADVISE, and the errors a bad record must give.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migproxy.arm.profile import default_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream import wire
from migproxy.stream.engine import Mode
from migproxy.stream.events import CommandFramed, ItemFramed, PassthroughEntered, SectionFramed
from migproxy.stream.framer import _block_bound, _in_block
from testkit.streams import run_engine, split_at
from testkit.synthetic import BLOCK, SynthSpec, build

BASE = build(SynthSpec(ram_bytes=1 << 20, full_pages=2, zero_pages=4, part_sections=1))
SID = 1
PART_AT = BASE.index(b"\x02\x00\x00\x00\x01")  # the first PART section


def _q(v: int) -> bytes:
    return struct.pack(">Q", v)


def _named(offset: int, flag: int) -> bytes:
    return _q(offset | flag) + bytes((len(BLOCK),)) + BLOCK


def _cont(offset: int, flag: int) -> bytes:
    return _q(offset | flag | wire.RAM_CONTINUE)


def _part(*records: bytes) -> bytes:
    return (b"\x02" + struct.pack(">I", SID) + b"".join(records) + _q(wire.RAM_EOS)
            + b"\x7e" + struct.pack(">I", SID))


def _with_part(*records: bytes) -> bytes:
    return BASE[:PART_AT] + _part(*records) + BASE[PART_AT:]


def _run(data: bytes, cuts: list[int] | None = None) -> tuple[bytes, list, object]:
    return run_engine(split_at(data, cuts or [PART_AT + 3, PART_AT + 11, PART_AT + 30]),
                      arm_engine_config(default_profile()))


def _stop(events: list) -> PassthroughEntered | None:
    return next((e for e in events if isinstance(e, PassthroughEntered)), None)


def _ram_items(events: list) -> list[SectionFramed]:
    return [e for e in events if isinstance(e, SectionFramed) and e.idstr == "ram"]


def test_xbzrle_and_compressed_pages_are_framed_and_counted() -> None:
    enc = b"\x05\x03abc"  # zero run 5, literal run 3 (uleb128 pairs)
    comp = b"x\x9c" + bytes(40)
    data = _with_part(
        _named(0x1000, wire.RAM_XBZRLE) + b"\x01" + struct.pack(">H", len(enc)) + enc,
        _cont(0x2000, wire.RAM_COMPRESS_PAGE) + struct.pack(">I", len(comp)) + comp,
        _cont(0x3000, wire.RAM_PAGE) + bytes(4096),
        _cont(0x4000, wire.RAM_ZERO) + b"\x00",
        _q(wire.RAM_MULTIFD_FLUSH),
    )
    _out, events, eng = _run(data)
    assert eng.mode == Mode.DONE
    assert _stop(events) is None
    st = eng.stats
    assert (st.xbzrle_pages, st.compressed_pages, st.multifd_flushes) == (1, 1, 1)
    first = _ram_items(events)[1]
    assert first.xbzrle_pages == 1
    assert first.compressed_pages == 1
    assert first.size == len(_part(b"")) + 8 + 14 + 3 + len(enc) + 8 + 4 + len(comp) \
        + 8 + 4096 + 9 + 8


@pytest.mark.parametrize(("record", "reason", "at"), [
    (_cont(0x1000, wire.RAM_PAGE) + bytes(4096), "format_error", 5),  # no block named yet
    (_named(1 << 20, wire.RAM_PAGE) + bytes(4096), "format_error", 5),  # past the block end
    (_q(0x1000 | wire.RAM_PAGE) + b"\x03abc" + bytes(4096), "format_error", 13),  # unknown
    (_named(0, wire.RAM_XBZRLE) + b"\x02\x00\x04abcd", "format_error", 5 + 22),  # bad flag
    (_named(0, wire.RAM_XBZRLE) + b"\x01\x10\x01" + bytes(4097), "format_error", 5 + 23),
    (_named(0, wire.RAM_COMPRESS_PAGE) + struct.pack(">I", 9000) + bytes(9000),
     "format_error", 5 + 22),
    (_q((1 << 20) | wire.RAM_MEM_SIZE), "format_error", 5),  # MEM_SIZE outside START
    (_q(wire.RAM_HOOK), "ram_hook", 5),
    (_q(0x400 | wire.RAM_PAGE | wire.RAM_ZERO), "format_error", 5),
])
def test_bad_records_are_reported_at_their_offset(record: bytes, reason: str, at: int) -> None:
    data = _with_part(record)
    out, events, _ = _run(data)
    stop = _stop(events)
    assert stop is not None, events[-2:]
    assert stop.reason == reason, events[-2:]
    assert stop.offset == PART_AT + at, stop.message
    assert out == data


def _head(capabilities: list[bytes] = (), uuid: bytes | None = None,
          mr_addr: bool = False) -> bytes:
    """Header, configuration (with optional subsections) and a ram START section."""
    h = struct.pack(">II", wire.FILE_MAGIC, 3) + b"\x07" + struct.pack(">I", 9) + b"virt-10.0"
    h += b"\x05" + bytes((30,)) + b"configuration/target-page-bits" + struct.pack(">II", 1, 12)
    if capabilities:
        name = b"configuration/capabilities"
        h += b"\x05" + bytes((len(name),)) + name + struct.pack(">II", 1, len(capabilities))
        h += b"".join(bytes((len(c),)) + c for c in capabilities)
    if uuid is not None:
        name = b"configuration/uuid"
        h += b"\x05" + bytes((len(name),)) + name + struct.pack(">I", 1) + uuid
    h += b"\x01" + struct.pack(">I", SID) + b"\x03ram" + struct.pack(">II", 0, 4)
    h += _q((1 << 20) | wire.RAM_MEM_SIZE) + bytes((len(BLOCK),)) + BLOCK + _q(1 << 20)
    if mr_addr:
        h += _q(0x40000000)
    h += _q(wire.RAM_EOS) + b"\x7e" + struct.pack(">I", SID)
    return h


def _rest() -> bytes:
    return BASE[PART_AT:]


def test_configuration_subsections_and_ignore_shared_block_list() -> None:
    uuid = bytes(range(16))
    data = _head([b"x-ignore-shared"], uuid, mr_addr=True) + _rest()
    _out, events, eng = _run(data, [20, 70, 90])
    assert eng.mode == Mode.DONE
    assert _stop(events) is None
    assert eng.framer.ignore_shared
    assert eng.framer.uuid == uuid
    assert eng.framer.capabilities == ["x-ignore-shared"]
    conf = next(e for e in events if isinstance(e, ItemFramed) and e.kind == "configuration")
    assert conf.capabilities == ("x-ignore-shared",)


def test_ignore_shared_without_the_address_field_fails_exactly() -> None:
    data = _head([b"x-ignore-shared"], mr_addr=False) + _rest()
    _, events, _ = _run(data, [50])
    stop = _stop(events)
    assert stop is not None
    assert stop.reason == "format_error"


def test_mapped_ram_is_not_supported() -> None:
    data = _head([b"mapped-ram"]) + _rest()
    _, events, _ = _run(data, [50])
    stop = _stop(events)
    assert stop is not None
    assert stop.reason == "mapped_ram"


def _advise(summary: int, target: int) -> bytes:
    return b"\x08" + struct.pack(">HHQQ", wire.CMD_POSTCOPY_ADVISE, 16, summary, target)


def test_postcopy_advise_with_uniform_pages_is_framed() -> None:
    head = _head()
    start = head.index(b"\x01\x00\x00\x00\x01\x03ram")
    data = head[:start] + _advise(4096, 4096) + b"\x08" + struct.pack(">HH", 3, 0) \
        + head[start:] + _rest()
    _out, events, eng = _run(data, [start + 3])
    assert eng.mode == Mode.DONE, events[-2:]
    assert eng.framer.commands_seen["POSTCOPY_ADVISE"] == 2


def test_postcopy_advise_with_huge_pages_is_not_understood() -> None:
    head = _head()
    start = head.index(b"\x01\x00\x00\x00\x01\x03ram")
    data = head[:start] + _advise(4096 | (2 << 20), 4096) + head[start:] + _rest()
    out, events, _ = _run(data, [start + 3])
    stop = _stop(events)
    assert stop is not None
    assert stop.reason == "postcopy_page_sizes"
    assert out == data


@pytest.mark.parametrize(("cmd", "length"), [(wire.CMD_PING, 3), (wire.CMD_OPEN_RETURN_PATH, 4),
                                              (wire.CMD_SWITCHOVER_START, 1)])
def test_commands_with_wrong_lengths_are_format_errors(cmd: int, length: int) -> None:
    head = _head()
    bad = head + b"\x08" + struct.pack(">HH", cmd, length) + bytes(length) + _rest()
    _, events, _ = _run(bad, [len(head) + 2])
    stop = _stop(events)
    assert stop is not None
    assert stop.reason == "format_error"
    assert stop.offset == len(head) + 3


def test_every_command_of_the_precopy_stream_is_framed() -> None:
    head = _head()
    cmds = (b"\x08" + struct.pack(">HH", wire.CMD_OPEN_RETURN_PATH, 0)
            + b"\x08" + struct.pack(">HHI", wire.CMD_PING, 4, 1)
            + b"\x08" + struct.pack(">HH", wire.CMD_POSTCOPY_RAM_DISCARD, 7) + b"\x00\x02ab\x00xy"
            + b"\x08" + struct.pack(">HH", wire.CMD_RECV_BITMAP, 3) + b"\x01a\x00")
    data = head + cmds + _rest()
    _, events, eng = _run(data, [len(head) + 1, len(head) + 7])
    assert eng.mode == Mode.DONE
    seen = [e.command for e in events if isinstance(e, CommandFramed)]
    assert seen[:4] == ["OPEN_RETURN_PATH", "PING", "POSTCOPY_RAM_DISCARD", "RECV_BITMAP"]
    ping = next(e for e in events if isinstance(e, CommandFramed) and e.command
                == "PING")
    assert ping.value == 1


@pytest.mark.parametrize("kind", ["zero", "page"])
@pytest.mark.parametrize("bad", [1, 3, 5])
def test_a_record_outside_its_block_inside_a_run_is_found_for_any_split(kind: str,
                                                                        bad: int) -> None:
    """Every record of a run of CONTINUE records is checked, not only the last: the verdict
    and its offset are the same in one read and when the input is split before the bad
    record (the run fast paths and the record-by-record path agree)."""
    flag = wire.RAM_ZERO if kind == "zero" else wire.RAM_PAGE
    fill = b"\x00" if kind == "zero" else bytes(range(256)) * 16
    records = [_named(0, flag) + fill]
    for j in range(1, 7):
        offset = (1 << 20) + 4096 * j if j == bad else 4096 * j  # the block is 1 MiB
        records.append(_cont(offset, flag) + fill)
    data = _with_part(*records)
    bad_at = PART_AT + 5 + sum(len(r) for r in records[:bad])
    results = []
    for cuts in ([], [bad_at], [bad_at - 1], [PART_AT + 5 + len(records[0])]):
        _, events, eng = run_engine(split_at(data, cuts), arm_engine_config(default_profile()))
        stop = next(e for e in events if isinstance(e, PassthroughEntered))
        results.append((eng.mode, stop.reason, stop.offset))
    assert results[0] == (Mode.PASSTHROUGH, "format_error", bad_at)
    assert all(r == results[0] for r in results), results


@given(st.integers(1, 1 << 40).map(lambda n: n * 4096),
       st.lists(st.integers(0, (1 << 44) - 1), min_size=1, max_size=80),
       st.sampled_from([9, 4104]))
def test_the_run_offset_check_agrees_with_a_record_by_record_check(
        block_len: int, offsets: list[int], stride: int) -> None:
    bound = _block_bound(block_len, 4096)
    words = [((o * 4096) | 0x22) & ((1 << 64) - 1) for o in offsets]
    buf = b"".join(struct.pack(">Q", w) + bytes(stride - 8) for w in words)
    expected = next((j for j, w in enumerate(words) if (w & ~0xFFF) + 4096 > block_len),
                    len(words))
    assert _in_block(buf, 0, len(words), stride, bound) == expected
    # Offsets near the end of the block, where the byte lanes decide exactly.
    near = [max(0, block_len - 4096 * (j % 3)) | 0x22 for j in range(len(offsets))]
    buf = b"".join(struct.pack(">Q", w) + bytes(stride - 8) for w in near)
    expected = next((j for j, w in enumerate(near) if (w & ~0xFFF) + 4096 > block_len),
                    len(near))
    assert _in_block(buf, 0, len(near), stride, bound) == expected


def _head_with_blocks(blocks: list[tuple[bytes, int]], total: int) -> bytes:
    """A header whose ram START section lists ``blocks`` (name, used length)."""
    h = _head()
    start = h.index(_q((1 << 20) | wire.RAM_MEM_SIZE))
    end = h.index(_q(wire.RAM_EOS), start)
    listing = _q(total | wire.RAM_MEM_SIZE) + b"".join(
        bytes((len(n),)) + n + _q(used) for n, used in blocks)
    return h[:start] + listing + h[end:]


def test_zero_length_ram_blocks_are_refused_at_once() -> None:
    """A zero-length block never uses up the MEM_SIZE total: refusing it is what stops a
    flood of them from growing the framer's state without bound."""
    flood = [(b"b%d" % i, 0) for i in range(10_000)]
    data = _head_with_blocks(flood, 1 << 20) + _rest()
    _, events, eng = _run(data, [100, 4000])
    stop = _stop(events)
    assert stop is not None
    assert stop.reason == "format_error"
    assert "block length" in stop.message
    assert len(eng.framer._blocks) == 0


def test_a_ram_block_listed_twice_is_refused() -> None:
    data = _head_with_blocks([(BLOCK, 4096), (BLOCK, 4096)], 8192) + _rest()
    _, events, _ = _run(data, [60])
    stop = _stop(events)
    assert stop is not None
    assert stop.reason == "format_error"
    assert "not listed before" in \
        stop.message


def test_the_number_of_ram_blocks_is_bounded() -> None:
    from migproxy.stream.framer import MAX_RAM_BLOCKS

    n = MAX_RAM_BLOCKS + 1
    blocks = [(b"b%d" % i, 4096) for i in range(n)]
    data = _head_with_blocks(blocks, 4096 * n) + _rest()
    _, events, eng = _run(data, [100])
    stop = _stop(events)
    assert stop is not None
    assert stop.reason == "limit_exceeded"
    assert len(eng.framer._blocks) == MAX_RAM_BLOCKS


def test_the_number_of_iterable_sections_is_bounded() -> None:
    from migproxy.stream.framer import MAX_SECTIONS

    head = _head()
    starts = b"".join(b"\x01" + struct.pack(">I", SID + 1 + i) + b"\x03ram"
                      + struct.pack(">II", 0, 4) + _q(wire.RAM_EOS)
                      + b"\x7e" + struct.pack(">I", SID + 1 + i) for i in range(MAX_SECTIONS))
    data = head + starts + _rest()
    _, events, eng = _run(data, [len(head) + 7])
    stop = _stop(events)
    assert stop is not None
    assert stop.reason == "limit_exceeded"
    assert len(eng.framer.sections) == MAX_SECTIONS
