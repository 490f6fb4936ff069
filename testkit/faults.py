"""Real QEMU: faults in the middle of a migration, through migproxy and side by side with the
direct path (or the bare relay): the cases and one run of a case.

A 10.0.2 guest (the lab's tick guest, with 64 MiB of random data in its RAM so the RAM phase
lasts) migrates to 10.0.13, without and with the return path. For the faults "mid-RAM" the
destination is stopped (SIGSTOP) until the source stalls on backpressure, the fault is
applied, and the destination continued. The fault "holding the device state" needs the
return path: migproxy runs with ``--end-quiet 5`` so that it holds the whole device state
for 5 s after the description, and is killed 1 s into that.

Each run ends with where the guest runs: on the source (the migration failed there and the
guest goes on counting), on the destination (the migration completed and the guest goes on
there), or nowhere (both stopped: the operator must ``cont`` the source). A fault through
migproxy must leave the guest where the same fault leaves it on the direct path (or through
the bare relay, for a dying relay). ``tests/e2e/test_faults.py`` runs each case once;
``python -m bench.faults`` runs them many times and reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testkit.procs import free_port, popen, stop, wait_listening

SOURCE, DESTINATION = "10.0.2", "10.0.13"
MEMORY = "256M"
BLOB_SIZE = 64 << 20
BLOB_ADDR = 0x4C000000  # the top 64 MiB of a 256 MiB virt guest


@dataclass(frozen=True)
class Case:
    fault: str  # kill-destination | kill-relay | term-relay | kill-holding
    path: str  # direct | bare | migproxy
    return_path: bool

    @property
    def name(self) -> str:
        return f"{self.fault} {self.path} {'rp' if self.return_path else 'no-rp'}"


CASES = [Case(f, p, rp) for rp in (False, True) for f, p in (
    ("kill-destination", "direct"), ("kill-destination", "migproxy"),
    ("kill-relay", "bare"), ("kill-relay", "migproxy"),
    ("term-relay", "migproxy"))] + [Case("kill-holding", "migproxy", True)]


class Relay:
    """migproxy (JSON logs) or the bare relay, in front of the destination."""

    def __init__(self, kind: str, target_port: int, log_path: Path, *extra: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        if kind == "migproxy":
            argv = [sys.executable, "-m", "migproxy", "--metrics", "", "--log-format", "json",
                    "--log-level", "debug", *extra]
        else:
            argv = [sys.executable, "-m", "testkit.bare_relay"]
        argv += ["--listen", f"127.0.0.1:{self.port}", "--target", f"127.0.0.1:{target_port}"]
        with open(log_path, "wb") as log:
            self.proc = popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_listening(self.port, 20, alive=lambda: self.proc.poll() is None)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_event(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("event") == name for e in self.events()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {name} in the migproxy log after {timeout}s")
            time.sleep(0.02)


def _stalled(src: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last, same = -1, 0
    while same < 4:
        info = src.query_migrate()
        if info.get("status") not in ("active", "setup"):
            raise RuntimeError(f"the migration ended before the fault: {info}")
        transferred = int(info.get("ram", {}).get("transferred", 0))
        same = same + 1 if transferred == last else 0
        last = transferred
        if time.monotonic() > deadline:
            raise TimeoutError(f"the source did not stall: {info}")
        time.sleep(0.25)


def _counting(q: Any) -> bool:
    """Whether the guest in ``q`` prints new ticks (it runs there)."""
    try:
        if not q.alive() or q.status() != "running":
            return False
        n = len(q.ticks())
        q.wait_ticks(n + 2, 5)
        return True
    except Exception:  # a dead QEMU or QMP: the guest does not run there
        return False


@contextlib.contextmanager
def _stopped(pid: int | None) -> Iterator[None]:
    if pid is None:
        raise RuntimeError("the destination has no pid")
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def run_case(lab: Any, case: Case, blob: Path, work: Path) -> dict[str, Any]:
    """One run: returns where the guest runs afterwards and what each side reported."""
    caps = {"return-path": True} if case.return_path else {}
    dst_port = free_port()
    loader = f"loader,file={blob},addr={BLOB_ADDR:#x},force-raw=on"
    relay: Relay | None = None
    with (
        lab.destination(DESTINATION, f"tcp:127.0.0.1:{dst_port}", machine="virt-10.0",
                        memory=MEMORY, capabilities=caps) as dst,
        lab.source(SOURCE, machine="virt-10.0", memory=MEMORY,
                   extra_args=["-device", loader]) as src,
    ):
        try:
            wait_listening(dst_port, 20)
            port = dst_port
            if case.path != "direct":
                extra = ("--end-quiet", "5") if case.fault == "kill-holding" else ()
                relay = Relay(case.path, dst_port, work / f"relay-{dst_port}.log", *extra)
                port = relay.port
            if case.fault == "kill-holding":
                assert relay is not None
                src.migrate(f"tcp:127.0.0.1:{port}", caps)
                relay.wait_event("holdback_started", 60)
                time.sleep(1.0)  # the whole device state is in, the release 4 s away
                if any(e.get("event") == "tail_released" for e in relay.events()):
                    raise RuntimeError("migproxy released before the fault")
                relay.proc.kill()
            else:
                with _stopped(dst.pid):
                    src.migrate(f"tcp:127.0.0.1:{port}", caps)
                    _stalled(src)
                    if case.fault == "kill-destination":
                        assert dst.pid is not None
                        os.kill(dst.pid, signal.SIGKILL)
                    elif case.fault == "kill-relay":
                        assert relay is not None
                        relay.proc.kill()
                    else:
                        assert relay is not None
                        relay.proc.send_signal(signal.SIGTERM)
            info = src.wait_migration(120)
            dst_info = dst.wait_incoming(30) if dst.alive() else {"status": "exited"}
            on_src, on_dst = _counting(src), _counting(dst)
            where = "source" if on_src else "destination" if on_dst else "nowhere"
            if on_src and on_dst:
                where = "both"
            return {"case": case.name, "source_status": info.get("status"),
                    "destination_status": dst_info.get("status"), "guest": where}
        finally:
            if relay is not None:
                stop(relay.proc)


EXPECTED = {"kill-destination": "source", "kill-relay": "source", "term-relay": "destination",
            "kill-holding": "source"}
