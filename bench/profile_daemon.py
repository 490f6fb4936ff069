"""Profile the migproxy daemon (or the bare relay) while it relays a big main channel.

    python -m bench.profile_daemon [--path migproxy] [--size 4G] [--zero-ratio P] [--native]
                                   [--top 25]

Starts the path's relay, a sink and a sender (as ``bench.run`` does), attaches
``py-spy record`` (``pip install py-spy``; needs ptrace rights, e.g. root) to the relay
process for the whole transfer, and prints the hottest frames: "self" (samples whose
innermost frame is this function) and "total" (samples where it is anywhere on the stack),
as percentages of all samples. The raw collapsed stacks are kept (``--out``).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

from bench.procs import PATHS, Relay, SinkProc, finish_sender, log_dir, start_sender, stop
from bench.report import parse_size
from bench.streams import Plan, Shape


def top_frames(collapsed: Path, top: int) -> tuple[int, list[tuple[str, int, int]]]:
    """(samples, [(frame, self, total)]) from py-spy's raw (collapsed) output."""
    self_c: collections.Counter[str] = collections.Counter()
    total_c: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        k = int(n)
        frames = stack.split(";")
        samples += k
        self_c[frames[-1]] += k
        for f in set(frames):
            total_c[f] += k
    names = [f for f, _ in self_c.most_common(top)]
    return samples, [(f, self_c[f], total_c[f]) for f in names]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default="migproxy", choices=sorted(PATHS))
    ap.add_argument("--size", default="4G")
    ap.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    ap.add_argument("--rate", type=int, default=250, help="samples per second")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default="/tmp/migproxy-profile.txt", help="collapsed stacks")
    ap.add_argument("--zero-ratio", type=float, metavar="P",
                    help="fragmented RAM: each page zero with probability P (default: runs)")
    a = ap.parse_args(argv)
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    shape = Shape() if a.zero_ratio is None else \
        Shape(full_pages=1434, zero_pages=614, zero_ratio=a.zero_ratio)
    plan = Plan(shape)
    repeats = plan.repeats_for(parse_size(a.size))
    total = plan.total(repeats)
    ld = log_dir()
    sink = SinkProc()
    relay = Relay(PATHS[a.path], sink.port, ld)
    spy = None
    try:
        exp = plan.expected(relay.path.mode)
        sink.expect(len=total + exp.delta, end_len=exp.end_len, end_sha256=exp.end_sha256)
        Path(a.out).unlink(missing_ok=True)
        argv_spy = ["py-spy", "record", "-p", str(relay.pid), "-r", str(a.rate), "-f", "raw",
                    "-o", a.out]
        # --native cannot sample without pausing the process (slower, but all frames).
        argv_spy.append("--native" if a.native else "--nonblocking")
        spy = subprocess.Popen(argv_spy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let py-spy attach
        cpu0 = relay.cpu()
        snd = finish_sender(start_sender(relay.port, json.dumps(shape.to_json()), repeats),
                            120 + total / 20e6)
        r = sink.result(60)
        cpu1 = relay.cpu()
    finally:
        if spy is not None and spy.poll() is None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                stop(spy)
        relay.close()
        sink.close()
        shutil.rmtree(ld, ignore_errors=True)
    sec = r["t_last"] - snd["t_start"]
    print(f"{a.path}: {total / 1e6:.0f} MB in {sec:.2f} s = {total / sec / 1e6:.0f} MB/s, "
          f"relay CPU {cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else -1:.2f} s"
          f" (under py-spy), bytes ok: {r['ok']}")
    if not Path(a.out).exists():
        err = spy.stderr.read().decode(errors="replace") if spy and spy.stderr else ""
        raise SystemExit(f"py-spy wrote no profile: {err[-2000:]}")
    samples, rows = top_frames(Path(a.out), a.top)
    print(f"py-spy {'--native ' if a.native else ''}{samples} samples; top frames by self time")
    print(f"{'self %':>7} {'total %':>8}  frame")
    for f, s, t in rows:
        print(f"{100 * s / max(samples, 1):7.1f} {100 * t / max(samples, 1):8.1f}  {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
