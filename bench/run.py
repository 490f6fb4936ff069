"""The benchmark suite: migproxy against the relays an operator would use instead.

    python -m bench.run [--quick] [--json FILE] [--only SECTION,...] [--size 2G] [--repeat 5]

Sections, all measured in the same run on the same machine (sender, relay and sink are
separate processes on loopback, sharing the machine's CPUs):

* ``throughput``: one big synthetic main channel (full pages, zero pages, multifd flushes,
  device tail, EOF, description; streamed from three buffers, never held whole) from a
  sender to a sink through each path: direct, socat (defaults and ``-b 1048576``), a splice
  relay (``bench.splice_floor``: the kernel floor), a bare uvloop relay, migproxy
  ``--dry-run``, ``--profile none`` and rewriting. The sink checks
  the byte count and the end of the stream (the rewritten tail) against the engine's output.
* ``channels``: what migproxy does not parse (``bench.channels``): one multifd channel, and
  a main channel plus 4 multifd channels at once, through direct, socat, the splice relay,
  the bare relay, migproxy's kernel relay (splice) and its event-loop path; MB/s and relay
  CPU s/GB.
* ``tls``: TLS on both legs (``bench.tls_relay``): migproxy against socat with OpenSSL.
* ``records``: the engine micro-benchmark (``bench.engine_micro``), zero- and full-page
  records per second, no sockets, plus a mixed stream (data pages with zero pages between
  them, as guest RAM is).
* ``switchover``: the cost of holding the device-state tail back. In-process: the CPU time
  of the engine's ``feed()`` that completes the description (framing, cpu rewrite, the new
  description, the rewritten tail joined) plus joining its output, warm, no I/O. Over TCP:
  time from ``t0`` to the sink's last byte through the bare relay and through migproxy,
  same stream; "added" is the difference. ``burst``: t0 = the first tail byte leaves the
  sender, the whole tail at once (what QEMU does after stopping the guest): the downtime
  migproxy adds. ``lastbyte``: everything but the last byte was sent and forwarded/held,
  t0 = the last byte leaves the sender: last byte in to last byte out of migproxy, plus
  one loopback hop (which the bare relay's number shows).
* ``memory``: peak RSS (VmHWM) of a fresh daemon per case: 1 and 8 concurrent migrations,
  small and big streams, and a destination that reads slowly.
* ``qemu``: real QEMU 10.0.2 -> 10.0.2 live migrations of a guest with a few hundred MB of
  dirtied RAM (``bench/guest/dirty.S``), direct and through migproxy: QEMU's own
  ``total-time`` and ``downtime``. Skipped (and said so) when the QEMU lab is missing.

Benchmarks are not tests: nothing here asserts a timing. Targets are evaluated and printed
(``bench.targets``), with the machine, its load and the commit; for each missed target of
issue 18 a bounded profile of what limits it follows (``bench.limits``; ``--no-profile``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import engine_micro, netio
from bench.procs import (
    PATHS,
    Relay,
    SinkProc,
    finish_sender,
    log_dir,
    runnable_paths,
    socat_available,
    start_sender,
)
from bench.report import GiB, KiB, MiB, fmt_size, parse_size, summary, table
from bench.streams import Plan, Shape, engine_config
from bench.targets import missed, print_targets, targets
from migproxy.stream.engine import Mode, StreamEngine
from migproxy.stream.events import DeviceStateReleased
from testkit.synthetic import SynthSpec

SECTIONS = ("throughput", "channels", "tls", "records", "switchover", "memory", "qemu")


# -- helpers ---------------------------------------------------------------------------------

def say(msg: str = "") -> None:
    print(msg, flush=True)


class Settings:
    def __init__(self, a: argparse.Namespace) -> None:
        q = a.quick
        self.quick = q
        self.size = parse_size(a.size) if a.size else (8 * MiB if q else 2 * GiB)
        self.repeat = a.repeat or (1 if q else 5)
        self.shape = Shape(full_pages=a.full_pages, zero_pages=a.zero_pages,
                           multifd_flush=True, cpus=a.cpus, tail_blob=32 * KiB,
                           zero_ratio=a.zero_ratio)
        # The throughput section runs both RAM shapes unless one is asked for: long runs
        # (the shape above) and fragmented RAM (each page zero with p = 0.3, the same
        # number of pages per unit).
        self.fragmented: Shape | None = None
        if a.zero_ratio is None and not a.runs_only:
            self.fragmented = Shape(full_pages=1434, zero_pages=614, multifd_flush=True,
                                    cpus=a.cpus, tail_blob=32 * KiB, zero_ratio=0.3)
        self.switch_sizes = [30_000, 1_000_000] if q else [30_000, 1_000_000, 16_000_000]
        self.switch_repeat = a.switch_repeat or (1 if q else 15)
        self.switch_pause = 0.05 if q else 0.15
        self.switch_inproc_repeat = 3 if q else 30
        self.mem_small = 4 * MiB if q else 256 * MiB
        self.mem_big = 16 * MiB if q else 2 * GiB
        self.mem_slow_rate = 50e6 if q else 64e6
        self.records_scale = 0.005 if q else 1.0
        self.records_repeat = 1 if q else 3
        self.qemu_repeat = a.qemu_repeat or (1 if q else 5)
        self.engine_check = q  # the sink re-frames what it got (slow: smoke mode only)
        self.sections = [s for s in (a.only.split(",") if a.only else SECTIONS)
                         if s not in (a.skip.split(",") if a.skip else [])]
        for s in self.sections:
            if s not in SECTIONS:
                raise SystemExit(f"unknown section {s!r} (have {', '.join(SECTIONS)})")


# -- 1. throughput ---------------------------------------------------------------------------

def _bulk(sink: SinkProc, relay: Relay, plan: Plan, shape_json: str, repeats: int,
          engine_check: bool) -> dict[str, Any]:
    exp = plan.expected(relay.path.mode)
    total = plan.total(repeats)
    sink.expect(len=total + exp.delta, end_len=exp.end_len, end_sha256=exp.end_sha256,
                engine_check=engine_check)
    cpu0 = relay.cpu()
    timeout = 60 + total / 20e6
    snd = finish_sender(start_sender(relay.port, shape_json, repeats), timeout)
    r = sink.result(30)
    cpu1 = relay.cpu()
    sec = r["t_last"] - snd["t_start"]
    out: dict[str, Any] = {
        "mb_s": snd["bytes"] / sec / 1e6, "seconds": sec, "bytes_in": snd["bytes"],
        "bytes_out": r["bytes"], "ok": r["ok"], "error": r["error"],
        "relay_cpu_s": None if cpu0 is None or cpu1 is None else cpu1 - cpu0}
    if "engine_mode" in r:
        out["sink_engine"] = {"mode": r["engine_mode"], "cpregs": r["cpregs"]}
    if not r["ok"]:
        say(f"  !! {relay.path.key}: {r['error']}\n{relay.log_tail()}")
    return out


def bench_throughput(st: Settings, notes: list[str], shape: Shape) -> dict[str, Any]:
    plan = Plan(shape)
    repeats = plan.repeats_for(st.size)
    total = plan.total(repeats)
    shape_json = json.dumps(shape.to_json())
    keys, skipped = runnable_paths(list(PATHS), notes)
    say(f"== throughput: {fmt_size(total)} main channel ({repeats} x "
        f"{len(plan.unit) / MiB:.1f} MiB of PART sections: {shape.full_pages} full + "
        f"{shape.zero_pages} zero pages each"
        + (f", mixed at random (p zero = {shape.zero_ratio})" if shape.zero_ratio
           is not None else "") + f", multifd flushes, {shape.cpus} cpus, "
        f"{fmt_size(len(plan.suffix))} tail), {st.repeat} run(s) per path, round robin")
    ld = log_dir()
    sink = SinkProc()
    relays: dict[str, Relay] = {}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    try:
        for k in keys:
            relays[k] = Relay(PATHS[k], sink.port, ld)
        for rep in range(st.repeat):
            for k in keys:
                r = _bulk(sink, relays[k], plan, shape_json, repeats, st.engine_check)
                runs[k].append(r)
                say(f"  run {rep + 1}/{st.repeat} {k:<17} {r['mb_s']:9.0f} MB/s"
                    f"{'' if r['ok'] else '  NOT OK'}")
    finally:
        for rl in relays.values():
            rl.close()
        sink.close()
        shutil.rmtree(ld, ignore_errors=True)
    paths: dict[str, Any] = {}
    for k in keys:
        mbs = [r["mb_s"] for r in runs[k]]
        cpu = [r["relay_cpu_s"] / (r["bytes_in"] / 1e9) for r in runs[k]
               if r["relay_cpu_s"] is not None]
        paths[k] = {"label": PATHS[k].label, "mb_s": summary(mbs),
                    "relay_cpu_s_per_gb": statistics.median(cpu) if cpu else None,
                    "all_ok": all(r["ok"] for r in runs[k]), "runs": runs[k]}
    med = {k: v["mb_s"]["median"] for k, v in paths.items()}
    ratios: dict[str, dict[str, float | None]] = {}
    for k in keys:
        ratios[k] = {f"vs_{b}": (med[k] / med[b] if b in med else None)
                     for b in ("direct", "socat", "socat_1m", "splice", "bare")}
    return {"stream_bytes": total, "repeats_of_unit": repeats, "unit_bytes": len(plan.unit),
            "shape": shape.to_json(), "runs_per_path": st.repeat, "paths": paths,
            "ratios": ratios, "skipped": skipped}


def print_throughput(res: dict[str, Any]) -> None:
    rows = []
    for k, v in res["paths"].items():
        r = res["ratios"][k]
        cpu = v["relay_cpu_s_per_gb"]

        def x(key: str, r: dict[str, float | None] = r) -> str:
            val = r.get(key)
            return "-" if val is None else f"{val:.2f}x"
        rows.append([v["label"], f"{v['mb_s']['median']:.0f}",
                     f"{v['mb_s']['min']:.0f}-{v['mb_s']['max']:.0f}", x("vs_direct"),
                     x("vs_socat"), x("vs_socat_1m"), x("vs_splice"), x("vs_bare"),
                     "-" if cpu is None else f"{cpu:.2f}", "yes" if v["all_ok"] else "NO"])
    say(table(rows, ["path", "MB/s (median)", "range", "x direct", "x socat", "x socat-1M",
                     "x splice", "x bare", "relay CPU s/GB", "bytes ok"]))
    for k, why in res["skipped"].items():
        say(f"{PATHS[k].label}: skipped: {why}")


# -- TLS on both legs -----------------------------------------------------------------------

def bench_tls(mib: int, runs: int, notes: list[str]) -> dict[str, Any]:
    from bench import tls_relay

    say(f"== tls: TLS on both legs, {mib} MiB per run, {runs} runs each, taking turns: "
        "migproxy (--profile none) and socat with OpenSSL, same sender, sink and "
        "certificates")
    if not socat_available():
        notes.append("socat is not installed: the TLS section measured migproxy alone")
    res = tls_relay.run(mib, runs)
    mb = res["mb_s"]
    runs_of = res.get("all", {})
    say(table([[k, "-" if v is None else f"{v:.0f}",
                " ".join(f"{x:.0f}" for x in runs_of.get(k, []))] for k, v in mb.items()],
              ["relay", "MB/s (median)", "all"]))
    if res.get("ratio") is not None:
        say(f"migproxy / socat: {res['ratio']:.2f}x")
    return res


# -- 2. records ------------------------------------------------------------------------------

def bench_records(st: Settings) -> dict[str, Any]:
    say(f"== records: engine micro-benchmark (scale {st.records_scale}, best of "
        f"{st.records_repeat})")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "micro.json")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            engine_micro.main(["--scale", str(st.records_scale), "--repeat",
                               str(st.records_repeat), "--json", path])
        with open(path, encoding="utf-8") as f:
            res: dict[str, Any] = json.load(f)
    # Guest RAM as it is: data pages with zero pages in between (the synthetic generator
    # interleaves 1 full : 3 zero while both remain), not only long runs of one kind.
    n = max(100, int(50_000 * st.records_scale))
    walks = ["c", "python"] if engine_micro.COMPILED is not None else ["python"]
    mixed = [engine_micro.bench(
        "mixed records (1 full : 3 zero)",
        SynthSpec(ram_bytes=8 * n * 4096, full_pages=n, zero_pages=3 * n, part_sections=8),
        st.records_repeat, w) for w in walks]
    return {"results": [*res["results"], *mixed]}


def print_records(res: dict[str, Any]) -> None:
    rows = [[r["name"], str(r.get("walk", "")), f"{r['bytes'] / 1e6:.1f}", f"{r['records']:,}",
             f"{r['records_per_s']:,.0f}", f"{r['mb_per_s']:,.0f}"] for r in res["results"]]
    say(table(rows, ["engine stream", "walk", "MB", "records", "records/s", "MB/s"]))


# -- 3. switchover ---------------------------------------------------------------------------

def _switch_shape(tail: int) -> Shape:
    return Shape(full_pages=64, zero_pages=256, part_sections=1, multifd_flush=True, cpus=2,
                 tail_blob=tail)


def switch_inprocess(sizes: list[int], reps: int, chunk: int = 256 * KiB) -> dict[str, Any]:
    """The engine alone: the hold-back's CPU cost, without sockets."""
    out: dict[str, Any] = {"chunk_bytes": chunk, "sizes": {}}
    for n in sizes:
        plan = Plan(_switch_shape(n))
        data = plan.data
        cut = plan.tail_offset(1)
        tail = memoryview(data)[cut:]
        pieces = [tail[i : i + chunk] for i in range(0, len(tail), chunk)]
        final, joins, holds = [], [], []
        for _ in range(reps):
            eng = StreamEngine(engine_config("rewrite"))
            eng.feed(data[:cut])
            t_hold = 0.0
            for p in pieces[:-1]:
                t0 = time.perf_counter()
                eng.feed(p)
                t_hold += time.perf_counter() - t0
            t0 = time.perf_counter()
            res = eng.feed(pieces[-1])
            if eng.mode == Mode.HOLDING:  # no return path: released at the source's EOF
                res.data.extend((end := eng.feed_eof()).data)
                res.events.extend(end.events)
            t1 = time.perf_counter()
            blob = b"".join(res.data)
            t2 = time.perf_counter()
            if eng.mode != Mode.DONE or not any(isinstance(e, DeviceStateReleased) and e.rewritten
                                                for e in res.events):
                raise RuntimeError(f"tail of {n} bytes not released rewritten: "
                                   f"{eng.stop_reason}")
            del blob
            final.append((t1 - t0) * 1e3)
            joins.append((t2 - t1) * 1e3)
            holds.append(t_hold * 1e3)
        out["sizes"][str(n)] = {
            "tail_bytes": len(tail), "feeds": len(pieces),
            "final_feed_ms": summary(final), "join_ms": summary(joins),
            "final_plus_join_ms": summary([a + b for a, b in zip(final, joins, strict=True)]),
            "earlier_feeds_ms": summary(holds)}
    return out


