"""A short run of the fuzz target (testkit/fuzz.py; for hours: scripts/fuzz.sh): every seed
(the real streams of tests/data, as streams and as save images), a few hundred random
mutations of them, and a few hundred coverage-guided inputs when atheris is installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from migproxy.stream import engine as engine_module
from testkit import fuzz

ROOT = Path(__file__).resolve().parent.parent
SEEDS = list(fuzz.seeds())


def test_the_seeds_are_every_real_stream_as_a_stream_and_as_a_save_image() -> None:
    streams = fuzz.seed_streams()
    assert len(streams) >= 18
    assert any(n.startswith("linux-") for n, _ in streams)
    assert len(SEEDS) == 2 * len(streams)


@pytest.mark.parametrize(("name", "data"), SEEDS, ids=[n for n, _ in SEEDS])
def test_every_seed_holds_every_invariant(name: str, data: bytes) -> None:
    fuzz.one_input(data)
    ctl = data[0]
    fuzz.one_input(bytes((ctl | fuzz.COMPARE_WALKS,)) + data[1:])  # both walks, too


def test_random_mutations_of_the_seeds() -> None:
    assert fuzz.run_random(None, 300, 17, [d for _, d in SEEDS]) == 300


def test_the_target_fails_when_the_engine_changes_what_it_passes_through(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Invariant 4 can fail: an engine that drops the last byte it forwards."""
    feed_eof = engine_module.StreamEngine.feed_eof

    def dropping(self: engine_module.StreamEngine) -> engine_module.FeedResult:
        res = feed_eof(self)
        if res.data:
            res.data[-1] = res.data[-1][:-1]
        return res

    monkeypatch.setattr(engine_module.StreamEngine, "feed_eof", dropping)
    name, data = SEEDS[0]
    assert name.endswith(".stream")
    with pytest.raises(fuzz.FuzzFailure, match="passthrough changed the stream"):
        fuzz.one_input(data)


def test_coverage_guided_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "testkit.fuzz", "--corpus", str(tmp_path),
                        "--", "-runs=300"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Done 300 runs" in r.stderr
    assert len(list(tmp_path.iterdir())) >= len(SEEDS)
