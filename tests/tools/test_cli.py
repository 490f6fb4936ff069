"""The offline command-line tools on captured real streams."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from migproxy.arm.profile import load_profile
from migproxy.cli import main
from testkit.streams import REAL_STREAMS, real_stream

BOGUS = "0x40200000200E0298"


def _save(tmp_path: Path, name: str) -> Path:
    p = tmp_path / f"{name}.mig"
    p.write_bytes(real_stream(name))
    return p


@pytest.mark.parametrize("name", REAL_STREAMS)
def test_inspect_json_accounts_for_every_byte(tmp_path: Path, name: str, capsys) -> None:
    f = _save(tmp_path, name)
    assert main(["inspect", str(f), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["accounted"]
    assert rep["complete"]
    assert not rep["gaps"]
    pos = 0
    for it in rep["items"]:
        assert it["offset"] == pos
        pos += it["size"]
    assert pos == f.stat().st_size == rep["size"]
    assert rep["page_size"] == 4096
    assert rep["cpus"]
    assert all(c["count"] == len(c["registers"]) for c in rep["cpus"])
    assert all(not r["name"].startswith("0x") for c in rep["cpus"] for r in c["registers"])


def test_inspect_reports_where_a_broken_stream_stops(tmp_path: Path, capsys) -> None:
    data = real_stream("v10.0.2-virt-10.0-cortex-a57-smp1")
    assert data[248] == 0x02  # the first RAM PART section; its first record word at 253
    f = tmp_path / "broken.mig"
    f.write_bytes(data[:253] + b"\xff" * 8 + data[261:])
    assert main(["inspect", str(f)]) == 1
    err = capsys.readouterr().err
    assert "at offset 253 (0xfd): expected a RAM record" in err


def test_rewrite_drops_the_bogus_register(tmp_path: Path, capsys) -> None:
    src = _save(tmp_path, "v10.0.2-virt-10.0-cortex-a57-smp1")
    out = tmp_path / "out.mig"
    assert main(["rewrite", str(src), str(out)]) == 0
    text = capsys.readouterr().out
    assert "drop BOGUS_DBGDTRTX=0x0" in text
    assert "274 -> 273" in text
    assert out.stat().st_size == src.stat().st_size - 16
    assert main(["inspect", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["accounted"]
    assert BOGUS not in {r["id"] for r in rep["cpus"][0]["registers"]}


def test_rewrite_does_not_write_output_on_failure(tmp_path: Path, capsys) -> None:
    src = tmp_path / "trunc.mig"
    src.write_bytes(real_stream("v10.0.2-virt-10.0-cortex-a57-smp1")[:400_000])
    out = tmp_path / "out.mig"
    assert main(["rewrite", str(src), str(out)]) == 1
    assert not out.exists()
    assert not list(tmp_path.glob(".out.mig.*"))
    assert "not written" in capsys.readouterr().err


def test_rewrite_usage_errors(tmp_path: Path, capsys) -> None:
    src = _save(tmp_path, "v10.0.2-virt-10.0-cortex-a57-smp1")
    assert main(["rewrite", str(tmp_path / "nope.mig"), str(tmp_path / "o")]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\naction="explode"\nregister="PAR"\n')
    assert main(["rewrite", str(src), str(tmp_path / "o"), "--profile", str(bad)]) == 2
    assert "invalid profile" in capsys.readouterr().err
    assert main(["rewrite", str(src), str(src)]) == 2


def test_cpregs_diff_emits_a_profile_that_rewrites(tmp_path: Path, capsys) -> None:
    src = _save(tmp_path, "v10.0.2-virt-10.0-cortex-a57-smp1")
    dst = _save(tmp_path, "v11.1.3-virt-10.0-cortex-a57-smp1")
    prof = tmp_path / "p.toml"
    assert main(["cpregs", "diff", str(src), str(dst), "--emit-profile", str(prof)]) == 0
    text = capsys.readouterr().out
    assert "BOGUS_DBGDTRTX" in text
    assert "ID_AA64ISAR0_EL1" in text
    p = load_profile(str(prof))
    actions = {(r.action, r.register) for r in p.rules}
    assert ("drop", 0x40200000200E0298) in actions
    assert ("drop", 0x603000000013C030) in actions
    assert ("insert", 0x40200000200E0280) in actions
    assert ("insert", 0x6030000000139820) in actions
    out = tmp_path / "rw.mig"
    assert main(["rewrite", str(src), str(out), "--profile", str(prof)]) == 0
    # After the rewrite the lists are identical: the diff says so.
    capsys.readouterr()
    assert main(["cpregs", "diff", str(out), str(dst)]) == 0
    again = capsys.readouterr().out
    assert "only in" not in again
    assert "same register list" in again


def test_cpregs_diff_warns_about_cpu_features(tmp_path: Path, capsys) -> None:
    src = _save(tmp_path, "v7.2.22-virt-7.2-cortex-a57-smp1")
    dst = _save(tmp_path, "v10.0.13-virt-10.0-cortex-a57-smp1")
    assert main(["cpregs", "diff", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "CPU features differ" in out
    assert "ID_DFR0" in out
    assert "machine types differ" in out


def test_cpregs_diff_rejects_different_cpu_counts(tmp_path: Path, capsys) -> None:
    a = _save(tmp_path, "v10.0.2-virt-10.0-cortex-a57-smp1")
    b = _save(tmp_path, "v10.0.2-virt-10.0-max-smp2")
    assert main(["cpregs", "diff", str(a), str(b)]) == 1
    assert "-smp" in capsys.readouterr().err


def test_module_entry_point_runs() -> None:
    r = subprocess.run([sys.executable, "-m", "migproxy", "profiles"], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0
    assert r.stdout.startswith("default:")
