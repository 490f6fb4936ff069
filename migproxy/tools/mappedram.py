"""Files in QEMU's mapped-ram layout (``migrate file:`` with the ``mapped-ram`` capability,
libvirt's ``sparse`` save images): how they are rewritten.

The layout (:mod:`migproxy.stream.mappedram`): the stream's header, configuration and RAM
block list, each block's RAM in a region of the file at absolute offsets, then, from the
end of the last region, the rest of the stream (the end of the ``ram`` section, the device
state, EOF, the VM description): the tail. Only the tail is rewritten. A rewritten file is
the input's bytes up to the tail, unchanged (the libvirt header, the block list, every
bitmap and page, at the same offsets, holes kept as holes), then the rewritten tail; in
place, the tail is written over and the file cut (or extended) at its new end. Since every
offset QEMU wrote points before the tail, none of them changes.
"""

from __future__ import annotations

import errno
import os
from contextlib import suppress
from dataclasses import dataclass, field

from migproxy.stream.errors import FormatError, MigproxyError, Unsupported
from migproxy.stream.framer import StreamFramer
from migproxy.tools.saveimage import (
    MAGIC_PREFIX,
    SaveImageError,
    looks_like_save_image,
    parse_header,
)

# The header and the configuration are within this many bytes of the stream's start
# (a machine name of at most 256 bytes, at most 64 capability names of at most 255).
PROBE_SIZE = 64 << 10
COPY_SIZE = 1 << 20
ZERO_PIECE = 64 << 10  # without SEEK_DATA: zero pieces of this size stay holes
_NOT_SPARSE_AWARE = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)
_NO_COPY_RANGE = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP,
                  errno.EBADF, errno.EPERM)


class InPlaceError(MigproxyError):
    """A file cannot be rewritten in place (the message says why)."""


def declares_mapped_ram(head: bytes) -> bool:
    """Whether the stream that starts with ``head`` has the mapped-ram capability in its
    configuration (``head`` holds at least the header and the configuration)."""
    framer = StreamFramer(file_offset=0, legacy_page_bits=12)
    # Past the configuration the block list's offsets are not this file's: what the
    # framer finds there does not matter.
    with suppress(FormatError, Unsupported):
        framer.advance(head, 0, len(head))
    return framer.mapped_ram


def mapped_ram_stream_offset(path: str | os.PathLike[str]) -> int | None:
    """Where the stream starts in ``path`` if the file is in the mapped-ram layout (a QEMU
    ``file:`` migration, or a libvirt save image whose stream is uncompressed and has the
    mapped-ram capability); None for anything else (a sequential stream, a compressed
    image, an image that is not accepted: the ordinary path reports it)."""
    with open(path, "rb") as f:
        head = f.read(PROBE_SIZE)
        offset = 0
        if looks_like_save_image(head[:len(MAGIC_PREFIX)]):
            try:
                header = parse_header(head)
            except SaveImageError:
                return None
            if header.format.compressed:
                return None
            offset = header.stream_offset
            f.seek(offset)
            head = f.read(PROBE_SIZE)
    return offset if declares_mapped_ram(head) else None


@dataclass
class Tail:
    """What the engine outputs from the end of the last RAM region on: the bytes of the
    rewritten file after the part kept unchanged. ``start`` (in the stream's offsets)
    moves on as the framer frames each block's header; what comes before it (the regions,
    given to the engine as filler, and the block list) is dropped as it comes, so only a
    block's entry and the tail are ever kept in memory."""

    framer: StreamFramer
    base: int  # where the stream starts in the file
    at: int = 0  # the output offset of the next byte
    pieces: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def start(self) -> int:
        """The stream offset of the tail's first byte, as far as the framer knows."""
        blocks = self.framer.mapped_ram_blocks
        return blocks[-1].region_end - self.base if blocks else 0

    def add(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if self.at + n > self.start:
            self.pieces.append((self.at, bytes(data)))
        self.at += n

    def data(self) -> bytes:
        """The tail, once the whole stream went through the engine."""
        start = self.start
        out = bytearray()
        for at, b in self.pieces:
            if at + len(b) > start:
                out += b[max(0, start - at):]
        return bytes(out)


def copy_sparse(src: int, dst: int, length: int) -> None:
    """Copy the first ``length`` bytes of ``src`` to ``dst`` (at the same offsets), holes
    kept as holes: only the data extents are copied (``SEEK_DATA``/``SEEK_HOLE``), with
    ``copy_file_range`` where the kernel can (which shares the blocks on a file system
    with reflinks). Where the file system cannot say where its holes are, blocks of zeros
    are not written. ``dst`` ends up ``length`` bytes long."""
    os.ftruncate(dst, 0)
    pos = 0
    while pos < length:
        try:
            data = os.lseek(src, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break  # nothing but a hole up to the end of the file
            if e.errno not in _NOT_SPARSE_AWARE:
                raise
            _copy_skipping_zeros(src, dst, pos, length - pos)
            break
        if data >= length:
            break
        hole = min(os.lseek(src, data, os.SEEK_HOLE), length)
        _copy_range(src, dst, data, hole - data)
        pos = hole
    os.ftruncate(dst, length)


def _copy_range(src: int, dst: int, offset: int, n: int) -> None:
    end = offset + n
    while offset < end:
        try:
            done = os.copy_file_range(src, dst, end - offset, offset, offset)
        except OSError as e:
            if e.errno not in _NO_COPY_RANGE:
                raise
            _copy_skipping_zeros(src, dst, offset, end - offset, skip_zeros=False)
            return
        if done == 0:
            raise OSError(errno.EIO, f"the input ended at offset {offset}, before {end}")
        offset += done


def _copy_skipping_zeros(src: int, dst: int, offset: int, n: int, *,
                         skip_zeros: bool = True) -> None:
    """Copy with pread/pwrite; ``skip_zeros``: pieces of ``ZERO_PIECE`` zero bytes are left
    as holes."""
    end = offset + n
    zeros = bytes(ZERO_PIECE)
    while offset < end:
        b = os.pread(src, min(COPY_SIZE, end - offset), offset)
        if not b:
            raise OSError(errno.EIO, f"the input ended at offset {offset}, before {end}")
        if not skip_zeros:
            _pwrite_all(dst, b, offset)
        else:
            for i in range(0, len(b), ZERO_PIECE):
                piece = b[i:i + ZERO_PIECE]
                if piece != zeros[:len(piece)]:
                    _pwrite_all(dst, piece, offset + i)
        offset += len(b)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view = view[done:]
        offset += done


def write_rewritten(src: int, dst: int, start: int, tail: bytes) -> None:
    """Write into the empty file ``dst`` the bytes of ``src`` before file offset ``start``
    (holes kept) and then ``tail``."""
    copy_sparse(src, dst, start)
    _pwrite_all(dst, tail, start)
    os.ftruncate(dst, start + len(tail))
    os.fsync(dst)


def rewrite_in_place(fd: int, start: int, tail: bytes, size_read: int) -> bool:
    """Put ``tail`` at file offset ``start`` of the open file ``fd`` and end the file
    after it. ``size_read`` is the file's size when it was read: a file that changed since
    is not touched (`InPlaceError`). False when the file already ends with ``tail``
    (nothing written)."""
    size = os.fstat(fd).st_size
    if size != size_read:
        raise InPlaceError(f"the file changed while it was read ({size_read} bytes, now "
                           f"{size}): not rewritten")
    if size == start + len(tail) and os.pread(fd, len(tail), start) == tail:
        return False
    _pwrite_all(fd, tail, start)
    os.ftruncate(fd, start + len(tail))
    os.fsync(fd)
    return True
