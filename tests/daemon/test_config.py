"""Unit tests of :mod:`migproxy.daemon.config`: address parsing and every way
``load_config`` refuses a configuration (files are written to ``tmp_path``, the flags come
from the real command-line parser)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from migproxy.cli import build_parser
from migproxy.daemon.config import (
    DEFAULT_METRICS,
    MAX_RANGE_PORTS,
    Address,
    Config,
    ConfigError,
    RouteSettings,
    parse_address,
)
from migproxy.daemon.load import load_config
from migproxy.stream.errors import MigproxyError

ROUTE = '[[route]]\nlisten = ":4444"\ntarget = "dst.example:4444"\n'


def _args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(list(flags))


def _write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "migproxy.toml"
    p.write_text(text, encoding="utf-8")
    return str(p)


def _load(tmp_path: Path, text: str, *flags: str) -> Config:
    path = _write(tmp_path, text)
    return load_config(path, _args("--config", path, *flags))


def _refused(tmp_path: Path, text: str, match: str, *flags: str) -> ConfigError:
    with pytest.raises(ConfigError, match=match) as ei:
        _load(tmp_path, text, *flags)
    return ei.value


# --- parse_address ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "host", "port", "shown"), [
    ("127.0.0.1:4444", "127.0.0.1", 4444, "127.0.0.1:4444"),
    ("0.0.0.0:1", "0.0.0.0", 1, "0.0.0.0:1"),
    ("dst.example:65535", "dst.example", 65535, "dst.example:65535"),
    ("[::1]:4444", "::1", 4444, "[::1]:4444"),
    ("[::]:4445", "::", 4445, "[::]:4445"),
    ("[fe80::1%eth0]:80", "fe80::1%eth0", 80, "[fe80::1%eth0]:80"),
    (":4444", "", 4444, ":4444"),
    ("  host:22  ", "host", 22, "host:22"),
])
def test_parse_address_accepts(text: str, host: str, port: int, shown: str) -> None:
    a = parse_address(text, what="x")
    assert a == Address(host, port)
    assert str(a) == shown


def test_parse_address_port_zero_only_if_allowed() -> None:
    assert parse_address("127.0.0.1:0", what="x", allow_zero=True) == Address("127.0.0.1", 0)
    assert parse_address(":0", what="x", allow_zero=True) == Address("", 0)
    with pytest.raises(ConfigError, match="x: port 0 is out of range"):
        parse_address("127.0.0.1:0", what="x")


@pytest.mark.parametrize("text", ["h:65536", "h:99999", "h:-1", "[::1]:65536", ":70000"])
@pytest.mark.parametrize("allow_zero", [False, True])
def test_parse_address_rejects_ports_out_of_range(text: str, allow_zero: bool) -> None:
    with pytest.raises(ConfigError, match=r"listen: port -?[0-9]+ is out of range"):
        parse_address(text, what="listen", allow_zero=allow_zero)


@pytest.mark.parametrize(("text", "port_s"), [("h:abc", "abc"), ("h:", ""), ("[::1]:", ""),
                                              ("h:44x", "44x"), ("h:0x10", "0x10"),
                                              ("[::1]:http", "http")])
def test_parse_address_rejects_non_numeric_ports(text: str, port_s: str) -> None:
    with pytest.raises(ConfigError, match=f"target: port {port_s!r} is not a number"):
        parse_address(text, what="target")


@pytest.mark.parametrize("text", ["host", "4444", "", "   ", "[::1]"])
def test_parse_address_rejects_missing_ports(text: str) -> None:
    with pytest.raises(ConfigError, match=r"(has no port|is not \[IPV6\]:PORT)"):
        parse_address(text, what="listen")


def test_parse_address_rejects_hosts_without_port_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="listen: 'host' has no port"):
        parse_address("host", what="listen")


@pytest.mark.parametrize("text", ["[::1]4444", "[::1", "[::1]x4444", "[::1]"])
def test_parse_address_rejects_bad_brackets(text: str) -> None:
    with pytest.raises(ConfigError, match="is not \\[IPV6\\]:PORT"):
        parse_address(text, what="listen")


@pytest.mark.parametrize("text", ["::1:4444", "fe80::1:80", "1:2:3"])
def test_parse_address_wants_brackets_for_ipv6(text: str) -> None:
    with pytest.raises(ConfigError, match="write IPv6 addresses in brackets"):
        parse_address(text, what="listen")


@pytest.mark.parametrize("text", [":4444", "[]:4444", "  :1"])
def test_parse_address_need_host(text: str) -> None:
    with pytest.raises(ConfigError, match=r"target: .* needs a host"):
        parse_address(text, what="target", need_host=True)
    assert parse_address(text, what="listen").host == ""


def test_config_error_is_a_migproxy_error() -> None:
    assert issubclass(ConfigError, MigproxyError)


# --- load_config: accepted configurations (baselines for the refusals below) ------------


def test_minimal_file(tmp_path: Path) -> None:
    path = _write(tmp_path, ROUTE)
    cfg = load_config(path, _args("--config", path))
    assert cfg.source == path
    assert len(cfg.routes) == 1
    r = cfg.routes[0]
    assert r.listen == Address("", 4444)
    assert r.target == Address("dst.example", 4444)
    assert r.settings == RouteSettings()
    assert r.profile is not None
    assert r.profile.name == "default"
    assert str(cfg.metrics) == DEFAULT_METRICS
    assert (cfg.log_format, cfg.log_level, cfg.drain_timeout) == ("auto", "info", 300.0)


def test_command_line_only() -> None:
    cfg = load_config(None, _args("--listen", "127.0.0.1:0", "--target", "[::1]:5555",
                                  "--metrics", "", "--profile", "none", "--policy", "abort"))
    assert cfg.source == "<command line>"
    assert cfg.metrics is None
    (r,) = cfg.routes
    assert (r.listen, r.target) == (Address("127.0.0.1", 0), Address("::1", 5555))
    assert r.profile is None
    assert r.settings.policy == "abort"


def test_all_keys_in_range(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """
[daemon]
metrics = ""
log_format = "json"
log_level = "debug"
drain_timeout = 0

