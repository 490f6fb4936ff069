"""libvirt save images (``virsh save``, ``virsh managedsave``): the header, the domain XML
area, and where the QEMU migration stream starts.

The layout is libvirt's ``virQEMUSaveHeader`` (src/qemu/qemu_saveimage.h,
qemu_saveimage.c), in the byte order of the host that saved it:

==== ==== ==================================================================
off  size field
==== ==== ==================================================================
0    16   magic, no NUL: ``LibvirtQemudSave``; ``LibvirtQemudPart`` while libvirt is
          still writing the image (it rewrites the header once the save finished)
16   4    version (2)
20   4    data_len: the bytes after the header up to the stream: the XML and its NUL,
          the cookie and its NUL, then zeros (64 KiB of them at creation, so that
          ``virsh save-image-edit`` can grow the XML in place)
24   4    was_running (``virsh restore`` resumes the guest when set)
28   4    format (`SaveFormat`)
32   4    cookieOffset: the XML's length with its NUL, 0 when there is no cookie
36   56   unused[14]
==== ==== ==================================================================

The QEMU stream starts at ``92 + data_len`` and runs to the end of the file, raw or as the
output of the format's compressor. libvirt reads a header whose version is above 2 once
more byte-swapped (that is how it recognises an image from a host of the other byte
order); so does `parse_header`. The sparse format is QEMU's mapped-ram layout (QEMU writes
the file itself from ``92 + data_len``: RAM pages at fixed offsets, counted from the start
of the image, the device state after them; :mod:`migproxy.stream.mappedram`), uncompressed.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import BinaryIO
from xml.etree import ElementTree

from migproxy.stream.errors import MigproxyError

MAGIC = b"LibvirtQemudSave"
PARTIAL_MAGIC = b"LibvirtQemudPart"
MAGIC_PREFIX = b"LibvirtQemud"
VERSION = 2
_FIELDS = "16s5I14I"
HEADER_SIZE = struct.calcsize("<" + _FIELDS)
assert HEADER_SIZE == 92
# The XML area is read into memory (it is copied byte for byte into a rewritten image).
# libvirt makes it the XML plus 64 KiB; a domain XML is a few KiB.
MAX_DATA_LEN = 16 << 20


class SaveFormat(enum.IntEnum):
    """libvirt's ``virQEMUSaveFormat``: on-disk values, never reused."""

    RAW = 0
    GZIP = 1
    BZIP2 = 2
    XZ = 3
    LZOP = 4
    ZSTD = 5
    SPARSE = 6

    @property
    def compressed(self) -> bool:
        """The stream is the output of a compressor (not raw, not sparse)."""
        return self not in (SaveFormat.RAW, SaveFormat.SPARSE)

    @property
    def label(self) -> str:
        """The name libvirt gives the format (``save_image_format`` in qemu.conf), which is
        also the name of the compression program."""
        return self.name.lower()


class SaveImageError(MigproxyError):
    """A libvirt save image this tool does not accept (the message says why)."""


@dataclass(frozen=True)
class SaveImageHeader:
    """The 92-byte header; `pack` gives back the same bytes."""

    version: int
    data_len: int
    was_running: int
    format: SaveFormat
    cookie_offset: int
    unused: tuple[int, ...]
    byteorder: str  # "<" or ">": the byte order of the host that saved the image

    @property
    def stream_offset(self) -> int:
        """Where the QEMU stream (or its compressed form) starts in the file."""
        return HEADER_SIZE + self.data_len

    def pack(self) -> bytes:
        return struct.pack(self.byteorder + _FIELDS, MAGIC, self.version, self.data_len,
                           self.was_running, int(self.format), self.cookie_offset,
                           *self.unused)


def looks_like_save_image(head: bytes) -> bool:
    """Whether a file starting with ``head`` is meant to be a libvirt save image (a QEMU
    stream starts with ``QEVM``)."""
    return head[:len(MAGIC_PREFIX)] == MAGIC_PREFIX


