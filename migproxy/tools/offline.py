"""Drive the stream engine over a saved stream file (``migrate "exec:cat > FILE"``, or
``migrate file:FILE``, also with the mapped-ram capability), or over the stream inside a
libvirt save image (``virsh save``)."""

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
from migproxy.stream.errors import UsageError
from migproxy.stream.events import Aborted, Event, PassthroughEntered
from migproxy.tools.compression import Read, compressed, decompressed
from migproxy.tools.mappedram import (
    PROBE_SIZE,
    Tail,
    declares_mapped_ram,
    mapped_ram_stream_offset,
    rewrite_in_place,
    write_rewritten,
)
from migproxy.tools.saveimage import (
    MAGIC_PREFIX,
    SaveFormat,
    SaveImage,
    SaveImageError,
    looks_like_save_image,
    read_save_image,
)

READ_SIZE = 1 << 20
Sink = Callable[[bytes | bytearray | memoryview], object]


@dataclass
class FileRun:
    """The outcome of running a stream file through the engine.

    ``size`` is the QEMU stream's size: the file's, or for a libvirt save image the
    stream's inside it (for a compressed one, as far as it was read). ``in_place``: the
    file was rewritten in place (mapped-ram), ``changed`` whether a byte of it changed."""

    path: str
    size: int
    engine: StreamEngine
    events: list[Event] = field(default_factory=list)
    out_size: int = 0
    save_image: SaveImage | None = None
    in_place: bool = False
    changed: bool = False

    @property
    def mapped_ram(self) -> bool:
        """The file is in the mapped-ram layout."""
        return self.engine.framer.mapped_ram

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
    (decompressed as it is read). An uncompressed one is read at its own offsets
    (``file_offset``: where the stream starts in it) and can be seeked in: the engine
    frames the mapped-ram layout in it and ``pass_over`` skips a RAM region unread."""

    path: str
    read: Read
    head: bytes  # the stream's first bytes, already read (detecting the save image)
    save_image: SaveImage | None
    size: int | None  # the stream's size, when known without reading it all
    file_offset: int | None = None  # where the stream starts in the file, if uncompressed
    pass_over: Callable[[int], object] | None = None  # skip that many bytes unread

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
        def pass_over(n: int) -> object:
            return f.seek(n, os.SEEK_CUR)

        if not looks_like_save_image(head):
            yield StreamFile(str(p), f.read, head, None, file_size, 0, pass_over)
            return
        try:
            image = read_save_image(f, head)
        except SaveImageError as e:
            raise SaveImageError(f"{p}: {e}") from None
        fmt = image.header.format
        if not fmt.compressed:
            offset = image.header.stream_offset
            probe = f.read(PROBE_SIZE) if fmt == SaveFormat.SPARSE else b""
            f.seek(offset)
            if fmt == SaveFormat.SPARSE and not declares_mapped_ram(probe):
                raise SaveImageError(f"{p}: libvirt save image in the sparse format whose "
                                     "stream is not in the mapped-ram layout (libvirt "
                                     "writes a sparse image with QEMU's mapped-ram only)")
            yield StreamFile(str(p), f.read, b"", image, file_size - offset, offset, pass_over)
            return
        with decompressed(f, fmt, str(p)) as read:
            yield StreamFile(str(p), read, b"", image, None)


def run_file(source: str | os.PathLike[str] | StreamFile, *, profile: Profile | None = None,
             destination: Destination | None = None,
             dry_run: bool = False, hold_cap: int | None = None,
             sink: Sink | None = None,
             keep_events: Callable[[Event], bool] | None = None,
             read_size: int = READ_SIZE,
             sink_for: Callable[[StreamEngine], Sink] | None = None) -> FileRun:
    """Feed a whole file to a fresh engine (policy ``abort``: stop at the first problem).

    ``source`` is a path or an open `StreamFile`; a libvirt save image is accepted: the
    engine gets the QEMU stream inside it. The RAM regions of a file in the mapped-ram
    layout are not read: the engine passes over them, given zeros (``sink`` gets those
    zeros where the file has the pages: :func:`rewrite_file` writes such a file with
    :mod:`migproxy.tools.mappedram`). ``sink_for`` makes the sink from the engine, once
    it exists."""
    cfg = arm_engine_config(profile, destination, policy=Policy.ABORT, dry_run=dry_run)
    if hold_cap is not None:
        cfg.hold_cap = hold_cap
    with ExitStack() as stack:
        sf = source if isinstance(source, StreamFile) else \
            stack.enter_context(open_stream_file(source))
        cfg.file_offset = sf.file_offset
        engine = StreamEngine(cfg)
        if sink_for is not None:
            sink = sink_for(engine)
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
            left = engine.framer.region_left()
            if sf.size is not None:
                left = min(left, sf.size - fed)  # a region past the end: truncated
            if left > 0 and sf.pass_over is not None:
                sf.pass_over(left)
                fed += left
                _feed_zeros(engine, left, take)
        if engine.mode != Mode.ABORTED:
            res = engine.feed_eof()
            take(res.events, res.data)
        run.size = fed if sf.size is None else sf.size
    return run


_ZEROS = memoryview(bytes(READ_SIZE))
_Take = Callable[[list[Event], list[bytes | bytearray | memoryview]], None]


def _feed_zeros(engine: StreamEngine, n: int, take: _Take) -> None:
    """Give the engine ``n`` zero bytes for a RAM region it passes over unread."""
    while n and engine.mode != Mode.ABORTED:
        k = min(n, len(_ZEROS))
        res = engine.feed(_ZEROS[:k])
        take(res.events, res.data)
        n -= k


def rewrite_file(src: str | os.PathLike[str], dst: str | os.PathLike[str] | None,
                 profile: Profile | None, *, destination: Destination | None = None,
                 dry_run: bool = False, check: Callable[[], object] | None = None) -> FileRun:
    """Rewrite ``src`` into ``dst``; ``dst`` is only created if the whole stream was framed.

    A libvirt save image gives a save image: the same header and XML area byte for byte,
    then the rewritten stream in the image's compression format. A file in the mapped-ram
    layout (``migrate file:`` with mapped-ram, a libvirt sparse save image) keeps every
    byte before its tail (:mod:`migproxy.tools.mappedram`); ``dst`` None rewrites it in
    place (only such a file: `UsageError` for another). ``check`` is called before each
    piece is written; an exception from it stops the rewrite (no ``dst``)."""
    offset = mapped_ram_stream_offset(src)
    if offset is not None:
        return _rewrite_mapped_ram(src, dst, profile, destination=destination,
                                   dry_run=dry_run, check=check)
    if dst is None:
        raise UsageError(f"{src}: only a file in the mapped-ram layout (migrate file: "
                           "with mapped-ram, a libvirt sparse save image) can be rewritten "
                           "in place")
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


def _rewrite_mapped_ram(src: str | os.PathLike[str], dst: str | os.PathLike[str] | None,
                        profile: Profile | None, *, destination: Destination | None,
                        dry_run: bool, check: Callable[[], object] | None = None) -> FileRun:
    """Rewrite the tail of a file in the mapped-ram layout into ``dst`` (None: in place);
    ``dst`` is only created if the whole stream was framed."""
    tails: list[Tail] = []
    with open_stream_file(src) as sf:
        offset = sf.file_offset
        assert offset is not None

        def tail_for(engine: StreamEngine) -> Sink:
            tails.append(Tail(engine.framer, offset))
            return tails[0].add

        size_read = os.stat(src).st_size
        run = run_file(sf, profile=profile, destination=destination, dry_run=dry_run,
                       sink_for=tail_for)
    if not run.complete:
        return run
    tail = tails[0]
    start = offset + tail.start
    data = tail.data()
    run.out_size = tail.start + len(data)
    if check is not None:
        check()
    if dst is None:
        run.in_place = True
        with open(src, "r+b") as target:
            run.changed = rewrite_in_place(target.fileno(), start, data, size_read)
        return run
    dst_path = Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst_path.name}.", dir=dst_path.parent or ".")
    try:
        with open(src, "rb") as f:
            write_rewritten(f.fileno(), fd, start, data)
        os.close(fd)
        fd = -1
        os.replace(tmp, dst_path)
        tmp = ""
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp:
            os.unlink(tmp)
    return run
