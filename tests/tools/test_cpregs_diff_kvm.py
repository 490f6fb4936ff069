"""`cpregs diff --emit-profile` on the streams saved under KVM (tests/data/kvm): the profile
loads, and the rewritten stream is what the destination QEMU on KVM accepts."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from migproxy.arm.events import CpuState
from migproxy.arm.kvm_registers import checked_on_write, is_kvm_list, is_kvm_pseudo_register
from migproxy.arm.profile import load_profile
from migproxy.arm.registers import parse_register
from migproxy.cli import main
from testkit.streams import KVM_STREAMS, REAL_STREAMS, cpus, real_stream, run_engine


def _host_cpu(name: str) -> str:
    m = re.fullmatch(r"kvm/linux-[0-9.]+-(.+)-qemu-[0-9.]+", name)
    assert m, name
    return m.group(1)


SAME_HOST_PAIRS = [(a, b) for a, b in itertools.permutations(KVM_STREAMS, 2)
                   if _host_cpu(a) == _host_cpu(b)]


@pytest.fixture(scope="module")
def stream_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kvm-streams")
    files = {}
    for name in KVM_STREAMS:
        files[name] = root / f"{name.split('/')[1]}.mig"
        files[name].write_bytes(real_stream(name))
    return files


def _emit_profile(src: Path, dst: Path, tmp_path: Path) -> Path:
    prof = tmp_path / "p.toml"
    assert main(["cpregs", "diff", str(src), str(dst), "--emit-profile", str(prof)]) == 0
    return prof


def _cpu(path: Path) -> CpuState:
    states = cpus(run_engine([path.read_bytes()])[2])
    assert len(states) == 1
    return states[0]


def test_the_pairs_cover_both_host_cpus_and_every_kernel() -> None:
    assert len(KVM_STREAMS) == 12
    assert len(SAME_HOST_PAIRS) == 2 * 6 * 5


@pytest.mark.parametrize(("source", "dest"), SAME_HOST_PAIRS)
def test_emitted_profile_loads_and_gives_the_destination_list(
        source: str, dest: str, stream_files: dict[str, Path], tmp_path: Path, capsys) -> None:
    src, dst = stream_files[source], stream_files[dest]
    prof = _emit_profile(src, dst, tmp_path)
    text = prof.read_text()
    # Registers are written by name, each with its hex id in the comment.
    for line in text.splitlines():
        if line.startswith("register = "):
            m = re.fullmatch(r'register = "([^"]+)"  # (0x[0-9A-F]{16})', line)
            assert m, line
            assert not m.group(1).startswith("0x")
            assert parse_register(m.group(1)) == int(m.group(2), 16)
    profile = load_profile(str(prof))
    assert all(r.action != "insert" for r in profile.rules)

    out = tmp_path / "out.mig"
    assert main(["rewrite", str(src), str(out), "--profile", str(prof)]) == 0
    capsys.readouterr()
    s, d, o = _cpu(src), _cpu(dst), _cpu(out)
    sv, dv, ov = (dict(zip(c.indexes, c.values, strict=True)) for c in (s, d, o))
    kept_by_destination = dv.keys() - sv.keys()
    assert list(o.indexes) == sorted(dv.keys() - kept_by_destination)
    for r, v in ov.items():
        if checked_on_write(r) is not None:
            assert v == dv[r], hex(r)  # KVM validates it: the destination's value
        else:
            assert v == sv[r], hex(r)  # guest state passes through


def test_a_kvm_profile_sets_what_kvm_checks_and_says_why(
        stream_files: dict[str, Path], tmp_path: Path, capsys) -> None:
    prof = _emit_profile(stream_files["kvm/linux-7.3-neoverse-n1-qemu-10.0.13"],
                         stream_files["kvm/linux-6.1-neoverse-n1-qemu-10.0.13"], tmp_path)
    out = capsys.readouterr().out
    assert "KVM_REG_ARM_DEMUX_CCSIDR(3)" in out
    assert "KVM checks it on write" in out
    assert "the destination keeps its own value" not in out  # 6.1 has no register 7.3 lacks
    assert "KVM_REG_ARM_PSCI_VERSION" in out
    assert "changes what the guest sees" in out
    rules = {(r.action, r.register): r for r in load_profile(str(prof)).rules}
    psci = rules["set", 0x6030000000140000]
    assert (psci.value, psci.value_is) == (0x10001, 0x10003)
    assert "KVM validates the value on write" in psci.note
    ccsidr0 = rules["set", 0x6020000000110000]
    assert (ccsidr0.value, ccsidr0.value_is) == (0x701FE01A, 0x2)
    assert "cache geometry" in ccsidr0.note  # the knowledge base's [[kvm_write]] reason
    assert ("drop", 0x6020000000110003) in rules
    assert ("drop", 0x6030000000160003) in rules  # VENDOR_HYP_BMAP_2, unknown to 6.1


def test_a_kvm_destination_keeps_the_registers_the_source_lacks(
        stream_files: dict[str, Path], tmp_path: Path, capsys) -> None:
    prof = _emit_profile(stream_files["kvm/linux-6.1-max-qemu-7.2.22"],
                         stream_files["kvm/linux-6.12-max-qemu-10.0.13"], tmp_path)
    out = capsys.readouterr().out
    assert re.search(r"\+ 0x603000000013DF01  CNTPCT_EL0 .*the destination keeps its own value",
                     out)
    actions = {r.action for r in load_profile(str(prof)).rules}
    assert "insert" not in actions
    assert "set" in actions


@pytest.mark.parametrize(
    ("name", "checked"),
    [
        ("KVM_REG_ARM_DEMUX_CCSIDR(0)", True),
        ("KVM_REG_ARM_DEMUX_CCSIDR(13)", True),
        ("KVM_REG_ARM_PSCI_VERSION", True),
        ("KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1", True),
        ("KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2", True),
        ("KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3", True),
        ("KVM_REG_ARM_STD_BMAP", True),
        ("KVM_REG_ARM_STD_HYP_BMAP", True),
        ("KVM_REG_ARM_VENDOR_HYP_BMAP", True),
        ("KVM_REG_ARM_VENDOR_HYP_BMAP_2", True),
        ("CLIDR_EL1", True),
        ("MIDR_EL1", True),
        ("REVIDR_EL1", True),
        ("AIDR_EL1", True),
        ("CTR_EL0", True),
        ("ID_AA64ISAR1_EL1", True),
        ("KVM firmware register 9", False),
        ("KVM demultiplexed register 1 value 0", False),
        ("TPIDR_EL0", False),
        ("SCTLR_EL1", False),
        ("CNTPCT_EL0", False),
        ("CSSELR_EL1", False),
    ],
)
def test_checked_on_write(name: str, checked: bool) -> None:
    why = checked_on_write(parse_register(name))
    assert (why is not None) == checked
    assert why is None or why.strip()


def _cpus_of(name: str) -> list[CpuState]:
    return cpus(run_engine([real_stream(name)])[2])


def test_kvm_lists_are_told_from_tcg_lists() -> None:
    for name in REAL_STREAMS:
        assert not is_kvm_list(r for c in _cpus_of(name) for r in c.indexes), name
    for name in KVM_STREAMS:
        assert is_kvm_list(r for c in _cpus_of(name) for r in c.indexes), name
    assert is_kvm_pseudo_register(0x6020000000110000)
    assert not is_kvm_pseudo_register(0x603000000013C801)