def switch_tcp(sizes: list[int], reps: int, pause: float, notes: list[str]) -> dict[str, Any]:
    """Time to the sink's last byte, through the bare relay and through migproxy."""
    keys = ["direct", "bare", "migproxy"]
    ld = log_dir()
    sink = SinkProc()
    relays: dict[str, Relay] = {}
    out: dict[str, Any] = {"sizes": {}}
    try:
        for k in keys:
            relays[k] = Relay(PATHS[k], sink.port, ld)
        for n in sizes:
            plan = Plan(_switch_shape(n))
            shape_json = json.dumps(plan.shape.to_json())
            tail_len = plan.total(1) - plan.tail_offset(1)
            per: dict[str, Any] = {"tail_bytes": tail_len}
            for mode in ("burst", "lastbyte"):
                lat: dict[str, list[float]] = {k: [] for k in keys}
                for _ in range(reps):
                    for k in keys:
                        exp = plan.expected(PATHS[k].mode)
                        sink.expect(len=plan.total(1) + exp.delta, end_len=exp.end_len,
                                    end_sha256=exp.end_sha256)
                        snd = finish_sender(start_sender(relays[k].port, shape_json, 1,
                                                         mode=mode, pause=pause), 60)
                        r = sink.result(30)
                        if not r["ok"]:
                            notes.append(f"switchover {k} {n} {mode}: {r['error']}")
                            continue
                        lat[k].append((r["t_last"] - snd["t0"]) * 1e3)
                m: dict[str, Any] = {k: summary(v) for k, v in lat.items() if v}
                if lat["migproxy"] and lat["bare"]:
                    m["added_ms"] = {
                        "median": m["migproxy"]["median"] - m["bare"]["median"],
                        "p99": m["migproxy"]["p99"] - m["bare"]["p99"]}
                per[mode] = m
            out["sizes"][str(n)] = per
            say(f"  tail {fmt_size(tail_len)}: burst +{per['burst']['added_ms']['median']:.2f}"
                f" ms, last byte +{per['lastbyte']['added_ms']['median']:.2f} ms (median)")
    finally:
        for rl in relays.values():
            rl.close()
        sink.close()
        shutil.rmtree(ld, ignore_errors=True)
    return out


