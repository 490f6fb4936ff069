"""Real QEMU: live migrations 10.0.2 -> 10.0.2 of a RAM-dirtying guest, direct and via relays.

The guest (``bench/guest/dirty.S``, built here into ``$LAB_DIR/work/bench`` the way
``scripts/lab-setup.sh`` builds ``tests/guest/tick.S``) fills 300 MiB of its 512 MiB with
non-zero data, leaving about 3 pages in 10 of it zero at random (fragmented memory: full and zero
pages interleaved), and then dirties 16 MiB of it every 10 ms. The source migrates over TCP on
loopback, with ``max-bandwidth`` raised from QEMU's 128 MiB/s default (so the network path,
not the rate limit, decides) and ``downtime-limit`` 50 ms (see below), either straight to the
destination's ``-incoming`` port, or to the bare relay (``testkit/bare_relay.py``: what any
relay costs on the same CPUs), or to a migproxy daemon (default profile: rewriting) in front
of it; the destination preallocates its RAM (``-mem-prealloc``). QEMU's own ``query-migrate``
on the source reports ``total-time`` and ``downtime``; the STOP event of the source and the
RESUME event of the destination (QMP timestamps, one host clock) give the downtime the guest
sees. Each migration must complete, the destination guest must continue (a ``pass N`` line
newer than the source's last one), and through migproxy the daemon must have released a
rewritten tail.

Uses the lab harness (``tests/lab``); skipped with the reason when the lab is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.procs import bench_lab, free_port, popen, stop
from bench.report import table
from testkit.procs import wait_listening

VERSION = "10.0.2"
MEMORY = "512M"
MAX_BANDWIDTH = 8 << 30  # bytes/s; QEMU's default is 128 MiB/s
# QEMU stops the guest once what is left fits in downtime-limit at the bandwidth it measured.
# With its default (300 ms) a faster path is allowed to leave more for the stop phase (up to
# 300 ms x bandwidth), so downtime would compare QEMU's decisions, not the paths. At 50 ms
# both paths iterate until only the 16 MiB hot set is left (it fits at >= 330 MB/s).
DOWNTIME_LIMIT_MS = 50
GUEST_SRC = Path(__file__).resolve().parent / "guest" / "dirty.S"
_PASS_RE = re.compile(r"^pass (\d+)\r?$", re.M)
TOOLS = ("aarch64-linux-gnu-as", "aarch64-linux-gnu-ld", "aarch64-linux-gnu-objcopy")


def build_guest(cache: Path) -> Path:
    """``cache/dirty.bin``, rebuilt when ``dirty.S`` changed."""
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / "dirty.bin"
    stamp = cache / "dirty.src.sha256"
    digest = hashlib.sha256(GUEST_SRC.read_bytes()).hexdigest()
    if out.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return out
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"cannot build the guest: {', '.join(missing)} missing "
                           "(apt-get install binutils-aarch64-linux-gnu)")
    with tempfile.TemporaryDirectory(dir=cache) as d:
        o, elf, b = Path(d, "dirty.o"), Path(d, "dirty.elf"), Path(d, "dirty.bin")
        for argv in (["aarch64-linux-gnu-as", "-o", str(o), str(GUEST_SRC)],
                     ["aarch64-linux-gnu-ld", "-nostdlib", "-z", "noexecstack",
                      "--build-id=none", "-Ttext=0x40080000", "-o", str(elf), str(o)],
                     ["aarch64-linux-gnu-objcopy", "-O", "binary", str(elf), str(b)]):
            subprocess.run(argv, check=True, capture_output=True, timeout=60)
        os.replace(b, out)
    stamp.write_text(digest + "\n")
    return out


def _passes(text: str) -> list[int]:
    return [int(m) for m in _PASS_RE.findall(text)]


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:.0f}s")
        time.sleep(0.05)


def _event_time(q: Any, name: str) -> float | None:
    """Host time (QMP timestamp) of the last event ``name`` the QMP client has seen."""
    q.execute("query-status")  # read what arrived since the last command
    ts = [e["timestamp"] for e in q.qmp.events if e.get("event") == name]
    if not ts:
        return None
    return float(ts[-1]["seconds"]) + float(ts[-1]["microseconds"]) / 1e6


def _guest_downtime(src: Any, dst: Any) -> float | None:
    """From the source's STOP to the destination's RESUME event, in ms (one host clock).

    QEMU's own ``downtime`` is measured on the source and ends when the source has sent
    everything, not when the destination runs; this is what the guest sees.
    """
    t_stop = _event_time(src, "STOP")
    _wait(lambda: _event_time(dst, "RESUME") is not None, 10, "no RESUME on the destination")
    t_resume = _event_time(dst, "RESUME")
    if t_stop is None or t_resume is None:
        return None
    return round((t_resume - t_stop) * 1e3, 1)


class _Daemon:
    """A migproxy daemon (default profile) in front of the destination."""

    def __init__(self, target_port: int, log_path: Path, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = popen(
                [sys.executable, "-m", "migproxy", "--listen", f"127.0.0.1:{self.port}",
                 "--target", f"127.0.0.1:{target_port}", "--metrics",
                 f"127.0.0.1:{self.metrics_port}", "--log-format", "json", *extra],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_listening(self.port, 20, alive=lambda: self.proc.poll() is None)

    def hold_ms(self) -> float | None:
        """How long the engine held the device state back (first held byte to release),
        summed over the migrations so far, from the daemon's metrics; None if unreadable."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback
        try:
            with opener.open(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
                text = r.read().decode("utf-8", "replace")
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("migproxy_device_state_hold_seconds_sum "):
                return round(float(line.split()[1]) * 1e3, 2)
        return None

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def close(self) -> None:
        stop(self.proc)


def _migrate(lab: Any, guest: Path, path: str, timeout: float, work: Path,
             caps: dict[str, bool]) -> dict[str, Any]:
    from migproxy.lab import Qemu

    v = lab.version(VERSION)
    dst_port = free_port()
    src = Qemu(v, kernel=str(guest), run_root=lab.runs_dir, memory=MEMORY, name="bench-src")
    # -mem-prealloc: the destination's RAM is touched at start, before the clock runs. Without
    # it the first touch of 512 MiB during the load (THP faults, and in a VM the hypervisor
    # backing the pages) made total-time vary 4x from run to run on the same path.
    dst = Qemu(v, kernel=str(guest), run_root=lab.runs_dir, memory=MEMORY, incoming="defer",
               name="bench-dst", extra_args=["-mem-prealloc"])
    daemon: _Daemon | None = None
    bare = None
    try:
        src.start()
        t_fill = time.monotonic()
        _wait(lambda: "filled" in src.serial() and _passes(src.serial()), 60,
              "the guest did not fill its RAM")
        fill_s = time.monotonic() - t_fill
        dst.start()
        dst.migrate_incoming(f"tcp:127.0.0.1:{dst_port}", caps)
        wait_listening(dst_port, 20)
        port = dst_port
        if path in DAEMON_ARGS:
            daemon = _Daemon(dst_port, work / f"{path}-{dst_port}.log", DAEMON_ARGS[path])
            port = daemon.port
        elif path == "bare":
            port = free_port()
            bare = popen([sys.executable, "-m", "testkit.bare_relay", "--listen",
                          f"127.0.0.1:{port}", "--target", f"127.0.0.1:{dst_port}"],
                         stdin=subprocess.DEVNULL)
            wait_listening(port, 20, alive=lambda: bare.poll() is None)
        t0 = time.monotonic()
        src.migrate(f"tcp:127.0.0.1:{port}", caps,
                    {"max-bandwidth": MAX_BANDWIDTH, "downtime-limit": DOWNTIME_LIMIT_MS})
        info = src.wait_migration(timeout)
        wall = time.monotonic() - t0
        if info.get("status") != "completed":
            raise RuntimeError(f"migration failed: {info.get('error-desc', info)}; "
                               f"destination: {dst.stderr()[-1000:]}")
        dinfo = dst.wait_incoming(30)
        if dinfo.get("status") != "completed":
            raise RuntimeError(f"destination did not complete: {dinfo}")
        last_src = max(_passes(src.serial()) or [0])
        guest_down = _guest_downtime(src, dst)
        _wait(lambda: any(p > last_src for p in _passes(dst.serial())), 20,
              f"the destination guest did not continue after pass {last_src}")
        ram = info.get("ram", {})
        res: dict[str, Any] = {
            "path": path,
            "total_time_ms": info.get("total-time"), "downtime_ms": info.get("downtime"),
            "guest_downtime_ms": guest_down,
            "setup_time_ms": info.get("setup-time"), "wall_s": wall, "fill_s": fill_s,
            "ram_transferred": ram.get("transferred"), "ram_total": ram.get("total"),
            "ram_normal_pages": ram.get("normal"), "ram_zero_pages": ram.get("duplicate"),
            "dirty_sync_count": ram.get("dirty-sync-count"), "mbps": ram.get("mbps"),
            "guest_continued_after_pass": last_src,
        }
        if daemon is not None:
            _wait(lambda: any(e.get("event") == "closed" for e in daemon.events()), 20,
                  "migproxy did not close the migration")
            ev = daemon.events()
            rel = [e for e in ev if e.get("event") == "tail_released"]
            closed = [e for e in ev if e.get("event") == "closed" and
                      e.get("channel") == "main"]
            res["migproxy"] = {
                "hold_ms": daemon.hold_ms(),
                "tail_released": rel[0] if rel else None,
                "outcome": closed[0].get("outcome") if closed else None,
                "dropped": [e.get("dropped") for e in ev if e.get("event") == "cpu_rewrite"]}
            if not rel or not rel[0].get("rewritten") or res["migproxy"]["outcome"] != \
                    "completed":
                raise RuntimeError(f"migproxy did not rewrite and complete: {ev[-5:]}")
        return res
    finally:
        for q in (src, dst):
            q.close()
        if daemon is not None:
            daemon.close()
        if bare is not None:
            stop(bare)


def run(repeat: int, *, quick: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    try:
        lab, reason = bench_lab(VERSION)
    except ImportError as e:  # pragma: no cover - the harness is part of the repository
        return {"skipped": f"the lab harness cannot be imported: {e}"}
    if reason:
        log(f"== qemu: skipped ({reason})")
        return {"skipped": reason}
    try:
        guest = build_guest(lab.work_dir / "bench")
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        log(f"== qemu: skipped ({e})")
        return {"skipped": str(e)}
    configs = CONFIGS[:1] if quick else CONFIGS
    log(f"== qemu: {VERSION} -> {VERSION}, -m {MEMORY}, guest dirty.S (300 MiB filled, 30 % "
        f"of its pages zero at random, "
        f"16 MiB dirtied every 10 ms), max-bandwidth {MAX_BANDWIDTH >> 30} GiB/s, "
        f"downtime-limit {DOWNTIME_LIMIT_MS} ms, destination -mem-prealloc, "
        f"capabilities: {', '.join(c for c, _ in configs)}; {repeat} migration(s) per path "
        f"({', '.join(QUICK_PATHS if quick else PATHS)}; migproxy_loop: "
        "--ram-pump off), rotating which goes first"
        + ("" if quick else ", after one unrecorded warm-up"))
    out: dict[str, Any] = {"version": VERSION, "memory": MEMORY,
                           "max_bandwidth": MAX_BANDWIDTH, "downtime_limit_ms": DOWNTIME_LIMIT_MS,
                           "configs": {}}
    with tempfile.TemporaryDirectory(prefix="migproxy-bench-qemu-") as d:
        if not quick:
            try:
                _migrate(lab, guest, "direct", 180, Path(d), {})
            except (RuntimeError, TimeoutError, OSError) as e:
                log(f"  warm-up failed: {e}")
        for name, caps in configs:
            out["configs"][name] = _config(lab, guest, caps, name, repeat, quick, Path(d), log)
    return out


# bare: testkit/bare_relay.py; migproxy_loop: migproxy's event-loop path
PATHS = ["direct", "bare", "migproxy", "migproxy_loop"]
QUICK_PATHS = ["direct", "migproxy"]  # --quick (the CI smoke run)
DAEMON_ARGS: dict[str, tuple[str, ...]] = {"migproxy": (),
                                           "migproxy_loop": ("--ram-pump", "off")}
CONFIGS: list[tuple[str, dict[str, bool]]] = [("default", {}),
                                              ("return-path", {"return-path": True})]


def _config(lab: Any, guest: Path, caps: dict[str, bool], name: str, repeat: int,
            quick: bool, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    order = QUICK_PATHS if quick else PATHS
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in order}
    errors: list[str] = []
    for i in range(repeat):
        for key in order[i % len(order):] + order[: i % len(order)]:  # rotate who goes first
            try:
                r = _migrate(lab, guest, key, 60 if quick else 180, work, caps)
            except (RuntimeError, TimeoutError, OSError) as e:
                errors.append(f"{key} #{i + 1}: {e}")
                log(f"  {name:<11} {key:<9} #{i + 1}: FAILED {e}")
                continue
            runs[key].append(r)
            log(f"  {name:<11} {key:<9} #{i + 1}: total {r['total_time_ms']} ms, downtime "
                f"{r['downtime_ms']} ms (guest: {r['guest_downtime_ms']} ms), "
                f"{r['ram_transferred'] / 1e6:.0f} MB sent, "
                f"{r['dirty_sync_count']} dirty syncs, {r['mbps']:.0f} Mbit/s")
    out: dict[str, Any] = {"capabilities": caps, "runs": runs, "errors": errors}
    med: dict[str, dict[str, float]] = {}
    for key, rs in runs.items():
        if rs:
            med[key] = {k: statistics.median(float(r[k]) for r in rs)
                        for k in ("total_time_ms", "downtime_ms", "guest_downtime_ms", "mbps",
                                  "ram_transferred")}
    out["median"] = med
    holds = [r["migproxy"]["hold_ms"] for r in runs.get("migproxy", [])
             if r.get("migproxy", {}).get("hold_ms") is not None]
    if holds:  # the engine's device-state hold, what migproxy adds to the stop phase
        out["migproxy_hold_ms"] = {"median": statistics.median(holds), "all": holds}
    if "direct" in med and "migproxy" in med:
        out["ratio"] = {k: med["migproxy"][f"{k}_ms"] / med["direct"][f"{k}_ms"]
                        for k in ("total_time", "downtime", "guest_downtime")}
    if "bare" in med and "migproxy" in med:
        out["ratio_vs_bare"] = {k: med["migproxy"][f"{k}_ms"] / med["bare"][f"{k}_ms"]
                                for k in ("total_time", "downtime", "guest_downtime")}
    return out


def print_result(res: dict[str, Any], say: Callable[[str], None]) -> None:
    if "skipped" in res:
        say(f"qemu: skipped: {res['skipped']}")
        return
    rows = []
    for name, cfg in res["configs"].items():
        for key, rs in cfg["runs"].items():
            if not rs:
                rows.append([name, key, "failed", "", "", "", "", "", "", ""])
                continue
            m = cfg["median"][key]
            rows.append([name, key, str(len(rs)), f"{m['total_time_ms']:.0f}",
                         " ".join(str(r["total_time_ms"]) for r in rs),
                         f"{m['downtime_ms']:.0f}", " ".join(str(r["downtime_ms"]) for r in rs),
                         f"{m['guest_downtime_ms']:.0f}",
                         " ".join(f"{r['guest_downtime_ms']:.0f}" for r in rs),
                         f"{m['ram_transferred'] / 1e6:.0f}"])
    say(table(rows, ["capabilities", "path", "runs", "total-time ms (median)", "all",
                     "downtime ms (median)", "all", "STOP->RESUME ms (median)", "all",
                     "MB sent"]))
    say("total-time, downtime: QEMU's query-migrate on the source; STOP->RESUME: the source's "
        "STOP event to the destination's RESUME event (QMP timestamps), what the guest sees")
    for name, cfg in res["configs"].items():
        if "ratio" in cfg:
            for key, base in (("ratio", "direct"), ("ratio_vs_bare", "bare relay")):
                if key in cfg:
                    r = cfg[key]
                    say(f"{name}: migproxy / {base} (medians): total-time "
                        f"{r['total_time']:.2f}x, downtime {r['downtime']:.2f}x, "
                        f"STOP->RESUME {r['guest_downtime']:.2f}x")
        hold = cfg.get("migproxy_hold_ms")
        if hold:
            say(f"{name}: migproxy held the device state {hold['median']:.1f} ms (median of "
                "its engine's hold, from the daemon's metrics)")
        for e in cfg["errors"]:
            say(f"  error ({name}): {e}")
