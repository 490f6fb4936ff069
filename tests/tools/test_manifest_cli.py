"""``migproxy manifest``: show, from-stream, capture (capture against the lab's real QEMU
builds, which must reproduce every shipped manifest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from migproxy.arm.manifest import load_manifest, load_set
from migproxy.cli import main
from testkit.labs import require_lab
from testkit.streams import real_stream

REPO = Path(__file__).resolve().parents[2]


def test_show_lists_the_shipped_sets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["manifest", "show"]) == 0
    out = capsys.readouterr().out
    assert "qemu-11.1.3: virt-10.0 cortex-a57, virt-10.0 max" in out
    assert main(["manifest", "show", "qemu-7.2.22", "--registers"]) == 0
    out = capsys.readouterr().out
    assert "QEMU 7.2.22, machine virt-7.2, cpu cortex-a57" in out
    assert "ID_AA64ZFR0_EL1" in out


def test_show_an_unknown_set_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["manifest", "show", "qemu-1.0"]) == 1
    assert "no manifest set 'qemu-1.0'" in capsys.readouterr().err


def test_from_stream_writes_the_builds_manifest(tmp_path: Path) -> None:
    src = tmp_path / "ref.mig"
    src.write_bytes(real_stream("v10.0.13-virt-10.0-cortex-a57-smp1"))
    out = tmp_path / "m.json"
    assert main(["manifest", "from-stream", str(src), "--cpu", "cortex-a57",
                 "--qemu-version", "10.0.13", "-o", str(out)]) == 0
    m = load_manifest(out)
    shipped = load_set("qemu-10.0.13").get("virt-10.0", "cortex-a57")
    assert shipped is not None
    assert m.ids == shipped.ids
    assert m.made["by"] == "migproxy manifest from-stream"


def test_from_stream_of_a_broken_stream_exits_1(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "cut.mig"
    src.write_bytes(real_stream("v10.0.2-virt-10.0-cortex-a57-smp1")[:100_000])
    assert main(["manifest", "from-stream", str(src), "--cpu", "cortex-a57",
                 "--qemu-version", "10.0.2", "-o", str(tmp_path / "m.json")]) == 1
    assert "not understood" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_capture_with_a_command_that_is_not_qemu_exits_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["manifest", "capture", "--qemu", "/bin/false", "-o",
                 str(tmp_path / "m.json")]) == 1
    assert "cannot read a version" in capsys.readouterr().err


@pytest.mark.qemu
def test_capture_reproduces_every_shipped_manifest() -> None:
    require_lab()
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make-manifests.py"), "--check"],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok   ") == 14, r.stdout


@pytest.mark.qemu
def test_capture_cli_on_a_lab_build(tmp_path: Path) -> None:
    lab = require_lab("10.0.2")
    v = lab.version("10.0.2")
    out = tmp_path / "m.json"
    assert main(["manifest", "capture", "--qemu", " ".join(v.argv), "--machine", "virt-10.0",
                 "--cpu", "max", "-o", str(out)]) == 0
    assert load_manifest(out) == load_set("qemu-10.0.2").get("virt-10.0", "max")


@pytest.mark.qemu
def test_capture_of_several_machine_types_writes_a_set(tmp_path: Path) -> None:
    """What a destination host runs for its own manifests: every machine type its VMs use,
    into one directory that a route names as its destination."""
    lab = require_lab("10.0.2")
    v = lab.version("10.0.2")
    out = tmp_path / "dst"
    assert main(["manifest", "capture", "--qemu", " ".join(v.argv), "--machine", "virt-7.2",
                 "--machine", "virt-10.0", "--cpu", "cortex-a57", "-o", str(out)]) == 0
    got = load_set(str(out))
    assert got.keys == [("virt-10.0", "cortex-a57"), ("virt-7.2", "cortex-a57")]
    for m in got.manifests:
        assert m == load_set("qemu-10.0.2").get(m.machine, "cortex-a57")


def test_several_machine_types_need_a_directory(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["manifest", "capture", "--qemu", "/bin/false", "--machine", "virt-7.2",
                 "--machine", "virt-10.0", "-o", str(tmp_path / "m.json")]) == 2
    assert "-o is a directory" in capsys.readouterr().err


def test_from_stream_of_a_kvm_stream_names_the_host(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Under KVM the manifest records the kernel given and, by default, the host CPU by
    the MIDR_EL1 that ``-cpu host`` lists (0x414fd0c1: the emulated Neoverse N1)."""
    import lzma

    src = tmp_path / "kvm.mig"
    src.write_bytes(lzma.decompress(
        (REPO / "tests/data/kvm/linux-6.12-neoverse-n1-qemu-10.0.13.mig.xz").read_bytes()))
    out = tmp_path / "m.json"
    assert main(["manifest", "from-stream", str(src), "--cpu", "host", "--accel", "kvm",
                 "--qemu-version", "10.0.13", "--kernel", "6.12.118+deb13-arm64",
                 "-o", str(out)]) == 0
    assert "QEMU 10.0.13, Linux 6.12.118+deb13-arm64, midr-0x414fd0c1" in \
        capsys.readouterr().out
    m = load_manifest(out)
    assert (m.accel, m.kernel, m.host_cpu, len(m.cpregs)) == (
        "kvm", "6.12.118+deb13-arm64", "midr-0x414fd0c1", 258)
    assert main(["manifest", "from-stream", str(src), "--cpu", "host", "--qemu-version",
                 "10.0.13", "--kernel", "6.12", "-o", str(out)]) == 1
    assert "give --accel kvm" in capsys.readouterr().err


def test_a_kvm_capture_takes_the_host_from_this_machine(tmp_path: Path) -> None:
    from migproxy.tools.manifest import local_kvm_host

    midr = tmp_path / "midr_el1"
    midr.write_text("0x00000000414fd0c1\n")
    assert local_kvm_host(str(midr)) == (__import__("os").uname().release,
                                         "midr-0x414fd0c1")
    assert local_kvm_host(str(tmp_path / "missing"))[1] == ""