def bench_switchover(st: Settings, notes: list[str]) -> dict[str, Any]:
    say(f"== switchover: device tails of {', '.join(fmt_size(n) for n in st.switch_sizes)}; "
        f"in-process x{st.switch_inproc_repeat}, TCP x{st.switch_repeat} per path and mode")
    return {"in_process": switch_inprocess(st.switch_sizes, st.switch_inproc_repeat),
            "tcp": switch_tcp(st.switch_sizes, st.switch_repeat, st.switch_pause, notes)}


def print_switchover(res: dict[str, Any]) -> None:
    ip = res["in_process"]
    rows = []
    for v in ip["sizes"].values():
        rows.append([fmt_size(v["tail_bytes"]), str(v["feeds"]),
                     f"{v['final_feed_ms']['median']:.2f} / {v['final_feed_ms']['p99']:.2f}",
                     f"{v['join_ms']['median']:.2f} / {v['join_ms']['p99']:.2f}",
                     f"{v['final_plus_join_ms']['median']:.2f} / "
                     f"{v['final_plus_join_ms']['p99']:.2f}",
                     f"{v['earlier_feeds_ms']['median']:.2f}"])
    say(f"in-process, engine only (tail fed in {fmt_size(ip['chunk_bytes'])} pieces); "
        "ms, median / p99:")
    say(table(rows, ["tail", "feeds", "final feed()", "join output", "final + join",
                     "earlier feeds (sum)"]))
    rows = []
    for v in res["tcp"]["sizes"].values():
        for mode in ("burst", "lastbyte"):
            m = v[mode]

            def c(k: str, m: dict[str, Any] = m) -> str:
                return (f"{m[k]['median']:.2f} / {m[k]['p99']:.2f}" if k in m else "-")
            rows.append([fmt_size(v["tail_bytes"]), mode, c("direct"), c("bare"),
                         c("migproxy"),
                         f"{m['added_ms']['median']:+.2f} / {m['added_ms']['p99']:+.2f}"
                         if "added_ms" in m else "-"])
    say("over TCP, time to the sink's last byte after t0 (burst: t0 = first tail byte sent; "
        "last byte: t0 = last byte sent); ms, median / p99:")
    say(table(rows, ["tail", "t0", "direct", "bare relay", "migproxy",
                     "added by migproxy"]))


