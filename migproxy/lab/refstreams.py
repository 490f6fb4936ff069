"""Save the team's reference streams: ``python -m migproxy.lab.refstreams [DIR] [--verify]``.

Default DIR is ``.lab-streams`` (scratch, not committed).  For 10.0.2,
10.0.13 and 11.1: {cortex-a57, max} x smp {1, 2} on virt-10.0; for 7.2:
virt-7.2 cortex-a57 smp 1.  Each ``vX.Y.Z-MACHINE-CPU-smpN.mig`` gets a
``.json`` sidecar (exact version, last tick N: a correct load prints N+1).
Existing files for the same exact version are kept; ``--verify`` loads each
stream back into the version that saved it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import Lab, Stream


def reference_set() -> list[tuple[str, str, str, int]]:
    """(version key, machine, cpu, smp) of every reference stream."""
    out = [
        (v, "virt-10.0", cpu, smp)
        for v in ("10.0.2", "10.0.13", "11.1")
        for cpu in ("cortex-a57", "max")
        for smp in (1, 2)
    ]
    out.append(("7.2", "virt-7.2", "cortex-a57", 1))
    return out


def save_reference_streams(lab: Lab, dest: Path, verify: bool = False) -> list[Stream]:
    dest.mkdir(parents=True, exist_ok=True)
    streams: list[Stream] = []
    failed = False
    for key, machine, cpu, smp in reference_set():
        t0 = time.monotonic()
        s = lab.stream(key, machine, cpu, smp, cache_dir=dest)
        line = f"{s.path.name:<44} tick {s.last_tick:>3}  {s.path.stat().st_size:>7} B"
        line += f"  saved/cached {time.monotonic() - t0:5.2f}s"
        if verify:
            t1 = time.monotonic()
            r = lab.load_stream(key, s.path, machine, cpu, smp, s.last_tick)
            failed |= not r.ok
            verdict = "loads back ok" if r.ok else f"LOAD FAILED: {r.error}"
            line += f"  {verdict} {time.monotonic() - t1:5.2f}s"
        print(line, flush=True)
        streams.append(s)
    index = [
        {
            "file": s.path.name,
            "version": s.version,
            "version_line": lab.version(s.version).version_line,
            "machine": s.machine,
            "cpu": s.cpu,
            "smp": s.smp,
            "last_tick": s.last_tick,
            "size": s.path.stat().st_size,
        }
        for s in streams
    ]
    (dest / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    if failed:
        raise RuntimeError("some reference streams do not load back")
    return streams


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dest", nargs="?", default=".lab-streams", type=Path)
    ap.add_argument("--verify", action="store_true", help="load each stream back")
    args = ap.parse_args(argv)
    lab = Lab.load()
    reason = lab.unavailable_reason("7.2", "10.0.2", "10.0.13", "11.1")
    if reason:
        print(f"lab unavailable: {reason}", file=sys.stderr)
        return 2
    try:
        save_reference_streams(lab, args.dest.absolute(), args.verify)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
