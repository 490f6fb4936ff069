"""Keep the benchmarks from rotting: run them on tiny sizes (no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import engine_micro


def test_engine_micro_benchmark_runs_and_reports(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.json"
    assert engine_micro.main(["--scale", "0.001", "--repeat", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    names = ["zero-page runs", "full-page runs", "interleaved 1:1", "fragmented 30% zero"]
    walks = ["c", "python"] if engine_micro.COMPILED is not None else ["python"]
    assert [(r["name"], r["walk"]) for r in res] == [(n, w) for n in names for w in walks]
    assert res[0]["records"] == 4000
    assert res[len(walks)]["records"] == 100
    # both walks framed the same records of each stream
    for n in names:
        assert len({r["records"] for r in res if r["name"] == n}) == 1
    assert all(r["records_per_s"] > 0 and r["mb_per_s"] > 0 for r in res)
    assert "records/s" in capsys.readouterr().out


def test_splice_floor_runs_and_reports(tmp_path: Path) -> None:
    import pytest

    from bench import splice_floor
    from migproxy.daemon.splice import AVAILABLE

    if not AVAILABLE:
        pytest.skip("splice(2) is Linux only")
    out = tmp_path / "s.json"
    assert splice_floor.main(["--size", "16M", "--repeat", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res) == {"kernel relay", "bare splice"}
    # Each relay moved all 16 MiB (a short transfer raises) and used its thread's CPU.
    assert all(r["mb_s"] > 0 and r["relay_cpu_s_per_gb"] >= 0 for r in res.values())


def test_pump_paths_runs_every_path_and_reports(capsys) -> None:
    import pytest

    from bench import pump_paths
    from migproxy.daemon import pump
    from migproxy.daemon.splice import AVAILABLE

    if not (AVAILABLE and pump.AVAILABLE):
        pytest.skip("the compiled RAM pump and splice(2) are Linux only")
    limits = pump.BUDGET, pump.YIELD_SECONDS, pump.QUIET_SECONDS
    res = pump_paths.compare(8, 1, say=lambda _: None)
    # The daemon's limits are as they were (bench.limits runs this inside bench.run).
    assert limits == (pump.BUDGET, pump.YIELD_SECONDS, pump.QUIET_SECONDS)
    # Every path moved every byte (one() raises when the sink got fewer), ceiling included.
    assert set(res["paths"]) == {"loop", "copy", "splice", "bare"}
    assert res["bytes"] > 7 << 20
    assert all(v["mb_s"] > 0 for v in res["paths"].values())
    pump_paths.print_compare(res, base="bare")
    assert "x bare" in capsys.readouterr().out


def test_relay_cpu_counts_threads_that_ended() -> None:
    """bench's relay CPU reads the process's CPU clock: a thread that burnt CPU and ended
    (as a kernel relay's does once its connection closes) still counts, to the ns."""
    import subprocess
    import sys

    from bench import netio

    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, threading, time\n"
        "def burn():\n"
        "    while time.thread_time() < 0.15: pass\n"
        "t = threading.Thread(target=burn); t.start(); t.join()\n"
        "print('done', flush=True); sys.stdin.read()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "done\n"
        cpu = netio.cpu_seconds(child.pid)
        assert cpu >= 0.15
        # Finer than /proc's clock ticks (a whole number of them: the old reading).
        ticks = cpu * netio._TICK
        assert abs(ticks - round(ticks)) > 1e-6
    finally:
        child.kill()
        child.wait()
