"""``migrate file:`` with the mapped-ram capability, rewritten and loaded by real QEMU.

The tick guest is stopped and saved with ``migrate-set-capabilities mapped-ram on`` (and
for the multifd cases ``multifd on``, two channels) and ``migrate file:FILE``; ``migproxy
rewrite --destination`` rewrites the file (into a new file, or in place), and the
destination loads it with ``-incoming defer``, the same capabilities and
``migrate-incoming file:FILE``: the guest must go on with the tick after the last one it
printed. Negative control: the file as saved does not load on the destination. (libvirt's
sparse images, ``virsh save --image-format sparse``: tests/e2e/test_virsh_restore.py.)
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from migproxy.lab import Lab
from migproxy.lab.qemu import QemuExited
from migproxy.tools.mappedram import copy_sparse
from testkit.labs import require_lab

pytestmark = pytest.mark.qemu

MACHINE, CPU = "virt-10.0", "cortex-a57"


@dataclass
class Loaded:
    ok: bool
    error: str


def _capabilities(multifd: bool) -> tuple[dict[str, bool], dict[str, Any] | None]:
    if multifd:
        return {"mapped-ram": True, "multifd": True}, {"multifd-channels": 2}
    return {"mapped-ram": True}, None


def save_file(lab: Lab, version: str, path: Path, *, multifd: bool) -> int:
    """Run the tick guest on ``version``, stop it, migrate it to ``file:path`` with
    mapped-ram; the last tick it printed."""
    caps, params = _capabilities(multifd)
    with lab.source(version, machine=MACHINE, cpu=CPU, name="save") as q:
        q.stop()
        last = q.last_counter()
        q.migrate(f"file:{path}", caps, params)
        info = q.wait_migration(60)
        assert info.get("status") == "completed", (info, q.stderr()[-1000:])
    assert last is not None
    return last


def load_file(lab: Lab, version: str, path: Path, *, multifd: bool, after: int) -> Loaded:
    """Load ``file:path`` (mapped-ram) on ``version``; ok when the guest's first tick is
    ``after + 1``."""
    caps, params = _capabilities(multifd)
    with lab.qemu(version, machine=MACHINE, cpu=CPU, incoming="defer", paused=True,
                  name="load") as q:
        q.migrate_incoming(f"file:{path}", caps, params)
        info = q.wait_incoming(60)
        if info.get("status") != "completed":
            return Loaded(False, str(info.get("error-desc") or info))
        q.cont()
        try:
            first = q.wait_ticks(1, 10)[0]
        except (TimeoutError, QemuExited) as e:
            return Loaded(False, f"no tick after cont: {e}")
        return Loaded(first == after + 1, f"first tick {first}, expected {after + 1}")


@pytest.fixture(scope="module")
def lab() -> Lab:
    return require_lab("10.0.2", "10.0.13", "11.1.3")


@pytest.fixture
def work(lab: Lab) -> Iterator[Path]:
    with lab.scratch_dir("mapped-ram-") as d:  # seen by the chrooted QEMUs too
        yield d


@pytest.mark.parametrize(("source", "dest", "multifd", "in_place"), [
    ("10.0.2", "10.0.13", False, False),
    ("10.0.2", "10.0.13", True, True),
    ("11.1.3", "10.0.2", False, False),
    ("11.1.3", "10.0.2", True, True),
])
def test_a_mapped_ram_file_loads_on_the_destination_after_rewrite(
        lab: Lab, work: Path, source: str, dest: str, multifd: bool, in_place: bool) -> None:
    saved = work / "saved.mr"
    last = save_file(lab, source, saved, multifd=multifd)

    control = load_file(lab, dest, saved, multifd=multifd, after=last)
    assert not control.ok, "the file as saved loads: the test proves nothing"

    target = work / "rewritten.mr"
    if in_place:
        with saved.open("rb") as a, target.open("wb") as b:  # the control's stays as saved
            copy_sparse(a.fileno(), b.fileno(), saved.stat().st_size)
        args = [str(target), "--in-place"]
    else:
        args = [str(saved), str(target)]
    cli = subprocess.run([sys.executable, "-m", "migproxy", "rewrite", *args,
                          "--destination", f"qemu-{dest}"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "mapped-ram" in cli.stdout, cli.stdout
    assert target.stat().st_blocks * 512 < 16 << 20  # the RAM regions stayed holes
    loaded = load_file(lab, dest, target, multifd=multifd, after=last)
    assert loaded.ok, loaded.error
