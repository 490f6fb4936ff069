#!/usr/bin/env python3
"""Regenerate the shipped destination manifests from the real QEMU builds of the lab.

    python3 scripts/make-manifests.py [--check] [--out migproxy/arm/manifests]

For every QEMU version of the lab ($LAB_DIR/lab.json, set up by scripts/lab-setup.sh), every
machine type of ``MACHINES`` it has and every CPU model of ``CPUS``, it runs
``migproxy manifest capture`` (the binary paused, no guest) and writes
``OUT/qemu-VERSION/MACHINE-CPU.json``. Nothing in these files is typed by hand.

``--check`` writes nothing: it captures again and fails if a shipped manifest differs
from what the binary says now (everything but the ``made`` record).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from migproxy.arm.manifest import Manifest, load_manifest  # noqa: E402
from migproxy.lab import get_lab  # noqa: E402
from migproxy.tools.manifest import capture, write_manifest  # noqa: E402

MACHINES = ("virt-7.2", "virt-10.0")
CPUS = ("cortex-a57", "max")


def _machines(version: str) -> list[str]:
    major, minor = (int(x) for x in version.split(".")[:2])
    return [m for m in MACHINES if (int(m[5:].split(".")[0]), int(m[5:].split(".")[1]))
            <= (major, minor)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "migproxy" / "arm" / "manifests"))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    lab = get_lab()
    reason = lab.unavailable_reason()
    if reason:
        print(f"the lab is not usable: {reason}", file=sys.stderr)
        return 2
    bad = 0
    for key in sorted(lab.versions):
        v = lab.version(key)
        for machine in _machines(v.version):
            for cpu in CPUS:
                m = capture(list(v.argv), machine=machine, cpu=cpu, env=dict(v.env))
                path = Path(args.out) / f"qemu-{m.qemu}" / f"{machine}-{cpu}.json"
                if args.check:
                    old: Manifest | None = load_manifest(path) if path.is_file() else None
                    same = old is not None and old == m and \
                        json.loads(old.dumps())["cpregs"] == json.loads(m.dumps())["cpregs"]
                    print(f"{'ok  ' if same else 'DIFF'} {path}")
                    bad += not same
                else:
                    write_manifest(m, path)
                    print(f"wrote {path}: {len(m.cpregs)} cpregs, subsections "
                          f"{', '.join(m.subsections)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
