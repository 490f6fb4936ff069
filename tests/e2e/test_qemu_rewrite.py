"""Rewritten real streams loaded into real QEMU destinations (the QEMU lab).

Every case saves a fresh stream from a running tick guest on the source version, rewrites
it with ``migproxy rewrite``, loads it into the destination version and checks that the
guest continues from the tick after the last one the source printed. Negative controls
show the unmodified stream fails on the same destination, so the tests can fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from migproxy.cli import main
from migproxy.lab import Lab
from testkit.labs import require_lab

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def lab() -> Lab:
    return require_lab("7.2", "10.0.2", "10.0.13", "11.1")


@pytest.fixture
def scratch(lab: Lab) -> Iterator[Path]:
    with lab.scratch_dir("rewrite-") as d:
        yield d


def _rewrite(src: Path, out: Path, *extra: str) -> None:
    assert main(["rewrite", str(src), str(out), *extra]) == 0
    assert out.exists()


@pytest.mark.parametrize("cpu", ["cortex-a57", "max"])
@pytest.mark.parametrize("smp", [1, 2])
def test_10_0_2_to_10_0_13_with_the_default_profile(lab: Lab, scratch: Path, cpu: str,
                                                    smp: int) -> None:
    s = lab.stream("10.0.2", "virt-10.0", cpu, smp)
    direct = lab.load_stream("10.0.13", s.path, "virt-10.0", cpu, smp,
                             expect_after=s.last_tick)
    assert not direct.loaded, "10.0.13 unexpectedly accepted the unmodified 10.0.2 stream"
    out = scratch / "rewritten.mig"
    _rewrite(s.path, out)
    r = lab.load_stream("10.0.13", out, "virt-10.0", cpu, smp, expect_after=s.last_tick)
    assert r.ok, r.error
    assert r.first_tick == s.last_tick + 1


@pytest.mark.parametrize("smp", [1, 2])
def test_default_profile_is_safe_when_the_destination_knows_the_register(
        lab: Lab, scratch: Path, smp: int) -> None:
    s = lab.stream("10.0.2", "virt-10.0", "cortex-a57", smp)
    out = scratch / "rewritten.mig"
    _rewrite(s.path, out)
    r = lab.load_stream("10.0.2", out, "virt-10.0", "cortex-a57", smp, expect_after=s.last_tick)
    assert r.ok, r.error


@pytest.mark.parametrize("smp", [1, 2])
def test_10_0_2_to_11_1_with_a_profile_from_cpregs_diff(lab: Lab, scratch: Path,
                                                         smp: int) -> None:
    src = lab.stream("10.0.2", "virt-10.0", "cortex-a57", smp)
    ref = lab.stream("11.1", "virt-10.0", "cortex-a57", smp)
    prof = scratch / "profile.toml"
    assert main(["cpregs", "diff", str(src.path), str(ref.path),
                 "--emit-profile", str(prof)]) == 0
    # A fresh source stream (another run of the guest), not the reference itself.
    live = scratch / "live.mig"
    last = lab.save_stream("10.0.2", live, machine="virt-10.0", cpu="cortex-a57", smp=smp)
    direct = lab.load_stream("11.1", live, "virt-10.0", "cortex-a57", smp, expect_after=last)
    assert not direct.loaded
    default_only = scratch / "default.mig"
    _rewrite(live, default_only)
    assert not lab.load_stream("11.1", default_only, "virt-10.0", "cortex-a57", smp,
                               expect_after=last).loaded
    out = scratch / "rewritten.mig"
    _rewrite(live, out, "--profile", str(prof))
    r = lab.load_stream("11.1", out, "virt-10.0", "cortex-a57", smp, expect_after=last)
    assert r.ok, r.error
    assert r.first_tick == last + 1


def test_7_2_to_10_0_13_with_a_profile_from_cpregs_diff(lab: Lab, scratch: Path) -> None:
    src = lab.stream("7.2", "virt-7.2", "cortex-a57", 1)
    ref = lab.stream("10.0.13", "virt-7.2", "cortex-a57", 1)
    prof = scratch / "profile.toml"
    assert main(["cpregs", "diff", str(src.path), str(ref.path),
                 "--emit-profile", str(prof)]) == 0
    text = prof.read_text()
    assert "RMR_EL1" in text
    assert "PAR" in text
    assert "ID_DFR0" in text
    assert not lab.load_stream("10.0.13", src.path, "virt-7.2", "cortex-a57", 1,
                               expect_after=src.last_tick).loaded
    out = scratch / "rewritten.mig"
    _rewrite(src.path, out, "--profile", str(prof))
    r = lab.load_stream("10.0.13", out, "virt-7.2", "cortex-a57", 1,
                        expect_after=src.last_tick)
    assert r.ok, r.error


@pytest.mark.parametrize(("version", "machine"), [("7.2", "virt-7.2"), ("10.0.2", "virt-10.0"),
                                                  ("10.0.13", "virt-10.0"),
                                                  ("11.1", "virt-10.0")])
def test_inspect_accounts_for_every_byte_of_fresh_streams(lab: Lab, version: str,
                                                          machine: str, capsys) -> None:
    s = lab.stream(version, machine, "cortex-a57", 2)
    assert main(["inspect", str(s.path), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["accounted"]
    assert sum(i["size"] for i in rep["items"]) == s.path.stat().st_size
    assert [c["instance_id"] for c in rep["cpus"]] == [0, 1]


def test_qemu_analyze_migration_reads_a_rewritten_stream(lab: Lab, scratch: Path) -> None:
    """The description is updated with the arrays, so QEMU's own analyser still reads it."""
    analyzer = lab.lab_dir / "tools" / "analyze-migration.py"
    if not analyzer.is_file():
        pytest.fail(f"{analyzer} is missing: run scripts/lab-setup.sh")
    s = lab.stream("10.0.2", "virt-10.0", "cortex-a57", 2)
    out = scratch / "rewritten.mig"
    _rewrite(s.path, out)
    dump = subprocess.run([sys.executable, str(analyzer), "-f", str(out), "-d", "state"],
                          capture_output=True, text=True, check=False)
    assert dump.returncode == 0, dump.stderr[-2000:]
    state = json.loads(dump.stdout)
    cpus = [v for k, v in state.items() if k.startswith("cpu (")]
    assert len(cpus) == 2
    orig = json.loads(subprocess.run([sys.executable, str(analyzer), "-f", str(s.path), "-d",
                                      "state"], capture_output=True, text=True,
                                     check=True).stdout)
    orig_cpus = [v for k, v in orig.items() if k.startswith("cpu (")]
    for new, old in zip(cpus, orig_cpus, strict=True):
        assert len(new["cpreg_vmstate_indexes"]) == len(old["cpreg_vmstate_indexes"]) - 1
        assert len(new["cpreg_vmstate_values"]) == len(new["cpreg_vmstate_indexes"])
        assert "0x40200000200e0298" not in str(new["cpreg_vmstate_indexes"]).lower()
        assert "0x40200000200e0298" in str(old["cpreg_vmstate_indexes"]).lower()


