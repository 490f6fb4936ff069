"""A coverage-guided fuzz target for the stream engine and the libvirt save-image reader.

    scripts/fuzz.sh                      # until interrupted (Ctrl-C), corpus in .fuzz/
    scripts/fuzz.sh 4h                   # four hours (also 30m, 600s, 600)
    python -m testkit.fuzz --no-atheris  # the same target, random mutations, no coverage
    python -m testkit.fuzz --replay FILE # one failing input again

One input is four control bytes and a payload. The control bytes choose:

- what is fed: the payload as a migration stream, or as a libvirt save image (its header
  and XML area read by :func:`migproxy.tools.saveimage.read_save_image`, the stream after
  them fed to the engine);
- the engine's configuration: no profile (frame and forward), or the default ARM profile
  (rewrite); policy passthrough or abort;
- where the payload is cut into chunks.

What must hold, for every input (a failure raises :class:`FuzzFailure`, which the fuzzer
reports with the input that caused it):

1. nothing raises out of the engine, and it never reports an internal error (it catches
   its own bugs as ``Reason.INTERNAL_ERROR``);
2. the save-image reader raises only ``SaveImageError`` (a ``MigproxyError``), and what it
   read writes back to the same bytes (``SaveImage.head``);
3. the events do not depend on the cuts (the payload in one chunk, and in the chosen
   chunks; their messages may: a truncated stream ended "before the next record" or
   "inside a record"), nor does the output, except that the abort policy forwards nothing
   of the chunk where it stops;
4. without a profile and with the passthrough policy, the output is the input, byte for
   byte; with the abort policy, the output is a prefix of the input;
5. the compiled RAM walk and the pure-Python one agree, output and events (on one input
   in eight, when the compiled walk is built: the Python walk is the slow one).

The corpus starts from the real streams of ``tests/data`` and ``tests/data/kvm`` (QEMU
7.2 to 11.1, TCG and KVM), each also as a save image. atheris (``pip install .[fuzz]``)
instruments migproxy's Python code for coverage; the compiled walk is not instrumented,
its differential check (5) is what covers it.
"""

from __future__ import annotations

import argparse
import gc
import io
import lzma
import random
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from migproxy.arm.profile import default_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream import ramsection
from migproxy.stream.engine import EngineConfig, Policy, StreamEngine
from migproxy.stream.errors import MigproxyError
from migproxy.stream.events import Aborted, Event, PassthroughEntered
from migproxy.stream.reasons import Reason
from migproxy.tools.saveimage import SaveImageError, read_save_image
from testkit.saveimage import save_image

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
CONTROL = 4  # control bytes before the payload
MAX_CHUNKS = 64

# The control bits.
SAVE_IMAGE = 0x01
PROFILE = 0x02
ABORT = 0x04
COMPARE_WALKS = 0x38  # all three set: one input in eight


class FuzzFailure(AssertionError):
    """An invariant of the engine or the save-image reader does not hold."""


@dataclass(frozen=True)
class Run:
    out: bytes
    events: tuple[str, ...]


def seed_streams() -> list[tuple[str, bytes]]:
    """The real streams of tests/data and tests/data/kvm, by name."""
    paths = sorted(DATA.glob("*.mig.xz")) + sorted((DATA / "kvm").glob("*.mig.xz"))
    return [(p.name[: -len(".mig.xz")], lzma.decompress(p.read_bytes())) for p in paths]


def seeds() -> Iterator[tuple[str, bytes]]:
    """Inputs for the corpus: each real stream as a stream (no profile, passthrough) and
    as a raw save image with the default profile."""
    for name, stream in seed_streams():
        yield f"{name}.stream", bytes((0, 0, 0, 0)) + stream
        yield f"{name}.image", bytes((SAVE_IMAGE | PROFILE, 0x5A, 0, 0)) + save_image(stream)


def _config(ctl: int) -> EngineConfig:
    policy = Policy.ABORT if ctl & ABORT else Policy.PASSTHROUGH
    return arm_engine_config(default_profile() if ctl & PROFILE else None, policy=policy)


def _cuts(seed: bytes, size: int) -> list[int]:
    rnd = random.Random(seed)
    n = rnd.randrange(MAX_CHUNKS) if size else 0
    points = {rnd.randrange(size + 1) for _ in range(n)}
    # Cuts near the start and right at the end hit record headers and the description.
    points |= {c for c in (1, 7, 64, size - 1) if rnd.random() < 0.25 and 0 < c < size}
    return sorted(points)


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(bounds) if b > a]


