"""The ARM ``cpu`` section rewriter: a plug-in of the stream engine.

It claims every section the VM description calls ``cpu`` with ``vmsd_name`` ``cpu``
(``vmstate_arm_cpu``), decodes its cpreg arrays against the built-in layout
(:mod:`migproxy.arm.cpu_section`) and reports them (:class:`~migproxy.arm.events.CpuSeen`).
With a destination (reconciliation) or a profile it gets the section's
:class:`~migproxy.arm.plan.CpuPlan` from it and carries the plan out the same way whoever
made it (:func:`section_edit`): one splice over ``[count, arrays end)`` and the new element
counts of the two array fields, one splice per subsection removed, and the events
(:class:`~migproxy.arm.events.CpuRewritten`, :class:`~migproxy.arm.events.CpuReconciled`).
A destination takes precedence over a profile. With neither it only decodes and reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migproxy.arm.cpu_layouts import unknown_cpu_layout
from migproxy.arm.cpu_section import F_IDX, F_VAL, CpuLayoutError, CpuSection, parse_cpu_section
from migproxy.arm.destination import Destination, ReconcileRefused, where
from migproxy.arm.events import CpuReconciled, CpuRewritten, CpuSeen, CpuState
from migproxy.arm.package_layouts import ARM_PACKAGE_LAYOUTS
from migproxy.arm.plan import CpuPlan
from migproxy.arm.profile import Profile
from migproxy.arm.reasons import ArmReason
from migproxy.stream.engine import EngineConfig
from migproxy.stream.events import Event
from migproxy.stream.reasons import StopReason
from migproxy.stream.rewriter import Buffer, Decoded, SectionEdit, SectionRewriter, Splice
from migproxy.stream.vmdesc import FullSection, StreamFacts


class ArmCpuRewriter:
    """Decodes (and, with a profile or a destination, rewrites) ARM cpu sections."""

    name = "arm-cpu"
    reasons: tuple[StopReason, ...] = tuple(ArmReason)  # what it may stop rewriting for

    def __init__(self, profile: Profile | None = None,
                 destination: Destination | None = None) -> None:
        self.profile = profile
        self.destination = destination
        self.machine: str | None = None

    def begin(self, facts: StreamFacts) -> None:
        self.machine = facts.machine

    def claims(self, section: FullSection, device: Mapping[str, Any]) -> bool:
        return section.idstr == "cpu" and device.get("vmsd_name") == "cpu"

    def recognises(self, section: FullSection, device: Mapping[str, Any]) -> str | None:
        return unknown_cpu_layout(device)

    def decode(self, held: Buffer, section: FullSection, offset: int) -> Decoded:
        cpu = parse_cpu_section(held, section)
        cpu.subsections = {s.name: bytes(held[s.payload_offset : s.end])
                           for s in section.subsections}
        state = CpuState(section.instance_id, offset + section.offset, tuple(cpu.indexes),
                         tuple(cpu.values))
        return Decoded(section, [CpuSeen(state)], cpu)

    def plan(self, decoded: Decoded, *, apply: bool) -> SectionEdit | None:
        cpu: CpuSection = decoded.data
        section = decoded.section
        if self.destination is not None:
            m, plan = self.destination.plan(self.machine, cpu.indexes, cpu.values,
                                            cpu.subsections, section.version_id)
            if plan.refused:
                raise ReconcileRefused(
                    f"cpu {cpu.instance_id} for {where(m)}: " + "; ".join(plan.refusals))
            return section_edit(cpu, section, plan, where(m), apply=apply)
        if self.profile is None:
            return None
        plan = self.profile.plan(cpu.indexes, cpu.values, cpu.subsections)
        return section_edit(cpu, section, plan, f"profile {self.profile.name}", apply=apply)


def section_edit(cpu: CpuSection, section: FullSection, plan: CpuPlan, by: str, *,
                 apply: bool) -> SectionEdit | None:
    """Carry out ``plan`` (made ``by`` a destination or a profile) on a cpu section: one
    splice over its cpreg arrays if they change, one per subsection removed, and the events
    that report it (None: the plan changes nothing)."""
    if not plan.changes:
        return None
    rewritten = _rewritten(cpu, plan, apply)
    listed = [c for c in plan.changes if plan.explained or c.action == "remove"]
    reconciled: list[Event] = [] if not listed else [
        CpuReconciled(cpu.instance_id, by, tuple(c.explain() for c in listed),
                      tuple(c.describe() for c in listed if c.guest_visible), apply)]
    events: list[Event] = (reconciled + rewritten) if plan.explained else \
        (rewritten + reconciled)
    removed = frozenset(plan.remove_subsections)
    splices = [Splice(span.offset, span.end, b"") for span in section.subsections
               if span.name in removed]
    counts: dict[str, int] = {}
    if rewritten:
        splices.append(Splice(cpu.count_offset, cpu.arrays_end,
                              cpu.encode_arrays(plan.indexes, plan.values)))
        counts = {F_IDX: len(plan.indexes), F_VAL: len(plan.indexes)}
    return SectionEdit(section, splices, counts, events, removed)


def _rewritten(cpu: CpuSection, plan: CpuPlan, apply: bool) -> list[Event]:
    """The CpuRewritten event of a plan whose cpreg arrays differ from the stream's (in
    register order), or none."""
    src = dict(zip(cpu.indexes, cpu.values, strict=True))
    new = dict(zip(plan.indexes, plan.values, strict=True))
    dropped = tuple((i, v) for i, v in src.items() if i not in new)
    inserted = tuple((i, v) for i, v in new.items() if i not in src)
    changed = tuple((i, src[i], v) for i, v in new.items() if i in src and src[i] != v)
    if not (dropped or inserted or changed):
        return []
    if apply and (not cpu.indexes or not plan.indexes):
        raise CpuLayoutError("cannot rewrite an empty cpreg list or empty it")
    return [CpuRewritten(cpu.instance_id, len(cpu.indexes), len(plan.indexes), dropped,
                         inserted, changed, apply)]


def arm_rewriters(profile: Profile | None,
                  destination: Destination | None = None) -> tuple[SectionRewriter, ...]:
    """The rewriters for an ARM guest: the cpu rewriter with ``profile`` or a
    ``destination`` (neither: decode and report)."""
    return (ArmCpuRewriter(profile, destination),)


def arm_engine_config(profile: Profile | None, destination: Destination | None = None,
                      **settings: Any) -> EngineConfig:
    """An engine configuration for ARM guests: the cpu rewriter with ``profile`` (or a
    ``destination`` to reconcile with) plus the engine's own settings (``policy``,
    ``dry_run``, ``hold_cap``, ``legacy_page_bits``). Postcopy's package is framed with
    the ARM section layouts (:mod:`migproxy.arm.package_layouts`)."""
    settings.setdefault("package_layouts", ARM_PACKAGE_LAYOUTS)
    return EngineConfig(rewriters=arm_rewriters(profile, destination), **settings)
