"""The knowledge base's KVM rules on real KVM register lists (tests/data/kvm: streams saved
under the Debian kernels 6.1, 6.12 and 7.3 on emulated neoverse-n1 and max hosts).

The expectations come from the lists themselves, the shipped KVM manifests and the
knowledge base: which registers differ between two kernels is computed, never typed in;
each predicate is then checked to hold where the knowledge base says it does, and to fail
when the value it guards is changed."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from migproxy.arm.destination import Destination
from migproxy.arm.events import CpuState
from migproxy.arm.knowledge import (
    CLIDR_EL1,
    ccsidr_index,
    clidr_describes,
    kernel_version,
    knowledge,
)
from migproxy.arm.kvm_registers import is_kvm_list
from migproxy.arm.manifest import Manifest, load_set
from migproxy.arm.plan import CpuPlan
from migproxy.arm.reconcile_kvm import reconcile_kvm
from migproxy.arm.registers import parse_register
from testkit.streams import cpus, run_engine

DATA = Path(__file__).resolve().parent.parent / "data" / "kvm"
STREAMS = json.loads((DATA / "streams.json").read_text())["streams"]
KB = knowledge()
HOSTS = sorted({m["host_cpu"] for m in STREAMS.values()})
KERNELS = sorted({m["kernel"] for m in STREAMS.values()}, key=kernel_version)
MMFR3 = parse_register("ID_AA64MMFR3_EL1")
CNTP_CTL = parse_register("CNTP_CTL_EL0")
HCR_EL2 = parse_register("HCR_EL2")
PSCI = parse_register("KVM_REG_ARM_PSCI_VERSION")
MIDR = parse_register("MIDR_EL1")


def short(kernel: str) -> str:
    return ".".join(str(x) for x in kernel_version(kernel) or ())


def stream_cpu(kernel: str, host: str, qemu: str = "10.0.13") -> CpuState:
    import lzma

    data = lzma.decompress((DATA / f"linux-{short(kernel)}-{host}-qemu-{qemu}.mig.xz")
                           .read_bytes())
    _out, _ev, eng = run_engine([data])
    (cpu,) = cpus(eng)
    return cpu


def manifest(kernel: str, host: str, qemu: str = "10.0.13") -> Manifest:
    (m,) = load_set(f"linux-{short(kernel)}-{host}-qemu-{qemu}").manifests
    return m


def plan(src: CpuState, dest: Manifest, opt_in: frozenset[int] = frozenset()) -> CpuPlan:
    return reconcile_kvm(src.indexes, src.values, {}, dest, KB, opt_in=opt_in)


PAIRS = [(h, a, b) for h in HOSTS for a, b in itertools.permutations(KERNELS, 2)]


def pair_id(p: tuple[str, str, str]) -> str:
    return f"{p[0]}-{short(p[1])}-to-{short(p[2])}"


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_a_plan_gives_exactly_what_the_destination_kernel_lists_and_accepts(
        pair: tuple[str, str, str]) -> None:
    """Whatever the verdict, a plan that is not refused leaves only registers the
    destination lists, explains every register it lacks by a keep rule, and leaves every
    validated register at a value the destination kernel accepts."""
    host, a, b = pair
    src, dest = stream_cpu(a, host), manifest(b, host)
    p = plan(src, dest, opt_in=frozenset(range(0)))
    everything = plan(src, dest, opt_in=frozenset(set(src.indexes) | dest.ids))
    assert not everything.refused, everything.refusals  # opt-in covers every refusal
    for pl in (p, everything):
        if pl.refused:
            continue
        assert set(pl.indexes) <= dest.ids
        out = dict(zip(pl.indexes, pl.values, strict=True))
        kept = {c.what for c in pl.changes if c.action == "keep" and c.old is None}
        assert len(kept) == len(dest.ids - set(pl.indexes))
        kernel = kernel_version(dest.kernel)
        for reg, v in out.items():
            w = KB.write_rule(reg)
            if w is not None:
                assert w.accepts.accepts(v, dest.values[reg], kernel), hex(reg)
    # Every change the opt-in alone allows is reported as guest-visible.
    extra = {c.what for c in everything.changes} - {c.what for c in p.changes}
    assert all(c.guest_visible for c in everything.changes if c.what in extra)


@pytest.mark.parametrize("pair", [p for p in PAIRS
                                  if kernel_version(p[1]) < kernel_version(p[2])],
                         ids=pair_id)
def test_every_kernel_upgrade_is_planned_with_knowledge_base_rules_only(
        pair: tuple[str, str, str]) -> None:
    """Older kernel -> newer, both QEMU builds as the source: no refusal and no
    guest-visible change, each change with a knowledge-base reason."""
    host, a, b = pair
    for qemu in ("7.2.22", "10.0.13"):
        p = plan(stream_cpu(a, host, qemu), manifest(b, host))
        assert p.refusals == []
        assert p.changes
        assert not any(c.guest_visible for c in p.changes)
        assert all(c.why and c.why != "opted in" for c in p.changes)


@pytest.mark.parametrize("pair", [p for p in PAIRS
                                  if kernel_version(p[1]) > kernel_version(p[2])],
                         ids=pair_id)
def test_a_rollback_is_refused_only_for_what_the_guest_would_see(
        pair: tuple[str, str, str]) -> None:
    """Newer kernel -> older: refused here (the older kernels refuse the newer cache
    geometry, ID values or PSCI version), naming each register with both values; opting
    in for exactly the named registers makes the plan go through, every one of them
    guest-visible."""
    host, a, b = pair
    src, dest = stream_cpu(a, host), manifest(b, host)
    p = plan(src, dest)
    assert p.refused
    named = {int(r.split("(0x")[1].split(")")[0], 16) for r in p.refusals}
    assert named
    for r in p.refusals:
        assert "in the stream" in r
        assert dest.host in r
    opted = plan(src, dest, opt_in=frozenset(named))
    assert not opted.refused
    assert {c.what for c in opted.changes if c.guest_visible} == \
        {c.what for c in opted.changes if c.why == "opted in"}
    assert len([c for c in opted.changes if c.guest_visible]) == len(named)


def test_tcr2_and_pir_follow_the_guests_mmfr3() -> None:
    """6.12 lists TCR2/PIRE0/PIR for a CPU without the features, 7.3 does not: dropped
    (and kept at the destination's poison value the other way) only while the stream's
    ID_AA64MMFR3_EL1 says the guest lacks FEAT_TCR2 / FEAT_S1PIE."""
    new, old = KERNELS[1], KERNELS[2]  # 6.12 lists them, 7.3 does not
    host = HOSTS[0]
    src, dest = stream_cpu(new, host), manifest(old, host)
    regs = [parse_register(n) for n in ("TCR2_EL1", "PIRE0_EL1", "PIR_EL1")]
    assert set(regs) <= set(src.indexes)
    assert not set(regs) & dest.ids
    assert src.values[src.indexes.index(MMFR3)] == 0
    p = plan(src, dest)
    assert not p.refused
    assert not set(regs) & set(p.indexes)
    for field, names in ((0x1, ["TCR2_EL1"]), (0x100, ["PIRE0_EL1", "PIR_EL1"])):
        vals = list(src.values)
        vals[src.indexes.index(MMFR3)] = field
        with_feature = plan(CpuState(0, 0, src.indexes, tuple(vals)), dest)
        refused = {r.split(" (")[0] for r in with_feature.refusals}
        assert set(names) <= refused
    # The other way: the destination (6.12) keeps its own value, same test.
    back = plan(stream_cpu(old, host), manifest(new, host))
    assert {c.what.split(" (")[0] for c in back.changes if c.action == "keep"
            and c.old is None} >= {"TCR2_EL1", "PIRE0_EL1", "PIR_EL1"}


def test_the_physical_timer_is_dropped_only_while_disabled() -> None:
    host = HOSTS[0]
    src, dest = stream_cpu(KERNELS[1], host), manifest(KERNELS[0], host)
    i = src.indexes.index(CNTP_CTL)
    assert src.values[i] & 1 == 0
    assert any(c.what.startswith("CNTP_CTL_EL0") and c.action == "drop"
               for c in plan(src, dest).changes)
    vals = list(src.values)
    vals[i] |= 1
    armed = plan(CpuState(0, 0, src.indexes, tuple(vals)), dest)
    assert sum(r.startswith(("CNTPCT_EL0", "CNTP_CTL_EL0", "CNTP_CVAL_EL0"))
               for r in armed.refusals) == 3


def test_ccsidr_demux_registers_follow_the_streams_clidr() -> None:
    """6.1 lists one demux register per host cache, 6.3+ all 14: the extra ones go (or
    keep the destination's value) only for caches the stream's CLIDR_EL1 does not
    describe."""
    host = HOSTS[0]
    old, new = stream_cpu(KERNELS[0], host), stream_cpu(KERNELS[1], host)
    extra = sorted(set(new.indexes) - set(old.indexes))
    demux = [r for r in extra if ccsidr_index(r) is not None]
    assert len(demux) == 14 - len([r for r in old.indexes if ccsidr_index(r) is not None])
    clidr = dict(zip(new.indexes, new.values, strict=True))[CLIDR_EL1]
    for r in demux:
        rule = KB.rule_for(r, "kvm")
        assert rule is not None
        assert rule.drop_if is not None
        idx = ccsidr_index(r)
        assert rule.drop_if.holds(0, {CLIDR_EL1: clidr}, idx) == \
            (not clidr_describes(clidr, idx or 0))
    # A CLIDR that describes level 2 data and instruction caches of its own (Ctype2 = 3)
    # makes CSSELR 2 and 3 state the guest can read: they are not dropped.
    assert clidr_describes(0x1B, 3)
    assert not KB.rule_for(demux[0], "kvm").drop_if.holds(  # type: ignore[union-attr]
        0, {CLIDR_EL1: 0x1B}, 3)


def test_pmmir_and_bmap2_move_only_at_zero() -> None:
    host = HOSTS[0]
    newest, older = stream_cpu(KERNELS[2], host), manifest(KERNELS[1], host)
    for name in ("PMMIR_EL1", "KVM_REG_ARM_VENDOR_HYP_BMAP_2"):
        reg = parse_register(name)
        assert reg in newest.indexes
        assert reg not in older.ids
        rule = KB.rule_for(reg, "kvm")
        assert rule is not None
        assert rule.drop_if is not None
        assert rule.keep_if is not None
        assert rule.drop_if.holds(0)
        assert not rule.drop_if.holds(1)
        assert rule.keep_if.holds(0)
        assert not rule.keep_if.holds(2)


def test_write_predicates_match_what_the_lab_kernels_did() -> None:
    """The loads measured in the nested lab (README, KVM matrix): 6.1 takes only its own
    ID values and cache geometry; 6.12 and 7.3 take lower ID fields and 6.1's geometry,
    but 6.12 neither a lower ID_AA64MMFR1_EL1.HCX nor another ID_AA64MMFR2_EL1.NV; PSCI 1.1
    goes up, 1.3 not down."""
    k61, k612, k73 = (kernel_version(k) for k in KERNELS)
    dfr0 = KB.write_rule(parse_register("ID_AA64DFR0_EL1"))
    assert dfr0 is not None
    assert not dfr0.accepts.accepts(0x10305406, 0x10305408, k61)
    assert dfr0.accepts.accepts(0x10305406, 0x10305408, k612)
    assert not dfr0.accepts.accepts(0x10305408, 0x10305406, k73)
    mmfr1 = KB.write_rule(parse_register("ID_AA64MMFR1_EL1"))
    assert mmfr1 is not None
    assert not mmfr1.accepts.accepts(0x10102010312122, 0x10112010312122, k612)
    assert mmfr1.accepts.accepts(0x10102010312122, 0x10112010312122, k73)
    mmfr2 = KB.write_rule(parse_register("ID_AA64MMFR2_EL1"))
    assert mmfr2 is not None  # NV: 7.3 says 0, 6.12 2 and refuses 0
    assert not mmfr2.accepts.accepts(0x1221011110011011, 0x1221011112011011, k612)
    geometry = KB.write_rule(CLIDR_EL1)
    assert geometry is not None
    assert geometry is KB.write_rule(0x6020000000110000)
    assert not geometry.accepts.accepts(0x2000021, 0x82000023, k61)
    assert geometry.accepts.accepts(0x82000023, 0x2000021, k612)
    psci = KB.write_rule(PSCI)
    assert psci is not None
    assert psci.accepts.accepts(0x10001, 0x10003, k73)
    assert not psci.accepts.accepts(0x10003, 0x10001, k612)
    assert KB.write_rule(parse_register("CNTV_CVAL_EL0")) is None  # guest state


def test_hcx_and_nv_are_set_only_for_a_vcpu_without_el2() -> None:
    for name, field in (("ID_AA64MMFR1_EL1", 0xF << 40), ("ID_AA64MMFR2_EL1", 0xF << 24)):
        rule = KB.rule_for(parse_register(name), "kvm")
        assert rule is not None
        assert rule.set_if is not None
        assert rule.set_if.differs_only_in == field
        (test,) = rule.set_if.when
        assert test.register == HCR_EL2
        assert test.holds({})
        assert not test.holds({HCR_EL2: 0})


def test_a_spectre_workaround_or_a_pmu_that_changes_is_refused_by_name() -> None:
    host = HOSTS[0]
    src, dest = stream_cpu(KERNELS[1], host), manifest(KERNELS[2], host)
    wa3 = parse_register("KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3")
    pmcr = parse_register("PMCR_EL0")
    assert is_kvm_list(src.indexes)
    assert wa3 in src.indexes
    assert pmcr in src.indexes
    for reg, why in ((wa3, "Spectre mitigation"), (pmcr, "performance monitors")):
        without = CpuState(0, 0, tuple(r for r in src.indexes if r != reg),
                           tuple(v for r, v in zip(src.indexes, src.values, strict=True)
                                 if r != reg))
        p = plan(without, dest)
        assert any(why in r and f"{reg:016X}" in r.upper() for r in p.refusals), p.refusals
    vals = list(src.values)
    vals[src.indexes.index(wa3)] += 1  # claims a better state than the destination host
    p = plan(CpuState(0, 0, src.indexes, tuple(vals)), dest)
    assert any("Spectre mitigation" in r for r in p.refusals)


def test_another_host_cpu_is_refused_by_midr() -> None:
    """An N1 guest cannot be rewritten into a max host: the CPU identity differs, and
    the plan says so (the route must not be a different CPU model)."""
    src = stream_cpu(KERNELS[1], "neoverse-n1")
    p = plan(src, manifest(KERNELS[1], "max"))
    assert any(r.startswith("MIDR_EL1") for r in p.refusals)


def test_the_destination_chooses_the_kvm_rules_from_the_stream() -> None:
    host = HOSTS[0]
    src = stream_cpu(KERNELS[0], host)
    dest = Destination.load(f"linux-{short(KERNELS[1])}-{host}-qemu-10.0.13")
    m, p = dest.plan("virt-7.2", src.indexes, src.values, {}, 22)
    assert m.accel == "kvm"
    assert not p.refused
    assert p.changes == plan(src, m).changes


def test_a_directory_destination_is_read_again_when_its_host_recaptures(
        tmp_path: Path) -> None:
    """A destination host that recaptures its own manifest after a kernel upgrade (the
    same file, the new kernel's list): the daemon's route plans the next migration against
    it without a restart; a file caught half-written keeps the set read before."""
    import os

    host = HOSTS[0]
    old, new = manifest(KERNELS[0], host), manifest(KERNELS[1], host)
    f = tmp_path / "virt-7.2-host.json"
    f.write_text(old.dumps())
    os.utime(f, ns=(1, 1))
    dest = Destination.load(str(tmp_path))
    src = stream_cpu(KERNELS[1], host)
    m, p = dest.plan("virt-7.2", src.indexes, src.values, {}, 22)
    assert m.kernel == old.kernel
    assert p.refused
    f.write_text("{")  # a capture in progress
    os.utime(f, ns=(2, 2))
    assert not dest.refresh()
    assert dest.manifests.manifests[0].kernel == old.kernel
    f.write_text(new.dumps())
    os.utime(f, ns=(3, 3))
    m, p = dest.plan("virt-7.2", src.indexes, src.values, {}, 22)
    assert m.kernel == new.kernel
    assert not p.refused
    assert not p.changes
    assert not dest.refresh()  # nothing changed since
    shipped = Destination.load(f"linux-{short(KERNELS[1])}-{host}-qemu-10.0.13")
    assert shipped.spec == ""
    assert not shipped.refresh()


def test_entries_for_older_kernels_guard_their_values() -> None:
    """Entries the lab's kernels do not exercise (5.17's OS lock, 5.19's bitmaps): the
    OS lock moves only while unlocked; a source without the bitmaps (every service) keeps
    the destination's, which offer every service it supports; nothing drops them."""
    oslsr = KB.rule_for(parse_register("OSLSR_EL1"), "kvm")
    assert oslsr is not None
    assert oslsr.drop_if is not None
    assert oslsr.keep_if is not None
    for cond in (oslsr.drop_if, oslsr.keep_if):
        assert cond.holds(0x8)
        assert not cond.holds(0xA)
    for name in ("KVM_REG_ARM_STD_BMAP", "KVM_REG_ARM_STD_HYP_BMAP",
                 "KVM_REG_ARM_VENDOR_HYP_BMAP"):
        rule = KB.rule_for(parse_register(name), "kvm")
        assert rule is not None
        assert rule.keep_if is not None
        assert rule.drop_if is None
        w = KB.write_rule(parse_register(name))
        assert w is not None
        assert w.accepts.accepts(0x1, 0x3, (6, 1))
        assert not w.accepts.accepts(0x4, 0x3, (7, 3))