# -- 4. memory -------------------------------------------------------------------------------

def _mem_case(sink: SinkProc, ld: Path, shape: Shape, size: int, conc: int,
              rate: float) -> dict[str, Any]:
    plan = Plan(shape)
    repeats = plan.repeats_for(size)
    total = plan.total(repeats)
    exp = plan.expected("rewrite")
    relay = Relay(PATHS["migproxy"], sink.port, ld)
    pid = relay.pid
    assert pid is not None
    try:
        base_rss = netio.status_kb(pid, "VmRSS")
        base_hwm = netio.status_kb(pid, "VmHWM")
        sampled = [base_rss]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                with contextlib.suppress(OSError, KeyError):
                    sampled.append(netio.status_kb(pid, "VmRSS"))

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        sink.expect(len=total + exp.delta, end_len=exp.end_len, end_sha256=exp.end_sha256,
                    rate=rate)
        t0 = time.monotonic()
        shape_json = json.dumps(shape.to_json())
        senders = [start_sender(relay.port, shape_json, repeats) for _ in range(conc)]
        timeout = 120 + conc * total / (rate or 20e6)
        for s in senders:
            finish_sender(s, timeout)
        results = [sink.result(60) for _ in range(conc)]
        secs = time.monotonic() - t0
        done.set()
        th.join(2)
        hwm = netio.status_kb(pid, "VmHWM")
        rss = netio.status_kb(pid, "VmRSS")
    finally:
        relay.close()
    ok = all(r["ok"] for r in results)
    return {"streams": conc, "stream_bytes": total, "slow_rate_b_s": rate or None,
            "seconds": secs, "baseline_rss_kb": base_rss, "baseline_hwm_kb": base_hwm,
            "peak_hwm_kb": hwm, "max_sampled_rss_kb": max(sampled), "end_rss_kb": rss,
            "growth_kb": hwm - base_hwm, "all_ok": ok,
            "errors": [r["error"] for r in results if not r["ok"]]}


