"""The ``manifest`` commands: ``capture``, ``from-stream`` and ``show``."""

from __future__ import annotations

import argparse
from pathlib import Path

from migproxy.arm.manifest import Manifest
from migproxy.cli.output import err
from migproxy.stream.errors import EXIT_OK, EXIT_USAGE


def cmd_manifest_capture(args: argparse.Namespace) -> int:
    import shlex

    from migproxy.tools.manifest import capture

    machines = args.machine or ["virt-10.0"]
    out = Path(args.output)
    if len(machines) > 1 and out.suffix == ".json":
        err("with several --machine, -o is a directory (MACHINE-CPU.json in it)")
        return EXIT_USAGE
    for machine in machines:
        m = capture(shlex.split(args.qemu), machine=machine, cpu=args.cpu, smp=args.smp,
                    accel=args.accel, host_cpu=args.host_cpu or "")
        _wrote_manifest(m, str(out if len(machines) == 1 and out.suffix == ".json"
                               else out / f"{m.machine}-{m.cpu}.json"))
    return EXIT_OK


def _wrote_manifest(m: Manifest, output: str) -> int:
    from migproxy.tools.manifest import write_manifest

    write_manifest(m, output)
    print(f"{output}: {m.host}, {m.machine}, {m.cpu}: {len(m.cpregs)} cpregs, "
          f"subsections {', '.join(m.subsections) or '(none)'}")
    return EXIT_OK


def cmd_manifest_from_stream(args: argparse.Namespace) -> int:
    from migproxy.tools.manifest import manifest_from_stream

    m = manifest_from_stream(args.stream, cpu=args.cpu, qemu=args.qemu_version,
                             accel=args.accel, kernel=args.kernel or "",
                             host_cpu=args.host_cpu or "")
    return _wrote_manifest(m, args.output)


def cmd_manifest_show(args: argparse.Namespace) -> int:
    from migproxy.arm.manifest import describe_manifest, load_set, shipped_sets

    if not args.spec:
        for name in shipped_sets():
            ms = load_set(name)
            print(f"{name}: " + ", ".join(f"{mach} {cpu}" for mach, cpu in ms.keys))
        return EXIT_OK
    for m in load_set(args.spec).manifests:
        text = describe_manifest(m)
        print(text if args.registers else "\n".join(text.splitlines()[:3]))
    return EXIT_OK


