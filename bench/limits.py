"""What limits each missed target of issue 18: a bounded profile per kind of target.

``bench.run`` calls :func:`explain` with the targets it missed (``--no-profile`` skips it).
A target names its kind in ``limit``; each kind is explained once:

* ``throughput:<section>``: migproxy (rewriting) relays about 3 seconds' worth of that RAM
  shape (at its speed in the run) with py-spy attached (``bench.profile_daemon``): the
  hottest frames and the share of the samples in the event loop (reads), writes, the
  engine and metrics. Then the ceiling (``bench.pump_paths``, once for both shapes): the
  compiled RAM pump alone, no Python, event loop or engine, against the splice relay's
  two ``splice`` calls, alternately: what reading every record header costs any relay.
* ``channel``: the kernel relay against the least a splice relay does, in one process
  (``bench.splice_floor``): what the daemon's relay thread adds to the kernel's cost.
* ``parallel``: from the run itself: how many CPUs each relay kept busy while the main and
  multifd channels ran, beside the machine's CPUs (the sender and the sink share them).
* ``qemu:<capabilities>`` (total time and STOP->RESUME): from the run itself: bytes sent,
  bandwidth and dirty syncs per path, and the engine's device-state hold time (the
  daemon's ``migproxy_device_state_hold_seconds``), beside STOP->RESUME.
* ``tls``: migproxy alone relays about 3 seconds' worth over TLS with py-spy attached.

Nothing here asserts anything; it prints and returns what it found.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Callable
from typing import Any

from bench.report import GiB, MiB, table

PROFILE_SECONDS = 3.0  # about this long per sampled transfer
SAMPLE_RATE = 500  # py-spy samples per second


def explain(res: dict[str, Any], missed: list[dict[str, Any]], *, quick: bool,
            say: Callable[[str], None]) -> dict[str, Any]:
    """Profiles keyed by ``limit``, for the missed targets (each kind once)."""
    out: dict[str, Any] = {}
    for t in missed:
        key = t["limit"]
        if not key or key in out:
            continue
        kind, _, arg = key.partition(":")
        say(f"-- what limits: {t['target']}")
        try:
            if kind == "throughput":
                out[key] = _throughput(res[arg], quick, say)
                if "pump_ceiling" not in out:
                    out["pump_ceiling"] = _pump_ceiling(quick, say)
            elif kind == "channel":
                out[key] = _channel(quick, say)
            elif kind == "parallel":
                out[key] = _parallel(res, say)
            elif kind == "qemu":
                out[key] = _qemu(res["qemu"]["configs"][arg], say)
            elif kind == "tls":
                out[key] = _tls(res["tls"], quick, say)
        except (OSError, RuntimeError, TimeoutError, KeyError) as e:
            out[key] = {"error": f"{type(e).__name__}: {e}"}
            say(f"profile failed: {out[key]['error']}")
    return out


def _bytes_for(seconds: float, mb_s: float | None, low: int, high: int) -> int:
    """About ``seconds`` of transfer at ``mb_s``, within [low, high] bytes."""
    return low if not mb_s else max(low, min(high, int(seconds * mb_s * 1e6)))


def _throughput(tp: dict[str, Any], quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    from bench import profile_daemon
    from bench.streams import Shape

    shape = Shape.from_json(tp["shape"])
    ours = tp["paths"].get("migproxy", {}).get("mb_s", {}).get("median")
    size = 8 * MiB if quick else _bytes_for(PROFILE_SECONDS, ours, 256 * MiB, 16 * GiB)
    with tempfile.TemporaryDirectory(prefix="migproxy-profile-") as d:
        res = profile_daemon.profile("migproxy", shape, size, rate=SAMPLE_RATE, top=10,
                                     out=os.path.join(d, "stacks.txt"))
    profile_daemon.print_profile(res, say)
    return res


def _pump_ceiling(quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    from bench import pump_paths
    from migproxy.daemon import pump, splice

    if not (pump.AVAILABLE and splice.AVAILABLE):
        say("no ceiling: the compiled RAM pump or splice(2) is not available here")
        return {"skipped": "the compiled RAM pump or splice(2) is not available"}
    res = pump_paths.compare(16 if quick else 1024, 1 if quick else 3, ("copy", "bare"),
                             say=say)
    say("the RAM pump alone (read, walk, write; no Python in the way) against the splice "
        "relay (no byte read), one process:")
    pump_paths.print_compare(res, say, base="bare")
    return res


def _channel(quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    from bench import splice_floor
    from migproxy.daemon import splice

    if not splice.AVAILABLE:
        say("splice(2) is not available here")
        return {"skipped": "splice(2) is not available"}
    res = splice_floor.compare(8 * MiB if quick else 2 * GiB, 1 if quick else 3)
    say("the daemon's kernel relay against the least a splice relay does, one process:")
    splice_floor.print_compare(res, say)
    return res


def _parallel(res: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    par = res["channels"]["parallel"]
    rows, out = [], {}
    for k, v in par.items():
        busy = v.get("relay_cpus_busy")
        out[k] = {"mb_s": v["mb_s"]["median"], "relay_cpus_busy": busy,
                  "x_one_channel": v["x_one_channel"]}
        rows.append([v["label"], f"{v['mb_s']['median']:.0f}",
                     "-" if busy is None else f"{busy:.2f}", f"{v['x_one_channel']:.2f}x"])
    say(f"main + {res['channels']['channels']} multifd channels on {os.cpu_count()} CPUs "
        "(sender processes, relay and sink share them):")
    say(table(rows, ["path", "aggregate MB/s", "CPUs busy in the relay", "x one channel"]))
    return out


def _qemu(cfg: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    med = cfg["median"]
    rows = []
    for k in ("direct", "bare", "migproxy"):
        if k in med:
            m = med[k]
            rows.append([k, f"{m['total_time_ms']:.0f}", f"{m['guest_downtime_ms']:.1f}",
                         f"{m['downtime_ms']:.0f}", f"{m['ram_transferred'] / 1e6:.0f}",
                         f"{m['mbps']:.0f}"])
    say(table(rows, ["path", "total-time ms", "STOP->RESUME ms", "downtime ms", "MB sent",
                     "Mbit/s"]))
    runs = cfg["runs"].get("migproxy", [])
    syncs = {k: statistics.median(r["dirty_sync_count"] for r in rs)
             for k, rs in cfg["runs"].items() if rs and all(r.get("dirty_sync_count")
                                                           is not None for r in rs)}
    hold = cfg.get("migproxy_hold_ms")
    out: dict[str, Any] = {"median": med, "dirty_syncs": syncs, "hold_ms": hold}
    say("dirty syncs (median): " + ", ".join(f"{k} {v:.0f}" for k, v in syncs.items()))
    if hold is not None:
        say(f"migproxy held the device state {hold['median']:.1f} ms (median; all: "
            + " ".join(f"{h:.1f}" for h in hold["all"]) + ") of its STOP->RESUME "
            f"{med['migproxy']['guest_downtime_ms']:.1f} ms")
    elif runs:
        say("the engine's hold time was not readable from the daemon's metrics")
    return out


def _tls(tls: dict[str, Any], quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    from bench import profile_daemon, tls_relay

    if profile_daemon.py_spy() is None:
        say("no profile: py-spy is not installed: pip install py-spy")
        return {"skipped": "py-spy is not installed"}
    mib = 8 if quick else _bytes_for(PROFILE_SECONDS, tls["mb_s"].get("migproxy"), 256 * MiB,
                                     4 * GiB) // MiB
    res = tls_relay.run(mib, 1, only=("migproxy",), profile=True)
    prof = res.get("profile", {"skipped": "no profile"})
    profile_daemon.print_profile(prof, say)
    return res
