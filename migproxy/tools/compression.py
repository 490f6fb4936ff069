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
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import IO, BinaryIO

from migproxy.stream.errors import MigproxyError
from migproxy.tools.saveimage import SaveFormat

Read = Callable[[int], bytes]
Write = Callable[[bytes | bytearray | memoryview], object]

# Formats done by an external program (the Debian package has the program's name).
PROGRAM_FORMATS = (SaveFormat.LZOP, SaveFormat.ZSTD)
_DECOMPRESS_EXTRA = {SaveFormat.LZOP: ["--ignore-warn"]}
_STDERR_SHOWN = 500  # bytes of a failed program's stderr quoted in the error


class MissingProgram(MigproxyError):
    """The compression program a format needs is not installed."""


class CompressedStreamError(MigproxyError):
    """The compressed stream is corrupt or truncated."""


def program(fmt: SaveFormat, what: str) -> str:
    """The path of ``fmt``'s program, or `MissingProgram` saying which package to install."""
    path = shutil.which(fmt.label)
    if path is None:
        raise MissingProgram(f"{what}: the {fmt.label} format needs the program "
                             f"{fmt.label!r}, which is not installed (Debian package "
                             f"{fmt.label!r})")
    return path


def _stdlib_reader(f: BinaryIO, fmt: SaveFormat) -> io.BufferedIOBase:
    if fmt == SaveFormat.GZIP:
        return gzip.GzipFile(filename="", mode="rb", fileobj=f)
    if fmt == SaveFormat.BZIP2:
        return bz2.BZ2File(f, "rb")
    if fmt == SaveFormat.XZ:
        return lzma.LZMAFile(f, "rb")
    raise ValueError(f"no standard-library codec for {fmt.label}")


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
    if fmt == SaveFormat.RAW:
        yield f.read
        return
    if fmt not in PROGRAM_FORMATS:
        with _stdlib_reader(f, fmt) as z:
            def read(n: int) -> bytes:
                try:
                    return z.read(n)
                except (OSError, EOFError, lzma.LZMAError) as e:
                    raise CompressedStreamError(f"{what}: corrupt or truncated {fmt.label} "
                                                f"stream: {e}") from None
            yield read
        return
    prog = program(fmt, what)
    # The program reads the descriptor: put it where the stream starts (a buffered
    # reader's own seek may only move within its buffer).
    os.lseek(f.fileno(), f.tell(), os.SEEK_SET)
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen([prog, "-dc", *_DECOMPRESS_EXTRA.get(fmt, [])], stdin=f,
                                stdout=subprocess.PIPE, stderr=stderr)
        assert proc.stdout is not None
        out = proc.stdout
        at_end = False

        def read_pipe(n: int) -> bytes:
            nonlocal at_end
            b = out.read(n)
            at_end = not b
            return b

        try:
            yield read_pipe
        finally:
            out.close()
            if not at_end:
                proc.kill()
            rc = proc.wait()
        if at_end and rc != 0:
            raise _failure(what, fmt, rc, stderr)


@contextmanager
def compressed(out: BinaryIO, fmt: SaveFormat, what: str) -> Iterator[Write]:
    """A write function that appends the ``fmt`` form of what it is given to ``out``.

    Leaving the block normally completes the compressed stream (a program that fails
    raises `CompressedStreamError`); leaving it by an exception abandons it."""
    if fmt == SaveFormat.RAW:
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
