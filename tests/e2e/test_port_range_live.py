"""A range route live: one daemon listens on two consecutive ports in front of two
destination QEMUs 10.0.13 (``-incoming`` on the two target ports), and two source QEMUs
10.0.2 migrate through it at the same time, one to each listen port. Both streams are
rewritten for 10.0.13 and both guests continue on their destinations.

"At the same time" without timing: both destinations are stopped (SIGSTOP) until both
sources have sent everything (a 64 MiB tick guest's stream, about 0.5 MB, fits in the
daemon's ``high_water`` and the socket buffers), so both migrations are in the daemon at
once before either destination loads a byte.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from migproxy.lab import Lab, free_port_range
from testkit.labs import require_lab
from tests.e2e.test_e2e_daemon import LOOPBACK, Proxy, complete

pytestmark = pytest.mark.qemu
PORTS = 2


@pytest.fixture(scope="module")
def lab() -> Lab:
    return require_lab("10.0.2", "10.0.13")


def test_two_migrations_at_once_on_two_ports_of_a_range(lab: Lab, tmp_path: Path) -> None:
    target = free_port_range(PORTS)
    p = Proxy(tmp_path, target, "--destination", "qemu-10.0.13", ports=PORTS).start()
    listen = p.listen_port
    try:
        (listening,) = p.events("listening")
        assert listening["listen"] == [f"{LOOPBACK}:{listen}-{listen + 1}"], p.context()
        assert listening["target"] == f"{LOOPBACK}:{target}-{target + 1}"
        with (
            lab.destination("10.0.13", f"tcp:{LOOPBACK}:{target}", name="dst0") as d0,
            lab.destination("10.0.13", f"tcp:{LOOPBACK}:{target + 1}", name="dst1") as d1,
            lab.source("10.0.2", name="src0") as s0,
            lab.source("10.0.2", name="src1") as s1,
        ):
            stopped = [d.pid for d in (d0, d1)]
            assert None not in stopped
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            try:
                s0.migrate(f"tcp:{LOOPBACK}:{listen}")
                s1.migrate(f"tcp:{LOOPBACK}:{listen + 1}")
                for s in (s0, s1):  # both sent everything while no destination ran
                    assert s.wait_migration(60).get("status") == "completed", p.context()
            finally:
                for pid in stopped:
                    os.kill(pid, signal.SIGCONT)
            for s, d in ((s0, d0), (s1, d1)):
                complete(s, d, p.context)
        plans = p.events("cpu_plan")
        assert len(plans) == 2, p.context()
        assert all(e["changes"] and e["guest_visible"] == []
                                       for e in plans), p.context()
        mains = [e for e in p.events("closed") if e.get("channel") == "main"]
        assert sorted((e["route"], e["target"], e["outcome"]) for e in mains) == [
            (f"{LOOPBACK}:{listen + i}", f"{LOOPBACK}:{target + i}", "completed")
            for i in range(PORTS)], p.context()
    finally:
        assert p.stop() == 0, p.context()
