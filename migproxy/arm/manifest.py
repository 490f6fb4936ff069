"""Destination manifests: what one QEMU build accepts in the ARM ``cpu`` section.

A manifest is made from a stream that build itself saved for one machine type and CPU
model (``migproxy manifest capture`` starts it paused with no guest, or ``manifest
from-stream`` reads a saved stream). It records:

* the QEMU version (``11.1.3``) and its ``--version`` line, the machine type, the CPU
  model, the accelerator and the number of CPUs it was captured with;
* under KVM, the host: its kernel release (``uname -r``) and a name for its CPU (the
  operator's, or ``midr-0x414fd0c1``): with ``-cpu host`` the cpreg list is the kernel's
  ``KVM_GET_REG_LIST`` and the ID register values are the host CPU's as that kernel
  sanitises them, so a KVM manifest describes one QEMU build on one kernel on one CPU;
* the cpu section's version and the cpu subsections that build sent, in order;
* the cpreg list of the first CPU: every register id the build expects, ascending, with
  the value it had (for a paused guest with no program: the reset value; constant ID
  registers are the CPU model's values);
* how it was made (command, date, source file).

QEMU's loader (target/arm/machine.c, ``cpu_post_load``) requires every register it has in
its own list to be in the stream and rejects a stream register it does not know, so the
list of ids is exactly what the destination accepts. The values of registers that hold
guest state are only reset values; the reconciliation compares them only for constant
(ID) registers.

A manifest file is JSON (``format`` 1); ids and values are hex strings.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migproxy.arm.events import CpuSeen
from migproxy.arm.registers import describe, format_id
from migproxy.stream.engine import Mode, StreamEngine
from migproxy.stream.errors import MigproxyError

FORMAT = 1


class ManifestError(MigproxyError):
    """A manifest cannot be made, read or used."""


@dataclass(frozen=True)
class Manifest:
    qemu: str  # the exact upstream version, e.g. "11.1.3"
    machine: str  # e.g. "virt-10.0"
    cpu: str  # the -cpu model, e.g. "cortex-a57"
    cpu_section_version: int
    subsections: tuple[str, ...]  # cpu subsections the build sent, in order
    cpregs: tuple[tuple[int, int], ...]  # (register id, value), ascending ids
    version_line: str = ""
    accel: str = "tcg"
    smp: int = 1
    kernel: str = ""  # KVM: the host kernel release, e.g. "6.12.118+deb13-arm64"
    host_cpu: str = ""  # KVM: the host CPU, e.g. "neoverse-n1" or "midr-0x414fd0c1"
    made: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(i for i, _v in self.cpregs)

    @property
    def values(self) -> dict[int, int]:
        return dict(self.cpregs)

    @property
    def host(self) -> str:
        """Where this build runs: ``QEMU 10.0.13`` under TCG; under KVM also the kernel and
        the host CPU (``QEMU 10.0.13, Linux 6.12.118+deb13-arm64, neoverse-n1``)."""
        parts = [f"QEMU {self.qemu}"]
        if self.kernel:
            parts.append(f"Linux {self.kernel}")
        if self.host_cpu:
            parts.append(self.host_cpu)
        return ", ".join(parts)

    @property
    def key(self) -> tuple[str, str]:
        """(machine type, CPU model): what a stream is matched on."""
        return (self.machine, self.cpu)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "qemu": self.qemu,
            "version_line": self.version_line,
            "machine": self.machine,
            "cpu": self.cpu,
            "accel": self.accel,
            "smp": self.smp,
            **({"kernel": self.kernel} if self.kernel else {}),
            **({"host_cpu": self.host_cpu} if self.host_cpu else {}),
            "cpu_section_version": self.cpu_section_version,
            "subsections": list(self.subsections),
            "cpregs": [{"id": f"0x{i:016x}", "name": describe(i), "value": f"0x{v:x}"}
                       for i, v in self.cpregs],
            "made": self.made,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1) + "\n"

    @classmethod
    def from_json(cls, obj: Any, where: str = "manifest") -> Manifest:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ManifestError(f"{where}: not a migproxy manifest (format {FORMAT})")
        try:
            cpregs = tuple((int(r["id"], 16), int(r["value"], 16)) for r in obj["cpregs"])
            m = cls(qemu=str(obj["qemu"]), machine=str(obj["machine"]), cpu=str(obj["cpu"]),
                    cpu_section_version=int(obj["cpu_section_version"]),
                    subsections=tuple(str(s) for s in obj["subsections"]),
                    cpregs=cpregs, version_line=str(obj.get("version_line", "")),
                    accel=str(obj.get("accel", "tcg")), smp=int(obj.get("smp", 1)),
                    kernel=str(obj.get("kernel", "")),
                    host_cpu=str(obj.get("host_cpu", "")),
                    made=dict(obj.get("made", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"{where}: malformed manifest ({type(e).__name__}: {e})") \
                from None
        ids = [i for i, _v in cpregs]
        if not ids or ids != sorted(set(ids)):
            raise ManifestError(f"{where}: the cpreg ids are not strictly ascending")
        return m


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ManifestError(f"cannot read {p}: {e.strerror}") from None
    except ValueError as e:
        raise ManifestError(f"{p}: not JSON ({e})") from None
    return Manifest.from_json(obj, str(p))


def manifest_from_engine(engine: StreamEngine, *, cpu: str, qemu: str,
                         version_line: str = "", accel: str = "tcg", kernel: str = "",
                         host_cpu: str = "", made: dict[str, Any] | None = None) -> Manifest:
    """The manifest of the build that saved the stream ``engine`` has framed completely.

    A stream names its machine type but not its QEMU version or CPU model (under TCG the
    cpreg list has no MIDR): the caller says which (``cpu``, ``qemu``)."""
    machine = engine.framer.machine
    layout = engine.layout
    seen = [e.cpu for e in engine.reports if isinstance(e, CpuSeen)]
    if engine.mode != Mode.DONE or layout is None:
        raise ManifestError(f"the stream was not understood ({engine.stop_reason})")
    if machine is None or not seen:
        raise ManifestError("the stream has no machine type or no ARM cpu section")
    first = next(d for d in layout.description["devices"] if d.get("name") == "cpu")
    subsections = tuple(str(s.get("vmsd_name")) for s in first.get("subsections", []))
    return Manifest(qemu=qemu, machine=machine, cpu=cpu,
                    cpu_section_version=int(first.get("version", 0)),
                    subsections=subsections,
                    cpregs=tuple(zip(seen[0].indexes, seen[0].values, strict=True)),
                    version_line=version_line, accel=accel, smp=len(seen),
                    kernel=kernel, host_cpu=host_cpu, made=dict(made or {}))


def describe_manifest(m: Manifest) -> str:
    host = "".join(f", {x}" for x in (f"Linux {m.kernel}" if m.kernel else "", m.host_cpu) if x)
    lines = [f"QEMU {m.qemu}, machine {m.machine}, cpu {m.cpu} ({m.accel}, smp {m.smp}{host})",
             f"cpu section version {m.cpu_section_version}; subsections: "
             f"{', '.join(m.subsections) or '(none)'}",
             f"{len(m.cpregs)} cpregs"]
    lines += [f"  {format_id(i)}  {describe(i):<28} 0x{v:x}" for i, v in m.cpregs]
    return "\n".join(lines)


# -- shipped manifest sets ---------------------------------------------------------------------

SHIPPED = Path(__file__).resolve().parent / "manifests"


def shipped_sets() -> list[str]:
    """Names of the shipped sets (``qemu-11.1.3``: one per QEMU build of the lab)."""
    return sorted(p.name for p in SHIPPED.iterdir() if p.is_dir()) if SHIPPED.is_dir() else []


@dataclass(frozen=True)
class ManifestSet:
    """The manifests of one destination build: one per (machine type, CPU model)."""

    name: str
    manifests: tuple[Manifest, ...]

    def get(self, machine: str, cpu: str) -> Manifest | None:
        for m in self.manifests:
            if m.key == (machine, cpu):
                return m
        return None

    @property
    def keys(self) -> list[tuple[str, str]]:
        return sorted(m.key for m in self.manifests)


def load_set(spec: str) -> ManifestSet:
    """A shipped set by name (``qemu-11.1.3``), a directory of manifest files, or one file."""
    p = SHIPPED / spec if "/" not in spec and (SHIPPED / spec).is_dir() else Path(spec)
    if p.is_dir():
        files = sorted(p.glob("*.json"))
        if not files:
            raise ManifestError(f"{p}: no manifest files (*.json)")
        ms = tuple(load_manifest(f) for f in files)
    elif p.is_file():
        ms = (load_manifest(p),)
    else:
        raise ManifestError(f"no manifest set {spec!r} (shipped: {', '.join(shipped_sets())}; "
                            "or a manifest file or directory)")
    keys = [m.key for m in ms]
    if len(set(keys)) != len(keys):
        raise ManifestError(f"{spec}: two manifests for the same machine type and CPU model")
    return ManifestSet(p.name.removesuffix(".json"), ms)
