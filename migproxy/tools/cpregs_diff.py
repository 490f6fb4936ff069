"""``migproxy cpregs diff``: compare the cpreg lists of two reference streams.

The two streams are saved by the source and the destination QEMU version from the same
machine type, CPU model and number of CPUs. The difference, turned into a profile, is
what the destination needs: registers only the source sends are dropped, registers only
the destination has are inserted with the destination's values, and constant ID registers
whose value changed are set to the destination's value (conditional on the source's).

Under KVM (the lists have KVM pseudo-registers) two things differ, see
:mod:`migproxy.arm.kvm_registers`: registers whose value KVM checks on write
(:func:`~migproxy.arm.kvm_registers.checked_on_write`: CCSIDR, PSCI version, workaround
levels, firmware bitmaps) are set like the ID registers, and nothing is inserted, because
the destination QEMU keeps its own value for a register the stream lacks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from migproxy.arm.events import CpuState, seen_cpus
from migproxy.arm.kvm_registers import checked_on_write, is_kvm_list
from migproxy.arm.profile import Profile, Rule
from migproxy.arm.registers import describe, format_id, is_id_register
from migproxy.stream.errors import MigproxyError
from migproxy.tools.offline import run_file


@dataclass
class CpuDiff:
    instance_id: int
    only_source: dict[int, int]
    only_dest: dict[int, int]
    changed_id: dict[int, tuple[int, int]]  # constant ID registers: (source, dest)
    changed_state: dict[int, tuple[int, int]]  # other registers whose value differs
    # KVM only: registers that are not ID registers but whose value KVM checks on write
    changed_checked: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def changed_set(self) -> dict[int, tuple[int, int]]:
        """The registers a profile sets to the destination's value."""
        return dict(sorted((self.changed_id | self.changed_checked).items()))


@dataclass
class StreamDiff:
    source: str
    dest: str
    source_machine: str | None
    dest_machine: str | None
    cpus: list[CpuDiff]
    warnings: list[str] = field(default_factory=list)
    kvm: bool = False  # the destination's list is a KVM one


def _cpus(path: str | os.PathLike[str]) -> tuple[list[CpuState], str | None]:
    run = run_file(path)
    if not run.complete:
        stop = run.stop
        why = f"{stop.reason}: {stop.message}" if stop else "incomplete stream"
        raise MigproxyError(f"{path}: cannot read the cpu sections ({why})")
    cpus = seen_cpus(run.engine.reports)
    if not cpus:
        raise MigproxyError(f"{path}: the stream has no ARM cpu section")
    return cpus, run.engine.framer.machine


