"""The version matrix live, through the daemon with ``--destination``: every rollback cell
and one forward cell per destination (cortex-a57, smp 1), without and with the return path.
The guest must continue on the destination, with the daemon's plan logged and no change
the guest could notice."""

from __future__ import annotations

from pathlib import Path

import pytest

from migproxy.lab import Lab, free_port
from testkit.labs import require_lab
from tests.e2e.test_e2e_daemon import Proxy, migrate_live

pytestmark = pytest.mark.qemu

ROLLBACKS = [("10.0.13", "10.0.2"), ("11.1.3", "10.0.2"), ("11.1.3", "10.0.13"),
             ("10.0.2", "7.2.22"), ("10.0.13", "7.2.22"), ("11.1.3", "7.2.22")]
FORWARD = [("7.2.22", "10.0.2"), ("10.0.2", "10.0.13"), ("10.0.2", "11.1.3")]
CELLS = ROLLBACKS + FORWARD


@pytest.fixture(scope="module")
def lab() -> Lab:
    return require_lab("7.2.22", "10.0.2", "10.0.13", "11.1.3")


@pytest.mark.parametrize("return_path", [False, True], ids=["precopy", "return-path"])
@pytest.mark.parametrize(("src", "dst"), CELLS, ids=[f"{a}->{b}" for a, b in CELLS])
def test_live_cell(lab: Lab, tmp_path: Path, src: str, dst: str, return_path: bool) -> None:
    machine = "virt-7.2" if "7.2.22" in (src, dst) else "virt-10.0"
    p = Proxy(tmp_path, free_port(), "--destination", f"qemu-{dst}").start()
    try:
        caps = {"return-path": True} if return_path else None
        migrate_live(lab, src, dst, dst_uri=p.target_uri, via_uri=p.uri, machine=machine,
                     capabilities=caps, context=p.context)
        plans = p.events("cpu_plan")
        assert len(plans) == 1, p.context()
        assert plans[0]["changes"], plans
        assert plans[0]["guest_visible"] == [], plans
        assert f"QEMU {dst}" in plans[0]["destination"]
    finally:
        assert p.stop() == 0, p.context()


@pytest.mark.parametrize(("src", "dst"), [("11.1.3", "10.0.2"), ("10.0.2", "11.1.3")],
                         ids=["rollback", "upgrade"])
def test_live_max_across_features_is_refused_and_the_source_runs_on(
        lab: Lab, tmp_path: Path, src: str, dst: str) -> None:
    """-cpu max with other features on the destination: migproxy refuses (unsafe_rewrite)
    and, with policy abort, forwards none of the device state; with the return path the
    source fails the migration and the guest goes on counting there."""
    p = Proxy(tmp_path, free_port(), "--destination", f"qemu-{dst}", "--policy", "abort").start()
    caps = {"return-path": True}
    try:
        with (
            lab.destination(dst, p.target_uri, capabilities=caps, machine="virt-10.0",
                            cpu="max") as d,
            lab.source(src, machine="virt-10.0", cpu="max") as s,
        ):
            s.migrate(p.uri, caps)
            assert s.wait_migration(60).get("status") == "failed"
            assert d.wait_incoming(30).get("status") != "completed"
            n = s.last_counter()
            assert n is not None
            assert s.status() == "running"
            assert s.wait_ticks(len(s.ticks()) + 2, 10)[-1] > n
        aborts = p.events("abort")
        assert [a["reason"] for a in aborts] == ["unsafe_rewrite"], p.context()
        assert not p.events("tail_released")
    finally:
        assert p.stop() == 0, p.context()