def _engine(config: EngineConfig, chunks: list[bytes]) -> Run:
    eng = StreamEngine(config)
    out: list[bytes] = []
    events: list[Event] = []
    try:
        for c in chunks:
            res = eng.feed(c)
            out.append(res.joined())
            events += res.events
        # The source says nothing more (the driver's quiet window), then closes. Cuts are
        # TCP segments, not pauses of the source: the window passes only at the end.
        res = eng.conclude()
        out.append(res.joined())
        events += res.events
        res = eng.feed_eof()
        out.append(res.joined())
        events += res.events
    except Exception as e:
        raise FuzzFailure(f"the engine raised {e!r}") from e
    for ev in events:
        if isinstance(ev, Aborted | PassthroughEntered) and ev.reason is Reason.INTERNAL_ERROR:
            raise FuzzFailure(f"the engine caught a bug of its own: {ev}")
    # The message says what the engine was waiting for, which depends on the cuts (the
    # rest of a record, or the next record): the event, its reason and offset do not.
    return Run(b"".join(out), tuple(_without_message(e) for e in events))


def _without_message(e: Event) -> str:
    if not hasattr(e, "message"):
        return repr(e)
    return f"{type(e).__name__}({getattr(e, 'reason', None)!r}, {getattr(e, 'offset', None)})"


def _walk(walk: Callable[..., tuple[int, int, int]] | None, fn: Callable[[], Run]) -> Run:
    saved = ramsection.RAM_WALK
    ramsection.RAM_WALK = walk
    try:
        return fn()
    finally:
        ramsection.RAM_WALK = saved


COMPILED = ramsection._compiled_walk() if ramsection.RAM_WALK is None else ramsection.RAM_WALK


def check_stream(ctl: int, split_seed: bytes, stream: bytes) -> None:
    config = _config(ctl)
    whole = _engine(config, [stream])
    split = _engine(config, _pieces(stream, _cuts(split_seed, len(stream))))
    if split.events != whole.events:
        raise FuzzFailure("the events depend on the cuts")
    if ctl & ABORT:
        # Abort forwards nothing from the problem's chunk on: how much of what came before
        # it was forwarded depends on the cuts, never more than up to the problem.
        stop = next((e for e in whole.events if e.startswith("Aborted(")), None)
        if stop is None and split.out != whole.out:
            raise FuzzFailure("the output depends on the cuts")
        if not ctl & PROFILE and not (stream.startswith(whole.out)
                                      and stream.startswith(split.out)):
            raise FuzzFailure("abort forwarded bytes that are not a prefix of the input")
    elif split.out != whole.out:
        raise FuzzFailure("the output depends on the cuts")
    elif not ctl & PROFILE and whole.out != stream:
        raise FuzzFailure("without a profile, passthrough changed the stream")
    if COMPILED is not None and ctl & COMPARE_WALKS == COMPARE_WALKS:
        other = COMPILED if ramsection.RAM_WALK is None else None
        if _walk(other, lambda: _engine(config, [stream])) != whole:
            raise FuzzFailure("the compiled and the Python RAM walks disagree")


def check_image(ctl: int, split_seed: bytes, image: bytes) -> None:
    f = io.BytesIO(image)
    try:
        img = read_save_image(f)
    except SaveImageError:
        return
    except Exception as e:
        raise FuzzFailure(f"the save-image reader raised {e!r}, not a SaveImageError") from e
    head = img.head()
    if head != image[: len(head)]:
        raise FuzzFailure("the save image's header and XML area do not write back as read")
    try:
        _ = img.xml, img.cookie, img.domain
    except MigproxyError:
        pass
    except Exception as e:
        raise FuzzFailure(f"reading the save image's XML raised {e!r}") from e
    check_stream(ctl, split_seed, image[len(head):])


def one_input(data: bytes) -> None:
    """The fuzz target: raises FuzzFailure when an invariant does not hold."""
    if len(data) < CONTROL:
        return
    ctl, split_seed, payload = data[0], data[1:CONTROL], data[CONTROL:]
    if ctl & SAVE_IMAGE:
        check_image(ctl, split_seed, payload)
    else:
        check_stream(ctl, split_seed, payload)


# ---------------------------------------------------------------------------- the runners