def diff_streams(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> StreamDiff:
    src_cpus, src_machine = _cpus(source)
    dst_cpus, dst_machine = _cpus(dest)
    warnings: list[str] = []
    if src_machine != dst_machine:
        warnings.append(f"machine types differ ({src_machine} vs {dst_machine}): QEMU only "
                        "supports migration between identical machine types")
    src_by = {c.instance_id: c for c in src_cpus}
    dst_by = {c.instance_id: c for c in dst_cpus}
    if set(src_by) != set(dst_by):
        raise MigproxyError(f"the streams have different CPUs (source {sorted(src_by)}, "
                            f"destination {sorted(dst_by)}): save both with the same -smp")
    kvm = is_kvm_list(r for c in dst_cpus for r in c.indexes)
    out: list[CpuDiff] = []
    for inst in sorted(src_by):
        s = dict(zip(src_by[inst].indexes, src_by[inst].values, strict=True))
        d = dict(zip(dst_by[inst].indexes, dst_by[inst].values, strict=True))
        c = CpuDiff(inst, {r: s[r] for r in sorted(s.keys() - d.keys())},
                    {r: d[r] for r in sorted(d.keys() - s.keys())}, {}, {})
        for r in sorted(s.keys() & d.keys()):
            if s[r] != d[r]:
                kind = (c.changed_id if is_id_register(r) else
                        c.changed_checked if kvm and checked_on_write(r) else c.changed_state)
                kind[r] = (s[r], d[r])
        out.append(c)
    if any(c.changed_id for c in out):
        names = sorted({describe(r) for c in out for r in c.changed_id})
        cause = ("the host kernels or CPUs differ: KVM shows the guest what the host and its "
                 "kernel support" if kvm else
                 "this happens with -cpu max across QEMU versions. Use a named CPU model "
                 "(e.g. cortex-a57) for migrations between versions")
        warnings.append(
            "CPU features differ: ID registers have other values on the destination ("
            + ", ".join(names) + "). Setting them changes what the guest sees; " + cause + ".")
    if any(c.changed_checked for c in out):
        names = sorted({describe(r) for c in out for r in c.changed_checked})
        warnings.append(
            "KVM registers that KVM checks on write have other values on the destination ("
            + ", ".join(names) + "). The profile sets them to the destination's values, "
            "which changes what the guest sees (a lower PSCI version, another cache "
            "geometry): a profile is a blunt tool; the knowledge base (--destination) "
            "decides register by register.")
    return StreamDiff(str(source), str(dest), src_machine, dst_machine, out, warnings, kvm)


def profile_from_diff(diff: StreamDiff, name: str) -> Profile:
    """The profile that turns the source's cpreg lists into what the destination accepts."""
    drops: dict[int, set[int]] = {}
    inserts: dict[int, set[int]] = {}
    sets: dict[int, set[tuple[int, int]]] = {}
    for c in diff.cpus:
        for r, v in c.only_source.items():
            drops.setdefault(r, set()).add(v)
        if not diff.kvm:  # a KVM destination keeps its own values (kvm_registers)
            for r, v in c.only_dest.items():
                inserts.setdefault(r, set()).add(v)
        for r, sv in c.changed_set.items():
            sets.setdefault(r, set()).add(sv)
    rules: list[Rule] = []
    for r in sorted(drops):
        vals = drops[r]
        if is_id_register(r) and len(vals) == 1:
            (v,) = vals
            rules.append(Rule("drop", r, value_is=v,
                              note="only the source sends it (constant ID register)"))
        else:
            rules.append(Rule("drop", r, note="only the source sends it"))
    for r in sorted(sets):
        pairs = sets[r]
        if len(pairs) != 1:
            diff.warnings.append(f"{describe(r)} changes differently on different CPUs; "
                                 "no rule emitted for it")
            continue
        ((before, after),) = pairs
        note = ("constant ID register with another value on the destination"
                if is_id_register(r) else "another value on the destination")
        why = checked_on_write(r) if diff.kvm else None
        if why:
            note += f"; KVM validates the value on write: {why}"
        rules.append(Rule("set", r, value=after, value_is=before, note=note))
    for r in sorted(inserts):
        vals = inserts[r]
        v = min(vals)
        if len(vals) != 1:
            diff.warnings.append(f"{describe(r)} has different values on different CPUs of "
                                 f"the destination; inserting 0x{v:x}")
        rules.append(Rule("insert", r, value=v,
                          note="only the destination has it; value from its reference stream"))
    desc = (f"cpreg profile from {os.path.basename(diff.source)} ({diff.source_machine}) to "
            f"{os.path.basename(diff.dest)} ({diff.dest_machine}), made by migproxy cpregs diff")
    return Profile(name, rules, desc, "cpregs diff")


def format_diff(diff: StreamDiff, *, verbose: bool = False) -> str:
    lines = [f"source:      {diff.source} ({diff.source_machine})",
             f"destination: {diff.dest} ({diff.dest_machine})"]
    for c in diff.cpus:
        lines.append(f"cpu {c.instance_id}:")
        if not (c.only_source or c.only_dest or c.changed_set):
            lines.append("  same register list")
        for r, v in c.only_source.items():
            lines.append(f"  - {format_id(r)}  {describe(r):<32} 0x{v:x}  (only in source)")
        kept = "; the destination keeps its own value" if diff.kvm else ""
        for r, v in c.only_dest.items():
            lines.append(f"  + {format_id(r)}  {describe(r):<32} 0x{v:x}  "
                         f"(only in destination{kept})")
        for r, (sv, dv) in c.changed_set.items():
            kind = "ID register" if r in c.changed_id else "KVM checks it on write"
            lines.append(f"  ~ {format_id(r)}  {describe(r):<32} 0x{sv:x} -> 0x{dv:x}  "
                         f"({kind})")
        if verbose:
            for r, (sv, dv) in c.changed_state.items():
                lines.append(f"    {format_id(r)}  {describe(r):<32} 0x{sv:x} / 0x{dv:x}  "
                             "(state, not part of a profile)")
        elif c.changed_state:
            lines.append(f"  ({len(c.changed_state)} state registers differ in value; "
                         "--verbose lists them)")
    for w in diff.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines)
