"""Keep the benchmark suite runnable: ``python -m bench.run --quick`` on a few MB.

Nothing about speed is asserted (benchmarks are not tests): only that the suite completes
and writes the JSON it documents. The socat paths are skipped by the suite (and reported
as skipped) when socat is not installed; the QEMU part runs only when the lab is set up.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import run

# The suite boots QEMU guests when the lab is set up (its "qemu" section), and takes tens of
# seconds even without.
pytestmark = [pytest.mark.qemu, pytest.mark.slow]

def test_bench_suite_quick_runs_and_reports(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert run.main(["--quick", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert {"command", "machine", "commit", "throughput", "channels", "tls", "records",
            "switchover", "memory", "qemu", "targets", "notes", "section_seconds"} <= res.keys()
    assert {"nproc", "python", "uvloop", "lscpu", "mem_total_kb", "loadavg_start",
            "loadavg_end"} <= res["machine"].keys()
    assert {"commit", "dirty"} == res["commit"].keys()

    # Both RAM shapes in one run: long runs, then fragmented (each page zero with p = 0.3).
    assert res["throughput"]["shape"]["zero_ratio"] is None
    assert res["throughput_fragmented"]["shape"]["zero_ratio"] == 0.3
    assert res["throughput_fragmented"]["paths"]["migproxy"]["all_ok"]
    tp = res["throughput"]
    paths = {"direct", "splice", "bare", "migproxy_dry_run", "migproxy_none", "migproxy",
             "migproxy_splice", "migproxy_loop"}  # the last two: the RAM pump's other paths
    socat = {"socat", "socat_1m"}
    if shutil.which("socat"):
        assert set(tp["paths"]) == paths | socat
    else:
        assert set(tp["paths"]) == paths
        assert set(tp["skipped"]) == socat
        assert any("socat" in n for n in res["notes"])
    for p in tp["paths"].values():
        assert {"mb_s", "relay_cpu_s_per_gb", "all_ok", "runs"} <= p.keys()
        assert {"median", "p99"} <= p["mb_s"].keys()
    assert {"vs_direct", "vs_socat", "vs_socat_1m", "vs_bare"} <= tp["ratios"]["migproxy"].keys()

    ch = res["channels"]
    for shape in ("single", "parallel"):
        assert {"migproxy", "migproxy_event_loop", "bare", "direct"} <= ch[shape].keys()
        for p in ch[shape].values():
            assert p["all_ok"], p  # every connection's byte count was checked by the sink
            assert {"mb_s", "relay_cpu_s_per_gb"} <= p.keys()
    assert any(t["target"].startswith("untouched channel") for t in res["targets"])
    assert res["tls"]["mb_s"]["migproxy"] > 0
    assert any(t["target"].startswith("TLS on both legs") for t in res["targets"])

    names = [r["name"] for r in res["records"]["results"]]
    assert {"zero-page runs", "full-page runs", "interleaved 1:1", "fragmented 30% zero",
            "mixed records (1 full : 3 zero)"} == set(names)
    assert {r["walk"] for r in res["records"]["results"]} <= {"c", "python"}

    sw = res["switchover"]
    for size in ("30000", "1000000"):
        assert {"final_feed_ms", "final_plus_join_ms"} <= sw["in_process"]["sizes"][size].keys()
        tcp = sw["tcp"]["sizes"][size]
        assert {"burst", "lastbyte"} <= tcp.keys()

    assert {"1 x small", "1 x big", "8 x small", "8 x big",
            "1 x small, slow destination"} == set(res["memory"]["cases"])
    for c in res["memory"]["cases"].values():
        assert {"peak_hwm_kb", "baseline_rss_kb", "growth_kb", "all_ok"} <= c.keys()

    q = res["qemu"]
    assert "skipped" in q or "default" in q["configs"]
    assert all({"target", "value", "goal", "met"} <= t.keys() for t in res["targets"])
    out = capsys.readouterr().out
    assert "targets" in out
    assert f"commit: {res['commit']['commit']}" in out
    # A profile of what limits it for each kind of missed target of issue 18.
    kinds = {t["limit"] for t in res["targets"] if t["issue"] == "18" and t["met"] is False}
    assert kinds <= set(res.get("limits", {}))
    if any(k.startswith("throughput") for k in kinds):  # with the pump's ceiling
        ceiling = res["limits"]["pump_ceiling"]
        assert "skipped" in ceiling or set(ceiling["paths"]) == {"copy", "bare"}
