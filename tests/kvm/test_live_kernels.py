"""Live migration between two nested KVM hosts through the migproxy daemon on this host:
a kernel upgrade and a rollback, without and with the return path, and a refused rollback
that leaves the source running.

Which pair is an upgrade or a rollback comes from the lab's kernel releases (oldest and
newest), the route's destination is the manifest of what the destination's QEMU saved on
its kernel, and whether a cell is refused comes from the knowledge base's plan, so the
tests follow the mirror's kernels."""

from __future__ import annotations

from pathlib import Path

import pytest

from migproxy.lab import free_port
from migproxy.lab.kvm import LiveResult
from tests.e2e.test_e2e_daemon import Proxy
from tests.kvm.kernel_matrix import Saves, kernels, refused_registers, rewrite_for

pytestmark = pytest.mark.kvm

HOST_CPU = "neoverse-n1"  # the cloud server class; the offline matrix covers max too



def _through(saves: Saves, tmp_path: Path, src: str, dst: str, *, return_path: bool,
             options: tuple[str, ...] = (), postcopy: bool = False
             ) -> tuple[LiveResult, Proxy]:
    dport = free_port()
    p = Proxy(tmp_path, dport, "--destination", str(saves.manifest(dst, HOST_CPU)),
              *options).start()
    try:
        res = saves.lab.live_migrate(src, dst, HOST_CPU, "10.0", via=("127.0.0.1",
                                                                     p.listen_port),
                                     dst_port=dport, return_path=return_path,
                                     postcopy=postcopy)
    finally:
        code = p.stop()
    assert code == 0, p.context()
    return res, p


def _context(res: LiveResult, p: Proxy) -> str:
    return (f"source {res.source_migration} / {res.source_vm_status}, destination "
            f"{res.destination}; source error {res.source_error!r}\n{p.context()}")


def _goes_on(res: LiveResult, p: Proxy) -> None:
    assert res.source_migration.startswith("completed"), _context(res, p)
    d = res.destination
    assert d.running, _context(res, p)
    if res.source_last_tick is not None:
        assert d.first_tick is not None, _context(res, p)
        assert d.first_tick > res.source_last_tick, _context(res, p)


@pytest.mark.parametrize("return_path", [False, True], ids=["precopy", "return-path"])
def test_a_kernel_upgrade_live(saves: Saves, tmp_path: Path, return_path: bool) -> None:
    """Oldest kernel -> newest (Debian 12's 6.1 -> the backports kernel): the daemon
    plans with knowledge-base rules only, logs each change with its reason, and the guest
    goes on on the destination."""
    ks = kernels(saves.lab)
    src, dst = ks[0], ks[-1]
    res, p = _through(saves, tmp_path, src, dst, return_path=return_path)
    _goes_on(res, p)
    plans = p.events("cpu_plan")
    assert len(plans) == 1, _context(res, p)
    assert plans[0]["changes"], _context(res, p)
    assert plans[0]["guest_visible"] == [], plans
    assert saves.lab.kernel(dst).release in plans[0]["destination"]


def test_a_kernel_rollback_with_an_opt_in_live(saves: Saves, tmp_path: Path) -> None:
    """Newest -> the middle kernel, with the return path: what the plan refuses by
    default (the knowledge base says which registers the guest would see change) goes
    through when the route opts in for exactly those; each is logged as guest-visible."""
    ks = kernels(saves.lab)
    src, dst = ks[-1], ks[-2]
    stream = saves.get(src, HOST_CPU).streams["10.0"]
    plan = rewrite_for(stream, saves.manifest(dst, HOST_CPU), tmp_path / "plan.mig")
    named = refused_registers(plan.refusal)
    assert plan.out is None, "expected a refused rollback: " + str(plan.changes)
    assert named, "expected a refused rollback: " + str(plan.changes)
    opts: tuple[str, ...] = ()
    for reg in sorted(named):
        opts += ("--allow-guest-visible", f"0x{reg:016x}")
    res, p = _through(saves, tmp_path, src, dst, return_path=True, options=opts)
    _goes_on(res, p)
    (cpu_plan,) = p.events("cpu_plan")
    assert len(cpu_plan["guest_visible"]) == len(named), cpu_plan


@pytest.mark.parametrize("policy", ["abort", "passthrough"])
def test_a_refused_rollback_leaves_the_source_running(saves: Saves, tmp_path: Path,
                                                      policy: str) -> None:
    """Newest -> oldest, with the return path and no opt-in: migproxy refuses (naming the
    registers) as soon as it has the cpu section; with ``abort`` the destination never gets
    the device state, with ``passthrough`` it gets it untouched and rejects it. Either way
    the source's migration fails and its guest keeps counting there (a direct migration
    without the return path leaves it paused, 'completed')."""
    ks = kernels(saves.lab)
    src, dst = ks[-1], ks[0]
    res, p = _through(saves, tmp_path, src, dst, return_path=True,
                      options=("--policy", policy))
    assert not res.source_migration.startswith("completed"), _context(res, p)
    assert res.source_running, _context(res, p)
    assert not res.destination.running, _context(res, p)
    refusals = [e for e in p.events() if e.get("reason") == "unsafe_rewrite"]
    assert refusals, p.context()
