"""The ARM ``cpu`` section rewriter: a plug-in of the stream engine.

It claims every section the VM description calls ``cpu`` with ``vmsd_name`` ``cpu``
(``vmstate_arm_cpu``), decodes its cpreg arrays against the built-in layout
(:mod:`migproxy.arm.cpu_section`), reports them (:class:`~migproxy.arm.events.CpuSeen`) and,
with a profile, plans the new arrays (:class:`~migproxy.arm.events.CpuRewritten`): one splice
over ``[count, arrays end)`` and the new element counts of the two array fields.
Without a profile it only decodes and reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migproxy.arm.cpu_layouts import unknown_cpu_layout
from migproxy.arm.cpu_section import F_IDX, F_VAL, CpuLayoutError, CpuSection, parse_cpu_section
from migproxy.arm.destination import Destination, ReconcileRefused, where
from migproxy.arm.events import CpuReconciled, CpuRewritten, CpuSeen, CpuState
from migproxy.arm.package_layouts import ARM_PACKAGE_LAYOUTS
from migproxy.arm.profile import Profile
from migproxy.stream.engine import EngineConfig
from migproxy.stream.events import Event
from migproxy.stream.rewriter import Buffer, Decoded, SectionEdit, SectionRewriter, Splice
from migproxy.stream.vmdesc import FullSection, StreamFacts


class ArmCpuRewriter:
    """Decodes (and, with a profile or a destination, rewrites) ARM cpu sections."""

    name = "arm-cpu"

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
        if self.destination is not None:
            return self._reconcile(decoded, apply)
        profile = self.profile
        if profile is None:
            return None
        cpu: CpuSection = decoded.data
        r = profile.apply(cpu.indexes, cpu.values)
        section = decoded.section
        removed = [span for span in section.subsections for rule in profile.subsections
                   if rule.name == span.name and rule.decide(cpu.subsections[span.name])]
        if not r.changed and not removed:
            return None
        events: list[Event] = []
        if r.changed:
            events.append(CpuRewritten(cpu.instance_id, len(cpu.indexes), len(r.indexes),
                                       tuple(r.dropped), tuple(r.inserted), tuple(r.set),
                                       apply))
            if apply and (not cpu.indexes or not r.indexes):
                raise CpuLayoutError("cannot rewrite an empty cpreg list or empty it")
        if removed:
            events.append(CpuReconciled(cpu.instance_id, f"profile {profile.name}",
                                        tuple(f"remove subsection {s.name}" for s in removed),
                                        (), apply))
        return _section_edit(cpu, section, events, (r.indexes, r.values) if r.changed else None,
                             frozenset(s.name for s in removed))

    def _reconcile(self, decoded: Decoded, apply: bool) -> SectionEdit | None:
        dest = self.destination
        assert dest is not None
        cpu: CpuSection = decoded.data
        section = decoded.section
        m, plan = dest.plan(self.machine, cpu.indexes, cpu.values, cpu.subsections,
                            section.version_id)
        if plan.refused:
            raise ReconcileRefused(
                f"cpu {cpu.instance_id} for {where(m)}: " + "; ".join(plan.refusals))
        if not plan.changes:
            return None
        lines = tuple(c.explain() for c in plan.changes)
        visible = tuple(c.describe() for c in plan.changes if c.guest_visible)
        events: list[Event] = [CpuReconciled(cpu.instance_id, where(m), lines, visible, apply)]
        src = dict(zip(cpu.indexes, cpu.values, strict=True))
        new = dict(zip(plan.indexes, plan.values, strict=True))
        dropped = tuple((i, v) for i, v in src.items() if i not in new)
        inserted = tuple((i, v) for i, v in new.items() if i not in src)
        changed = tuple((i, src[i], v) for i, v in new.items() if i in src and src[i] != v)
        arrays = None
        if dropped or inserted or changed:
            if apply and not plan.indexes:
                raise CpuLayoutError("cannot rewrite the cpreg list into an empty one")
            events.append(CpuRewritten(cpu.instance_id, len(cpu.indexes), len(plan.indexes),
                                       dropped, inserted, changed, apply))
            arrays = (plan.indexes, plan.values)
        return _section_edit(cpu, section, events, arrays, frozenset(plan.remove_subsections))


def _section_edit(cpu: CpuSection, section: FullSection, events: list[Event],
                  arrays: tuple[list[int], list[int]] | None,
                  removed: frozenset[str]) -> SectionEdit:
    """The edit of a cpu section: new cpreg arrays (if any) and the subsections removed."""
    splices = [Splice(span.offset, span.end, b"") for span in section.subsections
               if span.name in removed]
    counts: dict[str, int] = {}
    if arrays is not None:
        indexes, values = arrays
        splices.append(Splice(cpu.count_offset, cpu.arrays_end,
                              cpu.encode_arrays(indexes, values)))
        counts = {F_IDX: len(indexes), F_VAL: len(indexes)}
    return SectionEdit(section, splices, counts, events, removed)


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
