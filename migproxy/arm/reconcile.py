"""Reconciliation: rewrite a stream's cpu section into what one destination accepts.

Given the cpu state of a stream (cpreg ids and values, the cpu subsections it carries) and
the destination's manifest (:mod:`migproxy.arm.manifest`), every difference is classified
by the knowledge base (:mod:`migproxy.arm.knowledge`):

* a register only in the stream is dropped when a rule says so and its condition holds;
* a register only the destination has is inserted when a rule gives its value;
* a constant ID register whose value differs is set only when a rule says the difference
  is benign;
* constant ID registers of a named CPU model (``stable_models``) may be dropped when they
  hold the model's value, or inserted with it;
* a subsection the destination does not expect for this CPU model is removed only when a
  rule's conditions hold.

Everything else is refused, naming each register or subsection, its value and why: a
feature would appear or vanish under the running guest, or state would be lost. A route
may opt in for named registers (``allow_guest_visible``): those changes are then made
with the destination's value and reported as guest-visible.

The plan is computed per cpu section, in full, before anything changes; a refusal anywhere
leaves the stream untouched (the engine's rule).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from migproxy.arm.knowledge import Knowledge, RegisterRule
from migproxy.arm.manifest import Manifest
from migproxy.arm.registers import describe, format_id, is_id_register

Action = Literal["drop", "insert", "set", "remove", "keep"]


@dataclass(frozen=True)
class Change:
    action: Action
    what: str  # a register name (id) or a subsection name
    old: int | None
    new: int | None
    why: str  # the rule's reason, or "opted in"
    guest_visible: bool = False  # a change the guest can notice (opt-in only)
    # "keep" (KVM) changes nothing in the stream: a register the stream lacks keeps the
    # destination's own value (old None, new that value), or the destination kernel
    # accepts the stream's value of a register it validates (old == new)

    def describe(self) -> str:
        def hx(v: int | None) -> str:
            return "-" if v is None else f"0x{v:x}"

        keep = (f"keep {self.what} = {hx(self.new)} (the destination's own; the stream lacks "
                "it)" if self.old is None else
                f"keep {self.what} = {hx(self.old)} (the destination kernel accepts it)")
        text = {"drop": f"drop {self.what} = {hx(self.old)}",
                "insert": f"insert {self.what} = {hx(self.new)}",
                "set": f"set {self.what} {hx(self.old)} -> {hx(self.new)}",
                "remove": f"remove subsection {self.what}",
                "keep": keep}[self.action]
        return text + (" (guest-visible, opted in)" if self.guest_visible else "")

    def explain(self) -> str:
        """The change and the first sentence of why it is allowed."""
        first = self.why.split(". ")[0].rstrip(".")
        return f"{self.describe()}: {first}"


@dataclass
class CpuPlan:
    """What reconciliation does to one cpu section."""

    indexes: list[int]
    values: list[int]
    remove_subsections: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return bool(self.refusals)


def register_name(reg: int) -> str:
    """``ID_AA64DFR0_EL1 (0x603000000013c028)``: how plans and refusals name a register."""
    return f"{describe(reg)} ({format_id(reg)})"


_name = register_name


def model_constants(manifests: Iterable[Manifest], cpu: str) -> dict[int, int]:
    """The ID register values of a CPU model that every shipped manifest of it agrees on."""
    seen: dict[int, set[int]] = {}
    for m in manifests:
        if m.cpu != cpu:
            continue
        for reg, v in m.cpregs:
            if is_id_register(reg):
                seen.setdefault(reg, set()).add(v)
    return {reg: next(iter(vs)) for reg, vs in seen.items() if len(vs) == 1}


def benign_set(reg: int, have: int, want: int, kb: Knowledge, accel: str
               ) -> RegisterRule | None:
    """The knowledge-base rule that lets ``reg`` take the destination's value ``want``
    (its ``set_if`` allows every bit that differs from ``have``), or None."""
    rule = kb.rule_for(reg, accel)
    mask = rule.set_if.differs_only_in if rule is not None and rule.set_if else None
    return rule if mask is not None and (have ^ want) & ~mask == 0 else None


def id_differences(src: Mapping[int, int], dest: Manifest, kb: Knowledge, accel: str
                   ) -> list[tuple[int, int, int]]:
    """Constant ID registers both sides have whose values differ, beyond what the
    knowledge base calls benign: (register, stream value, destination value)."""
    dst = dest.values
    return [(reg, src[reg], dst[reg]) for reg in sorted(src.keys() & dst.keys())
            if is_id_register(reg) and src[reg] != dst[reg]
            and benign_set(reg, src[reg], dst[reg], kb, accel) is None]


def reconcile(indexes: Sequence[int], values: Sequence[int], subsections: Mapping[str, bytes],
              dest: Manifest, kb: Knowledge, *, accel: str = "tcg",
              model_values: Mapping[int, int] | None = None,
              opt_in: frozenset[int] = frozenset()) -> CpuPlan:
    """The plan for one cpu section (``subsections``: name -> payload of those sent)."""
    src = dict(zip(indexes, values, strict=True))
    dst = dest.values
    out = dict(src)
    plan = CpuPlan([], [])
    stable = dest.cpu in kb.stable_models
    model = dict(model_values or {})
    where = f"QEMU {dest.qemu} ({dest.machine}, {dest.cpu})"

    def rule(reg: int) -> RegisterRule | None:
        return kb.rule_for(reg, accel)

    for reg in sorted(src.keys() - dst.keys()):
        r = rule(reg)
        v = src[reg]
        if r is not None and r.drop_if is not None and r.drop_if.holds(v, src):
            plan.changes.append(Change("drop", _name(reg), v, None, r.reason))
        elif stable and is_id_register(reg) and model.get(reg) == v:
            plan.changes.append(Change("drop", _name(reg), v, None, kb.id_registers_reason))
        elif reg in opt_in:
            plan.changes.append(Change("drop", _name(reg), v, None, "opted in", True))
        else:
            if r is not None and r.drop_if is not None:
                why = f"it may be dropped only with {r.drop_if.describe(_names(r))}"
            elif is_id_register(reg):
                why = ("a constant ID register: dropping it changes what the guest reads"
                       + ("" if stable else f" ({dest.cpu} is not a fixed CPU model)"))
            else:
                why = "no rule says it may be dropped (its state would be lost)"
            plan.refusals.append(f"{_name(reg)} = 0x{v:x} is not known to {where}: {why}")
            continue
        del out[reg]
    for reg in sorted(dst.keys() - src.keys()):
        r = rule(reg)
        new: int | None = None
        why = ""
        visible = False
        if r is not None and r.insert is not None:
            ins = r.insert
            if ins.destination:
                new = dst[reg]
            elif ins.value is not None:
                new = ins.value
            elif ins.low32_of is not None and ins.low32_of in src:
                new = src[ins.low32_of] & 0xFFFFFFFF
            why = r.reason
        elif stable and is_id_register(reg):
            new, why = dst[reg], kb.id_registers_reason
        elif reg in opt_in:
            new, why, visible = dst[reg], "opted in", True
        if new is None:
            plan.refusals.append(
                f"{where} expects {_name(reg)} (0x{dst[reg]:x} there) and the stream does not "
                "have it: no rule gives its value" + (" (a constant ID register)"
                                                      if is_id_register(reg) else ""))
            continue
        out[reg] = new
        plan.changes.append(Change("insert", _name(reg), None, new, why, visible))
    for reg, have, want in id_differences(src, dest, kb, accel):
        if reg in opt_in:
            out[reg] = want
            plan.changes.append(Change("set", _name(reg), have, want, "opted in", True))
            continue
        plan.refusals.append(
            f"{_name(reg)} = 0x{have:x} in the stream, 0x{want:x} on {where} (bits "
            f"0x{have ^ want:x} differ): a CPU feature would change under the running guest")
    for reg in sorted(src.keys() & dst.keys()):
        if is_id_register(reg) and src[reg] != dst[reg]:
            benign = benign_set(reg, src[reg], dst[reg], kb, accel)
            if benign is not None:
                out[reg] = dst[reg]
                plan.changes.append(Change("set", _name(reg), src[reg], dst[reg],
                                           benign.reason))
    reconcile_subsections(plan, subsections, src, dest, kb)
    plan.indexes = sorted(out)
    plan.values = [out[i] for i in plan.indexes]
    return plan


def reconcile_subsections(plan: CpuPlan, subsections: Mapping[str, bytes],
                          src: Mapping[int, int], dest: Manifest, kb: Knowledge) -> None:
    """Add to ``plan`` the subsections the destination does not expect for this CPU:
    removed when a knowledge-base rule's conditions hold, refused otherwise."""
    where = dest.host + f" ({dest.machine}, {dest.cpu})"
    for name, payload in subsections.items():
        if name in dest.subsections:
            continue
        s = kb.subsection(name)
        problem = None
        if s is None:
            problem = "no rule says it may be removed (it carries state)"
        else:
            if s.field_if is not None and (
                    len(payload) not in (1, 2, 4, 8) or
                    not s.field_if.holds(int.from_bytes(payload, "big"))):
                problem = (f"it may be removed only with {s.field_if.describe({})} "
                           f"(it holds 0x{payload.hex()})")
            elif s.lacks_register is not None and (
                    s.lacks_register not in src or src[s.lacks_register] & s.lacks_mask):
                got = src.get(s.lacks_register)
                problem = (f"it may be removed only when {_name(s.lacks_register)} has 0 in "
                           f"bits 0x{s.lacks_mask:x} (the CPU lacks the feature); the stream "
                           f"has {'none' if got is None else hex(got)}")
        if problem is not None:
            plan.refusals.append(f"subsection {name} is not expected by {where}: {problem}")
            continue
        assert s is not None
        plan.remove_subsections.append(name)
        plan.changes.append(Change("remove", name, None, None, s.reason))


def _names(r: RegisterRule) -> dict[int, str]:
    c = r.drop_if
    return {c.equals_low32_of: describe(c.equals_low32_of)} \
        if c is not None and c.equals_low32_of is not None else {}
