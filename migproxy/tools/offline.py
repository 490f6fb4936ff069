"""Drive the stream engine over a saved stream file (``migrate "exec:cat > FILE"``), or
over the stream inside a libvirt save image (``virsh save``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from migproxy.arm.destination import Destination
from migproxy.arm.profile import Profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream.engine import Mode, Policy, StreamEngine
from migproxy.stream.events import Aborted, Event, PassthroughEntered
from migproxy.tools.compression import Read, compressed, decompressed
from migproxy.tools.saveimage import (
    MAGIC_PREFIX,
    SaveFormat,
    SaveImage,
    SaveImageError,
    looks_like_save_image,
    read_save_image,
)

READ_SIZE = 1 << 20


@dataclass
class FileRun:
    """The outcome of running a stream file through the engine.

    ``size`` is the QEMU stream's size: the file's, or for a libvirt save image the
    stream's inside it (for a compressed one, as far as it was read)."""

    path: str
    size: int
    engine: StreamEngine
    events: list[Event] = field(default_factory=list)
    out_size: int = 0
    save_image: SaveImage | None = None

    @property
    def complete(self) -> bool:
        return self.engine.mode == Mode.DONE

    @property
    def stop(self) -> PassthroughEntered | Aborted | None:
        for e in self.events:
            if isinstance(e, PassthroughEntered | Aborted):
                return e
        return None


@dataclass
class StreamFile:
    """An open stream file: a QEMU stream, or a libvirt save image with the stream inside
    (decompressed as it is read)."""

    path: str
    read: Read
    head: bytes  # the stream's first bytes, already read (detecting the save image)
    save_image: SaveImage | None
    size: int | None  # the stream's size, when known without reading it all

    def chunks(self, size: int) -> Iterator[bytes]:
        if self.head:
            yield self.head
        while True:
            b = self.read(size)
            if not b:
                return
            yield b


@contextmanager
def open_stream_file(path: str | os.PathLike[str]) -> Iterator[StreamFile]:
    """Open a QEMU stream file or a libvirt save image (told apart by the magic)."""
    p = Path(path)
    with p.open("rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        head = f.read(len(MAGIC_PREFIX))
        if not looks_like_save_image(head):
            yield StreamFile(str(p), f.read, head, None, file_size)
            return
        try:
            image = read_save_image(f, head)
        except SaveImageError as e:
            raise SaveImageError(f"{p}: {e}") from None
        fmt = image.header.format
        known = file_size - image.header.stream_offset if fmt == SaveFormat.RAW else None
        with decompressed(f, fmt, str(p)) as read:
            yield StreamFile(str(p), read, b"", image, known)


def run_file(source: str | os.PathLike[str] | StreamFile, *, profile: Profile | None = None,
             destination: Destination | None = None,
             dry_run: bool = False, hold_cap: int | None = None,
             sink: Callable[[bytes | bytearray | memoryview], object] | None = None,
             keep_events: Callable[[Event], bool] | None = None,
             read_size: int = READ_SIZE) -> FileRun:
    """Feed a whole file to a fresh engine (policy ``abort``: stop at the first problem).

    ``source`` is a path or an open `StreamFile`; a libvirt save image is accepted: the
    engine gets the QEMU stream inside it."""
    cfg = arm_engine_config(profile, destination, policy=Policy.ABORT, dry_run=dry_run)
    if hold_cap is not None:
        cfg.hold_cap = hold_cap
    engine = StreamEngine(cfg)
    with ExitStack() as stack:
        sf = source if isinstance(source, StreamFile) else \
            stack.enter_context(open_stream_file(source))
        run = FileRun(sf.path, 0, engine, save_image=sf.save_image)
        fed = 0

        def take(res_events: list[Event], data: list[bytes | bytearray | memoryview]) -> None:
            for e in res_events:
                if keep_events is None or keep_events(e):
                    run.events.append(e)
            for d in data:
                run.out_size += len(d)
                if sink is not None:
                    sink(d)

        for chunk in sf.chunks(read_size):
            fed += len(chunk)
            res = engine.feed(chunk)
            take(res.events, res.data)
            if engine.mode == Mode.ABORTED:
                break
        if engine.mode != Mode.ABORTED:
            res = engine.feed_eof()
            take(res.events, res.data)
        run.size = fed if sf.size is None else sf.size
    return run


def rewrite_file(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                 profile: Profile | None, *, destination: Destination | None = None,
                 dry_run: bool = False, check: Callable[[], object] | None = None) -> FileRun:
    """Rewrite ``src`` into ``dst``; ``dst`` is only created if the whole stream was framed.

    A libvirt save image gives a save image: the same header and XML area byte for byte,
    then the rewritten stream in the image's compression format. ``check`` is called
    before each piece is written; an exception from it stops the rewrite (no ``dst``)."""
    dst_path = Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst_path.name}.", dir=dst_path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as out, open_stream_file(src) as sf:
            fmt = SaveFormat.RAW
            if sf.save_image is not None:
                out.write(sf.save_image.head())
                fmt = sf.save_image.header.format
            with compressed(out, fmt, str(dst_path)) as write:
                sink = write if check is None else lambda d: (check(), write(d))
                run = run_file(sf, profile=profile, destination=destination,
                               dry_run=dry_run, sink=sink)
        if run.complete:
            os.replace(tmp, dst_path)
            tmp = ""
        return run
    finally:
        if tmp:
            os.unlink(tmp)
