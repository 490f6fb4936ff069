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

from migproxy.arm.knowledge import Knowledge, RegisterRule
from migproxy.arm.manifest import Manifest
from migproxy.arm.plan import Change, CpuPlan, register_name
from migproxy.arm.registers import describe, is_id_register


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


@dataclass
class _Tcg:
    """One TCG reconciliation in progress: the inputs and the plan being built."""

    src: dict[int, int]
    dest: Manifest
    kb: Knowledge
    accel: str
    model: dict[int, int]
    opt_in: frozenset[int]
    out: dict[int, int] = field(default_factory=dict)
    plan: CpuPlan = field(default_factory=lambda: CpuPlan([], []))

    @property
    def stable(self) -> bool:
        return self.dest.cpu in self.kb.stable_models

    @property
    def where(self) -> str:
        return f"QEMU {self.dest.qemu} ({self.dest.machine}, {self.dest.cpu})"

    def rule(self, reg: int) -> RegisterRule | None:
        return self.kb.rule_for(reg, self.accel)

    def change(self, c: Change) -> None:
        self.plan.changes.append(c)

    def drops(self) -> None:
        """Registers only the stream has: dropped by a rule, the model's constant, or an
        opt-in; refused otherwise."""
        for reg in sorted(self.src.keys() - self.dest.ids):
            r, v = self.rule(reg), self.src[reg]
            if r is not None and r.drop_if is not None and r.drop_if.holds(v, self.src):
                self.change(Change("drop", register_name(reg), v, None, r.reason))
            elif self.stable and is_id_register(reg) and self.model.get(reg) == v:
                self.change(Change("drop", register_name(reg), v, None,
                                   self.kb.id_registers_reason))
            elif reg in self.opt_in:
                self.change(Change("drop", register_name(reg), v, None, "opted in", True))
            else:
                self.plan.refusals.append(f"{register_name(reg)} = 0x{v:x} is not known to "
                                          f"{self.where}: {self._why_not_dropped(reg, r)}")
                continue
            del self.out[reg]

    def _why_not_dropped(self, reg: int, r: RegisterRule | None) -> str:
        if r is not None and r.drop_if is not None:
            return f"it may be dropped only with {r.drop_if.describe(_names(r))}"
        if is_id_register(reg):
            return ("a constant ID register: dropping it changes what the guest reads"
                    + ("" if self.stable else f" ({self.dest.cpu} is not a fixed CPU model)"))
        return "no rule says it may be dropped (its state would be lost)"

    def _inserted(self, reg: int) -> tuple[int, str, bool] | None:
        """(value, why, guest-visible) for a register only the destination has, or None."""
        r, dst = self.rule(reg), self.dest.values
        if r is not None and r.insert is not None:
            ins = r.insert
            if ins.destination:
                return dst[reg], r.reason, False
            if ins.value is not None:
                return ins.value, r.reason, False
            if ins.low32_of is not None and ins.low32_of in self.src:
                return self.src[ins.low32_of] & 0xFFFFFFFF, r.reason, False
            return None
        if self.stable and is_id_register(reg):
            return dst[reg], self.kb.id_registers_reason, False
        if reg in self.opt_in:
            return dst[reg], "opted in", True
        return None

    def inserts(self) -> None:
        """Registers only the destination has: inserted with a rule's value, the model's
        constant or (opted in) the destination's; refused otherwise."""
        for reg in sorted(self.dest.ids - self.src.keys()):
            got = self._inserted(reg)
            if got is None:
                self.plan.refusals.append(
                    f"{self.where} expects {register_name(reg)} "
                    f"(0x{self.dest.values[reg]:x} there) and the stream does not have it: no "
                    "rule gives its value"
                    + (" (a constant ID register)" if is_id_register(reg) else ""))
                continue
            new, why, visible = got
            self.out[reg] = new
            self.change(Change("insert", register_name(reg), None, new, why, visible))

    def id_values(self) -> None:
        """Constant ID registers with another value: set when the knowledge base calls the
        difference benign or the route opts in; refused otherwise."""
        for reg, have, want in id_differences(self.src, self.dest, self.kb, self.accel):
            if reg in self.opt_in:
                self.out[reg] = want
                self.change(Change("set", register_name(reg), have, want, "opted in", True))
                continue
            self.plan.refusals.append(
                f"{register_name(reg)} = 0x{have:x} in the stream, 0x{want:x} on "
                f"{self.where} (bits 0x{have ^ want:x} differ): a CPU feature would change "
                "under the running guest")
        dst = self.dest.values
        for reg in sorted(self.src.keys() & dst.keys()):
            if is_id_register(reg) and self.src[reg] != dst[reg]:
                benign = benign_set(reg, self.src[reg], dst[reg], self.kb, self.accel)
                if benign is not None:
                    self.out[reg] = dst[reg]
                    self.change(Change("set", register_name(reg), self.src[reg], dst[reg],
                                       benign.reason))


def reconcile(indexes: Sequence[int], values: Sequence[int], subsections: Mapping[str, bytes],
              dest: Manifest, kb: Knowledge, *, accel: str = "tcg",
              model_values: Mapping[int, int] | None = None,
              opt_in: frozenset[int] = frozenset()) -> CpuPlan:
    """The plan for one cpu section (``subsections``: name -> payload of those sent), in
    phases: drops, inserts, ID values, subsections."""
    src = dict(zip(indexes, values, strict=True))
    run = _Tcg(src, dest, kb, accel, dict(model_values or {}), opt_in, dict(src))
    run.drops()
    run.inserts()
    run.id_values()
    reconcile_subsections(run.plan, subsections, src, dest, kb)
    run.plan.indexes = sorted(run.out)
    run.plan.values = [run.out[i] for i in run.plan.indexes]
    return run.plan


def reconcile_subsections(plan: CpuPlan, subsections: Mapping[str, bytes],
                          src: Mapping[int, int], dest: Manifest, kb: Knowledge) -> None:
    """Add to ``plan`` the subsections the destination does not expect for this CPU:
    removed when a knowledge-base rule's conditions hold, refused otherwise."""
    where = dest.host + f" ({dest.machine}, {dest.cpu})"
    for name, payload in subsections.items():
        if name in dest.subsections:
            continue
        s = kb.subsection(name)
        problem = "no rule says it may be removed (it carries state)" if s is None else \
            s.problem(payload, src)
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