[defaults]
profile = "none"
policy = "abort"
dry_run = true
hold_cap = 4096
connect_timeout = 0.1
idle_timeout = 0
high_water = 65536
""" + ROUTE + """
[[route]]
listen = "127.0.0.1:4445"
target = "h:1"
connect_timeout = 3600
hold_cap = 1048576
profile = "default"
""")
    assert cfg.metrics is None
    assert (cfg.log_format, cfg.log_level, cfg.drain_timeout) == ("json", "debug", 0.0)
    first, second = cfg.routes
    assert first.settings == cfg.defaults
    assert first.profile is None
    assert cfg.defaults.hold_cap == 4096
    assert cfg.defaults.high_water == 65536
    assert cfg.defaults.dry_run is True
    assert cfg.defaults.policy == "abort"
    assert (cfg.defaults.connect_timeout, cfg.defaults.idle_timeout) == (0.1, 0.0)
    assert second.settings.connect_timeout == 3600.0
    assert second.settings.hold_cap == 1048576
    assert second.settings.policy == "abort"  # inherited from [defaults]
    assert second.profile is not None


def test_flags_override_file_and_routes(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '[daemon]\nlog_level = "error"\n[defaults]\nhold_cap = 8192\n'
                + ROUTE + "hold_cap = 16384\n",
                "--hold-cap", "32768", "--log-level", "warning", "--dry-run")
    assert cfg.log_level == "warning"
    assert cfg.defaults.hold_cap == 32768
    assert cfg.routes[0].settings.hold_cap == 32768
    assert cfg.routes[0].settings.dry_run is True


def test_port_zero_may_be_listened_on_twice(tmp_path: Path) -> None:
    two = ('[[route]]\nlisten = "127.0.0.1:0"\ntarget = "h:1"\n'
           '[[route]]\nlisten = "127.0.0.1:0"\ntarget = "h:2"\n')
    cfg = _load(tmp_path, two)
    assert [r.target.port for r in cfg.routes] == [1, 2]


# --- load_config: the file itself -------------------------------------------------------


def test_unreadable_file(tmp_path: Path) -> None:
    path = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=f"cannot read {path}"):
        load_config(path, _args("--config", path))


def test_a_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path), _args("--config", str(tmp_path)))


@pytest.mark.parametrize("text", ["[daemon", "x = ", "a = 1\na = 2\n", "[[route]\n"])
def test_invalid_toml(tmp_path: Path, text: str) -> None:
    _refused(tmp_path, text, "invalid TOML")


def test_unknown_sections(tmp_path: Path) -> None:
    _refused(tmp_path, ROUTE + "[routes]\nx = 1\n[zzz]\n", "unknown sections \\['routes', 'zzz'\\]")
    _refused(tmp_path, "profile = \"default\"\n" + ROUTE, "unknown sections \\['profile'\\]")


@pytest.mark.parametrize(("table", "text"), [("daemon", "daemon = 1\n"),
                                             ("daemon", 'daemon = "x"\n'),
                                             ("defaults", "defaults = [1]\n"),
                                             ("defaults", "defaults = true\n")])
def test_tables_must_be_tables(tmp_path: Path, table: str, text: str) -> None:
    _refused(tmp_path, text + ROUTE, f"\\[{table}\\] must be a table")


# --- load_config: [daemon] --------------------------------------------------------------


def test_daemon_unknown_keys(tmp_path: Path) -> None:
    _refused(tmp_path, "[daemon]\nprofile = \"x\"\nmetric = \"\"\n" + ROUTE,
             "\\[daemon\\]: unknown keys \\['metric', 'profile'\\]")


@pytest.mark.parametrize("value", ["9464", "false", "[]", "{ a = 1 }"])
def test_metrics_must_be_a_string(tmp_path: Path, value: str) -> None:
    _refused(tmp_path, f"[daemon]\nmetrics = {value}\n" + ROUTE, "metrics must be an address")


@pytest.mark.parametrize(("value", "match"), [('"localhost"', "has no port"),
                                              ('"h:99999"', "out of range"),
                                              ('"::1:9464"', "brackets"),
                                              ('"h:x"', "not a number")])
def test_metrics_must_be_an_address(tmp_path: Path, value: str, match: str) -> None:
    err = _refused(tmp_path, f"[daemon]\nmetrics = {value}\n" + ROUTE, match)
    assert str(err).startswith("metrics: ")


def test_metrics_flag_is_checked_too(tmp_path: Path) -> None:
    _refused(tmp_path, ROUTE, "metrics: port 70000 is out of range", "--metrics", "h:70000")


@pytest.mark.parametrize("key", ["log_format", "log_level"])
@pytest.mark.parametrize("value", ['"yaml"', '"INFO"', '""', "1"])
def test_log_settings_must_be_known(tmp_path: Path, key: str, value: str) -> None:
    _refused(tmp_path, f"[daemon]\n{key} = {value}\n" + ROUTE, f"{key} must be one of")


@pytest.mark.parametrize(("value", "match"), [("-1", "must be between 0 and"),
                                              ("-0.5", "must be between 0 and"),
                                              ('"300"', "must be a number"),
                                              ("true", "must be a number"),
                                              ("[300]", "must be a number")])
def test_drain_timeout(tmp_path: Path, value: str, match: str) -> None:
    _refused(tmp_path, f"[daemon]\ndrain_timeout = {value}\n" + ROUTE, f"drain_timeout {match}")


def test_drain_timeout_flag_is_checked_too(tmp_path: Path) -> None:
    _refused(tmp_path, ROUTE, "drain_timeout must be between 0 and", "--drain-timeout", "-3")


@pytest.mark.parametrize(("value", "match"), [("-1", "must be between 0 and 1024"),
                                              ("1025", "must be between 0 and 1024"),
                                              ("2.5", "must be a whole number"),
                                              ('"16"', "must be a number")])
def test_splice_threads(tmp_path: Path, value: str, match: str) -> None:
    _refused(tmp_path, f"[daemon]\nsplice_threads = {value}\n" + ROUTE,
             f"splice_threads {match}")


def test_splice_threads_default_file_and_flag(tmp_path: Path) -> None:
    assert _load(tmp_path, ROUTE).splice_threads == 16
    assert _load(tmp_path, "[daemon]\nsplice_threads = 0\n" + ROUTE).splice_threads == 0
    assert _load(tmp_path, "[daemon]\nsplice_threads = 0\n" + ROUTE,
                 "--splice-threads", "3").splice_threads == 3


# --- load_config: route settings --------------------------------------------------------

BAD_SETTINGS = [
    ("color = 1", "unknown key 'color'"),
    ("destination = 3", "destination must be a manifest set name or a path"),
    ("allow_guest_visible = 3", "allow_guest_visible must be a list of registers"),
    ('accel = "hvf"', "accel must be auto, tcg or kvm"),
    ("profile = 1", "profile must be a name or a path"),
    ('policy = "drop"', "policy must be passthrough or abort"),
    ('policy = "ABORT"', "policy must be passthrough or abort"),
    ("policy = 1", "policy must be passthrough or abort"),
    ('dry_run = "yes"', "dry_run must be true or false"),
    ("dry_run = 1", "dry_run must be true or false"),
    ("hold_cap = 4095", "hold_cap must be between 4096 and"),
    ("hold_cap = 0", "hold_cap must be between 4096 and"),
    ("hold_cap = 8192.0", "hold_cap must be a whole number"),
    ('hold_cap = "64M"', "hold_cap must be a number"),
    ("hold_cap = true", "hold_cap must be a number"),
    ("high_water = 65535", "high_water must be between 65536 and"),
    ("high_water = 1e6", "high_water must be a whole number"),
    ("connect_timeout = 0", "connect_timeout must be between 0.1 and 3600"),
    ("connect_timeout = 0.05", "connect_timeout must be between 0.1 and 3600"),
    ("connect_timeout = 3600.5", "connect_timeout must be between 0.1 and 3600"),
    ("connect_timeout = -1", "connect_timeout must be between 0.1 and 3600"),
    ('connect_timeout = "10"', "connect_timeout must be a number"),
    ("idle_timeout = -1", "idle_timeout must be between 0 and"),
    ("idle_timeout = false", "idle_timeout must be a number"),
]


@pytest.mark.parametrize(("line", "match"), BAD_SETTINGS)
def test_bad_defaults(tmp_path: Path, line: str, match: str) -> None:
    err = _refused(tmp_path, f"[defaults]\n{line}\n" + ROUTE, match)
    assert "[defaults]" in str(err)


@pytest.mark.parametrize(("line", "match"), BAD_SETTINGS)
def test_bad_route_settings(tmp_path: Path, line: str, match: str) -> None:
    err = _refused(tmp_path, ROUTE + ROUTE.replace(":4444\"", ":4445\"", 1) + line + "\n",
                   match)
    assert "route 2" in str(err)


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    err = _refused(tmp_path, "[defaults]\nholdcap = 1\n" + ROUTE, "unknown key 'holdcap'")
    for key in ("connect_timeout", "dry_run", "high_water", "hold_cap", "idle_timeout",
                "policy", "profile"):
        assert key in str(err)


@pytest.mark.parametrize(("flags", "match"), [
    (("--hold-cap", "100"), "command line: hold_cap must be between 4096 and"),
    (("--high-water", "1"), "command line: high_water must be between 65536 and"),
    (("--connect-timeout", "0"), "command line: connect_timeout must be between"),
    (("--idle-timeout", "-1"), "command line: idle_timeout must be between 0 and"),
])
def test_bad_flags(tmp_path: Path, flags: tuple[str, ...], match: str) -> None:
    _refused(tmp_path, ROUTE, match, *flags)


@pytest.mark.parametrize("where", ["defaults", "route"])
def test_unknown_profile(tmp_path: Path, where: str) -> None:
    missing = tmp_path / "nope.toml"
    line = f'profile = "{missing}"\n'
    text = f"[defaults]\n{line}" + ROUTE if where == "defaults" else ROUTE + line
    err = _refused(tmp_path, text, "cannot read profile")
    assert "route 1" in str(err)
    _refused(tmp_path, ROUTE + 'profile = "no-such-builtin"\n', "route 1: .*no-such-builtin")


def test_invalid_profile_file(tmp_path: Path) -> None:
    prof = tmp_path / "bad.toml"
    prof.write_text("this is = = not toml\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="route 1: "):
        _load(tmp_path, ROUTE + f'profile = "{prof}"\n')


def test_unknown_profile_on_the_command_line() -> None:
    with pytest.raises(ConfigError, match=r"command line: .*no-such-builtin"):
        load_config(None, _args("--listen", ":1", "--target", "h:1", "--profile",
                                "no-such-builtin"))


# --- load_config: routes ----------------------------------------------------------------


def test_no_route_at_all(tmp_path: Path) -> None:
    _refused(tmp_path, "[daemon]\n", "no route")
    _refused(tmp_path, "", "no route")
    _refused(tmp_path, "route = []\n", "no route")
    with pytest.raises(ConfigError, match="no route"):
        load_config(None, _args())


@pytest.mark.parametrize("text", ['route = "x"\n', "route = 1\n", "[route]\nlisten = \":1\"\n"])
def test_route_must_be_an_array_of_tables(tmp_path: Path, text: str) -> None:
    _refused(tmp_path, text, "route must be an array of tables")


def test_route_entries_must_be_tables(tmp_path: Path) -> None:
    _refused(tmp_path, 'route = ["a", "b"]\n', "route 1: must be a table")


@pytest.mark.parametrize("text", ['[[route]]\nlisten = ":1"\n', '[[route]]\ntarget = "h:1"\n',
                                  "[[route]]\n"])
def test_route_needs_listen_and_target(tmp_path: Path, text: str) -> None:
    _refused(tmp_path, text, "route 1: needs listen and target")


def test_second_route_is_named(tmp_path: Path) -> None:
    _refused(tmp_path, ROUTE + '[[route]]\nlisten = ":1"\n', "route 2: needs listen and target")


@pytest.mark.parametrize(("listen", "target", "match"), [
    ('":4444"', '":4444"', "route 1: target: ':4444' needs a host"),
    ('":4444"', '"h"', "route 1: target: 'h' has no port"),
    ('":4444"', '"h:0"', "route 1: target: port 0 is out of range"),
    ('"h"', '"h:1"', "route 1: listen: 'h' has no port"),
    ('":65536"', '"h:1"', "route 1: listen: port 65536 is out of range"),
    ('"::1:4444"', '"h:1"', "route 1: listen: write IPv6 addresses in brackets"),
])
def test_route_addresses(tmp_path: Path, listen: str, target: str, match: str) -> None:
    _refused(tmp_path, f"[[route]]\nlisten = {listen}\ntarget = {target}\n", match)


@pytest.mark.parametrize(("a", "b"), [(":4444", ":4444"), ("127.0.0.1:4444", "127.0.0.1:4444"),
                                      ("[::1]:80", "[::1]:80"), (" h:1", "h:1")])
def test_duplicate_listen_addresses(tmp_path: Path, a: str, b: str) -> None:
    text = (f'[[route]]\nlisten = "{a}"\ntarget = "x:1"\n'
            f'[[route]]\nlisten = "{b}"\ntarget = "y:1"\n')
    _refused(tmp_path, text, "route 2: listen address .* is used twice")


def test_duplicate_listen_address_after_another(tmp_path: Path) -> None:
    text = ('[[route]]\nlisten = ":1"\ntarget = "x:1"\n'
            '[[route]]\nlisten = ":2"\ntarget = "x:1"\n'
            '[[route]]\nlisten = ":1"\ntarget = "x:2"\n')
    _refused(tmp_path, text, "route 3: listen address :1 is used twice")


@pytest.mark.parametrize("flags", [("--listen", ":4444"), ("--target", "h:4444")])
def test_listen_and_target_flags_go_together(tmp_path: Path, flags: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match="--listen and --target go together"):
        load_config(None, _args(*flags))
    _refused(tmp_path, ROUTE, "--listen and --target go together", *flags)


def test_listen_and_target_flags_replace_the_routes(tmp_path: Path) -> None:
    cfg = _load(tmp_path, ROUTE + ROUTE.replace(":4444\"", ":4445\"", 1),
                "--listen", ":7000", "--target", "t:7001")
    (r,) = cfg.routes
    assert (r.listen, r.target) == (Address("", 7000), Address("t", 7001))


def test_bad_flag_addresses() -> None:
    with pytest.raises(ConfigError, match="command line: target: ':1' needs a host"):
        load_config(None, _args("--listen", ":1", "--target", ":1"))
    with pytest.raises(ConfigError, match="command line: listen: port 'x' is not a number"):
        load_config(None, _args("--listen", ":x", "--target", "h:1"))


# --- hardening: what used to pass validation and fail later ------------------------------


@pytest.mark.parametrize("key", ["idle_timeout", "connect_timeout", "hold_cap", "high_water"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_numbers_must_be_finite(tmp_path: Path, key: str, value: str) -> None:
    _refused(tmp_path, f'[defaults]\n{key} = {value}\n[[route]]\nlisten = ":1"\ntarget = "x:1"\n',
             f"{key} must be a (finite|whole) number")


def test_drain_timeout_must_be_finite(tmp_path: Path) -> None:
    _refused(tmp_path, '[daemon]\ndrain_timeout = nan\n[[route]]\nlisten = ":1"\ntarget = "x:1"\n',
             "drain_timeout must be a finite number")


@pytest.mark.parametrize(("key", "value"), [("hold_cap", (1 << 32) + 1),
                                            ("max_description", (1 << 30) + 1),
                                            ("high_water", (1 << 30) + 1),
                                            ("idle_timeout", 7 * 86400 + 1),
                                            ("connect_timeout", 3601)])
def test_numbers_have_an_upper_bound(tmp_path: Path, key: str, value: int) -> None:
    _refused(tmp_path, f'[defaults]\n{key} = {value}\n[[route]]\nlisten = ":1"\ntarget = "x:1"\n',
             f"{key} must be between")


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "migproxy.toml"
    p.write_bytes(b'[[route]]\nlisten = ":1"\ntarget = "\xff:1"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(p), _args("--config", str(p)))


@pytest.mark.parametrize("port", ["+80", " 80", "4_444", "\u0664\u0664", "0x50"])
def test_ports_are_plain_digits(port: str) -> None:
    with pytest.raises(ConfigError, match="is not a number"):
        parse_address(f"h:{port}", what="x")


@pytest.mark.parametrize(("a", "b"), [
    (":4444", "0.0.0.0:4444"), ("0.0.0.0:4444", ":4444"), (":4444", "127.0.0.1:4444"),
    ("0.0.0.0:4444", "127.0.0.1:4444"), ("[::]:4444", "[::1]:4444"),
    ("[::1]:4444", "[0::1]:4444"),
    ("Host:1", "host:1"),
])
def test_listen_addresses_that_cannot_both_be_bound(tmp_path: Path, a: str, b: str) -> None:
    text = (f'[[route]]\nlisten = "{a}"\ntarget = "x:1"\n'
            f'[[route]]\nlisten = "{b}"\ntarget = "y:1"\n')
    _refused(tmp_path, text, "route 2: listen address .* (overlaps|is used twice)")


@pytest.mark.parametrize(("a", "b"), [("0.0.0.0:4444", "[::1]:4444"),
                                      ("[::]:4444", "127.0.0.1:4444"),
                                      ("127.0.0.1:4444", "127.0.0.2:4444"),
                                      ("127.0.0.1:4444", "127.0.0.1:4445"),
                                      (":0", ":0")])
def test_listen_addresses_that_can_both_be_bound(tmp_path: Path, a: str, b: str) -> None:
    text = (f'[[route]]\nlisten = "{a}"\ntarget = "x:1"\n'
            f'[[route]]\nlisten = "{b}"\ntarget = "y:1"\n')
    assert len(_load(tmp_path, text).routes) == 2


def test_no_dry_run_overrides_the_file(tmp_path: Path) -> None:
    text = '[defaults]\ndry_run = true\n[[route]]\nlisten = ":1"\ntarget = "x:1"\n'
    assert _load(tmp_path, text).routes[0].settings.dry_run is True
    assert _load(tmp_path, text, "--no-dry-run").routes[0].settings.dry_run is False
    assert _load(tmp_path, text.replace("true", "false"), "--dry-run").routes[0] \
        .settings.dry_run is True


def test_max_description_reaches_the_route(tmp_path: Path) -> None:
    text = '[defaults]\nmax_description = 65536\n[[route]]\nlisten = ":1"\ntarget = "x:1"\n'
    assert _load(tmp_path, text).routes[0].settings.max_description == 65536
    assert _load(tmp_path, text, "--max-description", "8192").routes[0] \
        .settings.max_description == 8192
    _refused(tmp_path, text.replace("65536", "100"), "max_description must be between 4096")


# --- destinations ------------------------------------------------------------------------

def test_a_destination_replaces_the_default_profile(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '[defaults]\ndestination = "qemu-10.0.13"\n' + ROUTE)
    (route,) = cfg.routes
    assert route.profile is None
    assert route.destination is not None
    assert route.destination.name == "qemu-10.0.13"
    assert route.destination.accel == "auto"


def test_an_explicit_profile_overrides_the_destination(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '[defaults]\ndestination = "qemu-10.0.13"\nprofile = "default"\n'
                + ROUTE)
    (route,) = cfg.routes
    assert route.destination is None
    assert route.profile is not None


def test_opt_ins_are_register_names(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '[defaults]\ndestination = "qemu-11.1.3"\n'
                'allow_guest_visible = ["ID_AA64PFR1_EL1"]\naccel = "kvm"\n' + ROUTE)
    dest = cfg.routes[0].destination
    assert dest is not None
    assert dest.accel == "kvm"
    assert len(dest.opt_in) == 1


@pytest.mark.parametrize(("text", "match"), [
    ('destination = "qemu-9.9"', "destination: no manifest set 'qemu-9.9'"),
    ('destination = "qemu-11.1.3"\nallow_guest_visible = ["NOPE_EL9"]',
     "allow_guest_visible: "),
    ('allow_guest_visible = ["ID_AA64PFR1_EL1"]', "allow_guest_visible needs a destination"),
])
def test_bad_destinations_are_refused_at_start(tmp_path: Path, text: str, match: str) -> None:
    err = _refused(tmp_path, f"[defaults]\n{text}\n" + ROUTE, match)
    assert "route 1" in str(err)


# --- port ranges -------------------------------------------------------------------------

RANGE = '[[route]]\nlisten = "{listen}"\ntarget = "{target}"\n'


def _range(tmp_path: Path, listen: str, target: str) -> Config:
    return _load(tmp_path, RANGE.format(listen=listen, target=target))


@pytest.mark.parametrize(("text", "host", "port", "count", "shown"), [
    ("192.0.2.10:49152-49215", "192.0.2.10", 49152, 64, "192.0.2.10:49152-49215"),
    (":49152-49215", "", 49152, 64, ":49152-49215"),
    ("[::1]:49152-49215", "::1", 49152, 64, "[::1]:49152-49215"),
    ("[fe80::1%eth0]:1-2", "fe80::1%eth0", 1, 2, "[fe80::1%eth0]:1-2"),
    ("h:4444-4444", "h", 4444, 1, "h:4444"),  # a range of one port is that port
    ("h:64512-65535", "h", 64512, 1024, "h:64512-65535"),  # the cap, up to the last port
])
def test_parse_port_ranges(text: str, host: str, port: int, count: int, shown: str) -> None:
    a = parse_address(text, what="x", allow_range=True)
    assert (a.host, a.port, a.count, str(a)) == (host, port, count, shown)
    assert a.at(count - 1) == Address(host, port + count - 1)
    with pytest.raises(IndexError):
        a.at(count)


@pytest.mark.parametrize(("text", "message"), [
    ("h:5-4", "ends before it starts"),
    ("h:0-3", "port 0 is out of range 1-65535"),
    ("h:65535-65536", "port 65536 is out of range"),
    ("h:1-1025", f"has 1025 ports, more than {MAX_RANGE_PORTS}"),
    ("h:1-65535", "more than"),
    ("h:5-", "port '' is not a number"),
    ("h:-5", "port -5 is out of range"),
    ("h:5--6", "port -6 is out of range"),
    ("h:a-b", "port 'a' is not a number"),
    ("h:1-+2", "port '\\+2' is not a number"),
    ("[::1]-2:1", "is not \\[IPV6\\]:PORT"),
    ("::1:1-2", "brackets"),
])
def test_parse_bad_port_ranges(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_address(text, what="listen", allow_range=True)


def test_ranges_only_where_allowed() -> None:
    with pytest.raises(ConfigError, match="a port range is not allowed here"):
        parse_address("h:1-2", what="metrics")


def test_a_range_route_in_the_file(tmp_path: Path) -> None:
    cfg = _range(tmp_path, "192.0.2.10:49152-49215", "127.0.0.1:49152-49215")
    (r,) = cfg.routes  # one route, not 64
    assert (r.listen, r.target) == (Address("192.0.2.10", 49152, 64),
                                    Address("127.0.0.1", 49152, 64))
    assert r.listen.at(63) == Address("192.0.2.10", 49215)
    assert r.target.at(63) == Address("127.0.0.1", 49215)


def test_a_range_route_on_the_command_line() -> None:
    cfg = load_config(None, _args("--listen", "[::1]:50000-50001",
                                  "--target", "10.0.0.2:60000-60001"))
    (r,) = cfg.routes
    assert [str(r.listen.at(i)) for i in range(2)] == ["[::1]:50000", "[::1]:50001"]
    assert [str(r.target.at(i)) for i in range(2)] == ["10.0.0.2:60000", "10.0.0.2:60001"]
    assert str(MAX_RANGE_PORTS) in build_parser().format_help()


def test_a_one_port_target_for_a_range_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, RANGE.format(listen=":49152-49215", target="h:4444"),
             r"route 1: listen :49152-49215 has 64 port\(s\) and target h:4444 1: a range "
             "route needs ranges of the same length")
    with pytest.raises(ConfigError, match=r"^command line: listen :1-2 has 2 port"):
        load_config(None, _args("--listen", ":1-2", "--target", "h:1-3"))


def test_listen_port_zero_is_not_a_range(tmp_path: Path) -> None:
    _refused(tmp_path, RANGE.format(listen=":0-1", target="h:1-2"), "port 0 is out of range")


def _two_ranges(a: str, b: str) -> str:
    """Two routes listening on ``a`` and ``b``, each with a remote target range of its
    length."""
    def count(text: str) -> int:
        return parse_address(text, what="x", allow_range=True).count
    return (RANGE.format(listen=a, target=f"x:1-{count(a)}")
            + RANGE.format(listen=b, target=f"y:1-{count(b)}"))


@pytest.mark.parametrize(("a", "b"), [
    (":49152-49215", "127.0.0.1:49215"),           # the last port of a range
    ("127.0.0.1:100-200", "127.0.0.1:150-250"),    # two ranges in part
    ("0.0.0.0:100-200", "127.0.0.1:50-100"),       # a wildcard, the first port
    ("[::]:100-101", "[::1]:101-300"),
])
def test_ranges_that_cannot_both_be_bound(tmp_path: Path, a: str, b: str) -> None:
    _refused(tmp_path, _two_ranges(a, b), "route 2: listen address .* overlaps")


@pytest.mark.parametrize(("a", "b"), [
    ("127.0.0.1:100-200", "127.0.0.1:201-300"),    # adjacent
    ("127.0.0.1:100-200", "127.0.0.2:100-200"),    # other addresses
    ("0.0.0.0:100-200", "[::1]:100-200"),          # other families
])
def test_ranges_that_can_both_be_bound(tmp_path: Path, a: str, b: str) -> None:
    assert len(_load(tmp_path, _two_ranges(a, b)).routes) == 2


@pytest.mark.parametrize(("listen", "target"), [
    ("127.0.0.1:49152-49215", "127.0.0.1:49152-49215"),   # every port onto itself
    ("127.0.0.1:49152-49215", "127.0.0.1:49200-49263"),   # a chain through the range
    (":49152-49215", "127.0.0.1:49152-49215"),            # a wildcard takes loopback
    ("0.0.0.0:4444", "localhost:4444"),
    ("[::]:49152-49153", "[::1]:49153-49154"),
    ("[::1]:4444", "[0::1]:4444"),
    ("Host:1-2", "host:1-2"),
])
def test_a_range_that_loops_into_itself_is_refused(tmp_path: Path, listen: str,
                                                    target: str) -> None:
    _refused(tmp_path, RANGE.format(listen=listen, target=target),
             r"route 1: target .* loops back into this daemon: port \d+ is its own listen")


def test_a_target_that_is_another_routes_listen_address_is_refused(tmp_path: Path) -> None:
    text = (RANGE.format(listen="127.0.0.1:5000-5001", target="127.0.0.1:6001-6002")
            + RANGE.format(listen="127.0.0.1:6000-6001", target="dst:6000-6001"))
    _refused(tmp_path, text, "route 1: target 127.0.0.1:6001-6002 loops back into this "
             "daemon: port 6001 is .* route 2's listen address 127.0.0.1:6000-6001")


@pytest.mark.parametrize(("listen", "target"), [
    ("192.0.2.10:49152-49215", "127.0.0.1:49152-49215"),  # the libvirt layout
    ("127.0.0.1:49152-49215", "127.0.0.1:49216-49279"),   # same host, past the range
    ("127.0.0.1:49152-49215", "127.0.0.2:49152-49215"),   # another address
    (":49152-49215", "dst.example:49152-49215"),          # a wildcard, a remote name
    ("0.0.0.0:4444", "[::1]:4444"),                       # IPv4 wildcard, IPv6 loopback
    ("127.0.0.1:0", "127.0.0.1:4444"),                    # any free port
])
def test_targets_that_do_not_loop(tmp_path: Path, listen: str, target: str) -> None:
    assert len(_range(tmp_path, listen, target).routes) == 1
