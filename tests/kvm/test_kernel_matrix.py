"""The KVM kernel matrix, offline, on real KVM (nested): every ordered pair of the lab's
kernels, on both emulated host CPUs, QEMU 10.0 -> 10.0 (and 7.2 -> 10.0 for upgrades).

For each destination kernel one nested host loads, for every other kernel:
* the stream rewritten by ``--destination`` (the manifest made from the stream the
  destination's own QEMU saved there), which must load and go on at the next tick;
* the unmodified stream (a control: where it loads, migproxy must not refuse without
  naming a guest-visible change; where it fails, migproxy must have had a reason);
* for a refused cell, the stream rewritten with an opt-in for exactly the registers the
  refusal names: it must load, every such change reported as guest-visible.

A rewritten stream never fails to load. What each cell changed is printed (the README's
KVM matrix comes from this output: ``pytest -m kvm tests/kvm/test_kernel_matrix.py -s``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migproxy.arm.knowledge import kernel_version
from migproxy.lab.kvm import LoadItem, LoadOutcome
from tests.kvm.kernel_matrix import (
    HOST_CPUS,
    Rewrite,
    Saves,
    kernels,
    refused_registers,
    rewrite_for,
)

pytestmark = pytest.mark.kvm



def _describe(outcome: LoadOutcome) -> str:
    if outcome.ok:
        return f"loads, goes on at tick {outcome.first_tick}"
    err = " ".join(outcome.error.split())[-300:]
    return f"{outcome.load_status}, ticks {outcome.ticks[:3]}: {err}"


@pytest.mark.parametrize("host_cpu", HOST_CPUS)
def test_every_kernel_pair(host_cpu: str, saves: Saves, tmp_path: Path) -> None:
    lab = saves.lab
    ks = kernels(lab)
    report: list[str] = []
    failures: list[str] = []
    for dst in ks:
        dest_dir = saves.manifest(dst, host_cpu)
        items: list[LoadItem] = []
        cells: list[tuple[str, Rewrite, Rewrite | None]] = []
        for src in (k for k in ks if k != dst):
            upgrade = kernel_version(lab.kernel(src).release) < \
                kernel_version(lab.kernel(dst).release)
            for qemu in (("7.2", "10.0") if upgrade else ("10.0",)):
                stream = saves.get(src, host_cpu).streams[qemu]
                name = f"{src}-q{qemu}-to-{dst}"
                rw = rewrite_for(stream, dest_dir, tmp_path / f"{name}.mig")
                opted = None
                if rw.out is not None:
                    items.append(LoadItem(rw.out, "10.0", stream.last_tick, f"{name}-rw"))
                else:
                    named = refused_registers(rw.refusal)
                    opted = rewrite_for(stream, dest_dir, tmp_path / f"{name}-optin.mig",
                                        opt_in=named)
                    if opted.out is None:
                        failures.append(f"{host_cpu} {name}: refused even with the opt-in "
                                        f"for what it named: {opted.refusal}")
                    else:
                        items.append(LoadItem(opted.out, "10.0", stream.last_tick,
                                              f"{name}-optin"))
                if qemu == "10.0":
                    items.append(LoadItem(stream.path, "10.0", stream.last_tick,
                                          f"{name}-direct"))
                cells.append((name, rw, opted))
        outcomes = {o.item.name: o for o in lab.load_streams(dst, host_cpu, items)}
        for name, rw, opted in cells:
            direct = outcomes.get(f"{name}-direct")
            line = f"{host_cpu:11} {name:18}"
            if rw.out is not None:
                o = outcomes[f"{name}-rw"]
                line += f" rewritten ({len(rw.changes)} changes): {_describe(o)}"
                if not o.ok:
                    failures.append(f"{host_cpu} {name}: the rewritten stream did not go on: "
                                    f"{_describe(o)}; changes {rw.changes}")
                if rw.guest_visible:
                    failures.append(f"{host_cpu} {name}: guest-visible without opt-in: "
                                    f"{rw.guest_visible}")
            else:
                line += f" refused: {rw.refusal[:200]}"
                if not rw.refusal or not refused_registers(rw.refusal):
                    failures.append(f"{host_cpu} {name}: refused without naming a register")
                if opted is not None and opted.out is not None:
                    o = outcomes[f"{name}-optin"]
                    line += f"; with opt-in ({len(opted.guest_visible)} guest-visible): " \
                            f"{_describe(o)}"
                    if not o.ok:
                        failures.append(f"{host_cpu} {name}: the opted-in rewrite did not go "
                                        f"on: {_describe(o)}")
                    if len(opted.guest_visible) != len(refused_registers(rw.refusal)):
                        failures.append(f"{host_cpu} {name}: opted-in changes not all "
                                        f"reported guest-visible: {opted.guest_visible}")
                if direct is not None and direct.ok and "guest reads" not in rw.refusal \
                        and "guest would" not in rw.refusal and "vanish" not in rw.refusal:
                    failures.append(f"{host_cpu} {name}: the destination loads it as it is, "
                                    f"and the refusal names no guest-visible change: "
                                    f"{rw.refusal}")
            if direct is not None:
                line += f" | as it is: {_describe(direct)}"
            report.append(line)
    print("\n".join(report))
    assert not failures, "\n".join(failures)
    # Every upgrade cell of this host CPU went through with knowledge-base rules only.
    upgrades = [r for r in report if "refused" in r and
                kernel_version(lab.kernel(r.split()[1].split("-q")[0]).release) <
                kernel_version(lab.kernel(r.split()[1].split("-to-")[1]).release)]
    assert not upgrades, "\n".join(upgrades)
