"""The mapped-ram layout of a ``file:`` migration: each RAM block's ``MappedRamHeader`` and
the file region it reserves.

With the ``mapped-ram`` capability QEMU writes a file, not a stream (migration/ram.c,
``mapped_ram_setup_ramblock``; docs/devel/migration/mapped-ram.rst). The ``ram`` START
section's block list after ``MEM_SIZE`` has, after each block's name and length (and its
address under ``x-ignore-shared``), a 28-byte header, big-endian and packed:

==== ==== ===============================================================================
off  size field
==== ==== ===============================================================================
0    4    version (1)
4    8    page_size: the target page size
12   8    bitmap_offset: where the block's page bitmap is, an absolute file offset (QEMU
          puts it right after this header)
20   8    pages_offset: where page ``i`` of the block is, at ``pages_offset + i *
          page_size``; QEMU rounds it up to 1 MiB (``MAPPED_RAM_FILE_OFFSET_ALIGNMENT``),
          its loader checks only page alignment
==== ==== ===============================================================================

QEMU then seeks to ``pages_offset + used_length`` and writes the next block's entry there;
after the last block's region the file is a stream again (the rest of the ``ram``
section, the device state, EOF and the VM description). The bitmap (``unsigned long``
words in the saving host's byte order, a set bit for each page written) and the pages are
written at their offsets, not in the stream; zero pages are not written (the file is
sparse). A block ``x-ignore-shared`` leaves out has both offsets 0 and no region (QEMU 11.0
and later).

The offsets are absolute file offsets: a file that does not start with the stream (a
libvirt ``sparse`` save image, ``migrate file:PATH,offset=N``) has them counted from its own
start. So the framer is told where the stream starts in the file (``file_offset``) and
passes over each region as payload whose content does not matter; the bitmaps and pages
are guest and host data, and no boundary is ever taken from them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from migproxy.stream import wire
from migproxy.stream.errors import FormatError, Unsupported
from migproxy.stream.reasons import Reason

HEADER = struct.Struct(">IQQQ")
HEADER_SIZE = HEADER.size
assert HEADER_SIZE == 28
VERSION = 1
FILE_OFFSET_ALIGNMENT = 1 << 20  # how QEMU aligns pages_offset (MAPPED_RAM_FILE_OFFSET_ALIGNMENT)
MAX_FILE_OFFSET = (1 << 63) - 1  # off_t


@dataclass(frozen=True)
class MappedRamBlock:
    """A RAM block's header and the file region it reserves (absolute file offsets)."""

    name: str
    used_length: int
    header_offset: int  # where the 28-byte header is
    page_size: int
    bitmap_offset: int  # 0 for a block x-ignore-shared leaves out
    pages_offset: int  # 0 for a block x-ignore-shared leaves out

    @property
    def ignored(self) -> bool:
        """A block ``x-ignore-shared`` leaves out: no bitmap, no pages, no region."""
        return self.bitmap_offset == 0 and self.pages_offset == 0

    @property
    def region_start(self) -> int:
        """The first byte after the header: the region (bitmap, padding, pages) starts."""
        return self.header_offset + HEADER_SIZE

    @property
    def region_end(self) -> int:
        """Where the stream goes on: after the block's pages."""
        return self.region_start if self.ignored else self.pages_offset + self.used_length


def bitmap_bytes(used_length: int, page_size: int) -> int:
    """The bytes the page bitmap needs at least: one bit a page (QEMU writes whole
    ``unsigned long`` words, 8 bytes on a 64-bit host)."""
    return (used_length // page_size + 7) // 8


def parse_header(buf: wire.Buffer, pos: int, *, at: int, file_offset: int, name: str,
                 used_length: int, page_size: int, ignore_shared: bool) -> MappedRamBlock:
    """The header at ``buf[pos:pos+28]`` of block ``name``, at stream offset ``at`` in a
    file whose stream starts at ``file_offset``; raises `FormatError` or `Unsupported`
    (at stream offsets, as the framer reports) for a header QEMU would not write.

    What it checks keeps each region after its header, page-aligned and apart from the
    others: the next block's entry is at this region's end, so regions cannot overlap or
    go backwards."""
    version, psize, bitmap, pages = HEADER.unpack_from(buf, pos)
    header_offset = file_offset + at
    at_pages = at + 20
    if version != VERSION:
        raise Unsupported(Reason.MAPPED_RAM, f"mapped-ram header version {version} of RAM "
                          f"block {name!r} (only {VERSION})", at)
    if psize != page_size:
        raise FormatError(at + 4, f"the target page size {page_size} in the "
                          f"mapped-ram header of RAM block {name!r}", str(psize))
    if bitmap == 0 and pages == 0:
        if ignore_shared:
            return MappedRamBlock(name, used_length, header_offset, psize, 0, 0)
        raise FormatError(at + 12, f"file offsets for RAM block {name!r} (only "
                          "a block x-ignore-shared leaves out has none)", "0 and 0")
    if used_length % page_size:
        raise FormatError(at, f"a block length that is a multiple of the page "
                          f"size {page_size} (RAM block {name!r})", f"0x{used_length:x}")
    region = header_offset + HEADER_SIZE
    if bitmap != region:
        raise FormatError(at + 12, f"the bitmap of RAM block {name!r} right after "
                          f"its mapped-ram header, at file offset {region}", str(bitmap))
    least = bitmap + bitmap_bytes(used_length, page_size)
    if pages < least:
        raise FormatError(at_pages, f"the pages of RAM block {name!r} after its bitmap, at "
                          f"file offset {least} or later", str(pages))
    if pages % page_size:
        raise FormatError(at_pages, f"the pages of RAM block {name!r} at a multiple of the "
                          f"page size {page_size}", str(pages))
    if pages + used_length > MAX_FILE_OFFSET:
        raise FormatError(at_pages, f"the pages of RAM block {name!r} within "
                          f"{MAX_FILE_OFFSET} bytes", str(pages))
    return MappedRamBlock(name, used_length, header_offset, psize, bitmap, pages)