def test_multi_iteration_stream_with_bandwidth_limit(lab: Lab, scratch: Path, capsys) -> None:
    """A bandwidth-limited migration sends RAM over many PART sections (iterations)."""
    src = scratch / "slow.mig"
    last = lab.save_stream("10.0.2", src, capabilities={"xbzrle": True},
                           parameters={"max-bandwidth": 65536, "downtime-limit": 1},
                           min_ticks=3)
    assert main(["inspect", str(src), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["accounted"]
    parts = [i for i in rep["items"] if i["kind"] == "section" and i["type"] == "PART"]
    assert len(parts) >= 5
    out = scratch / "rewritten.mig"
    _rewrite(src, out)
    r = lab.load_stream("10.0.13", out, "virt-10.0", "cortex-a57", 1, expect_after=last)
    assert r.ok, r.error


@pytest.mark.parametrize(("name", "src", "dst", "machine", "smp"), [
    ("qemu-10.0.2-to-11.1.3-cortex-a57", "10.0.2", "11.1", "virt-10.0", 1),
    ("qemu-10.0.2-to-11.1.3-cortex-a57", "10.0.2", "11.1", "virt-10.0", 2),
    ("qemu-7.2-to-10.0.13-cortex-a57", "7.2", "10.0.13", "virt-7.2", 1),
])
def test_shipped_profiles_work_on_fresh_streams(lab: Lab, scratch: Path, name: str, src: str,
                                                dst: str, machine: str, smp: int) -> None:
    profile = Path(__file__).resolve().parents[2] / "config" / "profiles" / f"{name}.toml"
    live = scratch / "live.mig"
    last = lab.save_stream(src, live, machine=machine, cpu="cortex-a57", smp=smp)
    out = scratch / "rewritten.mig"
    _rewrite(live, out, "--profile", str(profile))
    r = lab.load_stream(dst, out, machine, "cortex-a57", smp, expect_after=last)
    assert r.ok, r.error
    assert r.first_tick == last + 1