def parse_header(raw: bytes) -> SaveImageHeader:
    """The header at the start of ``raw``; `SaveImageError` for any image libvirt would
    not restore."""
    if len(raw) < HEADER_SIZE:
        raise SaveImageError(f"libvirt save image truncated: {len(raw)} bytes, the header "
                             f"has {HEADER_SIZE}")
    magic = raw[:len(MAGIC)]
    if magic == PARTIAL_MAGIC:
        raise SaveImageError("libvirt save image incomplete (magic LibvirtQemudPart): "
                             "libvirt is still writing it, or the save failed")
    if magic != MAGIC:
        raise SaveImageError(f"not a libvirt save image: magic {magic!r}, expected "
                             f"{MAGIC.decode()!r}")
    order = "<"
    fields = struct.unpack_from(order + _FIELDS, raw)
    if fields[1] > VERSION:
        swapped = struct.unpack_from(">" + _FIELDS, raw)
        if swapped[1] <= VERSION:
            order, fields = ">", swapped
    _, version, data_len, was_running, fmt, cookie_offset, *unused = fields
    if version != VERSION:
        raise SaveImageError(f"libvirt save image version {version} is not supported "
                             f"(only {VERSION})")
    if fmt not in {f.value for f in SaveFormat}:
        raise SaveImageError(f"libvirt save image format {fmt} is unknown (known: "
                             + ", ".join(f"{f.value} {f.label}" for f in SaveFormat) + ")")
    if data_len == 0:
        raise SaveImageError("libvirt save image with data length 0 (no domain XML)")
    if data_len > MAX_DATA_LEN:
        raise SaveImageError(f"libvirt save image data length {data_len} is over "
                             f"{MAX_DATA_LEN} bytes")
    if cookie_offset > data_len:
        raise SaveImageError(f"libvirt save image cookie offset {cookie_offset} is past the "
                             f"data length {data_len}")
    return SaveImageHeader(version, data_len, was_running, SaveFormat(fmt), cookie_offset,
                           tuple(unused), order)


def _text(area: bytes) -> str:
    return area.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass(frozen=True)
class SaveImage:
    """The header and the ``data_len`` bytes after it, as in the file."""

    header: SaveImageHeader
    data: bytes

    @property
    def xml(self) -> str:
        """The domain XML."""
        return _text(self.data[:self.header.cookie_offset or self.header.data_len])

    @property
    def cookie(self) -> str | None:
        """libvirt's save cookie (a ``<cookie>`` XML), if the image has one."""
        if not self.header.cookie_offset:
            return None
        return _text(self.data[self.header.cookie_offset:])

    @property
    def domain(self) -> str | None:
        """The domain's name, from the XML. The image may come from anywhere: an XML with a
        document type (entities) is not parsed; libvirt never writes one."""
        xml = self.xml
        if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
            return None
        try:
            # No DTD, so no entity to expand; expat refuses external ones anyway.
            return ElementTree.fromstring(xml).findtext("name")  # noqa: S314
        except ElementTree.ParseError:
            return None

    def head(self) -> bytes:
        """Everything before the stream: what a rewritten image starts with."""
        return self.header.pack() + self.data


def read_save_image(f: BinaryIO, head: bytes = b"") -> SaveImage:
    """Read the header and the XML area from ``f``; ``head`` holds bytes already read from
    its start. ``f`` is left at the first byte of the stream."""
    raw = head + f.read(max(0, HEADER_SIZE - len(head)))
    header = parse_header(raw)
    data = raw[HEADER_SIZE:] + f.read(header.data_len - (len(raw) - HEADER_SIZE))
    if len(data) != header.data_len:
        raise SaveImageError(f"libvirt save image truncated: the XML area has {len(data)} "
                             f"of its {header.data_len} bytes")
    return SaveImage(header, data)
