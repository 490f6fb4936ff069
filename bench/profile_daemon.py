"""Profile the migproxy daemon (or the bare relay) while it relays a big main channel.

    python -m bench.profile_daemon [--path migproxy] [--size 4G] [--zero-ratio P] [--native]
                                   [--top 25]

Starts the path's relay, a sink and a sender (as ``bench.run`` does), attaches
``py-spy record`` (``pip install py-spy``; needs ptrace rights, e.g. root) to the relay
process for the whole transfer, and prints the hottest frames: "self" (samples whose
innermost frame is this function) and "total" (samples where it is anywhere on the stack),
as percentages of all samples, and the share of the samples in the event loop (reads),
writes, the engine and metrics. The raw collapsed stacks are kept (``--out``).
``bench.run`` calls :func:`profile` for a throughput target it missed. py-spy is found on
PATH or beside the running Python (a virtualenv's ``bin``).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


# Where the relay's time goes, from the stacks: the RAM pump (its worker thread's run), the
# engine (any frame of migproxy/stream or migproxy/arm on the stack), TLS (the innermost
# frame in Python's ssl module: encrypting or decrypting), writes (the innermost Python
# frame hands bytes to a transport), the event loop itself (no Python frame below the
# loop's run: uvloop's socket reads and callbacks, in C), metrics (prometheus_client, the
# observer), the rest.
SHARES = ("event loop (reads, in C)", "writes", "engine", "RAM pump (C, worker thread)",
          "TLS (ssl)", "metrics", "other Python")


def _category(frames: list[str]) -> str:
    if any("daemon/pump.py" in f for f in frames) and \
            not any("daemon/relay.py" in f for f in frames):
        return "RAM pump (C, worker thread)"  # its run, without the GIL (the event loop
        # thread only starts runs and takes their results: those count where they go)
    if any("migproxy/stream/" in f or "migproxy/arm/" in f for f in frames):
        return "engine"
    inner = frames[-1]
    if "/ssl.py:" in inner or "(ssl.py:" in inner:
        return "TLS (ssl)"
    if ".write (" in inner or ".writelines (" in inner or "write_eof" in inner:
        return "writes"
    if inner.startswith(("Runner.run ", "run (asyncio", "run_forever", "run_until_complete")) \
            or "uvloop" in inner:
        return "event loop (reads, in C)"
    if "prometheus_client/" in inner or "daemon/observe.py" in inner:
        return "metrics"
    return "other Python"


def shares(collapsed: Path) -> dict[str, float]:
    """Share of the samples per category of ``SHARES`` (0..1)."""
    count = dict.fromkeys(SHARES, 0)
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            count[_category(stack.split(";"))] += int(n)
    total = sum(count.values())
    return {k: (v / total if total else 0.0) for k, v in count.items()}


def py_spy() -> str | None:
    """The py-spy executable: on PATH, or beside this Python (a virtualenv's bin)."""
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else None


class Sampler:
    """``py-spy record`` attached to one process until :meth:`stop`; then the hottest
    frames and the shares of ``SHARES`` (or ``skipped`` with the reason)."""

    def __init__(self, pid: int, out: str, *, rate: int = 250, native: bool = False) -> None:
        spy_bin = py_spy()
        self.out, self.native = Path(out), native
        self.proc: subprocess.Popen[bytes] | None = None
        if spy_bin is None:
            return
        self.out.unlink(missing_ok=True)
        argv = [spy_bin, "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", out,
                # --native cannot sample without pausing the process (slower, all frames)
                "--native" if native else "--nonblocking"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let py-spy attach

    def stop(self, top: int = 25) -> dict[str, Any]:
        if self.proc is None:
            return {"skipped": "py-spy is not installed: pip install py-spy"}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                stop(self.proc)
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        if not self.out.exists():
            return {"skipped": f"py-spy wrote no profile: {err[-2000:]}"}
        samples, rows = top_frames(self.out, top)
        return {"native": self.native, "samples": samples, "shares": shares(self.out),
                "top": [{"frame": f, "self": s / max(samples, 1), "total": t / max(samples, 1)}
                        for f, s, t in rows]}


def profile(path: str, shape: Shape, size: int, *, rate: int = 250, native: bool = False,
            top: int = 25, out: str = "/tmp/migproxy-profile.txt") -> dict[str, Any]:
    """Relay ``size`` bytes of ``shape`` through ``path`` with py-spy attached to the
    relay; the transfer, the hottest frames and the shares of ``SHARES``."""
    if py_spy() is None:
        return {"skipped": "py-spy is not installed: pip install py-spy"}
    plan = Plan(shape)
    repeats = plan.repeats_for(size)
    total = plan.total(repeats)
    ld = log_dir()
    sink = SinkProc()
    relay = Relay(PATHS[path], sink.port, ld)
    spy: Sampler | None = None
    prof: dict[str, Any] = {"skipped": "not sampled"}
    try:
        exp = plan.expected(relay.path.mode)
        sink.expect(len=total + exp.delta, end_len=exp.end_len, end_sha256=exp.end_sha256)
        assert relay.pid is not None
        spy = Sampler(relay.pid, out, rate=rate, native=native)
        cpu0 = relay.cpu()
        snd = finish_sender(start_sender(relay.port, json.dumps(shape.to_json()), repeats),
                            120 + total / 20e6)
        r = sink.result(60)
        cpu1 = relay.cpu()
    finally:
        if spy is not None:
            prof = spy.stop(top)
        relay.close()
        sink.close()
        shutil.rmtree(ld, ignore_errors=True)
    sec = r["t_last"] - snd["t_start"]
    return {"path": path, "bytes": total, "seconds": sec, "mb_s": total / sec / 1e6,
            "relay_cpu_s": None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
            "bytes_ok": r["ok"], **prof}


def print_profile(res: dict[str, Any], say: Callable[[str], None] = print) -> None:
    if "bytes" in res:
        cpu = res["relay_cpu_s"]
        say(f"{res['path']}: {res['bytes'] / 1e6:.0f} MB in {res['seconds']:.2f} s = "
            f"{res['mb_s']:.0f} MB/s, relay CPU {-1 if cpu is None else cpu:.2f} s "
            + ("" if cpu is None else f"({cpu / res['seconds']:.2f} CPUs busy) ")
            + f"under py-spy, bytes ok: {res['bytes_ok']}")
    if "skipped" in res:
        say(f"no profile: {res['skipped']}")
        return
    say(f"py-spy {'--native ' if res['native'] else ''}{res['samples']} samples; share of "
        "the samples: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in res["shares"].items()))
    say(f"{'self %':>7} {'total %':>8}  frame")
    for row in res["top"]:
        say(f"{100 * row['self']:7.1f} {100 * row['total']:8.1f}  {row['frame']}")


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
    if py_spy() is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    shape = Shape() if a.zero_ratio is None else \
        Shape(full_pages=1434, zero_pages=614, zero_ratio=a.zero_ratio)
    res = profile(a.path, shape, parse_size(a.size), rate=a.rate, native=a.native, top=a.top,
                  out=a.out)
    print_profile(res)
    return 1 if "skipped" in res else 0


if __name__ == "__main__":
    raise SystemExit(main())
