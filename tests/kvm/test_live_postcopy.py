"""Postcopy under real KVM (nested), live through the migproxy daemon: the package starts
with ``arm_gicv3`` (per-vCPU arrays with no count on the wire) and ``arm_gicv3_its``;
migproxy frames them by their layouts (migproxy/arm/package_layouts.py), rewrites the cpu
section for the destination's kernel and adjusts the package's length. A kernel upgrade
goes through; a refused rollback is refused at the package, before ``POSTCOPY_RUN``, so
the destination never runs the guest (the source, measured, ends postcopy-paused as on the
direct path). Negative control: the same rollback directly."""

from __future__ import annotations

from pathlib import Path

import pytest

from migproxy.lab.kvm import LiveResult
from tests.e2e.test_e2e_daemon import Proxy
from tests.kvm.kernel_matrix import Saves, kernels
from tests.kvm.test_live_kernels import HOST_CPU, _context, _goes_on, _through

pytestmark = pytest.mark.kvm


def _postcopy(saves: Saves, tmp_path: Path, src: str, dst: str,
              options: tuple[str, ...] = ()) -> tuple[LiveResult, Proxy]:
    return _through(saves, tmp_path, src, dst, return_path=True, options=options,
                    postcopy=True)


def test_a_kernel_upgrade_with_postcopy_live(saves: Saves, tmp_path: Path) -> None:
    """Oldest kernel -> newest with postcopy: the package (GICv3 first) is framed, its cpu
    section rewritten, and the guest goes on on the destination."""
    ks = kernels(saves.lab)
    res, p = _postcopy(saves, tmp_path, ks[0], ks[-1])
    assert res.postcopy_from.startswith("active"), _context(res, p)
    _goes_on(res, p)
    (plan,) = p.events("cpu_plan")
    assert plan["changes"], plan
    released = p.events("tail_released")
    assert len(released) == 1, p.context()
    assert released[0]["rewritten"], p.context()
    assert not p.events("passthrough"), p.context()


@pytest.mark.parametrize("policy", ["abort", "passthrough"])
def test_a_refused_rollback_with_postcopy_never_runs_the_destination(
        saves: Saves, tmp_path: Path, policy: str) -> None:
    """Newest -> oldest with postcopy, no opt-in: refused at the package (``abort``: never
    forwarded; ``passthrough``: forwarded untouched, the destination rejects the cpu
    section), before ``POSTCOPY_RUN``, so the destination never runs the guest. The source
    had already sent the whole package and switched to postcopy: measured, it ends
    ``postcopy-paused`` with its guest stopped, as on the direct path, or (passthrough,
    once in two runs) ``failed`` with its guest running: the refusal comes from the
    package, and the source switches as soon as its write of the package succeeds."""
    ks = kernels(saves.lab)
    res, p = _postcopy(saves, tmp_path, ks[-1], ks[0], ("--policy", policy))
    assert res.postcopy_from.startswith("active"), _context(res, p)
    assert not res.source_migration.startswith("completed"), _context(res, p)
    assert res.source_migration.startswith(("postcopy-paused", "failed")), _context(res, p)
    assert not res.destination.running, _context(res, p)
    assert not res.destination.ticks, _context(res, p)
    stops = p.events(policy)
    assert [e["reason"] for e in stops] == ["unsafe_rewrite"], p.context()
    print(f"{policy}: source {res.source_migration} / {res.source_vm_status}, ticks after "
          f"{res.source_ticks_after}")


def test_a_refused_rollback_with_postcopy_directly(saves: Saves) -> None:
    """Negative control: newest -> oldest with postcopy, no migproxy. The destination
    rejects the cpu section; the source's state is recorded for the comparison in
    docs/operations.md (postcopy-paused or failed)."""
    ks = kernels(saves.lab)
    res = saves.lab.live_migrate(ks[-1], ks[0], HOST_CPU, "10.0", return_path=True,
                                 postcopy=True)
    assert res.postcopy_from.startswith("active"), res
    assert not res.destination.running, res
    assert not res.source_migration.startswith("completed"), res
    print(f"direct: source {res.source_migration} / {res.source_vm_status}, ticks after "
          f"{res.source_ticks_after}")
