#!/usr/bin/env python3
"""Make the shipped KVM destination manifests from streams saved under real KVM.

    python3 scripts/make-kvm-manifests.py [--check] [--streams tests/data/kvm]
                                          [--out migproxy/arm/manifests]

A KVM manifest describes one QEMU build on one host kernel on one host CPU (with ``-cpu
host`` the cpreg list is the kernel's ``KVM_GET_REG_LIST``). The streams and what saved
them are listed in ``STREAMS/streams.json`` (the nested KVM lab writes the same file for
fresh streams); each gives ``OUT/linux-KERNEL-HOSTCPU-qemu-VERSION/MACHINE-host.json``,
where KERNEL is the release's major.minor. Nothing in these files is typed by hand.

``--check`` writes nothing and fails if a shipped manifest differs from its stream.
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from migproxy.arm.manifest import Manifest, load_manifest  # noqa: E402
from migproxy.tools.manifest import manifest_from_stream, write_manifest  # noqa: E402


def set_name(kernel: str, host_cpu: str, qemu: str) -> str:
    """``linux-6.12-neoverse-n1-qemu-10.0.13`` for kernel ``6.12.118+deb13-arm64``."""
    major_minor = ".".join(kernel.split("-")[0].split("+")[0].split(".")[:2])
    return f"linux-{major_minor}-{host_cpu}-qemu-{qemu}"


def manifests(streams: Path) -> list[Manifest]:
    listing = json.loads((streams / "streams.json").read_text(encoding="utf-8"))
    out = []
    for name, meta in sorted(listing["streams"].items()):
        data = (streams / name).read_bytes()
        if name.endswith(".xz"):
            data = lzma.decompress(data)
        with tempfile.NamedTemporaryFile(suffix=".mig") as f:
            f.write(data)
            f.flush()
            m = manifest_from_stream(f.name, cpu=meta["cpu"], qemu=meta["qemu"],
                                     version_line=meta["version_line"], accel=meta["accel"],
                                     kernel=meta["kernel"], host_cpu=meta["host_cpu"])
        m.made["stream"] = name
        out.append(m)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--streams", default=str(REPO / "tests" / "data" / "kvm"))
    ap.add_argument("--out", default=str(REPO / "migproxy" / "arm" / "manifests"))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    bad = 0
    for m in manifests(Path(args.streams)):
        path = Path(args.out) / set_name(m.kernel, m.host_cpu, m.qemu) / \
            f"{m.machine}-{m.cpu}.json"
        if args.check:
            same = path.is_file() and load_manifest(path) == m
            print(f"{'ok  ' if same else 'DIFF'} {path}")
            bad += not same
        else:
            write_manifest(m, path)
            print(f"wrote {path}: {m.host}, {len(m.cpregs)} cpregs")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
