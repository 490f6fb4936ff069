"""The ``saves`` commands: ``rewrite`` (every managed-save image in libvirt's save
directory, for the QEMU now installed) and ``clean`` (the kept originals of restored
images). See :mod:`migproxy.tools.saves`."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from migproxy.cli.output import err
from migproxy.stream.errors import EXIT_OK, EXIT_STREAM, EXIT_USAGE


class _Stopped(Exception):
    """SIGTERM (systemd stopping the unit): the image being rewritten keeps its state."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signal.Signals(signum).name)


def _directory(args: argparse.Namespace) -> Path | None:
    d = Path(args.dir)
    if not d.is_dir():
        err(f"{d}: no such directory")
        return None
    return d


def cmd_saves_rewrite(args: argparse.Namespace) -> int:
    from migproxy.cli.streams import destination_of
    from migproxy.tools.saves import ImageResult, Outcome, rewrite_saves

    directory = _directory(args)
    if directory is None:
        return EXIT_USAGE
    destination = destination_of(args)
    assert destination is not None

    def report(r: ImageResult) -> None:
        text = f"{r.path}: {r.outcome.value}" + (f" for {destination.name}"
                                                 if r.outcome.ok else "")
        if r.outcome is Outcome.REFUSED:
            text += ", left as it is"
        print(text + (f": {r.detail}" if r.detail else ""), flush=True)
        for line in r.changes:
            print(f"  {line}", flush=True)

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        results = rewrite_saves(directory, destination, time_limit=args.time_limit,
                                report=report)
    except _Stopped as e:
        err(f"{directory}: stopped ({e}); the image in progress is as it was")
        return EXIT_STREAM
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts = {o: sum(r.outcome is o for r in results) for o in Outcome}
    print(f"{directory}: {len(results)} managed-save images"
          + "".join(f", {n} {o.value}" for o, n in counts.items() if n))
    failed = [r for r in results if not r.outcome.ok]
    for r in failed:
        err(f"{r.path}: not rewritten ({r.outcome.value}): {r.detail}")
    return EXIT_STREAM if failed else EXIT_OK


def cmd_saves_clean(args: argparse.Namespace) -> int:
    from migproxy.tools.saves import clean_saves

    directory = _directory(args)
    if directory is None:
        return EXIT_USAGE
    for r in clean_saves(directory):
        print(f"{r.original}: {r.detail}")
    sys.stdout.flush()
    return EXIT_OK
