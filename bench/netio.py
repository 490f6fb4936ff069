"""Sender and sink processes for the TCP benchmarks (loopback only), and process helpers.

    python -m bench.netio sink                 # prints "port N", then one JSON line per
                                               # connection; commands as JSON lines on stdin
    python -m bench.netio send PORT SHAPE_JSON REPEATS [--mode bulk|burst|lastbyte]
    python -m bench.netio send-raw PORT BYTES [--head HEX]   # an untouched channel

The sender builds the stream from a :class:`bench.streams.Shape` (deterministic) and sends
``prefix + unit * REPEATS + suffix`` from those three buffers. It prints one JSON line with
``time.monotonic()`` stamps (CLOCK_MONOTONIC is one clock for every process of the machine):

* ``bulk``: ``t_start`` before the first byte, ``t_end`` after the last ``sendall``.
* ``burst``: everything before the device tail, a pause (``--pause``), then ``t0`` and the
  whole tail at once (the source QEMU sends the device state in one burst after stopping).
* ``lastbyte``: everything but the very last byte, a pause, then ``t0`` and the last byte.

``send-raw`` sends ``BYTES`` bytes: ``--head`` (e.g. a multifd channel's first packet)
and then random data (one 1 MiB block, repeated), with the same ``bulk`` stamps.

The sink accepts any number of connections (one thread each), reads with ``recv_into``,
counts bytes, keeps the last ``end_len`` bytes of each connection and checks them against a
digest, optionally reads slowly (``rate`` bytes/s) or feeds everything to a fresh engine
(``engine_check``, smoke mode only), and prints per connection: bytes, first/last byte
stamps and whether the content matched.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import threading
import time
from typing import Any

from testkit.procs import HOST

RECV_SIZE = 1 << 20
IO_TIMEOUT = 120.0  # no single socket operation of a benchmark may block longer


# -- sender ---------------------------------------------------------------------------------

def wait_until(t: float | None) -> None:
    """Sleep until ``time.monotonic()`` reaches ``t`` (a start shared by several senders)."""
    if t is not None:
        time.sleep(max(0.0, t - time.monotonic()))


def send(port: int, shape_json: str, repeats: int, mode: str, pause: float,
         start_at: float | None = None) -> dict[str, Any]:
    from bench.streams import Plan, Shape

    plan = Plan(Shape.from_json(json.loads(shape_json)))
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    res: dict[str, Any] = {"bytes": plan.total(repeats)}
    wait_until(start_at)
    try:
        if mode == "bulk":
            res["t_start"] = time.monotonic()
            for piece in plan.pieces(repeats):
                sock.sendall(piece)
            res["t_end"] = time.monotonic()
        else:
            whole = b"".join(plan.pieces(repeats))
            cut = plan.tail_offset(repeats) if mode == "burst" else len(whole) - 1
            res["t_start"] = time.monotonic()
            sock.sendall(whole[:cut])
            time.sleep(pause)  # let every relay forward what it can
            res["t0"] = time.monotonic()
            sock.sendall(whole[cut:])
            res["t_end"] = time.monotonic()
            res["final_bytes"] = len(whole) - cut
        _end_sending(sock)
    finally:
        sock.close()
    return res


def _end_sending(sock: socket.socket) -> None:
    """Half-close, then wait (bounded) for the other side to close: the relay passes the
    sink's close on."""
    sock.shutdown(socket.SHUT_WR)
    buf = bytearray(65536)
    deadline = time.monotonic() + IO_TIMEOUT
    while time.monotonic() < deadline and sock.recv_into(buf):
        pass


# A raw sender with a start time connects this long before it (after the main channel's
# sender, which connects as soon as its stream is built: QEMU opens the main channel first).
RAW_CONNECT_LEAD = 0.3  # seconds


def send_raw(port: int, size: int, head: bytes, start_at: float | None = None) -> dict[str, Any]:
    block = os.urandom(RECV_SIZE)
    if start_at is not None:
        wait_until(start_at - RAW_CONNECT_LEAD)
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    wait_until(start_at)
    try:
        res: dict[str, Any] = {"bytes": size, "t_start": time.monotonic()}
        sock.sendall(head[:size])
        left = size - min(len(head), size)
        view = memoryview(block)
        while left:
            n = min(left, len(block))
            sock.sendall(view[:n])
            left -= n
        res["t_end"] = time.monotonic()
        _end_sending(sock)
    finally:
        sock.close()
    return res


# -- sink -----------------------------------------------------------------------------------

def _verdict(total: int, want: int, end: bytearray, end_sha256: str | None,
             error: str | None) -> tuple[bool, str | None]:
    """Whether a connection brought what was expected: ``want`` bytes (-1: any), ending
    with bytes of this digest (``end`` empty: not checked)."""
    ok = error is None and (want < 0 or total == want)
    if ok and end:
        ok = hashlib.sha256(end).hexdigest() == end_sha256
        if not ok:
            error = "the end of the stream differs from the expected output"
    elif not ok and error is None:
        error = f"received {total} bytes, expected {want}"
    return ok, error