def mutate(rnd: random.Random, data: bytes) -> bytes:
    """A few random edits of the kinds that matter to a framer: flipped, overwritten,
    inserted and deleted bytes, a truncation, a duplicated slice, a changed control byte."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, 8)):
        kind = rnd.randrange(7)
        at = rnd.randrange(len(b) + 1)
        if kind == 0 and b:
            b[min(at, len(b) - 1)] ^= 1 << rnd.randrange(8)
        elif kind == 1 and b:
            b[min(at, len(b) - 1)] = rnd.choice((0, 0xFF, 0x7F, 0x80, rnd.randrange(256)))
        elif kind == 2:
            b[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))
        elif kind == 3:
            del b[at : at + rnd.randint(1, 64)]
        elif kind == 4 and len(b) > CONTROL:
            del b[rnd.randrange(CONTROL, len(b)):]
        elif kind == 5:
            n = rnd.randint(1, 256)
            b[at:at] = b[at : at + n]
        elif kind == 6:
            b[rnd.randrange(CONTROL)] = rnd.randrange(256)
    return bytes(b)


def run_random(seconds: float | None, examples: int | None, seed: int,
               corpus: list[bytes]) -> int:
    """Mutate the corpus at random (no coverage feedback) for ``seconds`` or ``examples``;
    the fallback when atheris is not installed. Returns the number of inputs run."""
    rnd = random.Random(seed)
    deadline = None if seconds is None else time.monotonic() + seconds
    n = 0
    while (examples is None or n < examples) and (deadline is None
                                                   or time.monotonic() < deadline):
        data = mutate(rnd, rnd.choice(corpus))
        try:
            one_input(data)
        except FuzzFailure:
            crash = ROOT / ".fuzz" / f"crash-{seed}-{n}"
            crash.parent.mkdir(exist_ok=True)
            crash.write_bytes(data)
            print(f"failing input written to {crash}", file=sys.stderr)
            raise
        n += 1
        if n % 500 == 0:
            print(f"#{n} inputs", file=sys.stderr, flush=True)
    return n


def write_corpus(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds():
        path = directory / f"seed-{name}"
        if not path.exists():
            path.write_bytes(data)


def run_atheris(argv: list[str], corpus: Path) -> None:
    import atheris  # type: ignore[import-untyped]

    # migproxy's functions only (atheris.instrument_all() takes half a minute on the rest).
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and \
                (obj.__module__ or "").startswith("migproxy."):
            atheris.instrument_func(obj)
    max_len = max(len(d) for _, d in seeds()) * 2
    artifacts = f"-artifact_prefix={corpus.parent}/"  # crash-<hash> beside the corpus
    atheris.Setup([sys.argv[0], f"-max_len={max_len}", artifacts, *argv, str(corpus)],
                  one_input)
    atheris.Fuzz()


def duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testkit.fuzz", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time", type=duration, help="how long (600, 600s, 30m, 4h); "
                    "default: until interrupted")
    ap.add_argument("--corpus", type=Path, default=ROOT / ".fuzz" / "corpus",
                    help="the corpus directory (atheris; seeded from tests/data)")
    ap.add_argument("--no-atheris", action="store_true",
                    help="random mutations of the seeds, without coverage feedback")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--replay", type=Path, metavar="FILE",
                    help="run the target once on FILE (a crash-* input) and show what fails")
    ap.add_argument("libfuzzer", nargs="*", help="more libFuzzer options (after --)")
    args = ap.parse_args(argv)
    if args.replay:
        one_input(args.replay.read_bytes())  # a FuzzFailure shows with its traceback
        print(f"{args.replay}: every invariant holds", file=sys.stderr)
        return 0
    try:
        import atheris  # noqa: F401
        have_atheris = True
    except ImportError:
        have_atheris = False
    if have_atheris and not args.no_atheris:
        write_corpus(args.corpus)
        extra = [f"-max_total_time={int(args.time)}"] if args.time else []
        print(f"atheris: coverage-guided, corpus {args.corpus}", file=sys.stderr)
        run_atheris(extra + args.libfuzzer, args.corpus)
        return 0
    print(f"random mutations of the seeds (seed {args.seed}"
          + ("" if have_atheris else "; atheris is not installed: pip install .[fuzz]")
          + ")", file=sys.stderr)
    corpus = [d for _, d in seeds()]
    try:
        n = run_random(args.time, None, args.seed, corpus)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 0
    print(f"{n} inputs, no failure", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
