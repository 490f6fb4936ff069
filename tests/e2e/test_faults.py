"""Faults mid-migration with the return path, through real QEMU (one run of each case of
``bench/faults.py``; the bench runs them 10 times, side by side with the direct path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from migproxy.lab import Lab
from testkit.faults import CASES, DESTINATION, EXPECTED, SOURCE, Case, run_case
from testkit.labs import require_lab

pytestmark = pytest.mark.qemu

RP_CASES = [c for c in CASES if c.return_path and c.path == "migproxy"]


@pytest.fixture(scope="module")
def lab() -> Lab:
    return require_lab(SOURCE, DESTINATION)


@pytest.mark.parametrize("case", RP_CASES, ids=lambda c: c.name)
def test_the_guest_runs_where_the_fault_leaves_it(lab: Lab, blob: Path, tmp_path: Path,
                                                  case: Case) -> None:
    r = run_case(lab, case, blob, tmp_path)
    assert r["guest"] == EXPECTED[case.fault], r
    if case.fault == "term-relay":
        assert r["source_status"] == "completed", r
    else:
        assert r["source_status"] == "failed", r
