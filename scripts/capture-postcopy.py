#!/usr/bin/env python3
"""Capture a real postcopy stream: what a QEMU source sends on the main channel when it
migrates with postcopy-ram (and the return path) to a destination of the same version.

    python3 scripts/capture-postcopy.py VERSION OUT.mig [--cpu CPU] [--smp N] [--machine M]

The source and the destination run from the lab ($LAB_DIR/lab.json, scripts/lab-setup.sh)
with 32 MiB of RAM; a recording relay on loopback sits between them and keeps the bytes
from the source. The bandwidth is capped at 64 KiB/s and ``migrate-start-postcopy`` is
sent as soon as the migration is active, so the device state travels in the PACKAGED
command. The destination must complete and the guest go on counting there, or nothing is
written. tests/data/postcopy/ holds captures made this way (compressed with ``xz -9``).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from migproxy.lab import free_port, get_lab

CAPS = {"postcopy-ram": True, "return-path": True}


def _pump(a: socket.socket, b: socket.socket, record: bytearray | None) -> None:
    while True:
        try:
            data = a.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)
            return
        if record is not None:
            record += data
        try:
            b.sendall(data)
        except OSError:
            return


def _relay(listener: socket.socket, target: int, record: bytearray) -> None:
    """Relay every connection to ``target``; record the first one's source bytes."""
    first = True
    while True:
        try:
            conn, _peer = listener.accept()
        except OSError:
            return
        up = socket.create_connection(("127.0.0.1", target))
        threading.Thread(target=_pump, args=(conn, up, record if first else None),
                         daemon=True).start()
        threading.Thread(target=_pump, args=(up, conn, None), daemon=True).start()
        first = False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("version")
    ap.add_argument("out", type=Path)
    ap.add_argument("--cpu", default="cortex-a57")
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--machine", default="virt-10.0",
                    help="the -M value, e.g. virt-10.0,gic-version=3")
    args = ap.parse_args()
    lab = get_lab()
    target, listen = free_port(), free_port()
    record = bytearray()
    listener = socket.socket()
    listener.bind(("127.0.0.1", listen))
    listener.listen(4)
    threading.Thread(target=_relay, args=(listener, target, record), daemon=True).start()
    common = {"machine": args.machine, "cpu": args.cpu, "smp": args.smp, "memory": "32M"}
    with (
        lab.destination(args.version, f"tcp:127.0.0.1:{target}", capabilities=CAPS,
                        **common) as dst,
        lab.source(args.version, **common) as src,
    ):
        src.migrate(f"tcp:127.0.0.1:{listen}", CAPS, {"max-bandwidth": 64 << 10})
        while src.query_migrate().get("status") != "active":
            time.sleep(0.02)
        src.execute("migrate-start-postcopy")
        info = src.wait_migration(60)
        dinfo = dst.wait_incoming(30)
        if info.get("status") != "completed" or dinfo.get("status") != "completed":
            print(f"not captured: source {info}, destination {dinfo}", file=sys.stderr)
            return 1
        n = src.last_counter()
        if dst.wait_ticks(1, 10)[0] != (n or 0) + 1:
            print("not captured: the guest did not go on counting", file=sys.stderr)
            return 1
    listener.close()
    args.out.write_bytes(bytes(record))
    print(f"wrote {args.out} ({len(record)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
