"""What the real-KVM tests share: streams saved fresh on each nested host (one boot per
kernel and host CPU, kept for the session), the destination manifests made from them, and
the rewrite of a stream for a destination (the fixtures are in conftest.py).

Expectations come from the manifests and the knowledge base: a cell is expected to load
when the plan is not refused, and a refusal is expected to name what the guest would see;
no list of registers or kernels is typed here, since the mirror moves kernels forward."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from migproxy.arm.destination import Destination
from migproxy.arm.events import CpuReconciled
from migproxy.arm.knowledge import kernel_version
from migproxy.arm.manifest import Manifest
from migproxy.lab.kvm import KvmLab, KvmLabError, KvmStream, SavedStreams
from migproxy.tools.manifest import manifest_from_stream, upstream_version, write_manifest
from migproxy.tools.offline import rewrite_file

HOST_CPUS = ("neoverse-n1", "max")


def kernels(lab: KvmLab) -> list[str]:
    """The lab's kernel keys, oldest release first."""
    return sorted(lab.kernels, key=lambda k: kernel_version(lab.kernel(k).release) or (0, 0))


@dataclass
class Saves:
    """The session's saved streams (``kvm_saves``, one boot per kernel and host CPU) and
    the destination manifests made from them."""

    lab: KvmLab
    root: Path
    save: Callable[..., SavedStreams]
    manifests: dict[tuple[str, str], Path] = field(default_factory=dict)

    def get(self, kernel: str, host_cpu: str) -> SavedStreams:
        try:
            return self.save(kernel, host_cpu)
        except KvmLabError as e:
            pytest.fail(f"saving streams on {kernel} / {host_cpu}: {e}")

    def manifest(self, kernel: str, host_cpu: str, qemu: str = "10.0") -> Path:
        """The destination manifest of QEMU ``qemu`` on this kernel and host CPU, made from
        the stream it saved there (a directory: a manifest set of one)."""
        key = (kernel, host_cpu)
        if key not in self.manifests:
            s = self.get(kernel, host_cpu)
            stream = s.streams[qemu]
            m = manifest_from_stream(stream.path, cpu="host",
                                     qemu=upstream_version(stream.qemu_version_line),
                                     version_line=stream.qemu_version_line, accel="kvm",
                                     kernel=s.release, host_cpu=host_cpu)
            path = self.root / f"{kernel}-{host_cpu}-qemu-{m.qemu}"
            write_manifest(m, path / f"{m.machine}-host.json")
            self.manifests[key] = path
        return self.manifests[key]


@dataclass
class Rewrite:
    """A stream rewritten (or refused) for a destination."""

    source: KvmStream
    destination: Manifest
    out: Path | None  # None: refused, nothing written
    refusal: str
    changes: list[str]
    guest_visible: list[str]


def rewrite_for(stream: KvmStream, dest_dir: Path, out: Path,
                opt_in: frozenset[int] = frozenset()) -> Rewrite:
    """``migproxy rewrite --destination DIR`` of ``stream`` through the Python API."""
    dest = Destination.load(str(dest_dir), opt_in=opt_in)
    (m,) = dest.manifests.manifests
    run = rewrite_file(stream.path, out, None, destination=dest)
    plans = [e for e in run.events if isinstance(e, CpuReconciled)]
    changes = [c for e in plans for c in e.changes]
    visible = [c for e in plans for c in e.guest_visible]
    if not run.complete:
        stop = run.stop
        return Rewrite(stream, m, None, stop.message if stop else "incomplete", changes,
                       visible)
    return Rewrite(stream, m, out, "", changes, visible)


def refused_registers(message: str) -> frozenset[int]:
    """The register ids a refusal names (``NAME (0x...)``)."""
    return frozenset(int(x, 16) for x in re.findall(r"\((0x[0-9A-Fa-f]{16})\)", message))

