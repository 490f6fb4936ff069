"""``migproxy serve``: the daemon's subcommand; the bare ``migproxy --listen ... --target
...`` keeps working and means the same."""

from __future__ import annotations

import argparse

import pytest

from migproxy.cli import build_parser, main
from migproxy.daemon.config import Config
from migproxy.daemon.load import load_config

ROUTE = ["--listen", "127.0.0.1:4444", "--target", "dst.example:4444"]


def _config(argv: list[str]) -> tuple[argparse.Namespace, Config]:
    args = build_parser().parse_args(argv)
    return args, load_config(args.config, args)


def test_serve_and_the_bare_form_load_the_same_configuration() -> None:
    args, bare = _config([*ROUTE, "--idle-timeout", "7", "--dry-run"])
    assert args.command is None
    args, served = _config(["serve", *ROUTE, "--idle-timeout", "7", "--dry-run"])
    assert args.command == "serve"
    assert served == bare
    assert served.routes[0].settings.idle_timeout == 7
    assert served.routes[0].settings.dry_run is True


def test_flags_before_serve_are_kept() -> None:
    """A flag given before the command is not hidden by serve's own (absent) flag."""
    _, cfg = _config(["--idle-timeout", "9", "serve", *ROUTE])
    assert cfg.routes[0].settings.idle_timeout == 9
    _, cfg = _config(["--idle-timeout", "9", "serve", *ROUTE, "--idle-timeout", "11"])
    assert cfg.routes[0].settings.idle_timeout == 11


def test_serve_refuses_a_bad_value_like_the_bare_form(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", *ROUTE, "--idle-timeout", "1e-9"]) == 2
    served = capsys.readouterr().err
    assert main([*ROUTE, "--idle-timeout", "1e-9"]) == 2
    assert capsys.readouterr().err == served
    assert "idle_timeout must be 0 (never) or at least 0.1 s" in served


def test_serve_has_every_daemon_flag() -> None:
    top = build_parser()
    serve = top._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = {o for a in top._actions for o in a.option_strings} - {"-h", "--help",
                                                                    "--version"}
    assert flags <= {o for a in serve._actions for o in a.option_strings}
