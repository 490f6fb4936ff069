"""Keep the benchmarks from rotting: run them on tiny sizes (no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import engine_micro


def test_engine_micro_benchmark_runs_and_reports(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.json"
    assert engine_micro.main(["--scale", "0.001", "--repeat", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    assert [r["name"] for r in res] == ["zero-page records", "full-page records"]
    assert res[0]["records"] == 4000 and res[1]["records"] == 100
    assert all(r["records_per_s"] > 0 and r["mb_per_s"] > 0 for r in res)
    assert "records/s" in capsys.readouterr().out
