"""Drive the stream engine over a saved stream file (``migrate "exec:cat > FILE"``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from migproxy.arm.destination import Destination
from migproxy.arm.profile import Profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream.engine import Mode, Policy, StreamEngine
from migproxy.stream.events import Aborted, Event, PassthroughEntered

READ_SIZE = 1 << 20


@dataclass
class FileRun:
    """The outcome of running a stream file through the engine."""

    path: str
    size: int
    engine: StreamEngine
    events: list[Event] = field(default_factory=list)
    out_size: int = 0

    @property
    def complete(self) -> bool:
        return self.engine.mode == Mode.DONE

    @property
    def stop(self) -> PassthroughEntered | Aborted | None:
        for e in self.events:
            if isinstance(e, PassthroughEntered | Aborted):
                return e
        return None


def _chunks(f: BinaryIO, size: int) -> Iterator[bytes]:
    while True:
        b = f.read(size)
        if not b:
            return
        yield b


def run_file(path: str | os.PathLike[str], *, profile: Profile | None = None,
             destination: Destination | None = None,
             dry_run: bool = False, hold_cap: int | None = None,
             sink: Callable[[bytes | bytearray | memoryview], object] | None = None,
             keep_events: Callable[[Event], bool] | None = None,
             read_size: int = READ_SIZE) -> FileRun:
    """Feed a whole file to a fresh engine (policy ``abort``: stop at the first problem)."""
    cfg = arm_engine_config(profile, destination, policy=Policy.ABORT, dry_run=dry_run)
    if hold_cap is not None:
        cfg.hold_cap = hold_cap
    engine = StreamEngine(cfg)
    p = Path(path)
    run = FileRun(str(p), p.stat().st_size, engine)

    def take(res_events: list[Event], data: list[bytes | bytearray | memoryview]) -> None:
        for e in res_events:
            if keep_events is None or keep_events(e):
                run.events.append(e)
        for d in data:
            run.out_size += len(d)
            if sink is not None:
                sink(d)

    with p.open("rb") as f:
        for chunk in _chunks(f, read_size):
            res = engine.feed(chunk)
            take(res.events, res.data)
            if engine.mode == Mode.ABORTED:
                break
    if engine.mode != Mode.ABORTED:
        res = engine.feed_eof()
        take(res.events, res.data)
    return run


def rewrite_file(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                 profile: Profile | None, *, destination: Destination | None = None,
                 dry_run: bool = False) -> FileRun:
    """Rewrite ``src`` into ``dst``; ``dst`` is only created if the whole stream was framed."""
    dst_path = Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst_path.name}.", dir=dst_path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as out:
            run = run_file(src, profile=profile, destination=destination, dry_run=dry_run,
                           sink=out.write)
        if run.complete:
            os.replace(tmp, dst_path)
            tmp = ""
        return run
    finally:
        if tmp:
            os.unlink(tmp)
