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
from migproxy.arm.events import CpuRewritten, CpuSeen, CpuState
from migproxy.arm.profile import Profile
from migproxy.stream.engine import EngineConfig
from migproxy.stream.rewriter import Buffer, Decoded, SectionEdit, SectionRewriter, Splice
from migproxy.stream.vmdesc import FullSection


class ArmCpuRewriter:
    """Decodes (and, with a profile, rewrites) the cpreg arrays of ARM cpu sections."""

    name = "arm-cpu"

    def __init__(self, profile: Profile | None = None) -> None:
        self.profile = profile

    def claims(self, section: FullSection, device: Mapping[str, Any]) -> bool:
        return section.idstr == "cpu" and device.get("vmsd_name") == "cpu"

    def recognises(self, section: FullSection, device: Mapping[str, Any]) -> str | None:
        return unknown_cpu_layout(device)

    def decode(self, held: Buffer, section: FullSection, offset: int) -> Decoded:
        cpu = parse_cpu_section(held, section)
        state = CpuState(section.instance_id, offset + section.offset, tuple(cpu.indexes),
                         tuple(cpu.values))
        return Decoded(section, [CpuSeen(state)], cpu)

    def plan(self, decoded: Decoded, *, apply: bool) -> SectionEdit | None:
        profile = self.profile
        if profile is None:
            return None
        cpu: CpuSection = decoded.data
        r = profile.apply(cpu.indexes, cpu.values)
        if not r.changed:
            return None
        event = CpuRewritten(cpu.instance_id, len(cpu.indexes), len(r.indexes),
                             tuple(r.dropped), tuple(r.inserted), tuple(r.set), apply)
        if apply and (not cpu.indexes or not r.indexes):
            raise CpuLayoutError("cannot rewrite an empty cpreg list or empty it")
        n = len(r.indexes)
        splice = Splice(cpu.count_offset, cpu.arrays_end, cpu.encode_arrays(r.indexes, r.values))
        return SectionEdit(decoded.section, [splice], {F_IDX: n, F_VAL: n}, [event])


def arm_rewriters(profile: Profile | None) -> tuple[SectionRewriter, ...]:
    """The rewriters for an ARM guest: the cpu rewriter with ``profile`` (None: report)."""
    return (ArmCpuRewriter(profile),)


def arm_engine_config(profile: Profile | None, **settings: Any) -> EngineConfig:
    """An engine configuration for ARM guests: the cpu rewriter with ``profile`` plus the
    engine's own settings (``policy``, ``dry_run``, ``hold_cap``, ``legacy_page_bits``)."""
    return EngineConfig(rewriters=arm_rewriters(profile), **settings)
