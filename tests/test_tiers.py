"""The tier table of tests/conftest.py names modules and tests that exist, and every
marker it gives is registered in pyproject.toml (pytest runs with --strict-markers off by
default, so a typo would silently make a tier empty)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from tests.conftest import LOOPBACK_MODULES, SLOW_MODULES, SLOW_TESTS

ROOT = Path(__file__).resolve().parent.parent


def test_tier_table_names_what_exists() -> None:
    for module in LOOPBACK_MODULES | SLOW_MODULES:
        assert (ROOT / module).is_file(), module
    for test in SLOW_TESTS:
        module, name = test.split("::")
        tree = ast.parse((ROOT / module).read_text())
        names = {n.name for n in tree.body
                 if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        assert name in names, test


def test_every_module_that_opens_sockets_is_loopback() -> None:
    """Outside the QEMU and KVM suites (marked themselves), a module that starts a daemon
    or opens a connection is in the loopback tier."""
    calls = ("open_connection(", "start_daemon(", "start_server(", "create_connection(",
             "tcp_pair(")
    for path in sorted(ROOT.glob("tests/**/test_*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("tests/e2e/", "tests/kvm/", "tests/lab/")) or \
                path == Path(__file__).resolve():
            continue
        text = path.read_text()
        if any(c in text for c in calls):
            assert rel in LOOPBACK_MODULES, rel


def test_the_tier_markers_are_registered() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    markers = {m.split(":")[0] for m in conf["tool"]["pytest"]["ini_options"]["markers"]}
    assert {"qemu", "kvm", "loopback", "slow"} <= markers
