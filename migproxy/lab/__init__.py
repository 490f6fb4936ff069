"""Harness for tests that run real QEMU binaries (the "QEMU lab").

Set the lab up once with ``scripts/lab-setup.sh`` (root); it writes
``$LAB_DIR/lab.json`` (default ``/var/cache/migproxy-lab``), which this
package reads.  Typical use in a test::

    from testkit.labs import require_lab

    def test_roundtrip(tmp_path):
        lab = require_lab("10.0.2")          # skips, or fails if MIGPROXY_REQUIRE_LAB=1
        s = lab.stream("10.0.2", "virt-10.0", "cortex-a57", 1)
        assert lab.load_stream("10.0.2", s.path, "virt-10.0", "cortex-a57", 1,
                               expect_after=s.last_tick).ok

The nested KVM lab (real arm64 KVM under QEMU TCG, ``scripts/kvm-lab-setup.sh``) is
``migproxy.lab.kvm``.

Stdlib only.  Chrooted versions need root, and every file a QEMU has to see
must live below ``lab.work_dir`` (the harness copies/moves stream files there
when needed; run directories, sockets and logs are always there).
"""

from migproxy.tools.qmp import QMPClient, QMPConnectionError, QMPError

from .lab import (
    DEFAULT_LAB_DIR,
    Lab,
    LabUnavailable,
    LoadResult,
    Stream,
    free_port,
    free_port_range,
    get_lab,
    stream_name,
    wait_port,
)
from .qemu import (
    MIGRATION_FINAL_STATES,
    Qemu,
    QemuError,
    QemuExited,
    QemuVersion,
    last_counter,
    parse_ticks,
)

__all__ = [
    "DEFAULT_LAB_DIR",
    "MIGRATION_FINAL_STATES",
    "Lab",
    "LabUnavailable",
    "LoadResult",
    "QMPClient",
    "QMPConnectionError",
    "QMPError",
    "Qemu",
    "QemuError",
    "QemuExited",
    "QemuVersion",
    "Stream",
    "free_port",
    "free_port_range",
    "get_lab",
    "last_counter",
    "parse_ticks",
    "stream_name",
    "wait_port",
]
