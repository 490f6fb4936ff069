"""The mapped-ram layout framed from a file (``file_offset`` set): each block's header,
its region passed over, the stream going on after it; and the headers QEMU would not
write, refused where they are."""

from __future__ import annotations

import struct

import pytest

from migproxy.stream import mappedram, wire
from migproxy.stream.engine import EngineConfig, Mode, Policy
from migproxy.stream.events import Aborted, ItemFramed
from migproxy.stream.framer import MAX_RAM_BLOCKS
from testkit.mappedram import PAGE, MappedRamFile, mapped_ram_file
from testkit.streams import run_engine, split_at


def _run(f: MappedRamFile, cuts: list[int] | None = None,
         file_offset: int | None = None) -> tuple[bytes, list, object]:
    cfg = EngineConfig(policy=Policy.ABORT,
                       file_offset=f.file_offset if file_offset is None else file_offset)
    return run_engine(split_at(bytes(f.data), cuts or []), cfg)


def _stop(events: list) -> Aborted:
    stop = next((e for e in events if isinstance(e, Aborted)), None)
    assert stop is not None, "the engine did not stop"
    return stop


@pytest.mark.parametrize("file_offset", [0, 70000])
def test_the_regions_are_passed_over_and_the_tail_is_framed(file_offset: int) -> None:
    f = mapped_ram_file(file_offset=file_offset, pages={(0, 3): b"\xaa" * PAGE})
    cuts = [f.headers[0] + 5, f.regions[0][0] + 1, f.regions[1][1] - 3, f.tail + 2]
    out, events, eng = _run(f, cuts)
    assert eng.mode == Mode.DONE
    assert out == bytes(f.data)
    fr = eng.framer
    assert fr.mapped_ram
    assert [b.name for b in fr.mapped_ram_blocks] == ["mach-virt.ram",
                                                                        "virt.flash0"]
    for block, at, (start, end) in zip(fr.mapped_ram_blocks, f.headers, f.regions,
                                       strict=True):
        assert block.header_offset == file_offset + at
        assert block.region_start == file_offset + start
        assert block.region_end == file_offset + end
        assert block.pages_offset % (1 << 20) == 0
    # The items cover the stream: the ram START section spans the regions.
    items = sorted((e for e in events if isinstance(e, ItemFramed)), key=lambda e: e.offset)
    pos = 0
    for it in items:
        assert it.offset == pos
        pos += it.size
    assert pos == len(f.data)


def test_every_split_frames_the_same() -> None:
    f = mapped_ram_file(alignment=PAGE, blocks=[(b"a", 2 * PAGE), (b"b", PAGE)])
    whole, _, _ = _run(f)
    for cut in range(1, f.tail + 20):
        out, _, eng = _run(f, [cut, cut + 7])
        assert eng.mode == Mode.DONE, cut
        assert out == whole, cut


def test_on_a_channel_mapped_ram_is_refused() -> None:
    f = mapped_ram_file()
    cfg = EngineConfig(policy=Policy.ABORT)  # no file_offset: a migration channel
    _, events, _ = run_engine([bytes(f.data)], cfg)
    assert _stop(events).reason == "mapped_ram"


def test_a_block_x_ignore_shared_leaves_out_has_no_region() -> None:
    f = mapped_ram_file(ignore_shared=True, ignored=frozenset({b"virt.flash0"}))
    _, _, eng = _run(f)
    assert eng.mode == Mode.DONE
    flash = eng.framer.mapped_ram_blocks[1]
    assert flash.ignored
    assert flash.region_end == flash.region_start == f.tail


def test_a_file_that_ends_in_a_region_is_truncated() -> None:
    f = mapped_ram_file()
    f.data = f.data[:f.regions[1][0] + 100]
    _, events, _ = _run(f)
    assert _stop(events).reason == "truncated"


@pytest.mark.parametrize(("field", "value", "reason", "message"), [
    ("version", 2, "mapped_ram", "mapped-ram header version 2 of RAM block 'virt.flash0'"),
    ("version", 0, "mapped_ram", "mapped-ram header version 0"),
    ("page_size", 65536, "format_error", "the target page size 4096"),
    ("bitmap_offset", 0, "format_error", "the bitmap of RAM block 'virt.flash0' right after"),
    ("bitmap_offset", 1 << 40, "format_error", "right after its mapped-ram header"),
    ("pages_offset", 0, "format_error", "the pages of RAM block 'virt.flash0' after its "
     "bitmap"),
    ("pages_offset", "overlap", "format_error", "after its bitmap"),
    ("pages_offset", "unaligned", "format_error", "at a multiple of the page size 4096"),
    ("pages_offset", (1 << 63) - PAGE, "format_error", "within 9223372036854775807 bytes"),
    ("pages_offset", 1 << 62, "truncated", ""),
    ("both offsets", 0, "format_error", "only a block x-ignore-shared leaves out has none"),
])
def test_headers_qemu_would_not_write_are_refused_where_they_are(
        field: str, value: int | str, reason: str, message: str) -> None:
    f = mapped_ram_file(file_offset=512)
    block = 1
    header = f.headers[block]  # a stream offset: the file's is 512 more
    if value == "overlap":  # the pages start inside the bitmap
        value = f.file_offset + header + mappedram.HEADER_SIZE
    elif value == "unaligned":
        value = (1 << 21) + 100
    if field == "both offsets":
        f.set_field(block, "bitmap_offset", 0)
        f.set_field(block, "pages_offset", 0)
    else:
        assert isinstance(value, int)
        f.set_field(block, field, value)
    _, events, _ = _run(f)
    stop = _stop(events)
    assert stop.reason == reason, stop.message
    assert message in stop.message, stop.message
    if reason != "truncated":  # reported in the header, at its stream offset
        assert header <= stop.offset < header + mappedram.HEADER_SIZE, (stop.offset, header)


def test_the_block_count_is_bounded() -> None:
    n = MAX_RAM_BLOCKS + 1
    f = mapped_ram_file(blocks=[(b"b%d" % i, PAGE) for i in range(n)], alignment=PAGE)
    _, events, _ = _run(f)
    stop = _stop(events)
    assert stop.reason == "limit_exceeded"
    assert f"more than {MAX_RAM_BLOCKS}" in stop.message


def test_the_header_layout() -> None:
    raw = struct.pack(">IQQQ", 1, 4096, 184, 1 << 20)
    b = mappedram.parse_header(raw, 0, at=156, file_offset=0, name="m",
                               used_length=1 << 26, page_size=4096, ignore_shared=False)
    assert (b.region_start, b.region_end) == (184, (1 << 20) + (1 << 26))
    assert mappedram.bitmap_bytes(1 << 26, 4096) == 2048
    assert wire.RAM_MEM_SIZE == 4