class Sink:
    def __init__(self) -> None:
        self.expect: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.count = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(64)
        self.port: int = self.listener.getsockname()[1]

    def emit(self, obj: dict[str, Any]) -> None:
        with self.lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    def serve(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            with self.lock:
                self.count += 1
                n = self.count
                exp = dict(self.expect)
            threading.Thread(target=self.handle, args=(conn, n, exp), daemon=True).start()

    def handle(self, conn: socket.socket, n: int, exp: dict[str, Any]) -> None:
        total = 0
        want = int(exp.get("len", -1))
        end_len = int(exp.get("end_len", 0))
        rate = float(exp.get("rate", 0))
        keep_from = want - end_len
        end = bytearray(end_len)
        buf = bytearray(min(RECV_SIZE, 65536) if rate else RECV_SIZE)
        mv = memoryview(buf)
        eng: Any = None
        if exp.get("engine_check"):
            from migproxy.arm.events import seen_cpus
            from migproxy.arm.rewriter import arm_engine_config
            from migproxy.stream.engine import StreamEngine

            eng = StreamEngine(arm_engine_config(None))
        t_first = t_last = 0.0
        error = None
        conn.settimeout(IO_TIMEOUT)
        try:
            while True:
                k = conn.recv_into(buf)
                if not k:
                    break
                now = time.monotonic()
                if not total:
                    t_first = now
                t_last = now
                if end_len and total + k > keep_from and want >= 0:
                    a = max(total, keep_from)
                    b = min(total + k, want)
                    if b > a:
                        end[a - keep_from : b - keep_from] = mv[a - total : b - total]
                total += k
                if eng is not None:
                    eng.feed(mv[:k])
                if rate:
                    ahead = total / rate - (now - t_first)
                    if ahead > 0:
                        time.sleep(min(ahead, 1.0))
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
        finally:
            conn.close()
        ok, error = _verdict(total, want, end, exp.get("end_sha256"), error)
        res: dict[str, Any] = {"conn": n, "bytes": total, "t_first": t_first,
                               "t_last": t_last, "ok": ok, "error": error}
        if eng is not None:
            eng.feed_eof()
            res["engine_mode"] = str(eng.mode)
            res["cpregs"] = [len(c.indexes) for c in seen_cpus(eng.reports)]
            if eng.mode != "done":
                res["ok"] = False
                res["error"] = f"the engine could not frame the output: {eng.stop_reason}"
        self.emit(res)

    def commands(self) -> None:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            cmd = json.loads(line)
            if cmd.get("cmd") == "quit":
                os._exit(0)
            with self.lock:
                self.expect = cmd
            self.emit({"ack": True})
        os._exit(0)


def sink_main() -> None:
    s = Sink()
    sys.stdout.write(f"port {s.port}\n")
    sys.stdout.flush()
    threading.Thread(target=s.serve, daemon=True).start()
    s.commands()


# -- /proc helpers ----------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _process_clock(pid: int) -> int:
    """The CPU-time clock of process ``pid`` (what clock_getcpuclockid(3) gives on Linux:
    all its threads, those that ended included, in nanoseconds)."""
    return ((~pid) << 3) | 2  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its waited-for children.

    The process's own share comes from its CPU-time clock (nanoseconds): /proc counts in
    clock ticks (10 ms), which is a sixth of what a relay that splices 1 GB spends. The
    children's share (socat's per-connection processes) only /proc has, in ticks."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3): utime is field 14 -> index 11.
    children = sum(int(x) for x in fields[13:15]) / _TICK
    try:
        return time.clock_gettime(_process_clock(pid)) + children
    except OSError:  # not Linux, or not allowed: ticks
        return sum(int(x) for x in fields[11:13]) / _TICK + children


def has_children(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return bool(f.read().strip())
    except OSError:
        return False


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmHWM, VmRSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="benchmark sender / sink")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sink")
    s = sub.add_parser("send")
    s.add_argument("port", type=int)
    s.add_argument("shape")
    s.add_argument("repeats", type=int)
    s.add_argument("--mode", choices=("bulk", "burst", "lastbyte"), default="bulk")
    s.add_argument("--pause", type=float, default=0.15)
    s.add_argument("--start-at", type=float, help="time.monotonic() to start sending at")
    r = sub.add_parser("send-raw")
    r.add_argument("port", type=int)
    r.add_argument("bytes", type=int)
    r.add_argument("--head", default="", help="first bytes, in hex")
    r.add_argument("--start-at", type=float, help="time.monotonic() to start sending at")
    args = ap.parse_args(argv)
    if args.cmd == "sink":
        sink_main()
        return 0
    if args.cmd == "send-raw":
        print(json.dumps(send_raw(args.port, args.bytes, bytes.fromhex(args.head),
                                  args.start_at)))
        return 0
    print(json.dumps(send(args.port, args.shape, args.repeats, args.mode, args.pause,
                          args.start_at)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
