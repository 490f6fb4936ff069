"""The plan for one ``cpu`` section, whoever made it, and the changes it is made of.

A destination's reconciliation (:mod:`migproxy.arm.reconcile`,
:mod:`migproxy.arm.reconcile_kvm`) and a profile (:mod:`migproxy.arm.profile`) both make a
:class:`CpuPlan`; the cpu rewriter (:mod:`migproxy.arm.rewriter`) carries either out the
same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from migproxy.arm.reasons import ArmReason
from migproxy.arm.registers import describe, format_id
from migproxy.stream.errors import SectionRefused

Action = Literal["drop", "insert", "set", "remove", "keep"]


class RewriteRefused(SectionRefused):
    """A profile rule's condition does not hold, so the cpu section must not be rewritten."""

    reason = ArmReason.PROFILE_REFUSED


@dataclass(frozen=True)
class Change:
    action: Action
    what: str  # a register name (id) or a subsection name
    old: int | None
    new: int | None
    why: str  # the rule's reason, or "opted in" ("": a profile's change, which gives none)
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
        """The change and the first sentence of why it is allowed (if it says why)."""
        if not self.why:
            return self.describe()
        first = self.why.split(". ")[0].rstrip(".")
        return f"{self.describe()}: {first}"


@dataclass
class CpuPlan:
    """What to do to one cpu section: its new cpreg arrays, the subsections to remove, the
    changes that make them, and the refusals that forbid them."""

    indexes: list[int]
    values: list[int]
    remove_subsections: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    # True (a destination's plan): CpuReconciled lists every change with its reason, before
    # CpuRewritten. False (a profile's): CpuRewritten reports the register changes and a
    # CpuReconciled after it only the subsections removed.
    explained: bool = True

    @property
    def refused(self) -> bool:
        return bool(self.refusals)


def register_name(reg: int) -> str:
    """``ID_AA64DFR0_EL1 (0x603000000013c028)``: how plans and refusals name a register."""
    return f"{describe(reg)} ({format_id(reg)})"
