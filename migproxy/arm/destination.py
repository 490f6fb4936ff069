"""A route's destination: its manifest set, the knowledge base, and the operator's opt-ins.

For each stream the manifest is chosen by the machine type (from the configuration
section) and the CPU model. Under TCG the cpreg list carries no MIDR, so the model is the
destination manifest of that machine type whose constant ID registers the stream's match
best (a stream of a model the set does not have is matched to the closest one, and its ID
registers then differ: the reconciliation refuses it, naming them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from migproxy.arm.cpu_section import CpuLayoutError
from migproxy.arm.knowledge import Knowledge, knowledge
from migproxy.arm.kvm_registers import is_kvm_list
from migproxy.arm.manifest import Manifest, ManifestError, ManifestSet, load_set, shipped_sets
from migproxy.arm.plan import CpuPlan
from migproxy.arm.reasons import ArmReason
from migproxy.arm.reconcile import id_differences, model_constants, reconcile
from migproxy.arm.reconcile_kvm import reconcile_kvm
from migproxy.stream.errors import SectionRefused


class NoManifest(SectionRefused):
    reason = ArmReason.NO_MANIFEST
    context = "no destination manifest: "


class ReconcileRefused(SectionRefused):
    reason = ArmReason.UNSAFE_REWRITE
    context = "refused for the destination: "


ACCELS = ("auto", "tcg", "kvm")


@dataclass
class Destination:
    manifests: ManifestSet
    kb: Knowledge = field(default_factory=knowledge)
    accel: str = "auto"  # auto: each stream's list says (KVM lists firmware registers)
    opt_in: frozenset[int] = frozenset()
    reference: tuple[Manifest, ...] = ()  # every manifest known (model constants)
    spec: str = ""  # a file or directory: read again when its files change (refresh)
    stamp: tuple[tuple[str, int, int], ...] = ()

    @classmethod
    def load(cls, spec: str, *, accel: str = "auto",
             opt_in: frozenset[int] = frozenset()) -> Destination:
        ref = tuple(m for name in shipped_sets() for m in load_set(name).manifests)
        mset = load_set(spec)
        watched = spec if spec_path(spec) is not None else ""
        return cls(mset, knowledge(), accel, opt_in, ref + mset.manifests, watched,
                   files_stamp(spec) if watched else ())

    def refresh(self) -> bool:
        """Read the manifests again if the files of a file or directory destination
        changed since they were read (a destination host recaptured its own after a QEMU
        or kernel upgrade: ``migproxy manifest capture -o DIR``). A set that no longer
        loads keeps the one read before. True when the set changed."""
        if not self.spec:
            return False
        stamp = files_stamp(self.spec)
        if stamp == self.stamp:
            return False
        try:
            mset = load_set(self.spec)
        except ManifestError:
            return False  # e.g. caught between two files of a capture: try again next time
        old = set(self.manifests.manifests)
        self.reference = tuple(m for m in self.reference if m not in old) + mset.manifests
        self.manifests, self.stamp = mset, stamp
        return True

    @property
    def name(self) -> str:
        return self.manifests.name

    def choose(self, machine: str | None, indexes: Sequence[int],
               values: Sequence[int]) -> Manifest:
        on_machine = [m for m in self.manifests.manifests if m.machine == machine]
        if not on_machine:
            have = ", ".join(f"{a} {b}" for a, b in self.manifests.keys)
            raise NoManifest(f"{self.name} has no manifest for machine type {machine} "
                             f"(it has: {have})")
        accel = "kvm" if is_kvm_list(indexes) else "tcg"
        if self.accel not in ("auto", accel):
            raise NoManifest(f"the route is for {self.accel.upper()} VMs and the stream was "
                             f"saved under {accel.upper()} (its cpreg list "
                             + ("is a host kernel's KVM_GET_REG_LIST)" if accel == "kvm" else
                                "has no KVM firmware registers)"))
        candidates = [m for m in on_machine if m.accel == accel]
        if not candidates:
            raise NoManifest(
                f"the stream was saved under {accel.upper()} (its cpreg list "
                + ("is a host kernel's KVM_GET_REG_LIST" if accel == "kvm" else
                   "has no KVM firmware registers") + f"), and {self.name} has only "
                f"{', '.join(sorted({m.accel.upper() for m in on_machine}))} manifests for "
                f"{machine}")
        src = dict(zip(indexes, values, strict=True))

        def score(m: Manifest) -> tuple[int, int]:
            ids_only = len([r for r in src.keys() ^ m.ids])
            return (len(id_differences(src, m, self.kb, m.accel)), ids_only)

        return min(candidates, key=score)

    def plan(self, machine: str | None, indexes: Sequence[int], values: Sequence[int],
             subsections: dict[str, bytes], section_version: int) -> tuple[Manifest, CpuPlan]:
        self.refresh()
        m = self.choose(machine, indexes, values)
        if section_version != m.cpu_section_version:
            raise CpuLayoutError(f"cpu section version {section_version}; QEMU {m.qemu} "
                                 f"expects {m.cpu_section_version}")
        if m.accel == "kvm":
            return m, reconcile_kvm(indexes, values, subsections, m, self.kb,
                                    opt_in=self.opt_in)
        plan = reconcile(indexes, values, subsections, m, self.kb, accel=m.accel,
                         model_values=model_constants(self.reference, m.cpu),
                         opt_in=self.opt_in)
        return m, plan


def spec_path(spec: str) -> Path | None:
    """The file or directory a destination spec names, or None for a shipped set."""
    if "/" not in spec and spec in shipped_sets():
        return None
    return Path(spec)


def files_stamp(spec: str) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime) of the manifest files a file or directory spec reads."""
    p = Path(spec)
    files = sorted(p.glob("*.json")) if p.is_dir() else [p]
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append((f.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def where(m: Manifest) -> str:
    return f"{m.host} ({m.machine}, {m.cpu})"
