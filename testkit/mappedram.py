"""Synthetic files in QEMU's mapped-ram layout (``migrate file:`` with mapped-ram), laid out
as ``mapped_ram_setup_ramblock`` lays them out: each block's entry and 28-byte header, its
bitmap right after, its pages at the next multiple of ``alignment``, the next block's entry
after its pages; then the rest of a synthetic stream (its PART section, END section, device
state, EOF and VM description). ``headers`` says where each header is, for tests that
break one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from migproxy.stream import wire
from migproxy.stream.mappedram import HEADER, HEADER_SIZE, bitmap_bytes
from testkit.synthetic import SynthSpec, build

PAGE = 4096
SID = 1
_TAIL_STREAM = build(SynthSpec(ram_bytes=1 << 20, full_pages=0, zero_pages=0,
                               part_sections=1))
TAIL = _TAIL_STREAM[_TAIL_STREAM.index(b"\x02\x00\x00\x00\x01"):]  # from the PART section


def _q(v: int) -> bytes:
    return struct.pack(">Q", v)


def _cstr(s: bytes) -> bytes:
    return bytes((len(s),)) + s


@dataclass
class MappedRamFile:
    """The stream (from the file's ``file_offset`` on) and where its parts are, as stream
    offsets."""

    data: bytearray
    file_offset: int
    headers: list[int] = field(default_factory=list)  # each block's MappedRamHeader
    regions: list[tuple[int, int]] = field(default_factory=list)  # (start, end) of each
    tail: int = 0  # where the stream goes on after the last region

    def field_at(self, block: int, name: str) -> int:
        """The stream offset of a header field: version, page_size, bitmap_offset,
        pages_offset."""
        return self.headers[block] + {"version": 0, "page_size": 4, "bitmap_offset": 12,
                                      "pages_offset": 20}[name]

    def set_field(self, block: int, name: str, value: int) -> None:
        at = self.field_at(block, name)
        fmt = ">I" if name == "version" else ">Q"
        struct.pack_into(fmt, self.data, at, value)

    def file_bytes(self, prefix: bytes | None = None) -> bytes:
        """The whole file: ``prefix`` (zeros by default) up to ``file_offset``, then the
        stream."""
        head = prefix if prefix is not None else bytes(self.file_offset)
        assert len(head) == self.file_offset
        return head + bytes(self.data)


def mapped_ram_file(blocks: list[tuple[bytes, int]] | None = None, *, file_offset: int = 0,
                    alignment: int = 1 << 20, ignore_shared: bool = False,
                    ignored: frozenset[bytes] = frozenset(),
                    capabilities: tuple[bytes, ...] = (b"mapped-ram",),
                    pages: dict[tuple[int, int], bytes] | None = None) -> MappedRamFile:
    """A mapped-ram stream with these blocks (name, used length); ``ignored`` blocks (with
    ``x-ignore-shared``) get offsets 0 and no region; ``pages[(block, index)]`` is written
    at that page's offset with its bit set."""
    blocks = blocks if blocks is not None else [(b"mach-virt.ram", 64 << 10),
                                                (b"virt.flash0", 64 << 10)]
    caps = capabilities + ((b"x-ignore-shared",) if ignore_shared else ())
    d = bytearray(struct.pack(">II", wire.FILE_MAGIC, wire.FILE_VERSION))
    d += bytes((wire.VM_CONFIGURATION,)) + struct.pack(">I", 9) + b"virt-10.0"
    d += bytes((wire.VM_SUBSECTION,)) + _cstr(b"configuration/target-page-bits")
    d += struct.pack(">II", 1, 12)
    name = b"configuration/capabilities"
    d += bytes((wire.VM_SUBSECTION,)) + _cstr(name) + struct.pack(">II", 1, len(caps))
    d += b"".join(_cstr(c) for c in caps)
    d += bytes((wire.VM_SECTION_START,)) + struct.pack(">I", SID) + _cstr(b"ram")
    d += struct.pack(">II", 0, 4)
    d += _q(sum(u for _, u in blocks) | wire.RAM_MEM_SIZE)
    f = MappedRamFile(d, file_offset)
    for i, (bname, used) in enumerate(blocks):
        d += _cstr(bname) + _q(used)
        if ignore_shared:
            d += _q(0x40000000 + i * used)
        f.headers.append(len(d))
        at = file_offset + len(d)  # the header's file offset
        if bname in ignored:
            d += HEADER.pack(1, PAGE, 0, 0)
            continue
        bitmap = at + HEADER_SIZE
        nbitmap = (bitmap_bytes(used, PAGE) + 7) // 8 * 8
        pages_at = -(-(bitmap + nbitmap) // alignment) * alignment
        d += HEADER.pack(1, PAGE, bitmap, pages_at)
        start = len(d)
        bits = bytearray(nbitmap)
        body = bytearray(pages_at + used - bitmap)
        for (blk, index), page in (pages or {}).items():
            if blk == i:
                bits[index // 8] |= 1 << (index % 8)
                o = pages_at - bitmap + index * PAGE
                body[o:o + PAGE] = page
        body[:nbitmap] = bits
        d += body
        f.regions.append((start, len(d)))
    f.tail = len(d)  # the first byte after the block list (and its regions)
    d += _q(wire.RAM_EOS) + bytes((wire.VM_SECTION_FOOTER,)) + struct.pack(">I", SID)
    d += TAIL
    return f
