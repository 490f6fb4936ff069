"""Micro-benchmark: RAM-record throughput of the stream engine (no sockets).

Feeds synthetic streams held in memory to the engine in 1 MiB chunks and reports
records/s and MB/s, with the compiled RAM walk and with the pure-Python one (the same
stream, the same process), for: long runs of zero pages, long runs of full pages, 1:1
interleaved pages, and fragmented memory (each page zero with probability 0.3), next to a
baseline that only iterates over the same chunks (the cost of the loop itself).

    python -m bench.engine_micro [--scale 1.0] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from migproxy.arm.profile import default_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream import ramsection
from migproxy.stream.engine import Mode, StreamEngine
from testkit.synthetic import SynthSpec, build

CHUNK = 1 << 20
COMPILED = ramsection.RAM_WALK or ramsection._compiled_walk()


def _chunks(data: bytes) -> list[memoryview]:
    mv = memoryview(data)
    return [mv[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def _run(chunks: list[memoryview], walk: str) -> tuple[float, StreamEngine]:
    ramsection.RAM_WALK = COMPILED if walk == "c" else None
    eng = StreamEngine(arm_engine_config(default_profile()))
    t0 = time.perf_counter()
    for c in chunks:
        eng.feed(c)
    eng.feed_eof()
    dt = time.perf_counter() - t0
    if eng.mode != Mode.DONE:
        raise SystemExit(f"engine did not finish the stream: {eng.stop_reason}")
    return dt, eng


def _baseline(chunks: list[memoryview]) -> float:
    t0 = time.perf_counter()
    n = 0
    for c in chunks:
        n += len(c)
    return time.perf_counter() - t0


def bench(name: str, spec: SynthSpec, repeat: int, walk: str) -> dict[str, object]:
    data = build(spec)
    chunks = _chunks(data)
    best = float("inf")
    eng = None
    for _ in range(repeat):
        dt, eng = _run(chunks, walk)
        best = min(best, dt)
    assert eng is not None
    st = eng.stats
    records = st.pages + st.zero_pages
    return {
        "name": name,
        "walk": walk,
        "bytes": len(data),
        "records": records,
        "seconds": best,
        "records_per_s": records / best,
        "mb_per_s": len(data) / best / 1e6,
        "loop_only_seconds": _baseline(chunks),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="stream size factor (CI: 0.01)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="write results as JSON to this file")
    args = ap.parse_args(argv)
    zero = max(1000, int(4_000_000 * args.scale))
    full = max(100, int(50_000 * args.scale))
    ram = max(zero, full) * 4096 * 2
    mixed = max(200, int(200_000 * args.scale))
    specs = [
        ("zero-page runs", SynthSpec(ram_bytes=ram, zero_pages=zero, full_pages=0,
                                     part_sections=8)),
        ("full-page runs", SynthSpec(ram_bytes=ram, zero_pages=0, full_pages=full,
                                     part_sections=8)),
        ("interleaved 1:1", SynthSpec(ram_bytes=ram, zero_pages=mixed, full_pages=mixed,
                                      part_sections=8, zero_ratio=0.5, seed=3)),
        ("fragmented 30% zero", SynthSpec(ram_bytes=ram, zero_pages=int(mixed * 0.43),
                                          full_pages=mixed, part_sections=8, zero_ratio=0.3,
                                          seed=4)),
    ]
    walks = ["c", "python"] if COMPILED is not None else ["python"]
    results = [bench(name, spec, args.repeat, w) for name, spec in specs for w in walks]
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{platform.processor() or 'cpu ?'}; compiled walk: "
          f"{'yes' if COMPILED is not None else 'not built'}")
    print(f"{'stream':<22} {'walk':<7} {'MB':>8} {'records':>9} {'s':>7} {'records/s':>12} "
          f"{'MB/s':>7}")
    for r in results:
        print(f"{r['name']:<22} {r['walk']:<7} {r['bytes'] / 1e6:>8.1f} {r['records']:>9} "
              f"{r['seconds']:>7.3f} {r['records_per_s']:>12,.0f} {r['mb_per_s']:>7.0f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"python": sys.version, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
