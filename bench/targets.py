"""The targets of the benchmark suite, computed from its result dict, with their verdicts.

Issue 18's goals (every ratio from one run, both RAM shapes) are marked ``issue="18"`` and
name what explains a miss (``limit``: the key of a profile in ``bench.limits``); older
targets keep their goals, or are only reported (``met`` None). Pure functions of the result
dicts: ``tests/bench/test_targets.py`` checks the verdicts at the goal boundaries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

# Goals are compared with this slack, so that a value exactly at its goal (which a float
# difference such as 23.1 - 20.1 misses by 2e-15) meets it.
EPS = 1e-9

ISSUE = "18"
RAM_SHAPES = (("throughput", "long runs"), ("throughput_fragmented", "fragmented RAM"))


class Target(NamedTuple):
    name: str
    value: float | None
    goal: str
    met: bool | None  # None: reported only, or not measurable in this run
    issue: str = ""  # "18": a goal of issue 18
    limit: str = ""  # what explains a miss: a profile key of bench.limits
    detail: str = ""


def at_least(v: float | None, goal: float) -> bool | None:
    return None if v is None else v >= goal - EPS


def at_most(v: float | None, goal: float) -> bool | None:
    return None if v is None else v <= goal + EPS


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _mb_detail(paths: dict[str, Any], keys: tuple[str, ...]) -> str:
    short = {"socat_1m": "socat -b 1M"}
    return ", ".join(f"{short.get(k, k)} {paths[k]['mb_s']['median']:.0f} MB/s"
                     for k in keys if k in paths)


def _median(paths: dict[str, Any], key: str) -> float | None:
    p = paths.get(key)
    return None if p is None else float(p["mb_s"]["median"])


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the sections that ran, with its verdict (as JSON-ready dicts)."""
    found: list[Target] = []
    sections: list[Callable[[dict[str, Any]], list[Target]]] = [
        throughput_targets, _channels, tls_targets, _record_targets, _switchover_targets,
        _memory_targets, qemu_targets]
    for section in sections:
        found.extend(section(res))
    return as_dicts(found)


def as_dicts(ts: list[Target]) -> list[dict[str, Any]]:
    """JSON-ready: ``target`` (the name), value, goal, met, issue, limit, detail."""
    return [{"target": t.name, **{k: v for k, v in t._asdict().items() if k != "name"}}
            for t in ts]


