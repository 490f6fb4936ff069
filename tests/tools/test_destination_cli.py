"""``migproxy rewrite --destination`` and ``migproxy plan``, on the captured real streams;
and the old pairwise profiles in config/profiles, which the manifests reproduce."""

from __future__ import annotations

from pathlib import Path

import pytest

from migproxy.arm.destination import Destination
from migproxy.arm.profile import load_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.cli import main
from testkit.streams import real_stream, run_engine

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("stream", "profile", "destination"), [
    ("v10.0.2-virt-10.0-cortex-a57-smp1", "qemu-10.0.2-to-11.1.3-cortex-a57.toml",
     "qemu-11.1.3"),
    ("v7.2.22-virt-7.2-cortex-a57-smp1", "qemu-7.2-to-10.0.13-cortex-a57.toml",
     "qemu-10.0.13"),
])
def test_the_manifests_reproduce_the_pairwise_profiles(stream: str, profile: str,
                                                       destination: str) -> None:
    """The hand-made profiles of config/profiles give byte for byte the stream the
    destination's manifests give (so they are examples of the profile format only)."""
    data = real_stream(stream)
    by_profile = run_engine([data], arm_engine_config(
        load_profile(str(REPO / "config" / "profiles" / profile))))
    by_destination = run_engine([data], arm_engine_config(None, Destination.load(destination)))
    assert by_profile[2].mode == by_destination[2].mode == "done"
    assert by_profile[0] == by_destination[0]
    assert by_profile[0] != data


def _file(tmp_path: Path, name: str) -> Path:
    p = tmp_path / f"{name}.mig"
    p.write_bytes(real_stream(name))
    return p


def test_plan_says_what_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _file(tmp_path, "v11.1.3-virt-10.0-cortex-a57-smp1")
    assert main(["plan", str(src), "--destination", "qemu-10.0.2"]) == 0
    out = capsys.readouterr().out
    assert "cpu 0 for QEMU 10.0.2 (virt-10.0, cortex-a57):" in out
    assert "insert ID_AA64ISAR0_EL1 (0x603000000013C030) = 0x11120: A constant ID" in out
    assert "remove subsection cpu/wfxt-timer: Here it carries no state" in out
    assert "drop DBGDTRTXint" in out
    assert "insert BOGUS_DBGDTRTX" in out
    assert list(tmp_path.iterdir()) == [src]  # nothing written


def test_plan_lists_every_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _file(tmp_path, "v11.1.3-virt-10.0-max-smp2")
    assert main(["plan", str(src), "--destination", "qemu-10.0.13"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "refused [unsafe_rewrite]: refused for the destination:"
    assert len(out) > 30
    assert any("SCTLR2_EL1" in ln and "state would be lost" in ln
                                  for ln in out)
    assert any("a CPU feature would change" in ln for ln in out)


def test_plan_with_nothing_to_change(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    src = _file(tmp_path, "v10.0.13-virt-10.0-cortex-a57-smp1")
    assert main(["plan", str(src), "--destination", "qemu-10.0.13"]) == 0
    assert "nothing to change for qemu-10.0.13" in capsys.readouterr().out


def test_rewrite_for_a_destination(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _file(tmp_path, "v10.0.2-virt-10.0-cortex-a57-smp1")
    out = tmp_path / "out.mig"
    assert main(["rewrite", str(src), str(out), "--destination", "qemu-10.0.13"]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text
    assert "destination qemu-10.0.13" in text
    assert out.read_bytes() == run_engine(
        [src.read_bytes()], arm_engine_config(None, Destination.load("qemu-10.0.13")))[0]


def test_rewrite_refused_writes_nothing(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    src = _file(tmp_path, "v11.1.3-virt-10.0-max-smp2")
    out = tmp_path / "out.mig"
    assert main(["rewrite", str(src), str(out), "--destination", "qemu-10.0.2"]) == 1
    assert "unsafe_rewrite" in capsys.readouterr().err
    assert not out.exists()


def test_profile_and_destination_together_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _file(tmp_path, "v10.0.2-virt-10.0-cortex-a57-smp1")
    assert main(["rewrite", str(src), str(tmp_path / "o.mig"), "--profile", "default",
                 "--destination", "qemu-10.0.13"]) == 2
    assert "not both" in capsys.readouterr().err


def test_an_opt_in_must_name_a_register(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    src = _file(tmp_path, "v10.0.2-virt-10.0-max-smp2")
    assert main(["plan", str(src), "--destination", "qemu-11.1.3",
                 "--allow-guest-visible", "NOT_A_REGISTER"]) == 1
    assert "--allow-guest-visible" in capsys.readouterr().err


def test_opting_in_makes_the_change_and_says_it_is_guest_visible(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """10.0.13 -> 11.1.3 max: 11.1.3 adds features; opting in for every register named
    lets the rewrite through, each change marked guest-visible."""
    src = _file(tmp_path, "v10.0.2-virt-10.0-max-smp2")
    assert main(["plan", str(src), "--destination", "qemu-11.1.3"]) == 1
    refusals = capsys.readouterr().out.splitlines()[1:]
    names = sorted({ln.split(" (0x")[0].split()[-1] for ln in refusals if " (0x" in ln})
    args = ["plan", str(src), "--destination", "qemu-11.1.3"]
    for n in names:
        args += ["--allow-guest-visible", n]
    assert main(args) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "(guest-visible, opted in)" in out
