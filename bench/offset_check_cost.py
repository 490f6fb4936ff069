"""What checking every record of a RAM run against its block costs the engine.

    python -m bench.offset_check_cost [--repeat 4]

Runs the engine over zero-page, full-page and interleaved (1 full : 3 zero) synthetic
streams, alternately with the framer's run check (``ramruns.in_block``) and with it replaced by
"all records are inside", and prints the best records/s of each. Both in one process, so
machine noise hits both alike. The check is what keeps the framer's verdict independent of
how the input is split; this only measures it.
"""

from __future__ import annotations

import argparse

import migproxy.stream.ramruns as ramruns
from bench.engine_micro import _chunks, _run
from testkit.synthetic import SynthSpec, build

SHAPES = {
    "zero-page records": SynthSpec(ram_bytes=1 << 30, full_pages=0, zero_pages=1_000_000,
                                   part_sections=10),
    "full-page records": SynthSpec(ram_bytes=1 << 30, full_pages=50_000, zero_pages=0,
                                   part_sections=10),
    "mixed (1 full : 3 zero)": SynthSpec(ram_bytes=1 << 30, full_pages=50_000,
                                         zero_pages=150_000, part_sections=20),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=4)
    args = ap.parse_args()
    real = ramruns.in_block

    def unchecked(buf: object, pos: int, k: int, stride: int, bound: object) -> int:
        return k

    print(f"{'stream':<26} {'checked rec/s':>14} {'unchecked rec/s':>16} {'ratio':>6}")
    try:
        for name, spec in SHAPES.items():
            chunks = _chunks(build(spec))
            best = {"checked": float("inf"), "unchecked": float("inf")}
            for _ in range(args.repeat):
                for mode in best:
                    ramruns.in_block = real if mode == "checked" else unchecked  # type: ignore[assignment]
                    best[mode] = min(best[mode], min(_run(chunks, "python")[0] for _ in range(3)))
            n = spec.full_pages + spec.zero_pages
            c, u = n / best["checked"], n / best["unchecked"]
            print(f"{name:<26} {c:>14,.0f} {u:>16,.0f} {c / u:>6.2f}")
    finally:
        ramruns.in_block = real


if __name__ == "__main__":
    main()