def bench_memory(st: Settings) -> dict[str, Any]:
    small, big = st.mem_small, st.mem_big
    cases = [("1 x small", small, 1, 0.0), ("1 x big", big, 1, 0.0),
             ("8 x small", small, 8, 0.0), ("8 x big", big, 8, 0.0),
             ("1 x small, slow destination", small, 1, st.mem_slow_rate)]
    say(f"== memory: migproxy VmHWM, fresh daemon per case (small {fmt_size(small)}, "
        f"big {fmt_size(big)}, slow destination {st.mem_slow_rate / 1e6:.0f} MB/s)")
    ld = log_dir()
    sink = SinkProc()
    out: dict[str, Any] = {"cases": {}}
    try:
        for name, size, conc, rate in cases:
            r = _mem_case(sink, ld, st.shape, size, conc, rate)
            out["cases"][name] = r
            say(f"  {name:<30} peak {r['peak_hwm_kb'] / 1024:7.1f} MiB "
                f"(+{r['growth_kb'] / 1024:.1f} over idle) {r['seconds']:6.1f} s"
                f"{'' if r['all_ok'] else '  NOT OK'}")
    finally:
        sink.close()
        shutil.rmtree(ld, ignore_errors=True)
    return out


def print_memory(res: dict[str, Any]) -> None:
    rows = []
    for name, r in res["cases"].items():
        rows.append([name, str(r["streams"]), fmt_size(r["stream_bytes"]),
                     f"{r['baseline_rss_kb'] / 1024:.1f}", f"{r['peak_hwm_kb'] / 1024:.1f}",
                     f"{r['growth_kb'] / 1024:+.1f}", f"{r['max_sampled_rss_kb'] / 1024:.1f}",
                     f"{r['seconds']:.1f}", "yes" if r["all_ok"] else "NO"])
    say(table(rows, ["case", "streams", "each", "idle RSS MiB", "peak (VmHWM) MiB",
                     "growth MiB", "max sampled RSS MiB", "s", "bytes ok"]))


