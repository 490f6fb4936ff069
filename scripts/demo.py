#!/usr/bin/env python3
"""The migproxy demonstration: a running ARM guest moves from QEMU 10.0.2 to QEMU 10.0.13.

    scripts/demo.sh               # on a fresh Debian 12: installs everything, then runs this
    python3 scripts/demo.py       # once migproxy is installed and scripts/lab-setup.sh ran

1. start a small ARM guest (the lab's tick guest: it prints ``tick N``) on QEMU 10.0.2;
2. migrate it live, directly, to QEMU 10.0.13: the destination refuses the cpu state;
3. start migproxy in front of a new 10.0.13 destination and migrate the same guest through it;
4. the guest continues on 10.0.13 where it stopped on 10.0.2;
5. migproxy's metrics and log say which register it dropped.

Exit status: 0 when every step went as described, 1 when one did not (the message says
which), 2 when the QEMU lab is not set up. Every process started here is stopped on exit.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # migproxy.lab, the QEMU harness, is not in the wheel

from migproxy.lab import Lab, Qemu, free_port, wait_port  # noqa: E402

SOURCE = "10.0.2"
DEST = "10.0.13"
MACHINE = "virt-10.0"
CPU = "cortex-a57"
SMP = 1
LOOPBACK = "127.0.0.1"
METRIC = 'migproxy_cpregs_dropped_total{register="BOGUS_DBGDTRTX"}'
COMPLETED = 'migproxy_migrations_total{outcome="completed"}'


class DemoFailed(Exception):
    """A step did not go as the demonstration says it does."""


def out(text: str = "") -> None:
    print(text, flush=True)


def heading(n: int, title: str) -> None:
    out()
    out(f"=== Step {n}/5: {title}")
    out()


def para(text: str) -> None:
    out(textwrap.fill(text, width=88, initial_indent="  ", subsequent_indent="  "))


def show(lines: list[str], prefix: str = "    ") -> None:
    for line in lines:
        out(prefix + line)


def describe(q: Qemu, extra: str = "") -> list[str]:
    """How a QEMU process of the demo is started, for the narration."""
    return [q.version.version_line,
            f"qemu-system-aarch64 -M {q.machine} -cpu {q.cpu} -smp {q.smp} -m {q.memory} "
            f"-nographic -kernel tick.bin{extra}"]


def tick_lines(ticks: list[int]) -> list[str]:
    return [f"tick {t}" for t in ticks]


def wait_new_ticks(q: Qemu, n: int, timeout: float = 15.0) -> list[int]:
    """Wait for ``n`` more complete tick lines than printed so far; return those."""
    before = len(q.ticks())
    return q.wait_ticks(before + n, timeout)[before:]


class Daemon:
    """migproxy as a subprocess, logging JSON lines to a file."""

    def __init__(self, workdir: Path, target_port: int) -> None:
        self.listen_port = free_port()
        self.metrics_port = free_port()
        while self.metrics_port in (self.listen_port, target_port):
            self.metrics_port = free_port()
        self.target_port = target_port
        self.log_path = workdir / "migproxy.log"
        self.args = ["--listen", f"{LOOPBACK}:{self.listen_port}",
                     "--target", f"{LOOPBACK}:{target_port}",
                     "--metrics", f"{LOOPBACK}:{self.metrics_port}", "--log-format", "json"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "migproxy", *self.args],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=REPO)
        # The metrics endpoint comes up after the listener is bound.
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise DemoFailed(f"migproxy exited at start ({self.proc.returncode}):\n"
                                 + self.log())
            try:
                wait_port(self.metrics_port, LOOPBACK, timeout=0.2)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise DemoFailed("migproxy did not start within 20 s:\n"
                                     + self.log()) from None

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self, event: str) -> list[str]:
        found = []
        for line in self.log().splitlines():
            try:
                ev: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == event:
                found.append(line)
        return found

    def metrics(self) -> str:
        url = f"http://{LOOPBACK}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text: str = r.read().decode()
        return text


def run(lab: Lab, work: Path, stack: contextlib.ExitStack) -> None:
    # ------------------------------------------------------------------------- step 1
    heading(1, f"start a small ARM guest on QEMU {SOURCE}")
    src = lab.qemu(SOURCE, machine=MACHINE, cpu=CPU, smp=SMP, name="demo-src")
    stack.callback(src.close)
    out("  source:")
    show(describe(src))
    para("The guest is a bare-metal program that counts and prints 'tick N' on its serial "
         "port about three times a second; after a correct migration it goes on counting.")
    src.start()
    out()
    show(tick_lines(src.wait_ticks(4, 30)))

    # ------------------------------------------------------------------------- step 2
    heading(2, f"migrate it live, directly, to QEMU {DEST}")
    port = free_port()
    direct = lab.qemu(DEST, machine=MACHINE, cpu=CPU, smp=SMP, name="demo-direct",
                      incoming=f"tcp:{LOOPBACK}:{port}")
    stack.callback(direct.close)
    out("  destination:")
    show(describe(direct, f" -incoming tcp:{LOOPBACK}:{port}"))
    direct.start()
    out(f"  source (QMP): migrate uri=tcp:{LOOPBACK}:{port}")
    src.migrate(f"tcp:{LOOPBACK}:{port}")
    info = src.wait_migration(60)
    dinfo = direct.wait_incoming(30)
    if dinfo.get("status") == "completed":
        raise DemoFailed(f"QEMU {DEST} accepted the {SOURCE} stream: the lab is not what the "
                         "demonstration expects")
    out()
    out(f"  The migration FAILED. QEMU {DEST} (destination) says:")
    show(str(dinfo.get("error-desc", "")).strip().splitlines() or ["(nothing)"])
    out()
    state = src.status()
    para(f"The source sent everything (its migration status: {info.get('status')}) and "
         f"stopped the guest (run state: {state}): without the return-path capability it "
         "cannot know that the destination failed.")
    if state != "running":
        out("  source (QMP): cont")
        src.cont()
    show(tick_lines(wait_new_ticks(src, 2)))
    out(f"  The guest runs on {SOURCE} again.")
    direct.close()

    # ------------------------------------------------------------------------- step 3
    heading(3, f"migrate the same guest through migproxy to QEMU {DEST}")
    dport = free_port()
    dst = lab.qemu(DEST, machine=MACHINE, cpu=CPU, smp=SMP, name="demo-dst",
                   incoming=f"tcp:{LOOPBACK}:{dport}")
    stack.callback(dst.close)
    out("  destination:")
    show(describe(dst, f" -incoming tcp:{LOOPBACK}:{dport}"))
    dst.start()
    daemon = Daemon(work, dport)
    stack.callback(daemon.stop)
    out("  migproxy, between the two:")
    show(["migproxy " + " ".join(daemon.args)])
    daemon.start()
    out(f"  source (QMP): migrate uri=tcp:{LOOPBACK}:{daemon.listen_port}")
    t0 = time.monotonic()
    src.migrate(f"tcp:{LOOPBACK}:{daemon.listen_port}")
    info = src.wait_migration(60)
    if info.get("status") != "completed":
        raise DemoFailed(f"the source's migration ended {info.get('status')}: {info}\n"
                         + daemon.log())
    dinfo = dst.wait_incoming(30)
    if dinfo.get("status") != "completed":
        raise DemoFailed(f"QEMU {DEST} did not accept the stream through migproxy:\n"
                         f"{dinfo.get('error-desc', dinfo)}\n" + daemon.log())
    ram = info.get("ram", {})
    out()
    out(f"  The migration COMPLETED in {time.monotonic() - t0:.1f} s "
        f"({ram.get('transferred', '?')} bytes sent).")
    out(f"  Destination run state: {dst.status()}")

    # ------------------------------------------------------------------------- step 4
    heading(4, f"the guest continues on QEMU {DEST}")
    last = src.last_counter()
    if last is None:
        raise DemoFailed("no tick in the source's serial log")
    out(f"  last lines on {SOURCE} (source, now stopped):")
    show(tick_lines(src.ticks()[-3:]))
    if src.ticks()[-1:] != [last]:
        out(f"    (it stopped while printing 'tick {last}')")
    if dst.status() != "running":
        dst.cont()
    ticks = dst.wait_ticks(4, 20)
    out(f"  first lines on {DEST} (destination):")
    show(tick_lines(ticks))
    if ticks[0] != last + 1:
        raise DemoFailed(f"the destination's first tick is {ticks[0]}, expected {last + 1}")
    out(f"  The counter stopped at {last} on {SOURCE} and went on with {ticks[0]} on {DEST}:")
    out("  the guest kept its memory and CPU state.")
    src.quit()

    # ------------------------------------------------------------------------- step 5
    heading(5, "what migproxy did")
    # The migration counter is updated when the connection closes, just after the load.
    deadline = time.monotonic() + 15
    while True:
        text = daemon.metrics()
        metrics = [ln for ln in text.splitlines()
                   if ln.startswith((METRIC, COMPLETED)) and not ln.endswith(" 0.0")]
        if len(metrics) == 2:
            break
        if time.monotonic() > deadline:
            raise DemoFailed(f"{METRIC} and {COMPLETED} not in the metrics:\n{text}")
        time.sleep(0.1)
    out(f"  from http://{LOOPBACK}:{daemon.metrics_port}/metrics :")
    show(metrics)
    rewrites = daemon.log_lines("cpu_rewrite")
    if not rewrites:
        raise DemoFailed("migproxy logged no cpu_rewrite event:\n" + daemon.log())
    out("  migproxy's log (cpu_rewrite):")
    show(rewrites)
    out()
    para(f"QEMU {SOURCE} sends a bogus AArch32 register, DBGDTRTX (0x40200000200E0298), "
         f"that {DEST} no longer knows; migproxy removed it from the cpu section while "
         "relaying the stream, and the destination accepted the rest as it was.")
    rc = daemon.stop()
    out(f"  migproxy stopped on SIGTERM (exit status {rc}).")
    if rc != 0:
        raise DemoFailed(f"migproxy exited with {rc} on SIGTERM:\n" + daemon.log()[-3000:])


def main() -> int:
    lab = Lab.load()
    reason = lab.unavailable_reason(SOURCE, DEST)
    if reason:
        print(f"demo: the QEMU lab is not ready: {reason}", file=sys.stderr)
        return 2
    out(f"migproxy demonstration: live migration of an ARM VM from QEMU {SOURCE} to {DEST}")
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="migproxy-demo-")))
        try:
            run(lab, work, stack)
        except Exception as exc:  # every failure ends the demo with a message
            print(f"\ndemo FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    out()
    out(f"Demonstration complete: the guest moved from QEMU {SOURCE} to {DEST} while running.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
