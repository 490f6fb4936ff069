"""Prove the QEMU lab works: ``python -m migproxy.lab.selfcheck`` (from the repo root, as root).

Saves streams on every version and loads them back, checks that a 10.0.2
stream is refused by 10.0.13 (the DBGDTRTX register), and runs two live TCP
migrations through the live helpers.  Prints a timing table; exits 1 on any
unexpected outcome.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import Lab, LoadResult, free_port


@dataclass
class Row:
    name: str
    expected: str
    outcome: str
    passed: bool
    seconds: float


class SelfCheck:
    def __init__(self, lab: Lab, out_dir: Path) -> None:
        self.lab = lab
        self.out_dir = out_dir
        self.rows: list[Row] = []

    def record(self, name: str, expected: str, fn: Callable[[], tuple[bool, str]]) -> None:
        t0 = time.monotonic()
        try:
            passed, outcome = fn()
        except Exception as exc:  # a harness failure is a failed check, keep going
            passed, outcome = False, f"{type(exc).__name__}: {exc}"
        row = Row(name, expected, outcome, passed, time.monotonic() - t0)
        self.rows.append(row)
        mark = "ok  " if passed else "FAIL"
        print(f"{mark} {row.seconds:6.2f}s  {name:<46} {outcome}", flush=True)

    # -- offline ------------------------------------------------------------------
    def save(self, version: str, machine: str, cpu: str, smp: int) -> tuple[Path, list[int]]:
        path = self.out_dir / f"{version}-{machine}-{cpu}-smp{smp}.mig"
        box: list[int] = []

        def run() -> tuple[bool, str]:
            n = self.lab.save_stream(version, path, machine, cpu, smp)
            box.append(n)
            return True, f"last tick {n}, {path.stat().st_size} bytes"

        self.record(f"save {version} {machine} {cpu} smp{smp}", "saved", run)
        return path, box

    def load(
        self,
        version: str,
        path: Path,
        machine: str,
        cpu: str,
        smp: int,
        after: list[int],
        expect_ok: bool,
        expect_error: str = "",
    ) -> None:
        label = f"load {path.name.removesuffix('.mig')} -> {version}"

        def run() -> tuple[bool, str]:
            if not after:
                return False, "no stream (save failed)"
            r: LoadResult = self.lab.load_stream(version, path, machine, cpu, smp, after[0])
            if r.ok:
                desc = f"tick {after[0]} -> {r.first_tick} (load {r.load_seconds:.2f}s)"
            else:
                desc = f"refused: {' | '.join(r.error.splitlines()[-2:])}"
            passed = r.ok == expect_ok and (not expect_error or expect_error in r.error)
            return passed, desc

        self.record(label, "continues" if expect_ok else "fails", run)

    def roundtrip(self, version: str, machine: str, cpu: str, smp: int) -> None:
        path, after = self.save(version, machine, cpu, smp)
        self.load(version, path, machine, cpu, smp, after, True)

    # -- live ---------------------------------------------------------------------
    def live(
        self,
        src_v: str,
        dst_v: str,
        caps: dict[str, bool],
        cpu: str,
        smp: int,
        expect_ok: bool = True,
    ) -> None:
        name = f"live tcp {src_v} -> {dst_v} {cpu} smp{smp} {'+'.join(caps) or 'plain'}"

        def run() -> tuple[bool, str]:
            uri = f"tcp:127.0.0.1:{free_port()}"
            kw: dict[str, Any] = {"machine": "virt-10.0", "cpu": cpu, "smp": smp}
            with (
                self.lab.destination(dst_v, uri, capabilities=caps, **kw) as dst,
                self.lab.source(src_v, **kw) as src,
            ):
                src.migrate(uri, capabilities=caps)
                info = src.wait_migration(60)
                dinfo = dst.wait_incoming(30)
                src_state = f"source {info['status']}/{src.status()}"
                if dinfo["status"] != "completed":
                    err = str(dinfo.get("error-desc", "")).splitlines()[-1:]
                    return not expect_ok, f"{src_state}; destination failed: {err}"
                n = src.last_counter()
                first = dst.wait_ticks(1, 10)[0]
                assert n is not None
                ok = info["status"] == "completed" and first == n + 1
                return ok == expect_ok, f"{src_state}; tick {n} -> {first}, dst {dst.status()}"

        self.record(name, "continues" if expect_ok else "fails", run)

    def run(self, quick: bool) -> bool:
        lab = self.lab
        for key in ("7.2", "10.0.2", "10.0.13", "11.1"):
            print(f"     {key:>8}: {lab.version(key).version_line}")
        m = "virt-10.0"
        p, after = self.save("10.0.2", m, "cortex-a57", 1)
        self.load("10.0.2", p, m, "cortex-a57", 1, after, True)
        self.load("10.0.13", p, m, "cortex-a57", 1, after, False, "device 'cpu'")
        self.roundtrip("10.0.13", m, "cortex-a57", 1)
        self.roundtrip("11.1", m, "cortex-a57", 1)
        self.roundtrip("7.2", "virt-7.2", "cortex-a57", 1)
        self.roundtrip("10.0.2", m, "max", 1)
        self.roundtrip("10.0.2", m, "cortex-a57", 2)
        if not quick:
            self.roundtrip("10.0.2", m, "max", 2)
            self.live("10.0.2", "10.0.2", {}, "cortex-a57", 1)
            # host -> chroot without rewriting fails, like the offline load
            self.live("10.0.2", "10.0.13", {"return-path": True}, "cortex-a57", 1, False)
            self.live("11.1", "11.1", {"return-path": True, "multifd": True}, "cortex-a57", 2)
        return all(r.passed for r in self.rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="only the offline checks")
    args = ap.parse_args(argv)
    lab = Lab.load()
    reason = lab.unavailable_reason("7.2", "10.0.2", "10.0.13", "11.1")
    if reason:
        print(f"lab unavailable: {reason}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    with lab.scratch_dir("selfcheck-") as d:
        ok = SelfCheck(lab, d).run(args.quick)
    print(f"{'PASS' if ok else 'FAIL'} in {time.monotonic() - t0:.1f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
