"""The compressed formats of libvirt save images, as streams in both directions.

libvirt pipes the QEMU stream through ``PROGRAM -c`` (``xz -3 -c``) when saving and through
``PROGRAM -dc`` (``lzop -dc --ignore-warn``) when restoring (qemu_saveimage.c). Here gzip,
bzip2 and xz use Python's standard library at the programs' default levels (gzip 6,
bzip2 9, xz 3 as libvirt asks); lzop and zstd run the programs. Data passes in the
caller's chunks: nothing holds a whole stream.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import IO, Any, BinaryIO

from migproxy.stream.errors import MigproxyError, UsageError
from migproxy.tools.saveimage import SaveFormat

Read = Callable[[int], bytes]
Write = Callable[[bytes | bytearray | memoryview], object]

# Formats done by an external program (the Debian package has the program's name).
PROGRAM_FORMATS = (SaveFormat.LZOP, SaveFormat.ZSTD)
# libvirt runs ``lzop -dc --ignore-warn``; here without it, so that the one warning that
# matters shows (status 2, "trailing garbage"); any other warning passes, as in libvirt.
_WARNED = 2
_STDERR_SHOWN = 500  # bytes of a failed program's stderr quoted in the error


class MissingProgram(UsageError):
    """The compression program a format needs is not installed."""


class CompressedStreamError(MigproxyError):
    """The compressed stream is corrupt or truncated."""


class TrailingData(CompressedStreamError):
    """Bytes follow the end of the compressed stream.

    Refused for every format: libvirt restores through ``PROGRAM -dc``, and ``gzip``
    (status 2), ``xz`` and ``zstd`` fail on them while ``bzip2`` and ``lzop
    --ignore-warn`` pass them over; an image that restores with one program and not
    another is not rewritten silently. What a format defines is not trailing data: more
    members, streams or frames, and xz's stream padding."""


_TRAILING_NOTE = ("libvirt's restore fails on such an image for gzip, xz and zstd; "
                  "remove the extra bytes if the image is otherwise sound")
_CHUNK = 64 * 1024
_MAGIC = {SaveFormat.GZIP: b"\x1f\x8b", SaveFormat.BZIP2: b"BZh",
          SaveFormat.XZ: b"\xfd7zXZ\x00"}


def _trailing(what: str, fmt: SaveFormat, n: int | None) -> TrailingData:
    size = f"{n} bytes" if n is not None else "data"
    return TrailingData(f"{what}: {size} after the end of the {fmt.label} stream "
                        f"(trailing data, refused for every format: {_TRAILING_NOTE})")


class _StdlibDecoder:
    """The streams (members) of a gzip, bzip2 or xz body one after the other, as
    ``gzip -dc`` and the others read them; anything else after the last one is
    `TrailingData`. Output comes at most ``n`` bytes at a time (a bomb is not expanded
    at once)."""

    def __init__(self, f: BinaryIO, fmt: SaveFormat, what: str) -> None:
        self.f, self.fmt, self.what = f, fmt, what
        self.d: Any = self._new()
        self.buf = b""  # input not yet given to the decompressor
        self.done = False

    def _new(self) -> Any:
        if self.fmt == SaveFormat.GZIP:
            return zlib.decompressobj(wbits=31)
        if self.fmt == SaveFormat.BZIP2:
            return bz2.BZ2Decompressor()
        if self.fmt == SaveFormat.XZ:
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        raise ValueError(f"no standard-library codec for {self.fmt.label}")

    def _error(self, detail: str) -> CompressedStreamError:
        return CompressedStreamError(f"{self.what}: corrupt or truncated {self.fmt.label} "
                                     f"stream: {detail}")

    def _next_stream(self) -> bool:
        """After the end of a stream: True if another one follows, False at the end of
        the file; `TrailingData` for anything else."""
        rest = self.d.unused_data + self.buf
        self.buf = b""
        magic = _MAGIC[self.fmt]
        pad = 0  # xz: null bytes of stream padding (a multiple of 4)
        while True:
            if self.fmt == SaveFormat.XZ:
                stripped = rest.lstrip(b"\0")
                pad += len(rest) - len(stripped)
                rest = stripped
            if len(rest) >= len(magic):
                break
            more = self.f.read(_CHUNK)
            if not more:
                break
            rest += more
        if pad % 4:
            return self._refuse(pad + len(rest))
        if not rest:
            return False
        if not rest.startswith(magic):
            return self._refuse(len(rest))
        self.d = self._new()
        self.buf = rest
        return True

    def _refuse(self, n: int) -> bool:
        while more := self.f.read(_CHUNK):
            n += len(more)
        raise _trailing(self.what, self.fmt, n)

    def read(self, n: int) -> bytes:
        n = max(n, 1)
        while not self.done:
            d = self.d
            if d.eof:
                if not self._next_stream():
                    self.done = True
                    break
                continue
            if self.fmt == SaveFormat.GZIP:
                if not self.buf:
                    self.buf = self.f.read(_CHUNK)
                    if not self.buf:
                        raise self._error("the stream ends early")
                try:
                    out = d.decompress(self.buf, n)
                except zlib.error as e:
                    raise self._error(str(e)) from None
                self.buf = d.unconsumed_tail
            else:
                if d.needs_input and not self.buf:
                    self.buf = self.f.read(_CHUNK)
                    if not self.buf:
                        raise self._error("the stream ends early")
                try:
                    out = d.decompress(self.buf, n)
                except (OSError, EOFError, lzma.LZMAError) as e:
                    raise self._error(str(e)) from None
                self.buf = b""
            if out:
                return bytes(out)
        return b""


