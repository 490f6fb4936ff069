"""The settings table (:mod:`migproxy.daemon.settings`) is the one place a setting is
written: the dataclasses, the flags, the table of docs/operations.md and the example
configuration agree with it, and every number has a minimum and a maximum (issue 17, M3)."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from migproxy.cli import build_parser
from migproxy.daemon import settings as S
from migproxy.daemon.config import Config, ConfigError, RouteSettings
from migproxy.daemon.load import load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "migproxy.example.toml"
ROUTE = '[[route]]\nlisten = ":4444"\ntarget = "dst.example:4444"\n'


def test_route_settings_are_the_tables_route_keys_with_their_defaults() -> None:
    fields = dataclasses.fields(RouteSettings)
    assert [f.name for f in fields] == [s.key for s in S.ROUTE_SETTINGS]
    assert [f.default for f in fields] == [s.default for s in S.ROUTE_SETTINGS]


def test_config_has_the_tables_daemon_keys_with_their_defaults() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(Config)}
    assert set(S.DAEMON_KEYS) <= set(fields)
    for s in S.DAEMON_SETTINGS:
        if s.key != "metrics":  # an Address once parsed; the table holds its text
            assert fields[s.key] == s.default, s.key
    loaded = load_config(None, {"listen": ":1", "target": "h:1"})
    assert str(loaded.metrics) == S.METRICS.default


def test_every_number_has_a_minimum_and_a_maximum() -> None:
    numbers = [s for s in S.SETTINGS.values() if s.kind in ("int", "float")]
    assert numbers
    for s in numbers:
        assert s.minimum is not None, s.key
        assert s.maximum is not None, s.key
        assert s.minimum <= s.default <= s.maximum or (s.zero and s.default == 0), s.key
        if s.kind == "float":
            assert s.minimum > 0, f"{s.key}: a float needs a positive minimum (0 via zero=)"
    assert {s.key: (s.low, s.maximum) for s in numbers} == S.LIMITS


@pytest.mark.parametrize("key", ["idle_timeout", "classify_timeout", "drain_timeout"])
@pytest.mark.parametrize("value", ["1e-300", "1e-9", "0.05"])
def test_tiny_positive_timeouts_are_refused(tmp_path: Path, key: str, value: str) -> None:
    table = "daemon" if key == "drain_timeout" else "defaults"
    p = tmp_path / "m.toml"
    p.write_text(f"[{table}]\n{key} = {value}\n" + ROUTE, encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{key} must be 0 \\(.*\\) or at least 0.1 s"):
        load_config(str(p), {})
    with pytest.raises(ConfigError, match=f"{key} must be 0"):
        load_config(None, {"listen": ":1", "target": "h:1", key: float(value)})
    for ok in (0, 0.1, 5):
        load_config(None, {"listen": ":1", "target": "h:1", key: ok})


def test_tiny_idle_timeout_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from migproxy.cli import EXIT_USAGE, main

    assert main(["--listen", ":1", "--target", "h:1", "--idle-timeout", "1e-9"]) == EXIT_USAGE
    assert "idle_timeout must be 0 (never) or at least 0.1 s" in capsys.readouterr().err


def _flags() -> dict[str, argparse.Action]:
    return {a.dest: a for a in build_parser()._actions}


def test_every_setting_has_its_flag_with_the_tables_default_and_bounds() -> None:
    flags = _flags()
    for s in S.SETTINGS.values():
        action = flags[s.key]
        assert action.option_strings[0] == s.flag
        assert action.default is None  # a flag not given overrides nothing
        assert action.help is not None
        assert s.help.replace("%", "%%") in action.help
        if s.kind != "bool" and s.scope != "route-address":
            assert f"default: {s.default_text()}" in action.help, s.key
        if s.bounds():
            assert s.bounds(" to ") in action.help, s.key


def test_docs_table_is_the_generated_one() -> None:
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make-docs.py"), "--check"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_example_config_shows_every_key_with_its_default() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for s in S.DAEMON_SETTINGS + S.ROUTE_SETTINGS:
        assert s.key in data[s.section], f"{s.key} missing from [{s.section}]"
        assert data[s.section][s.key] == s.toml_default, s.key
    assert set(data["daemon"]) == S.DAEMON_KEYS
    assert set(data["defaults"]) == S.ROUTE_KEYS


def test_config_docstring_block_is_made_from_the_table() -> None:
    import migproxy.daemon.config as config_mod

    block = (config_mod.__doc__ or "").split("::", 1)[1]
    data = tomllib.loads("\n".join(line[4:] for line in block.splitlines()))
    assert data["daemon"] == {s.key: s.toml_default for s in S.DAEMON_SETTINGS}
    assert data["defaults"] == {s.key: s.toml_default for s in S.ROUTE_SETTINGS}
