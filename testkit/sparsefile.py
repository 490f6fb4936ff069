"""Sparse files (mapped-ram migrations: hundreds of MB, a few KB of data) kept small.

A packed file is xz of: ``MIGPROXY-SPARSE1``, the file's size (be64), then for each run of
4 KiB blocks that are not all zeros, its offset and length (be64 each) and its bytes.
Unpacked, the runs are written at their offsets and the rest is left as holes.
"""

from __future__ import annotations

import lzma
import os
import struct
from pathlib import Path

MAGIC = b"MIGPROXY-SPARSE1"
BLOCK = 4096
_U64 = struct.Struct(">Q")
_RUN = struct.Struct(">QQ")


def data_runs(fd: int, size: int) -> list[tuple[int, bytes]]:
    """The runs of 4 KiB blocks of the file that are not all zeros, with their offsets."""
    runs: list[tuple[int, bytes]] = []
    zero = bytes(BLOCK)
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        at = start
        while at < end:
            b = os.pread(fd, min(BLOCK, end - at), at)
            if b != zero[:len(b)]:
                if runs and runs[-1][0] + len(runs[-1][1]) == at:
                    runs[-1] = (runs[-1][0], runs[-1][1] + b)
                else:
                    runs.append((at, b))
            at += len(b)
        pos = end
    return runs


def pack(path: str | os.PathLike[str]) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        out = bytearray(MAGIC + _U64.pack(size))
        for at, b in data_runs(fd, size):
            out += _RUN.pack(at, len(b)) + b
    finally:
        os.close(fd)
    return lzma.compress(bytes(out), preset=9)


def unpack(packed: bytes, path: str | os.PathLike[str]) -> Path:
    """Write the packed file to ``path`` (sparse) and return the path."""
    raw = lzma.decompress(packed)
    if not raw.startswith(MAGIC):
        raise ValueError("not a packed sparse file")
    pos = len(MAGIC)
    (size,) = _U64.unpack_from(raw, pos)
    pos += _U64.size
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while pos < len(raw):
            at, n = _RUN.unpack_from(raw, pos)
            pos += _RUN.size
            os.pwrite(fd, raw[pos:pos + n], at)
            pos += n
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return Path(path)