def missed(ts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets of issue 18 that were measured and missed."""
    return [t for t in ts if t["issue"] == ISSUE and t["met"] is False]


# -- throughput (main channel, rewritten) ----------------------------------------------------

def throughput_targets(res: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    for key, ram in RAM_SHAPES:
        tp = res.get(key)
        if not tp:
            continue
        zr = tp["shape"].get("zero_ratio")
        if zr is not None:
            ram = f"fragmented RAM, p zero {zr}"
        paths = tp["paths"]
        ours = _median(paths, "migproxy")
        rivals = {label: v for label, v in (("socat -b 1M", _median(paths, "socat_1m")),
                                            ("splice relay", _median(paths, "splice")))
                  if v is not None}
        if rivals:
            best = max(rivals.values())
            detail = ", ".join(f"{k} {v:.0f} MB/s" for k, v in rivals.items())
            detail = f"migproxy {ours:.0f} MB/s; {detail}" if ours is not None else detail
        else:
            best, detail = None, "socat and the splice relay did not run"
        v = _ratio(ours, best)
        out.append(Target(f"main channel rewritten, migproxy / faster of socat -b 1M and "
                          f"splice relay ({ram})", v, ">= 1.0x", at_least(v, 1.0), ISSUE,
                          f"throughput:{key}", detail))
        vb = _ratio(ours, _median(paths, "bare"))
        out.append(Target(f"main channel rewritten, migproxy / bare relay ({ram})", vb,
                          "(reported)", None))
    return out


# -- channels migproxy does not parse --------------------------------------------------------

def _channels(res: dict[str, Any]) -> list[Target]:
    ch = res.get("channels")
    return channel_targets(ch) if ch else []


def channel_targets(ch: dict[str, Any]) -> list[Target]:
    single, parallel = ch["single"], ch["parallel"]
    ours = single.get("migproxy")
    out: list[Target] = []
    v = _ratio(_median(single, "migproxy"), _median(single, "socat_1m"))
    out.append(Target("untouched channel, migproxy / socat -b 1M (MB/s)", v, ">= 1.0x",
                      at_least(v, 1.0), ISSUE, "channel",
                      _mb_detail(single, ("migproxy", "socat_1m"))))
    floor = single.get("splice")
    cpu = None if ours is None else ours["relay_cpu_s_per_gb"]
    c = _ratio(cpu, None if floor is None else floor["relay_cpu_s_per_gb"])
    out.append(Target("untouched channel, migproxy CPU/GB / splice floor's", c, "<= 1.05x",
                      at_most(c, 1.05), ISSUE, "channel",
                      "" if c is None else f"migproxy {cpu:.3f} s/GB, splice relay "
                      f"{floor['relay_cpu_s_per_gb']:.3f} s/GB"))
    n = ch["channels"]
    p = _ratio(_median(parallel, "migproxy"), _median(parallel, "direct"))
    out.append(Target(f"main + {n} multifd channels, migproxy / direct aggregate", p,
                      ">= 0.95x", at_least(p, 0.95), ISSUE, "parallel",
                      _mb_detail(parallel, ("migproxy", "direct"))))
    s = _ratio(cpu, None if "socat_1m" not in single
               else single["socat_1m"]["relay_cpu_s_per_gb"])
    out.append(Target("untouched channel, migproxy CPU/GB / socat -b 1M's", s, "(reported)",
                      None))
    x = parallel.get("migproxy", {}).get("x_one_channel")
    out.append(Target(f"main + {n} multifd channels, migproxy aggregate / one channel", x,
                      "(reported)", None))
    return out


# -- TLS on both legs ------------------------------------------------------------------------

def tls_targets(res: dict[str, Any]) -> list[Target]:
    tls = res.get("tls")
    if not tls or "mb_s" not in tls:
        return []
    mb = tls["mb_s"]
    v = _ratio(mb.get("migproxy"), mb.get("socat"))
    detail = ", ".join(f"{k} {x:.0f} MB/s" for k, x in mb.items() if x is not None)
    runs = tls.get("all", {})
    if runs.get("migproxy") and runs.get("socat"):  # the medians' verdict; best of each too
        detail += (f" (medians; best {max(runs['migproxy']):.0f} against "
                   f"{max(runs['socat']):.0f})")
    return [Target("TLS on both legs, migproxy / socat with OpenSSL (MB/s)", v, ">= 1.0x",
                   at_least(v, 1.0), ISSUE, "tls", detail)]


# -- real QEMU -------------------------------------------------------------------------------

def qemu_targets(res: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    for name, cfg in (res.get("qemu") or {}).get("configs", {}).items():
        med = cfg.get("median", {})
        ours, bare, direct = med.get("migproxy"), med.get("bare"), med.get("direct")
        if ours is None or bare is None:
            continue
        t = _ratio(ours["total_time_ms"], bare["total_time_ms"])
        out.append(Target(f"QEMU total-time, migproxy / bare relay ({name})", t, "<= 1.02x",
                          at_most(t, 1.02), ISSUE, f"qemu:{name}",
                          f"{ours['total_time_ms']:.0f} / {bare['total_time_ms']:.0f} ms"))
        added = ours["guest_downtime_ms"] - bare["guest_downtime_ms"]
        out.append(Target(f"QEMU STOP->RESUME, migproxy - bare relay, ms ({name})", added,
                          "<= +3 ms", at_most(added, 3.0), ISSUE, f"qemu:{name}",
                          f"{ours['guest_downtime_ms']:.1f} - "
                          f"{bare['guest_downtime_ms']:.1f} ms (medians)"))
        d = ours["downtime_ms"] - bare["downtime_ms"]
        out.append(Target(f"QEMU downtime (source), migproxy - bare relay, ms ({name})", d,
                          "(reported)", None))
        if direct is not None:
            r = _ratio(ours["total_time_ms"], direct["total_time_ms"])
            out.append(Target(f"QEMU total-time, migproxy / direct ({name})", r,
                              "(reported)", None))
    return out


# -- older targets (their own goals) ---------------------------------------------------------

def _record_targets(res: dict[str, Any]) -> list[Target]:
    rec = res.get("records")
    if not rec:
        return []
    z = next(r for r in rec["results"] if r["name"].startswith("zero"))
    out = [Target("engine zero-page records/s", z["records_per_s"], ">= 5,000,000",
                  at_least(z["records_per_s"], 5e6))]
    for walk, goal in (("c", 8000.0), ("python", 4000.0)):
        fr = next((r for r in rec["results"] if r["name"].startswith("fragmented")
                   and r.get("walk") == walk), None)
        if fr:
            out.append(Target(f"engine alone, fragmented RAM, {walk} walk (MB/s of stream)",
                              fr["mb_per_s"], f">= {goal:,.0f}", at_least(fr["mb_per_s"], goal)))
    mx = next((r for r in rec["results"] if r["name"].startswith("mixed")), None)
    if mx:
        out.append(Target("engine mixed records/s (1 full : 3 zero)", mx["records_per_s"],
                          "(reported)", None))
    return out


def _switchover_targets(res: dict[str, Any]) -> list[Target]:
    sw = res.get("switchover")
    if not sw:
        return []
    out: list[Target] = []
    one = sw["tcp"]["sizes"].get("1000000")
    if one and "added_ms" in one["burst"]:
        v = one["burst"]["added_ms"]["median"]
        out.append(Target("hold-back added for a 1 MB tail (TCP, burst, median)", v, "<= 5 ms",
                          at_most(v, 5)))
    ip = sw["in_process"]["sizes"].get("1000000")
    if ip:
        v = ip["final_plus_join_ms"]["median"]
        out.append(Target("engine final feed + join for a 1 MB tail (median)", v, "<= 5 ms",
                          at_most(v, 5)))
    return out


def _memory_targets(res: dict[str, Any]) -> list[Target]:
    mem = res.get("memory")
    if not mem:
        return []
    out: list[Target] = []
    c = mem["cases"]
    for a, b in (("1 x small", "1 x big"), ("8 x small", "8 x big")):
        if a in c and b in c:
            d = (c[b]["peak_hwm_kb"] - c[a]["peak_hwm_kb"]) / 1024
            tol = max(16.0, 0.1 * c[a]["peak_hwm_kb"] / 1024)
            out.append(Target(f"peak RSS {b} minus {a} (MiB)", d, f"<= {tol:.0f} MiB (flat)",
                              at_most(d, tol)))
    return out


# -- output ----------------------------------------------------------------------------------

def verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "-"}[met]


def print_targets(ts: list[dict[str, Any]], say: Callable[[str], None] = print) -> None:
    from bench.report import table

    rows = []
    for d in ts:
        v = d["value"]
        val = "-" if v is None else (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.2f}")
        rows.append([d["target"], val, d["goal"], verdict(d["met"]), d["issue"] or "-",
                     d["detail"]])
    say(table(rows, ["target", "value", "goal", "verdict", "issue", "measured"]))
