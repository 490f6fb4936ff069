"""Real QEMU: what a refused rewrite leaves behind, with each policy, with and without the
return path.

A 11.1.3 guest with ``-cpu max`` migrates to a 10.0.2 destination through migproxy with
``--destination qemu-10.0.2``: the rewrite is refused (the CPU features differ). With
``--policy passthrough`` the stream goes on untouched and the destination rejects it; with
``--policy abort`` migproxy stops forwarding when it refuses. Afterwards: the source's
migration status and run state (``running``: the guest goes on there; ``postmigrate``:
paused, it needs ``cont``), and the destination's.

    python -m bench.refusal_policy [--runs 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.faults import Relay
from bench.procs import bench_lab, free_port, stop
from bench.report import table

SOURCE, DESTINATION, CPU = "11.1.3", "10.0.2", "max"


def run_case(lab: Any, policy: str, return_path: bool, work: Path) -> dict[str, Any]:
    caps = {"return-path": True} if return_path else {}
    dst_port = free_port()
    with (
        lab.destination(DESTINATION, f"tcp:127.0.0.1:{dst_port}", machine="virt-10.0",
                        cpu=CPU, capabilities=caps) as dst,
        lab.source(SOURCE, machine="virt-10.0", cpu=CPU) as src,
    ):
        relay = Relay("migproxy", dst_port, work / f"relay-{dst_port}.log",
                      "--destination", f"qemu-{DESTINATION}", "--policy", policy)
        try:
            t0 = time.monotonic()
            src.migrate(f"tcp:127.0.0.1:{relay.port}", caps)
            info = src.wait_migration(60)
            seconds = time.monotonic() - t0
            dinfo = dst.wait_incoming(30) if dst.alive() else {"status": "exited"}
            time.sleep(0.5)
            state = src.status()
            refused = [e for e in relay.events() if e.get("event") in ("passthrough", "abort")]
            return {"policy": policy, "return_path": return_path,
                    "source_status": info.get("status"), "source_state": state,
                    "destination": dinfo.get("status"), "seconds": round(seconds, 2),
                    "migproxy": [f"{e.get('event')} {e.get('reason')}" for e in refused]}
        finally:
            stop(relay.proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    lab, reason = bench_lab(SOURCE, DESTINATION)
    if reason:
        print(f"skipped: {reason}")
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="migproxy-refusal-") as d:
        for _ in range(args.runs):
            for rp in (False, True):
                for policy in ("passthrough", "abort"):
                    r = run_case(lab, policy, rp, Path(d))
                    results.append(r)
                    print(f"  {policy:<11} rp={rp!s:<5} source {r['source_status']}/"
                          f"{r['source_state']}, destination {r['destination']}, "
                          f"migproxy {r['migproxy']}", flush=True)
    rows = []
    for rp in (False, True):
        for policy in ("passthrough", "abort"):
            rs = [r for r in results if r["policy"] == policy and r["return_path"] == rp]
            states = sorted({f"{r['source_status']}/{r['source_state']}" for r in rs})
            rows.append([policy, "on" if rp else "off", str(len(rs)), ", ".join(states),
                         ", ".join(sorted({str(r["destination"]) for r in rs}))])
    print(table(rows, ["policy", "return path", "runs", "source (migration/run state)",
                       "destination"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
