"""Shared fixtures. The helpers the tests import (the engine driver, the captured real
streams, the labs as a test sees them) are in ``testkit`` (``testkit.streams``,
``testkit.labs``): a test module imports from there, never from this file."""

from __future__ import annotations

import pytest

from testkit.streams import SMALL
from testkit.synthetic import build


@pytest.fixture(scope="session")
def synth_small() -> bytes:
    return build(SMALL)


# ------------------------------------------------------------------------------ test tiers
#
#   qemu      needs the real QEMU lab (scripts/lab-setup.sh); marked in the test files
#   kvm       needs the nested KVM lab (scripts/kvm-lab-setup.sh); marked in the test files
#   loopback  real sockets on 127.0.0.1 (a daemon in-process or as a subprocess)
#   slow      seconds each: floods, soaks, memory under back-pressure, the bench suite
#
# loopback and slow are given here, by module or test, so that the test files need no
# edit; test_tier_table_names_what_exists (tests/test_tiers.py) keeps the table exact.
# Every test without a timeout marker gets one: 60 s, 180 s if slow (the command line's
# --timeout, 600 s in scripts/test.sh, is for the QEMU and KVM tests).

LOOPBACK_MODULES = frozenset({
    "tests/bench/test_flood.py",
    "tests/bench/test_smoke.py",
    "tests/daemon/test_memory.py",
    "tests/daemon/test_metrics_http.py",
    "tests/daemon/test_port_loopback.py",
    "tests/daemon/test_port_ranges.py",
    "tests/daemon/test_pump.py",
    "tests/daemon/test_relay.py",
    "tests/daemon/test_server.py",
    "tests/daemon/test_soak.py",
    "tests/daemon/test_splice.py",
    "tests/daemon/test_tls_relay.py",
    "tests/daemon/test_uvloop_relay.py",
})
SLOW_MODULES = frozenset({
    "tests/bench/test_flood.py",
    "tests/bench/test_suite_smoke.py",
    "tests/daemon/test_soak.py",
})
SLOW_TESTS = frozenset({
    "tests/daemon/test_relay.py::test_memory_does_not_grow_with_the_stream_under_backpressure",
    "tests/daemon/test_relay.py::test_slow_destination_keeps_memory_bounded",
    "tests/daemon/test_splice.py::test_back_pressure_holds_no_more_than_the_pipe",
})
LAB_GROUP = "lab"
FAST_TIMEOUT = 60
SLOW_TIMEOUT = 180


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        test = item.nodeid.split("[", 1)[0]
        if module in LOOPBACK_MODULES:
            item.add_marker(pytest.mark.loopback)
        if module in SLOW_MODULES or test in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("qemu") or item.get_closest_marker("kvm"):
            # One lab, one test at a time (pytest-xdist: --dist loadgroup).
            item.add_marker(pytest.mark.xdist_group(LAB_GROUP))
        if item.get_closest_marker("timeout") is None and \
                item.get_closest_marker("qemu") is None and \
                item.get_closest_marker("kvm") is None:
            slow = item.get_closest_marker("slow") is not None
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT if slow else FAST_TIMEOUT))
