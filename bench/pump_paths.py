"""The RAM pump's data paths on their own: how fast a relay that walks every RAM record can
move a long run of them, in one process, with no event loop and no engine.

    python -m bench.pump_paths [--mib 1024] [--repeat 3]

A sender process writes RAM records (4 KiB pages, every tenth a zero page, no section end)
over loopback to this process, which relays them to a sink process, by each path in turn
(round robin):

- ``loop``: Python ``recv_into`` / ``sendall`` of 1 MiB, blocking, no walk (what the
  event-loop path costs without uvloop, the session or the engine);
- ``copy``: the compiled pump, ``read(2)``, walk, ``write(2)`` (``ram_pump = copy``);
- ``splice``: the compiled pump, ``splice(2)`` into a pipe, a ``tee(2)`` copy read to walk,
  ``splice(2)`` out (``ram_pump = splice``);
- ``bare``: two blocking ``splice(2)`` calls a round and no walk (``bench.splice_floor``):
  the splice relay, which reads no byte. ``copy`` against ``bare`` is what reading every
  record header costs a relay here, with no Python, event loop or engine in the way: the
  ceiling of the RAM pump against the splice relay of the throughput section.

MB/s = bytes / (the sink's last byte - the relay's start); CPU s/GB = this process's CPU time
(``time.process_time``, every thread, in ns) over the bytes. Every run checks that the sink
got every byte.
"""

from __future__ import annotations

import argparse
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

from bench.splice_floor import splice_through
from migproxy.daemon import pump as pump_mod
from migproxy.daemon.pump import PumpPath, PumpStatus, RamPump
from migproxy.stream.engine import RamWalk

PS = 4096
UNIT_RECORDS = 2048  # records in the repeated unit (about 7.4 MiB)
PATHS = ("loop", "copy", "splice", "bare")


def _unit() -> bytes:
    recs = []
    for i in range(UNIT_RECORDS):
        if i % 10:
            recs.append(struct.pack(">Q", (i * PS) | 0x28) + bytes((i % 251 or 1,)) * PS)
        else:
            recs.append(struct.pack(">Q", (i * PS) | 0x22) + b"\0")
    return b"".join(recs)


_SENDER = """
import socket, sys
u = open(sys.argv[1], 'rb').read()
s = socket.create_connection(('127.0.0.1', int(sys.argv[2])))
for _ in range(int(sys.argv[3])):
    s.sendall(u)
s.shutdown(socket.SHUT_WR)
"""
_SINK = """
import socket, sys, time
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
n = 0
b = bytearray(1 << 20)
while True:
    k = s.recv_into(b)
    if not k:
        break
    n += k
print(n, time.monotonic(), flush=True)
"""


def _relay_loop(src: socket.socket, dst: socket.socket) -> None:
    buf = bytearray(1 << 20)
    mv = memoryview(buf)
    while True:
        k = src.recv_into(buf)
        if not k:
            return
        dst.sendall(mv[:k])


def _relay_pump(src: socket.socket, dst: socket.socket, path: PumpPath) -> None:
    # One run to the end of the stream: no budget or quiet hand-back (which would leave the
    # rest of a record for an engine this benchmark does not have).
    src.setblocking(False)
    dst.setblocking(False)
    p = RamPump(src.fileno(), dst.fileno(), path)
    try:
        run = p.run(RamWalk(0, PS, 1 << 40, True), budget=1 << 62, yield_seconds=3600.0,
                    quiet_seconds=3600.0)
    finally:
        p.close(reset=False)
    if run.status != PumpStatus.EOF or run.leftover:
        raise RuntimeError(f"the pump stopped: {run.status.name} {run.error}")


def one(path: str, unit_file: Path, repeat_units: int, size: int) -> tuple[float, float]:
    """One relay run: (MB/s, CPU s/GB)."""
    with socket.create_server(("127.0.0.1", 0)) as ls, \
            socket.create_server(("127.0.0.1", 0)) as ld:
        sink = subprocess.Popen([sys.executable, "-c", _SINK, str(ld.getsockname()[1])],
                                stdout=subprocess.PIPE)
        dst, _ = ld.accept()
        sender = subprocess.Popen([sys.executable, "-c", _SENDER, str(unit_file),
                                   str(ls.getsockname()[1]), str(repeat_units)])
        src, _ = ls.accept()
    try:
        cpu0 = time.process_time()
        t0 = time.monotonic()
        if path == "loop":
            _relay_loop(src, dst)
        elif path == "bare":
            splice_through(src.fileno(), dst.fileno())
        else:
            _relay_pump(src, dst, PumpPath(path))
        cpu = time.process_time() - cpu0
        dst.shutdown(socket.SHUT_WR)
        out, _ = sink.communicate(timeout=120)
        sender.wait(timeout=30)
    finally:
        src.close()
        dst.close()
        for proc in (sink, sender):
            if proc.poll() is None:
                proc.kill()
    got, t_end = out.split()
    if int(got) != size:
        raise RuntimeError(f"{path}: the sink got {int(got)} of {size} bytes")
    return size / (float(t_end) - t0) / 1e6, cpu / (size / 1e9)


def _say(msg: str) -> None:
    print(msg, flush=True)


def compare(mib: int, repeat: int, paths: tuple[str, ...] = PATHS,
            say: Callable[[str], None] = _say) -> dict[str, Any]:
    """Each of ``paths`` ``repeat`` times, round robin, ``mib`` MiB a run: medians of MB/s
    and CPU s/GB per path, and the stream's size."""
    unit = _unit()
    units = max(1, (mib << 20) // len(unit))
    size = units * len(unit)
    runs: dict[str, list[tuple[float, float]]] = {p: [] for p in paths}
    with tempfile.TemporaryDirectory() as d:
        unit_file = Path(d) / "unit"
        unit_file.write_bytes(unit)
        for i in range(repeat):
            for path in paths:
                mbs, cpu = one(path, unit_file, units, size)
                runs[path].append((mbs, cpu))
                say(f"  run {i + 1}/{repeat} {path:<7} {mbs:6.0f} MB/s  {cpu:.3f} CPU s/GB")
    return {"bytes": size, "repeat": repeat,
            "paths": {p: {"mb_s": median(m for m, _ in r), "cpu_s_per_gb": median(c for _, c in r)}
                      for p, r in runs.items()}}


def print_compare(res: dict[str, Any], say: Callable[[str], None] = _say,
                  base: str = "loop") -> None:
    paths = res["paths"]
    ref = paths[base]["mb_s"]
    say(f"{res['bytes'] / 1e6:.0f} MB of RAM records per run, medians of {res['repeat']}:")
    say(f"{'path':<8}{'MB/s':>8}{'x ' + base:>8}{'CPU s/GB':>10}")
    for path, v in paths.items():
        say(f"{path:<8}{v['mb_s']:8.0f}{v['mb_s'] / ref:7.2f}x{v['cpu_s_per_gb']:10.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024, help="MiB per run (default 1024)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per path (default 3)")
    args = ap.parse_args(argv)
    if not pump_mod.AVAILABLE:
        print("the compiled RAM pump is not built: only the loop path would run")
        return 1
    print_compare(compare(args.mib, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