# -- machine ---------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    def run(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    import uvloop

    info: dict[str, Any] = {
        "nproc": os.cpu_count(), "python": platform.python_version(),
        "uvloop": uvloop.__version__, "platform": platform.platform(),
        "lscpu": run(["lscpu"]).splitlines()[:12],
        "mem_total_kb": _meminfo(),
        "loadavg_start": os.getloadavg(),
        "socat": (run(["socat", "-V"]).splitlines() or [""])[1:2] if socat_available()
        else None,
    }
    return info


def commit() -> dict[str, Any]:
    """The checkout's commit (``git rev-parse --short HEAD``) and whether it has changes
    (``git status --porcelain``, untracked files included); None where git cannot tell."""
    def git(*args: str) -> str | None:
        try:
            p = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent.parent,
                               capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout.strip() if p.returncode == 0 else None

    head = git("rev-parse", "--short", "HEAD")
    status = git("status", "--porcelain") if head else None
    return {"commit": head, "dirty": None if status is None else bool(status)}


def header(res: dict[str, Any]) -> str:
    m, c = res["machine"], res["commit"]
    model = next((ln.split(":", 1)[1].strip() for ln in m["lscpu"]
                  if ln.startswith("Model name:")), platform.machine())
    load = " ".join(f"{x:.2f}" for x in m["loadavg_start"])
    rev = "unknown" if c["commit"] is None else \
        c["commit"] + (" (dirty: uncommitted changes)" if c["dirty"] else "")
    return (f"machine: {m['nproc']} CPUs ({model}), {m['mem_total_kb'] / 1024 / 1024:.1f} GiB, "
            f"load {load} (1/5/15 min) at start, Python {m['python']}, uvloop {m['uvloop']}\n"
            f"commit: {rev}\ncommand: {res['command']}")


