"""Real QEMU: faults in the middle of a migration, through migproxy and side by side with the
direct path (or the bare relay), each case several times (the cases: :mod:`testkit.faults`).

    python -m bench.faults [--runs 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.procs import bench_lab
from bench.report import table
from testkit.faults import BLOB_SIZE, CASES, DESTINATION, EXPECTED, SOURCE, run_case


def run(runs: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    lab, reason = bench_lab(SOURCE, DESTINATION)
    if reason:
        log(f"faults: skipped ({reason})")
        return {"skipped": reason}
    results: dict[str, list[dict[str, Any]]] = {c.name: [] for c in CASES}
    with tempfile.TemporaryDirectory(prefix="migproxy-faults-") as d:
        blob = Path(d, "ram.bin")
        blob.write_bytes(os.urandom(BLOB_SIZE))
        for i in range(runs):
            for case in CASES:
                try:
                    r = run_case(lab, case, blob, Path(d))
                except (RuntimeError, TimeoutError, OSError) as e:
                    r = {"case": case.name, "error": str(e), "guest": "error"}
                results[case.name].append(r)
                log(f"  #{i + 1} {case.name:<34} guest on {r['guest']:<11} "
                    f"(source {r.get('source_status')}, destination "
                    f"{r.get('destination_status')})")
    rows = []
    for case in CASES:
        rs = results[case.name]
        where = [r["guest"] for r in rs]
        rows.append([case.fault, case.path, "on" if case.return_path else "off", str(len(rs)),
                     str(where.count(EXPECTED[case.fault])), EXPECTED[case.fault],
                     " ".join(sorted({w for w in where if w != EXPECTED[case.fault]})) or "-"])
    log(table(rows, ["fault", "path", "return path", "runs", "as expected", "guest runs on",
                     "otherwise"]))
    return {"runs": runs, "results": results}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    out = run(args.runs)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    bad = [r for rs in out.get("results", {}).values() for r in rs
           if r["guest"] != EXPECTED[r["case"].split()[0]]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
