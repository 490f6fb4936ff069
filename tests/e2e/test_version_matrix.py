"""The version matrix with real QEMU: every ordered pair of the lab's four builds,
cortex-a57, smp 1 and 2, a fresh stream of the source (a running guest, not the paused
capture the manifests came from) rewritten offline for the destination's shipped manifest
set, with knowledge-base rules only. Each cell: the rewritten stream loads and the guest
continues with the next tick; the unmodified stream does not load (the negative control).

For -cpu max: the same-feature pair (10.0.2 <-> 10.0.13) is green; every other pair is
refused by migproxy (reason unsafe_rewrite), before anything is written.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from migproxy.arm.destination import Destination
from migproxy.arm.events import CpuReconciled
from migproxy.lab import Lab
from migproxy.stream.engine import Mode, StreamEngine
from migproxy.stream.events import Aborted, Event
from migproxy.tools.offline import rewrite_file
from testkit.labs import require_lab

pytestmark = pytest.mark.qemu

VERSIONS = ["7.2.22", "10.0.2", "10.0.13", "11.1.3"]
PAIRS = [(a, b) for a, b in itertools.permutations(VERSIONS, 2)]


def machine_for(a: str, b: str) -> str:
    return "virt-7.2" if "7.2.22" in (a, b) else "virt-10.0"


@pytest.fixture(scope="module")
def lab() -> Lab:
    return require_lab(*VERSIONS)


def rewrite(src: Path, dest: str, out: Path) -> tuple[StreamEngine, list[Event]]:
    """``migproxy rewrite SRC OUT --destination qemu-DEST``: OUT only if it was rewritten."""
    run = rewrite_file(src, out, None, destination=Destination.load(f"qemu-{dest}"))
    return run.engine, run.events


@pytest.mark.parametrize("smp", [1, 2])
@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_cortex_a57_cell(lab: Lab, tmp_path: Path, src: str, dst: str, smp: int) -> None:
    machine = machine_for(src, dst)
    s = lab.stream(src, machine, "cortex-a57", smp)
    out = tmp_path / "rewritten.mig"
    eng, events = rewrite(s.path, dst, out)
    assert eng.mode == Mode.DONE, [e for e in events if isinstance(e, Aborted)]
    plans = [e for e in events if isinstance(e, CpuReconciled)]
    assert len(plans) == smp
    assert all(not p.guest_visible for p in plans)
    r = lab.load_stream(dst, out, machine, "cortex-a57", smp, expect_after=s.last_tick)
    assert r.ok, (r.error, [p.changes for p in plans])
    control = lab.load_stream(dst, s.path, machine, "cortex-a57", smp,
                              expect_after=s.last_tick)
    assert not control.ok, "the unmodified stream loads: the cell proves nothing"


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_max_cell(lab: Lab, tmp_path: Path, src: str, dst: str) -> None:
    machine = machine_for(src, dst)
    s = lab.stream(src, machine, "max", 1)
    out = tmp_path / "rewritten.mig"
    eng, events = rewrite(s.path, dst, out)
    if {src, dst} == {"10.0.2", "10.0.13"}:
        assert eng.mode == Mode.DONE
        r = lab.load_stream(dst, out, machine, "max", 1, expect_after=s.last_tick)
        assert r.ok, r.error
        return
    stop = [e for e in events if isinstance(e, Aborted)]
    assert eng.mode == Mode.ABORTED, stop
    assert stop[0].reason == "unsafe_rewrite", stop
    assert not out.exists()
