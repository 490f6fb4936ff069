"""Hostile configuration and profile files (issue 17, L4/L5): every one stops the daemon
(or the command) with exit code 2 and a one-line message, never a traceback, and none is
read forever."""

from __future__ import annotations

from pathlib import Path

import pytest

from migproxy.cli import EXIT_USAGE, main

ROUTE = '[[route]]\nlisten = "127.0.0.1:1"\ntarget = "h:1"\n'
DEEP = "[" * 500 + '"10.0.0.0/8"' + "]" * 500


def _exit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _config(tmp_path: Path, text: str | bytes) -> str:
    p = tmp_path / "migproxy.toml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return str(p)


@pytest.mark.parametrize(("text", "match"), [
    (f"[defaults]\nallow = {DEEP}\n" + ROUTE, "nested 500 deep"),
    (ROUTE + f"allow = {DEEP}\n", "nested 500 deep"),
    (f"[daemon]\nx = {{a = {{b = {DEEP}}}}}\n" + ROUTE, "nested 502 deep"),
    ("a = 1\n" * 200_000 + ROUTE, "more than 1048576 bytes"),
    (b"\xff\xfe" + ROUTE.encode(), "not UTF-8"),
])
def test_hostile_config_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     text: str | bytes, match: str) -> None:
    code, err = _exit(capsys, "--config", _config(tmp_path, text))
    assert code == EXIT_USAGE
    assert "invalid configuration" in err
    assert match in err


def test_config_dev_zero_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit(capsys, "--config", "/dev/zero")
    assert code == EXIT_USAGE
    assert "/dev/zero: more than 1048576 bytes" in err


@pytest.mark.parametrize(("profile", "match"), [
    ("/dev/zero", "/dev/zero: more than 1048576 bytes"),
    ("DEEP", "nested 500 deep"),
    ("BIG", "more than 1048576 bytes"),
])
def test_hostile_profiles_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 profile: str, match: str) -> None:
    if profile == "DEEP":
        (tmp_path / "p.toml").write_text(f"name = {DEEP}\n", encoding="utf-8")
        profile = str(tmp_path / "p.toml")
    elif profile == "BIG":
        (tmp_path / "p.toml").write_text("# x\n" * (1 << 19), encoding="utf-8")
        profile = str(tmp_path / "p.toml")
    conf = _config(tmp_path, ROUTE + f'profile = "{profile}"\n')
    code, err = _exit(capsys, "--config", conf)
    assert code == EXIT_USAGE
    assert "invalid configuration" in err
    assert match in err
    code, err = _exit(capsys, "--listen", "127.0.0.1:1", "--target", "h:1", "--profile",
                      profile)
    assert code == EXIT_USAGE
    assert match in err
    code, err = _exit(capsys, "profiles", "--check", profile)
    assert code == EXIT_USAGE
    assert match in err
