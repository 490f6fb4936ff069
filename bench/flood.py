"""The resident memory of a migproxy daemon (a separate process) through floods, and after.

One daemon (default limits) in front of a sink that reads and discards. Phases, each
followed by a pause and a reading of the daemon's ``VmRSS`` (and ``VmHWM``, the peak) from
/proc:

1. idle flood: ``--idle`` connections (default 5,000) opened from 127.0.0.2 and held
   (all but ``max_per_peer`` are refused at once), then closed;
2. hostile streams: ``--hostile`` copies (default 4) of each of a RAM block-list flood
   (400,000 blocks), a 60 MiB description-shaped tail, a description nested 600 deep and
   HTTP garbage, at the same time as one real (synthetic) migration, which must come out
   rewritten exactly; then all closed.

    python -m bench.flood [--idle 5000] [--hostile 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.procs import free_port, popen, stop
from bench.report import table
from migproxy.arm.profile import default_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream.engine import StreamEngine
from testkit.hostile import hostile_streams, send_and_half_close
from testkit.procs import wait_listening
from testkit.synthetic import SynthSpec, build

MiB = 1 << 20


def rss(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


class Sink:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.read(8)
        keep = head[:4] == b"QEVM"
        got = bytearray(head)
        while True:
            b = await r.read(1 << 20)
            if not b:
                break
            if keep:
                got += b
        if keep:
            self.received.append(bytes(got))
        w.close()


async def _run(idle_n: int, hostile_n: int, *, settle: float = 2.0, blocks: int = 400_000,
               description_mib: int = 60) -> dict[str, Any]:
    """The phases; ``settle``: seconds before each reading (the last one: 2.5 x and at least
    2 s, so the daemon's idle trim, 1 s after its last pair closed, has run)."""
    sink = Sink()
    sink_port = await sink.start()
    port = free_port()
    proc = popen([sys.executable, "-m", "migproxy", "--listen", f"127.0.0.1:{port}",
                  "--target", f"127.0.0.1:{sink_port}", "--metrics", "", "--log-level",
                  "error"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    readings: list[list[str]] = []

    async def reading(phase: str, wait: float = settle) -> tuple[float, float]:
        await asyncio.sleep(wait)
        now, peak = rss(proc.pid)
        readings.append([phase, f"{now:.1f}", f"{peak:.1f}"])
        print(f"  {phase:<40} RSS {now:7.1f} MiB, peak so far {peak:7.1f} MiB", flush=True)
        return now, peak

    try:
        wait_listening(port, 20, alive=lambda: proc.poll() is None)
        base, _ = await reading("started")
        conns = []
        for _ in range(idle_n):
            try:
                conns.append(await asyncio.open_connection("127.0.0.1", port,
                                                           local_addr=("127.0.0.2", 0)))
            except OSError:
                break
        during_idle, _ = await reading(f"{len(conns)} idle connections open")
        for _r, w in conns:
            w.close()
        after_idle, _ = await reading("idle connections closed")
        streams = hostile_streams(blocks=blocks, description_mib=description_mib)
        real = build(SynthSpec(cpus=2, full_pages=2000, zero_pages=20000))
        eng = StreamEngine(arm_engine_config(default_profile()))
        expected = b"".join(bytes(c) for c in eng.feed(real).data)
        expected += b"".join(bytes(c) for c in eng.feed_eof().data)
        jobs = [send_and_half_close(port, data, linger=0.5, close=True)
                for _ in range(hostile_n) for data in streams.values()]
        t0 = time.monotonic()
        await asyncio.gather(*jobs, send_and_half_close(port, real, linger=0.5, close=True))
        hostile_s = time.monotonic() - t0
        _now, peak = await reading("hostile streams and a migration done")
        ok = expected in sink.received
        sink.received.clear()
        after, peak = await reading("everything closed", max(2.5 * settle, 2.0))
        return {"baseline_mib": base, "idle_connections": len(conns),
                "rss_idle_mib": during_idle, "rss_after_idle_mib": after_idle,
                "rss_after_mib": after, "peak_mib": peak, "hostile_streams": len(jobs),
                "hostile_seconds": hostile_s, "migration_rewritten_exactly": ok,
                "readings": readings}
    finally:
        stop(proc)
        sink.server.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--hostile", type=int, default=4)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    out = asyncio.run(_run(args.idle, args.hostile))
    print(table(out["readings"], ["phase", "VmRSS MiB", "VmHWM MiB"]))
    print(f"migration rewritten exactly: {out['migration_rewritten_exactly']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out["migration_rewritten_exactly"] else 1


if __name__ == "__main__":
    sys.exit(main())
