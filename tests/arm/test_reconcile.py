"""Tests for migproxy.arm.reconcile and migproxy.arm.destination: the plans for the routes
between the shipped manifests (the source stream is simulated from the source build's
manifest: its cpregs, and its cpu subsections with chosen payloads)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest

from migproxy.arm.cpu_section import CpuLayoutError
from migproxy.arm.destination import Destination, NoManifest
from migproxy.arm.knowledge import knowledge
from migproxy.arm.manifest import Manifest, load_set, shipped_sets
from migproxy.arm.plan import Change, CpuPlan
from migproxy.arm.reconcile import id_differences, model_constants, reconcile
from migproxy.arm.registers import describe, format_id, is_id_register, parse_register

BOGUS = parse_register("BOGUS_DBGDTRTX")
DTRTXINT = parse_register("DBGDTRTXint")
DTR_EL0 = parse_register("DBGDTR_EL0")
ISAR0 = parse_register("ID_AA64ISAR0_EL1")
ISAR2 = parse_register("ID_AA64ISAR2_EL1")
DFR0 = parse_register("ID_DFR0")
DFR0_EL1 = parse_register("ID_DFR0_EL1")
PAR = parse_register("PAR")
PAR_64 = parse_register("PAR_64")
RMR = parse_register("RMR")
RMR_EL1 = parse_register("RMR_EL1")
MDCCINT = parse_register("MDCCINT_EL1")
TCR2 = parse_register("TCR2_EL1")

WFXT = "cpu/wfxt-timer"
UNARMED = b"\xff" * 8
ARMED = (1234).to_bytes(8, "big")

ALL = tuple(m for s in shipped_sets() for m in load_set(s).manifests)


def manifest(qemu: str, machine: str, cpu: str) -> Manifest:
    m = load_set(f"qemu-{qemu}").get(machine, cpu)
    assert m is not None, (qemu, machine, cpu)
    return m


def name(reg: int) -> str:
    """How reconciliation names a register in changes and refusals."""
    return f"{describe(reg)} ({format_id(reg)})"


def run(src: Manifest, dest: Manifest, *, accel: str = "tcg",
        edits: Mapping[int, int] | None = None, payloads: Mapping[str, bytes] | None = None,
        opt_in: frozenset[int] = frozenset()) -> CpuPlan:
    """Reconcile a stream shaped like ``src`` (its values changed or registers added by
    ``edits``; its subsections with ``payloads``, the wfxt timer unarmed by default)."""
    values = dict(src.cpregs)
    values.update(edits or {})
    indexes = sorted(values)
    subs = {n: UNARMED if n == WFXT else b"" for n in src.subsections}
    subs.update(payloads or {})
    return reconcile(indexes, [values[i] for i in indexes], subs, dest, knowledge(),
                     accel=accel, model_values=model_constants(ALL, dest.cpu), opt_in=opt_in)


def summary(plan: CpuPlan) -> list[tuple[str, str, int | None, int | None, bool]]:
    return [(c.action, c.what, c.old, c.new, c.guest_visible) for c in plan.changes]


def result(plan: CpuPlan) -> dict[int, int]:
    return dict(zip(plan.indexes, plan.values, strict=True))


def dest_ids(m: Manifest) -> list[int]:
    return [i for i, _v in m.cpregs]


def marked(m: Manifest) -> dict[int, int]:
    """Distinct values for the registers no rule touches (neither ID registers nor named
    in the knowledge base), so that a value taken from the wrong side shows."""
    kb = knowledge()
    return {reg: 0x5A00_0000 + n for n, (reg, _v) in enumerate(m.cpregs)
            if not is_id_register(reg) and kb.rule_for(reg, "tcg") is None}


# -- 10.0.2 <-> 10.0.13: the DCC registers -----------------------------------------------------


def test_10_0_2_to_10_0_13_swaps_the_dcc_registers() -> None:
    src = manifest("10.0.2", "virt-10.0", "cortex-a57")
    dest = manifest("10.0.13", "virt-10.0", "cortex-a57")
    edits = marked(src)
    plan = run(src, dest, edits=edits)
    assert plan.refusals == []
    assert not plan.refused
    assert summary(plan) == [("drop", name(BOGUS), 0, None, False),
                             ("insert", name(DTRTXINT), None, 0, False),
                             ("insert", name(DTR_EL0), None, 0, False)]
    assert plan.indexes == dest_ids(dest)
    assert plan.remove_subsections == []
    out = result(plan)
    assert out[DTRTXINT] == 0
    assert out[DTR_EL0] == 0
    assert BOGUS not in out
    src_values = {**src.values, **edits}
    untouched = set(out) - {DTRTXINT, DTR_EL0}
    assert len(untouched) == len(dest.cpregs) - 2
    assert all(out[r] == src_values[r] for r in untouched)
    assert all(out[r] == 0x5A00_0000 + n for n, (r, _v) in enumerate(src.cpregs) if r in edits)


def test_10_0_13_to_10_0_2_swaps_them_back() -> None:
    src = manifest("10.0.13", "virt-10.0", "cortex-a57")
    dest = manifest("10.0.2", "virt-10.0", "cortex-a57")
    edits = marked(src)
    plan = run(src, dest, edits=edits)
    assert plan.refusals == []
    assert summary(plan) == [("drop", name(DTRTXINT), 0, None, False),
                             ("drop", name(DTR_EL0), 0, None, False),
                             ("insert", name(BOGUS), None, 0, False)]
    assert plan.indexes == dest_ids(dest)
    out = result(plan)
    assert out[BOGUS] == 0
    assert all(out[r] == v for r, v in edits.items())


def test_a_non_zero_dbgdtr_el0_is_refused() -> None:
    src = manifest("10.0.13", "virt-10.0", "cortex-a57")
    dest = manifest("10.0.2", "virt-10.0", "cortex-a57")
    plan = run(src, dest, edits={DTR_EL0: 0x41})
    assert plan.refused
    assert plan.refusals == [
        f"{name(DTR_EL0)} = 0x41 is not known to QEMU 10.0.2 (virt-10.0, cortex-a57): "
        "it may be dropped only with value 0x0"]
    assert "DBGDTR_EL0" in plan.refusals[0]
    assert "value 0x0" in plan.refusals[0]
    # the other differences are still planned
    assert [c.what for c in plan.changes] == [name(DTRTXINT), name(BOGUS)]


# -- 11.1.3 -> 10.0.2, cortex-a57: ID_AA64ISAR0_EL1 and the wfxt timer -------------------------


def test_11_1_3_to_10_0_2_inserts_isar0_and_removes_the_unarmed_wfxt_timer() -> None:
    src = manifest("11.1.3", "virt-10.0", "cortex-a57")
    dest = manifest("10.0.2", "virt-10.0", "cortex-a57")
    assert WFXT in src.subsections
    assert WFXT not in dest.subsections
    assert model_constants(ALL, "cortex-a57")[ISAR0] == 0x11120
    plan = run(src, dest)
    assert plan.refusals == []
    assert plan.remove_subsections == [WFXT]
    assert ("insert", name(ISAR0), None, 0x11120, False) in summary(plan)
    assert ("remove", WFXT, None, None, False) in summary(plan)
    assert result(plan)[ISAR0] == 0x11120
    assert plan.indexes == dest_ids(dest)
    isar0 = next(c for c in plan.changes if c.what == name(ISAR0))
    assert isar0.why == knowledge().id_registers_reason


def test_an_armed_wfxt_timer_is_refused() -> None:
    src = manifest("11.1.3", "virt-10.0", "cortex-a57")
    dest = manifest("10.0.2", "virt-10.0", "cortex-a57")
    plan = run(src, dest, payloads={WFXT: ARMED})
    assert plan.refused
    assert plan.remove_subsections == []
    assert plan.refusals == [
        "subsection cpu/wfxt-timer is not expected by QEMU 10.0.2 (virt-10.0, cortex-a57): "
        "it may be removed only with value 0xffffffffffffffff (it holds 0x00000000000004d2)"]


def test_a_wfxt_timer_payload_of_the_wrong_size_is_refused() -> None:
    src = manifest("11.1.3", "virt-10.0", "cortex-a57")
    dest = manifest("10.0.2", "virt-10.0", "cortex-a57")
    plan = run(src, dest, payloads={WFXT: b"\xff" * 4})
    assert plan.remove_subsections == []
    assert len(plan.refusals) == 1
    assert "(it holds 0xffffffff)" in plan.refusals[0]


def test_the_wfxt_timer_of_a_cpu_with_wfxt_is_refused() -> None:
    src = manifest("11.1.3", "virt-10.0", "cortex-a57")
    dest = manifest("10.0.2", "virt-10.0", "cortex-a57")
    assert src.values[ISAR2] == 0
    plan = run(src, dest, edits={ISAR2: 0x2})
    assert plan.refused
    assert plan.remove_subsections == []
    assert plan.refusals == [
        f"{name(ISAR2)} = 0x2 in the stream, 0x0 on QEMU 10.0.2 (virt-10.0, cortex-a57) "
        "(bits 0x2 differ): a CPU feature would change under the running guest",
        "subsection cpu/wfxt-timer is not expected by QEMU 10.0.2 (virt-10.0, cortex-a57): "
        f"it may be removed only when {name(ISAR2)} has 0 in bits 0xf (the CPU lacks the "
        "feature); the stream has 0x2"]


def test_a_high_isar2_field_does_not_keep_the_timer() -> None:
    """Only WFxT (bits [3:0]) matters to the subsection rule; another ISAR2 field is
    refused as an ID difference, not as the subsection."""
    src = manifest("11.1.3", "virt-10.0", "cortex-a57")
    dest = manifest("10.0.2", "virt-10.0", "cortex-a57")
    plan = run(src, dest, edits={ISAR2: 0x10})
    assert plan.remove_subsections == [WFXT]
    assert len(plan.refusals) == 1
    assert plan.refusals[0].startswith(f"{name(ISAR2)} = 0x10 in the stream")


# -- 7.2.22 <-> 10.0.2, cortex-a57: ID_DFR0, PAR, RMR, the debug stubs -------------------------


def test_7_2_22_to_10_0_2_sets_id_dfr0_and_fills_the_list() -> None:
    src = manifest("7.2.22", "virt-7.2", "cortex-a57")
    dest = manifest("10.0.2", "virt-7.2", "cortex-a57")
    assert src.values[DFR0] ^ dest.values[DFR0] == 0x0001_0000  # only MMapTrc
    plan = run(src, dest)
    assert plan.refusals == []
    assert plan.indexes == dest_ids(dest)
    changes = summary(plan)
    assert ("set", name(DFR0), 0x3010006, 0x3000006, False) in changes
    assert ("set", name(DFR0_EL1), 0x3010006, 0x3000006, False) in changes
    assert ("drop", name(PAR), 0, None, False) in changes
    assert ("insert", name(RMR_EL1), None, 1, False) in changes
    assert ("insert", name(RMR), None, 1, False) in changes
    assert ("insert", name(MDCCINT), None, 0, False) in changes
    out = result(plan)
    assert out[DFR0] == out[DFR0_EL1] == dest.values[DFR0] == 0x3000006
    assert out[RMR_EL1] == 1
    assert PAR not in out
    assert len([c for c in plan.changes if c.action == "set"]) == 2
    assert id_differences(src.values, dest, knowledge(), "tcg") == []  # ID_DFR0 is benign


def test_par_equal_to_the_low_half_of_par_64_is_dropped() -> None:
    src = manifest("7.2.22", "virt-7.2", "cortex-a57")
    dest = manifest("10.0.2", "virt-7.2", "cortex-a57")
    plan = run(src, dest, edits={PAR_64: 0xDEAD_0000_1234, PAR: 0x1234})
    assert plan.refusals == []
    assert ("drop", name(PAR), 0x1234, None, False) in summary(plan)
    assert result(plan)[PAR_64] == 0xDEAD_0000_1234


@pytest.mark.parametrize("par", [0x1235, 0xDEAD_0000_1234])
def test_par_different_from_the_low_half_of_par_64_is_refused(par: int) -> None:
    src = manifest("7.2.22", "virt-7.2", "cortex-a57")
    dest = manifest("10.0.2", "virt-7.2", "cortex-a57")
    plan = run(src, dest, edits={PAR_64: 0xDEAD_0000_1234, PAR: par})
    assert plan.refusals == [
        f"{name(PAR)} = 0x{par:x} is not known to QEMU 10.0.2 (virt-7.2, cortex-a57): it may "
        "be dropped only with equal to the low 32 bits of PAR_64"]
    assert PAR not in [c.what for c in plan.changes]


def test_10_0_2_to_7_2_22_inserts_par_from_par_64() -> None:
    src = manifest("10.0.2", "virt-7.2", "cortex-a57")
    dest = manifest("7.2.22", "virt-7.2", "cortex-a57")
    assert PAR not in src.values
    assert PAR in dest.values
    plan = run(src, dest, edits={PAR_64: 0x1234_5678_9ABC})
    assert plan.refusals == []
    assert plan.indexes == dest_ids(dest)
    out = result(plan)
    assert out[PAR] == 0x5678_9ABC
    assert out[PAR_64] == 0x1234_5678_9ABC
    changes = summary(plan)
    assert ("insert", name(PAR), None, 0x5678_9ABC, False) in changes
    assert ("drop", name(RMR_EL1), 1, None, False) in changes
    assert ("drop", name(MDCCINT), 0, None, False) in changes
    assert ("set", name(DFR0_EL1), 0x3000006, 0x3010006, False) in changes
    assert out[DFR0_EL1] == 0x3010006


@pytest.mark.parametrize(("reg", "value", "only"), [
    (MDCCINT, 0x3, 0x0),  # a non-zero MDCCINT_EL1
    (RMR_EL1, 0x0, 0x1),  # RMR_EL1 other than its reset value 1
])
def test_a_register_7_2_lacks_is_dropped_only_at_its_value(reg: int, value: int,
                                                           only: int) -> None:
    src = manifest("10.0.2", "virt-7.2", "cortex-a57")
    dest = manifest("7.2.22", "virt-7.2", "cortex-a57")
    plan = run(src, dest, edits={reg: value})
    assert plan.refusals == [
        f"{name(reg)} = {value:#x} is not known to QEMU 7.2.22 (virt-7.2, cortex-a57): "
        f"it may be dropped only with value {only:#x}"]


# -- the max CPU: its features differ between versions -----------------------------------------


@pytest.mark.parametrize(("a", "b"), [("10.0.2", "11.1.3"), ("11.1.3", "10.0.2")])
def test_max_between_10_0_and_11_1_is_refused(a: str, b: str) -> None:
    src = manifest(a, "virt-10.0", "max")
    dest = manifest(b, "virt-10.0", "max")
    plan = run(src, dest)
    assert plan.refused
    assert any("a CPU feature would change" in r for r in plan.refusals)
    assert all("a CPU feature would change" in r or "its state would be lost" in r
               or "no rule gives its value" in r or "(max is not a fixed CPU model)" in r
               or "(it carries state)" in r
               for r in plan.refusals)
    diffs = id_differences(src.values, dest, knowledge(), "tcg")
    assert len(diffs) == 11
    for reg, have, want in diffs:
        assert any(r.startswith(f"{name(reg)} = 0x{have:x} in the stream, 0x{want:x} on "
                                f"QEMU {b} (virt-10.0, max)") for r in plan.refusals)


def test_max_from_11_1_to_10_0_loses_state() -> None:
    src = manifest("11.1.3", "virt-10.0", "max")
    dest = manifest("10.0.2", "virt-10.0", "max")
    plan = run(src, dest)
    assert f"{name(TCR2)} = 0x0 is not known to QEMU 10.0.2 (virt-10.0, max): no rule says " \
        "it may be dropped (its state would be lost)" in plan.refusals
    assert any("its state would be lost" in r for r in plan.refusals)


@pytest.mark.parametrize(("a", "b"), [("10.0.2", "10.0.13"), ("10.0.13", "10.0.2")])
def test_max_between_10_0_releases_is_not_refused(a: str, b: str) -> None:
    src = manifest(a, "virt-10.0", "max")
    dest = manifest(b, "virt-10.0", "max")
    plan = run(src, dest)
    assert plan.refusals == []
    assert not plan.refused
    assert plan.indexes == dest_ids(dest)
    assert sorted(c.action for c in plan.changes) == (
        ["drop", "insert", "insert"] if a == "10.0.2" else ["drop", "drop", "insert"])
    assert plan.remove_subsections == []


def test_opting_in_one_id_register_sets_it_and_leaves_the_rest_refused() -> None:
    src = manifest("10.0.2", "virt-10.0", "max")
    dest = manifest("11.1.3", "virt-10.0", "max")
    reg, have, want = id_differences(src.values, dest, knowledge(), "tcg")[0]
    before = run(src, dest)
    after = run(src, dest, opt_in=frozenset({reg}))
    opted = [c for c in after.changes if c.guest_visible]
    assert opted == [Change("set", name(reg), have, want, "opted in", True)]
    assert result(after)[reg] == want
    mine = [r for r in before.refusals if r.startswith(f"{name(reg)} = ")]
    assert len(mine) == 1
    assert "a CPU feature would change" in mine[0]
    assert after.refusals == [r for r in before.refusals if r not in mine]
    assert after.refused


# -- KVM-only rules -----------------------------------------------------------------------------


def test_tcr2_el1_is_dropped_under_kvm_only() -> None:
    src = manifest("10.0.2", "virt-10.0", "cortex-a57")
    dest = manifest("10.0.2", "virt-10.0", "cortex-a57")
    assert TCR2 not in src.values
    assert TCR2 not in dest.values
    kvm = run(src, dest, accel="kvm", edits={TCR2: 5})
    assert kvm.refusals == []
    assert summary(kvm) == [("drop", name(TCR2), 5, None, False)]
    assert kvm.indexes == dest_ids(dest)
    rule = knowledge().rule_for(TCR2, "kvm")
    assert rule is not None
    assert kvm.changes[0].why == rule.reason
    tcg = run(src, dest, accel="tcg", edits={TCR2: 5})
    assert tcg.changes == []
    assert tcg.refusals == [
        f"{name(TCR2)} = 0x5 is not known to QEMU 10.0.2 (virt-10.0, cortex-a57): no rule "
        "says it may be dropped (its state would be lost)"]


def test_an_opted_in_register_without_a_rule_is_dropped_as_guest_visible() -> None:
    src = manifest("10.0.2", "virt-10.0", "cortex-a57")
    dest = manifest("10.0.2", "virt-10.0", "cortex-a57")
    plan = run(src, dest, edits={TCR2: 5}, opt_in=frozenset({TCR2}))
    assert plan.refusals == []
    assert plan.changes == [Change("drop", name(TCR2), 5, None, "opted in", True)]


# -- subsections -------------------------------------------------------------------------------


def test_an_unknown_subsection_is_refused() -> None:
    src = manifest("10.0.2", "virt-10.0", "cortex-a57")
    dest = manifest("10.0.13", "virt-10.0", "cortex-a57")
    plan = run(src, dest, payloads={"cpu/made-up": b"\x00\x01"})
    assert plan.refusals == [
        "subsection cpu/made-up is not expected by QEMU 10.0.13 (virt-10.0, cortex-a57): "
        "no rule says it may be removed (it carries state)"]
    assert plan.remove_subsections == []


def test_a_subsection_the_destination_expects_is_kept() -> None:
    src = manifest("10.0.2", "virt-10.0", "max")
    dest = manifest("10.0.13", "virt-10.0", "max")
    assert WFXT in dest.subsections
    plan = run(src, dest, payloads={WFXT: ARMED})
    assert plan.refusals == []
    assert plan.remove_subsections == []


# -- Change texts ------------------------------------------------------------------------------


def test_change_describe_and_explain() -> None:
    drop = Change("drop", "BOGUS_DBGDTRTX (0x40200000200E0298)", 0, None,
                  "A bogus register. It always reads 0.")
    assert drop.describe() == "drop BOGUS_DBGDTRTX (0x40200000200E0298) = 0x0"
    assert drop.explain() == "drop BOGUS_DBGDTRTX (0x40200000200E0298) = 0x0: A bogus register"
    ins = Change("insert", "PAR", None, 0x56789ABC, "Low half of PAR_64.")
    assert ins.describe() == "insert PAR = 0x56789abc"
    assert ins.explain() == "insert PAR = 0x56789abc: Low half of PAR_64"
    st = Change("set", "ID_DFR0", 0x3010006, 0x3000006, "MMapTrc. Never emulated.")
    assert st.describe() == "set ID_DFR0 0x3010006 -> 0x3000006"
    assert st.explain() == "set ID_DFR0 0x3010006 -> 0x3000006: MMapTrc"
    rm = Change("remove", WFXT, None, None, "Here it carries no state: unarmed")
    assert rm.describe() == "remove subsection cpu/wfxt-timer"
    assert rm.explain() == "remove subsection cpu/wfxt-timer: Here it carries no state: unarmed"
    opted = Change("set", "CLIDR", 0x123, 0x2000023, "opted in", True)
    assert opted.describe() == "set CLIDR 0x123 -> 0x2000023 (guest-visible, opted in)"
    assert opted.explain() == "set CLIDR 0x123 -> 0x2000023 (guest-visible, opted in): opted in"
    assert Change("drop", "X", None, None, "w").describe() == "drop X = -"


def test_change_texts_of_a_real_plan() -> None:
    plan = run(manifest("11.1.3", "virt-10.0", "cortex-a57"),
               manifest("10.0.2", "virt-10.0", "cortex-a57"))
    texts = {c.describe(): c.explain() for c in plan.changes}
    assert texts == {
        "drop DBGDTRTXint (0x40200000200E0280) = 0x0":
            "drop DBGDTRTXint (0x40200000200E0280) = 0x0: Debug Communications Channel and "
            "OS-save registers that QEMU implements as RAZ/WI constants (ARM_CP_CONST, reset "
            "value 0) because the DCC is not implemented: they always read 0 and ignore "
            "writes, so a value of 0 is their whole state",
        "drop DBGDTR_EL0 (0x6030000000139820) = 0x0":
            "drop DBGDTR_EL0 (0x6030000000139820) = 0x0: Debug Communications Channel and "
            "OS-save registers that QEMU implements as RAZ/WI constants (ARM_CP_CONST, reset "
            "value 0) because the DCC is not implemented: they always read 0 and ignore "
            "writes, so a value of 0 is their whole state",
        "insert BOGUS_DBGDTRTX (0x40200000200E0298) = 0x0":
            "insert BOGUS_DBGDTRTX (0x40200000200E0298) = 0x0: A bogus AArch32 register: QEMU "
            "defined DBGDTRTX at a wrong encoding (cp14 opc1 0 crn 0 crm 5 opc2 0 of the DCC), "
            "as a RAZ/WI constant 0",
        "insert ID_AA64ISAR0_EL1 (0x603000000013C030) = 0x11120":
            "insert ID_AA64ISAR0_EL1 (0x603000000013C030) = 0x11120: A constant ID register "
            "of a named CPU model (stable_models): its value is the model's, whatever QEMU "
            "version; a version that stops listing it (11.1 no longer migrates "
            "ID_AA64ISAR0_EL1) still gives the guest that value",
        "remove subsection cpu/wfxt-timer":
            "remove subsection cpu/wfxt-timer: Here it carries no state: the destination does "
            "not expect it for this CPU model, the stream's CPU lacks FEAT_WFxT "
            "(ID_AA64ISAR2_EL1.WFxT = 0) so the guest cannot use WFET or WFIT, and the timer "
            "is not armed (expiry -1)",
    }


# -- model constants ---------------------------------------------------------------------------


def test_model_constants_keep_only_values_every_manifest_agrees_on() -> None:
    consts = model_constants(ALL, "cortex-a57")
    assert consts[ISAR0] == 0x11120
    assert consts[ISAR2] == 0
    assert DFR0 not in consts  # 0x3010006 in 7.2.22, 0x3000006 later
    assert all(is_id_register(r) for r in consts)
    assert model_constants(ALL, "no-such-cpu") == {}


def test_a_stable_id_register_not_holding_the_model_value_is_refused() -> None:
    src = manifest("10.0.2", "virt-10.0", "cortex-a57")
    dest = manifest("11.1.3", "virt-10.0", "cortex-a57")
    assert ISAR0 not in dest.values
    assert run(src, dest).refusals == []
    plan = run(src, dest, edits={ISAR0: 0x11121})
    assert plan.refusals == [
        f"{name(ISAR0)} = 0x11121 is not known to QEMU 11.1.3 (virt-10.0, cortex-a57): a "
        "constant ID register: dropping it changes what the guest reads"]


# -- destination --------------------------------------------------------------------------------


def _stream(m: Manifest) -> tuple[list[int], list[int]]:
    return [i for i, _v in m.cpregs], [v for _i, v in m.cpregs]


@pytest.mark.parametrize("cpu", ["cortex-a57", "max"])
def test_choose_picks_the_manifest_of_the_streams_cpu_model(cpu: str) -> None:
    d = Destination.load("qemu-11.1.3")
    ids, values = _stream(manifest("10.0.2", "virt-10.0", cpu))
    m = d.choose("virt-10.0", ids, values)
    assert m == manifest("11.1.3", "virt-10.0", cpu)
    assert (m.qemu, m.machine, m.cpu) == ("11.1.3", "virt-10.0", cpu)


def test_choose_for_an_unknown_machine_type_lists_what_the_set_has() -> None:
    d = Destination.load("qemu-11.1.3")
    ids, values = _stream(manifest("10.0.2", "virt-10.0", "cortex-a57"))
    with pytest.raises(NoManifest) as e:
        d.choose("virt-9.9", ids, values)
    assert str(e.value) == (
        "qemu-11.1.3 has no manifest for machine type virt-9.9 (it has: virt-10.0 cortex-a57, "
        "virt-10.0 max, virt-7.2 cortex-a57, virt-7.2 max)")
    with pytest.raises(NoManifest, match=re.escape("machine type virt-10.0")):
        Destination.load("qemu-7.2.22").choose("virt-10.0", ids, values)


def test_plan_checks_the_cpu_section_version() -> None:
    d = Destination.load("qemu-11.1.3")
    src = manifest("10.0.2", "virt-10.0", "cortex-a57")
    ids, values = _stream(src)
    assert manifest("11.1.3", "virt-10.0", "cortex-a57").cpu_section_version == 22
    with pytest.raises(CpuLayoutError) as e:
        d.plan("virt-10.0", ids, values, {}, 21)
    assert str(e.value) == "cpu section version 21; QEMU 11.1.3 expects 22"


def test_plan_reconciles_against_the_chosen_manifest() -> None:
    d = Destination.load("qemu-10.0.2")
    src = manifest("11.1.3", "virt-10.0", "cortex-a57")
    ids, values = _stream(src)
    m, plan = d.plan("virt-10.0", ids, values, {WFXT: UNARMED}, 22)
    assert m == manifest("10.0.2", "virt-10.0", "cortex-a57")
    assert plan.refusals == []
    assert plan.indexes == dest_ids(m)
    assert plan.remove_subsections == [WFXT]
    assert result(plan)[ISAR0] == 0x11120


def test_destination_opt_in_reaches_the_plan_and_the_stream_says_its_accelerator() -> None:
    """The accelerator is the stream's own (only a KVM list has the firmware registers): a
    route for KVM VMs refuses a TCG stream, and a KVM stream finds no manifest in a TCG
    set."""
    src = manifest("10.0.2", "virt-10.0", "cortex-a57")
    values = {**src.values, TCR2: 5}
    ids = sorted(values)
    vals = [values[i] for i in ids]
    _m, tcg = Destination.load("qemu-10.0.2").plan("virt-10.0", ids, vals, {}, 22)
    assert len(tcg.refusals) == 1
    assert tcg.refusals[0].startswith(name(TCR2))
    with pytest.raises(NoManifest, match="the route is for KVM VMs and the stream was saved "
                       "under TCG"):
        Destination.load("qemu-10.0.2", accel="kvm").plan("virt-10.0", ids, vals, {}, 22)
    psci = 0x6030000000140000
    with pytest.raises(NoManifest, match=r"saved under KVM .* has only TCG manifests"):
        Destination.load("qemu-10.0.2").plan("virt-10.0", [*ids, psci], [*vals, 0x10001],
                                             {}, 22)
    _m, opted = Destination.load("qemu-10.0.2", opt_in=frozenset({TCR2})).plan(
        "virt-10.0", ids, vals, {}, 22)
    assert opted.refusals == []
    assert opted.changes[0].guest_visible