def _meminfo() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        return int(f.readline().split()[1])


# -- main ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke mode: a few MB, one repetition (for CI; numbers meaningless)")
    ap.add_argument("--json", metavar="FILE", help="write all results as JSON")
    ap.add_argument("--only", metavar="LIST", help=f"comma-separated sections: {SECTIONS}")
    ap.add_argument("--skip", metavar="LIST", help="comma-separated sections to skip")
    ap.add_argument("--size", help="throughput stream size (default 2G; quick 8M)")
    ap.add_argument("--repeat", type=int, help="throughput runs per path (default 5)")
    ap.add_argument("--switch-repeat", type=int, help="TCP switchover runs (default 15)")
    ap.add_argument("--qemu-repeat", type=int, help="QEMU migrations per path (default 5)")
    ap.add_argument("--full-pages", type=int, default=1536,
                    help="pages with data per repeated unit (default 1536)")
    ap.add_argument("--zero-pages", type=int, default=512,
                    help="zero-page records per repeated unit (default 512)")
    ap.add_argument("--zero-ratio", type=float, metavar="P",
                    help="fragmented RAM: each page of the unit is zero with probability P "
                         "(default: runs, 1 full : 3 zero while both last)")
    ap.add_argument("--runs-only", action="store_true",
                    help="throughput: only the long-run shape (default: that, then "
                         "fragmented RAM with p = 0.3)")
    ap.add_argument("--cpus", type=int, default=2, help="ARM cpu sections in the tail")
    ap.add_argument("--tls-mib", type=int, help="MiB per TLS run (default 256; quick 8)")
    ap.add_argument("--no-profile", action="store_true",
                    help="do not profile what limits the missed targets (a few seconds each)")
    a = ap.parse_args(argv)
    st = Settings(a)
    t_start = time.monotonic()
    res: dict[str, Any] = {"command": " ".join([os.path.basename(sys.executable),
                                                 "-m", "bench.run", *(argv or sys.argv[1:])]),
                           "quick": st.quick, "machine": machine(), "commit": commit(),
                           "notes": []}
    notes: list[str] = res["notes"]
    say(header(res))
    timing: dict[str, float] = {}
    res["section_seconds"] = timing
    for section in st.sections:
        t0 = time.monotonic()
        if section == "throughput":
            res["throughput"] = bench_throughput(st, notes, st.shape)
            print_throughput(res["throughput"])
            if st.fragmented is not None:
                res["throughput_fragmented"] = bench_throughput(st, notes, st.fragmented)
                print_throughput(res["throughput_fragmented"])
        elif section == "channels":
            from bench import channels

            res["channels"] = channels.run(st.size // 2 if st.quick else GiB, st.repeat, 4,
                                           4 * MiB if st.quick else 64 * MiB, notes)
            channels.print_result(res["channels"])
        elif section == "tls":
            res["tls"] = bench_tls(a.tls_mib or (8 if st.quick else 256), st.repeat, notes)
        elif section == "records":
            res["records"] = bench_records(st)
            print_records(res["records"])
        elif section == "switchover":
            res["switchover"] = bench_switchover(st, notes)
            print_switchover(res["switchover"])
        elif section == "memory":
            res["memory"] = bench_memory(st)
            print_memory(res["memory"])
        elif section == "qemu":
            from bench import qemu_bench

            res["qemu"] = qemu_bench.run(st.qemu_repeat, quick=st.quick, log=say)
            qemu_bench.print_result(res["qemu"], say)
        timing[section] = round(time.monotonic() - t0, 1)
    res["targets"] = targets(res)
    res["machine"]["loadavg_end"] = os.getloadavg()
    say("== targets (issue 18: its goals; -: older targets, or reported only)")
    say(header(res) + "\nload at the end: "
        + " ".join(f"{x:.2f}" for x in res["machine"]["loadavg_end"]))
    print_targets(res["targets"], say)
    miss = missed(res["targets"])
    if miss and not a.no_profile:
        from bench import limits

        say(f"== what limits the {len(miss)} missed target(s) of issue 18")
        res["limits"] = limits.explain(res, miss, quick=st.quick, say=say)
    res["seconds"] = time.monotonic() - t_start
    for n in notes:
        say(f"note: {n}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
        say(f"results written to {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
