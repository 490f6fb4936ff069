"""Channels migproxy does not parse: one multifd channel, and a multifd-shaped migration.

    python -m bench.channels [--size 1G] [--repeat 5] [--channels 4] [--main-size 64M]
                             [--quick] [--json FILE]

(also the ``channels`` section of ``python -m bench.run``.)

* ``single``: one multifd channel (its first packet's magic, then random data) from a
  sender to the sink through each path: direct, socat (defaults and ``-b 1048576``), the
  splice relay (``bench.splice_floor``: the kernel floor), the bare uvloop relay,
  migproxy (the kernel relay, splice(2)) and migproxy with ``--splice-threads 0`` (the
  event-loop path). MB/s and the relay's CPU seconds per GB.
* ``parallel``: a multifd-shaped migration: one synthetic main channel (rewritten by
  migproxy) and ``--channels`` multifd channels at once, as QEMU opens them (main first).
  Aggregate MB/s over all bytes, from the common start time of the senders (each has
  connected by then) to the sink's last byte,
  and the relay's CPU seconds per GB; "x one channel" is the aggregate over the same
  path's single-channel median (more than 1: a second core at work).

Sender, relay and sink are separate processes sharing the machine's CPUs; every path runs
in the same round robin, so the ratios compare like with like. The sink checks each
connection's byte count. Benchmarks are not tests: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.procs import (
    PATHS,
    Relay,
    RelayPath,
    SinkProc,
    finish_sender,
    log_dir,
    popen,
    runnable_paths,
    start_sender,
)
from bench.report import GiB, MiB, fmt_size, parse_size, summary, table
from bench.streams import Plan, Shape
from migproxy.stream import wire

# The first bytes of a multifd channel: magic, version, a uuid, the channel id.
MULTIFD_HEAD = (wire.MULTIFD_MAGIC_BYTES + struct.pack(">I", 1) + bytes(16) + bytes([0])
                + bytes(43))
EVENT_LOOP = RelayPath("migproxy_event_loop", "migproxy --splice-threads 0 (event loop)",
                       "migproxy", ("--splice-threads", "0"), "rewrite")
CHANNEL_PATHS = {p.key: p for p in (
    PATHS["direct"], PATHS["socat"], PATHS["socat_1m"], PATHS["splice"], PATHS["bare"],
    RelayPath("migproxy", "migproxy (kernel relay, splice)", "migproxy", (), "rewrite"),
    EVENT_LOOP)}


def say(msg: str = "") -> None:
    print(msg, flush=True)


START_DELAY = 2.0  # seconds for every sender of a parallel run to start before the go


def start_raw(port: int, size: int, start_at: float | None = None) -> subprocess.Popen[str]:
    at = [] if start_at is None else ["--start-at", repr(start_at)]
    return popen([sys.executable, "-m", "bench.netio", "send-raw", str(port), str(size),
                  "--head", MULTIFD_HEAD.hex(), *at],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _single(sink: SinkProc, relay: Relay, size: int) -> dict[str, Any]:
    sink.expect(len=size)
    cpu0 = relay.cpu()
    snd = finish_sender(start_raw(relay.port, size), 60 + size / 20e6)
    r = sink.result(30)
    cpu1 = relay.cpu()
    sec = r["t_last"] - snd["t_start"]
    return {"mb_s": size / sec / 1e6, "seconds": sec, "ok": r["ok"], "error": r["error"],
            "relay_cpu_s": None if cpu0 is None or cpu1 is None else cpu1 - cpu0}


def _parallel(sink: SinkProc, relay: Relay, size: int, channels: int, plan: Plan,
              shape_json: str, repeats: int) -> dict[str, Any]:
    main_len = plan.total(repeats) + plan.expected(relay.path.mode).delta
    sink.expect(len=-1)  # lengths differ per connection: checked below
    # Every sender starts (and connects: the main channel first, as QEMU does) before a
    # common start time, so process start-up is not measured.
    go = time.monotonic() + START_DELAY
    cpu0 = relay.cpu()
    main = start_sender(relay.port, shape_json, repeats, start_at=go)
    raws = [start_raw(relay.port, size, go) for _ in range(channels)]
    timeout = 60 + (size * channels + main_len) / 20e6
    sent = [finish_sender(main, timeout)] + [finish_sender(p, timeout) for p in raws]
    got = [sink.result(30) for _ in range(channels + 1)]
    cpu1 = relay.cpu()
    total = sum(s["bytes"] for s in sent)
    sec = max(r["t_last"] for r in got) - go
    want = sorted([main_len] + [size] * channels)
    ok = all(r["ok"] for r in got) and sorted(r["bytes"] for r in got) == want
    return {"mb_s": total / sec / 1e6, "seconds": sec, "bytes": total, "ok": ok,
            "error": None if ok else f"byte counts {sorted(r['bytes'] for r in got)}, "
                                     f"expected {want}",
            "relay_cpu_s": None if cpu0 is None or cpu1 is None else cpu1 - cpu0}


def _summarise(runs: list[dict[str, Any]], gb_per_run: float) -> dict[str, Any]:
    cpu = [r["relay_cpu_s"] / gb_per_run for r in runs if r["relay_cpu_s"] is not None]
    # CPUs the relay kept busy while it ran (relay CPU seconds over the run's seconds).
    cores = [r["relay_cpu_s"] / r["seconds"] for r in runs if r["relay_cpu_s"] is not None]
    return {"mb_s": summary([r["mb_s"] for r in runs]),
            "relay_cpu_s_per_gb": statistics.median(cpu) if cpu else None,
            "relay_cpus_busy": statistics.median(cores) if cores else None,
            "all_ok": all(r["ok"] for r in runs), "runs": runs}


def run(size: int, repeat: int, channels: int, main_size: int,
        notes: list[str]) -> dict[str, Any]:
    keys, skipped = runnable_paths(list(CHANNEL_PATHS), notes)
    shape = Shape()
    plan = Plan(shape)
    repeats = plan.repeats_for(main_size)
    shape_json = json.dumps(shape.to_json())
    per = size // channels
    say(f"== channels: one multifd channel of {fmt_size(size)}; a multifd-shaped migration "
        f"of a {fmt_size(plan.total(repeats))} main channel + {channels} x {fmt_size(per)} "
        f"multifd channels; {repeat} run(s) per path, round robin")
    ld = log_dir()
    sink = SinkProc()
    relays: dict[str, Relay] = {}
    single: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    parallel: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    try:
        for k in keys:
            relays[k] = Relay(CHANNEL_PATHS[k], sink.port, ld)
        for rep in range(repeat):
            for k in keys:
                s = _single(sink, relays[k], size)
                single[k].append(s)
                p = _parallel(sink, relays[k], per, channels, plan, shape_json, repeats)
                parallel[k].append(p)
                cpu = "" if s["relay_cpu_s"] is None else \
                    f" {s['relay_cpu_s'] / (size / 1e9):.3f} CPU s/GB"
                say(f"  run {rep + 1}/{repeat} {k:<20} single {s['mb_s']:6.0f} MB/s{cpu}"
                    f"{'' if s['ok'] else ' NOT OK'}   parallel {p['mb_s']:6.0f} MB/s"
                    f"{'' if p['ok'] else ' NOT OK: ' + str(p['error'])}")
    finally:
        for rl in relays.values():
            rl.close()
        sink.close()
        shutil.rmtree(ld, ignore_errors=True)
    res_single = {k: {"label": CHANNEL_PATHS[k].label, **_summarise(single[k], size / 1e9)}
                  for k in keys}
    res_parallel = {k: {"label": CHANNEL_PATHS[k].label,
                        **_summarise(parallel[k], parallel[k][0]["bytes"] / 1e9)}
                    for k in keys}
    for k in keys:
        one = res_single[k]["mb_s"]["median"]
        res_parallel[k]["x_one_channel"] = res_parallel[k]["mb_s"]["median"] / one
    ratios: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, res in (("single", res_single), ("parallel", res_parallel)):
        ratios[name] = {}
        for k in keys:
            r: dict[str, float | None] = {}
            for b in ("direct", "socat_1m", "splice", "bare"):
                if b not in res:
                    r[f"vs_{b}"] = r[f"cpu_vs_{b}"] = None
                    continue
                r[f"vs_{b}"] = res[k]["mb_s"]["median"] / res[b]["mb_s"]["median"]
                c, cb = res[k]["relay_cpu_s_per_gb"], res[b]["relay_cpu_s_per_gb"]
                r[f"cpu_vs_{b}"] = None if c is None or not cb else c / cb
            ratios[name][k] = r
    return {"single_bytes": size, "channels": channels, "multifd_bytes_each": per,
            "main_bytes": plan.total(repeats), "runs_per_path": repeat,
            "single": res_single, "parallel": res_parallel, "ratios": ratios,
            "skipped": skipped}


def print_result(res: dict[str, Any]) -> None:
    for name, title in (("single", "one multifd channel"),
                        ("parallel", f"main + {res['channels']} multifd channels (aggregate)")):
        say(f"-- {title}")
        rows = []
        for k, v in res[name].items():
            r = res["ratios"][name][k]

            def x(key: str, r: dict[str, float | None] = r) -> str:
                val = r.get(key)
                return "-" if val is None else f"{val:.2f}x"
            cpu = v["relay_cpu_s_per_gb"]
            row = [v["label"], f"{v['mb_s']['median']:.0f}",
                   f"{v['mb_s']['min']:.0f}-{v['mb_s']['max']:.0f}", x("vs_direct"),
                   x("vs_socat_1m"), x("vs_splice"), x("vs_bare"),
                   "-" if cpu is None else f"{cpu:.2f}", x("cpu_vs_socat_1m"),
                   x("cpu_vs_splice")]
            if name == "parallel":
                row.append(f"{v['x_one_channel']:.2f}x")
            row.append("yes" if v["all_ok"] else "NO")
            rows.append(row)
        head = ["path", "MB/s (median)", "range", "x direct", "x socat-1M", "x splice",
                "x bare", "relay CPU s/GB", "CPU x socat-1M", "CPU x splice"]
        if name == "parallel":
            head.append("x one channel")
        say(table(rows, [*head, "bytes ok"]))
    for k, why in res["skipped"].items():
        say(f"{CHANNEL_PATHS[k].label}: skipped: {why}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.channels",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--size", default=None, help="bytes per run (default 1G; quick 16M)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per path (default 5)")
    ap.add_argument("--channels", type=int, default=4, help="multifd channels (default 4)")
    ap.add_argument("--main-size", default=None,
                    help="main channel of the parallel run (default 64M; quick 4M)")
    ap.add_argument("--quick", action="store_true", help="smoke mode (numbers meaningless)")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)
    size = parse_size(a.size) if a.size else (16 * MiB if a.quick else GiB)
    main_size = parse_size(a.main_size) if a.main_size else (4 * MiB if a.quick else 64 * MiB)
    notes: list[str] = []
    res = run(size, a.repeat or (1 if a.quick else 5), a.channels, main_size, notes)
    print_result(res)
    from bench.targets import as_dicts, channel_targets, print_targets

    print_targets(as_dicts(channel_targets(res)), say)
    for n in notes:
        say(f"note: {n}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