def program(fmt: SaveFormat, what: str) -> str:
    """The path of ``fmt``'s program, or `MissingProgram` saying which package to install."""
    path = shutil.which(fmt.label)
    if path is None:
        raise MissingProgram(f"{what}: the {fmt.label} format needs the program "
                             f"{fmt.label!r}, which is not installed (Debian package "
                             f"{fmt.label!r})")
    return path


def _stdlib_writer(out: BinaryIO, fmt: SaveFormat) -> io.BufferedIOBase:
    if fmt == SaveFormat.GZIP:
        return gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=6, mtime=0)
    if fmt == SaveFormat.BZIP2:
        return bz2.BZ2File(out, "wb", compresslevel=9)
    if fmt == SaveFormat.XZ:
        return lzma.LZMAFile(out, "wb", preset=3)
    raise ValueError(f"no standard-library codec for {fmt.label}")


def _failure(what: str, fmt: SaveFormat, rc: int, stderr: IO[bytes]) -> CompressedStreamError:
    stderr.seek(0)
    text = stderr.read()[-_STDERR_SHOWN:].decode("utf-8", "replace").strip()
    return CompressedStreamError(f"{what}: corrupt or truncated {fmt.label} stream "
                                 f"({fmt.label} exited with status {rc}"
                                 + (f": {text})" if text else ")"))


@contextmanager
def decompressed(f: BinaryIO, fmt: SaveFormat, what: str) -> Iterator[Read]:
    """A read function giving the stream that starts at ``f``'s position, decompressed.

    Leaving the block before the end of the stream (the engine stopped) ends the
    decompressor without error; a corrupt or truncated stream raises
    `CompressedStreamError` (``what`` names the file in messages)."""
    if not fmt.compressed:
        yield f.read
        return
    if fmt not in PROGRAM_FORMATS:
        yield _StdlibDecoder(f, fmt, what).read
        return
    prog = program(fmt, what)
    # The program reads the descriptor: put it where the stream starts (a buffered
    # reader's own seek may only move within its buffer).
    os.lseek(f.fileno(), f.tell(), os.SEEK_SET)
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen([prog, "-dc"], stdin=f, stdout=subprocess.PIPE,
                                stderr=stderr)
        assert proc.stdout is not None
        out = proc.stdout
        at_end = False
        produced = 0

        def read_pipe(n: int) -> bytes:
            nonlocal at_end, produced
            b = out.read(n)
            at_end = not b
            produced += len(b)
            return b

        try:
            yield read_pipe
        finally:
            out.close()
            if not at_end:
                proc.kill()
            rc = proc.wait()
        if at_end and rc != 0:
            stderr.seek(0)
            said = stderr.read().decode("utf-8", "replace")
            if fmt == SaveFormat.LZOP and rc == _WARNED:
                if "trailing garbage" in said:
                    raise _trailing(what, fmt, None)
                return  # another warning: passed over, as libvirt's --ignore-warn does
            if fmt == SaveFormat.ZSTD and produced and "unsupported format" in said:
                raise _trailing(what, fmt, None)  # not a frame after complete ones
            raise _failure(what, fmt, rc, stderr)


@contextmanager
def compressed(out: BinaryIO, fmt: SaveFormat, what: str) -> Iterator[Write]:
    """A write function that appends the ``fmt`` form of what it is given to ``out``.

    Leaving the block normally completes the compressed stream (a program that fails
    raises `CompressedStreamError`); leaving it by an exception abandons it."""
    if not fmt.compressed:
        yield out.write
        return
    if fmt not in PROGRAM_FORMATS:
        with _stdlib_writer(out, fmt) as z:
            yield z.write
        return
    prog = program(fmt, what)
    out.flush()  # the program writes to the descriptor after what is buffered here
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen([prog, "-c"], stdin=subprocess.PIPE, stdout=out,
                                stderr=stderr)
        assert proc.stdin is not None
        pipe = proc.stdin

        def write(b: bytes | bytearray | memoryview) -> object:
            try:
                return pipe.write(b)
            except BrokenPipeError:
                raise _failure(what, fmt, proc.wait(), stderr) from None

        try:
            yield write
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        with suppress(BrokenPipeError):  # the failure shows in the status
            pipe.close()
        rc = proc.wait()
        if rc != 0:
            raise _failure(what, fmt, rc, stderr)
