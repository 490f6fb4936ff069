"""Reconciliation under KVM: what a destination host kernel accepts, and what the guest sees.

With ``-accel kvm -cpu host`` the cpreg list of a ``cpu`` section is the source host
kernel's ``KVM_GET_REG_LIST``, and the destination's list is its own kernel's. QEMU loads a
stream in two steps, and each can fail:

1. ``cpu_post_load`` (target/arm/machine.c) merges the stream's list into its own: a
   register the stream has and the destination does not list fails the load; one the
   destination lists and the stream lacks is skipped, so it keeps the value the
   destination's KVM gave it at vCPU reset (``kvm_arm_reset_vcpu`` reads the list back
   with ``write_kvmstate_to_list``).
2. ``write_list_to_kvmstate`` writes every value with ``KVM_SET_ONE_REG``; the kernel
   validates some of them (ID registers, the cache geometry, the PSCI version, the
   firmware bitmaps, ...) and a refused write fails the load with "Failed to put registers
   after init: Invalid argument" (QEMU 10.0) or "Operation not permitted" (7.2), naming no
   register.

So every difference is one of three kinds, each classified by the knowledge base
(``knowledge.toml``: ``[[register]]`` entries with ``accel = "kvm"`` and ``[[kvm_write]]``
entries):

* a register only the stream has must be **dropped**; allowed when a ``drop_if`` holds;
* a register only the destination lists is **kept** at the destination's own value;
  allowed when a ``keep_if`` holds (the guest cannot notice the value);
* a register both have with another value, which the destination validates on write: if
  the destination kernel accepts the stream's value (``accepts``), it is **kept** as the
  stream has it and the guest goes on seeing what it saw; if not, it must be **set** to the
  destination's own value, which is allowed only when a ``set_if`` says the difference is
  invisible to the guest.

Everything else is refused, naming the register, both values and why, before anything is
written: this predicts the second step's failures, which QEMU reports without a register
name. A route may opt in for named registers (``allow_guest_visible``). Registers that are
guest state (no ``[[kvm_write]]`` entry) are carried with the stream's value, as in any
migration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from migproxy.arm.knowledge import (
    Knowledge,
    RegisterRule,
    ccsidr_index,
    kernel_version,
)
from migproxy.arm.manifest import Manifest
from migproxy.arm.plan import Change, CpuPlan, register_name
from migproxy.arm.reconcile import reconcile_subsections


def reconcile_kvm(indexes: Sequence[int], values: Sequence[int],
                  subsections: Mapping[str, bytes], dest: Manifest, kb: Knowledge, *,
                  opt_in: frozenset[int] = frozenset()) -> CpuPlan:
    """The plan for one cpu section of a KVM stream against a KVM destination manifest."""
    src = dict(zip(indexes, values, strict=True))
    dst = dest.values
    out = dict(src)
    plan = CpuPlan([], [])
    kernel = kernel_version(dest.kernel) if dest.kernel else None
    where = dest.host

    def rule(reg: int) -> RegisterRule | None:
        return kb.rule_for(reg, "kvm")

    for reg in sorted(src.keys() - dst.keys()):
        r, v = rule(reg), src[reg]
        if r is not None and r.refuse:
            plan.refusals.append(f"{register_name(reg)} = 0x{v:x} is not listed by {where}: "
                                 f"{r.reason}")
            continue
        if r is not None and r.drop_if is not None and \
                r.drop_if.holds(v, src, ccsidr_index(reg)):
            plan.changes.append(Change("drop", register_name(reg), v, None, r.reason))
        elif reg in opt_in:
            plan.changes.append(Change("drop", register_name(reg), v, None, "opted in", True))
        else:
            why = (f"it may be dropped only with {r.drop_if.describe({})}"
                   if r is not None and r.drop_if is not None else
                   "no rule says it may be dropped (its state would be lost)")
            plan.refusals.append(f"{register_name(reg)} = 0x{v:x} is not listed by {where}: "
                                 f"{why}")
            continue
        del out[reg]
    for reg in sorted(dst.keys() - src.keys()):
        r = rule(reg)
        own = dst[reg]
        if r is not None and not r.refuse and r.keep_if is not None and \
                r.keep_if.holds(own, src, ccsidr_index(reg)):
            plan.changes.append(Change("keep", register_name(reg), None, own, r.reason))
        elif reg in opt_in:
            plan.changes.append(Change("keep", register_name(reg), None, own, "opted in", True))
        else:
            why = (r.reason if r is not None and r.refuse else
                   f"it may keep the destination's value only with {r.keep_if.describe({})}"
                   if r is not None and r.keep_if is not None else
                   "no rule says the guest cannot notice that value")
            plan.refusals.append(
                f"{where} lists {register_name(reg)} and the stream lacks it: the "
                f"destination would give it its own value 0x{own:x}; {why}")
    for reg in sorted(src.keys() & dst.keys()):
        have, own = src[reg], dst[reg]
        w = kb.write_rule(reg)
        if have == own or w is None:
            continue
        if w.accepts.accepts(have, own, kernel):
            plan.changes.append(Change("keep", register_name(reg), have, have, w.reason))
            continue
        r = rule(reg)
        if r is not None and r.refuse:
            plan.refusals.append(f"{register_name(reg)} = 0x{have:x} in the stream, "
                                 f"0x{own:x} on {where}: {r.reason}")
            continue
        mask = r.set_if.differs_only_in if r is not None and r.set_if is not None else None
        benign = r is not None and r.set_if is not None and mask is not None and \
            (have ^ own) & ~mask == 0 and all(t.holds(src) for t in r.set_if.when)
        if benign:
            assert r is not None
            out[reg] = own
            plan.changes.append(Change("set", register_name(reg), have, own, r.reason))
        elif reg in opt_in:
            out[reg] = own
            plan.changes.append(Change("set", register_name(reg), have, own, "opted in", True))
        else:
            what = w.reason.split(". ")[0].rstrip(".")
            plan.refusals.append(
                f"{register_name(reg)} = 0x{have:x} in the stream, 0x{own:x} on {where} "
                f"(bits 0x{have ^ own:x} differ): that kernel accepts "
                f"{w.accepts.describe_for(kernel)}, "
                f"and taking its value changes what the guest reads ({what})")
    reconcile_subsections(plan, subsections, src, dest, kb)
    plan.indexes = sorted(out)
    plan.values = [out[i] for i in plan.indexes]
    return plan
