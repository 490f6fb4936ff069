"""What splice(2) itself costs here: the kernel relay against the least a splice relay does.

    python -m bench.splice_floor [--size 2G] [--repeat 3]
    python -m bench.splice_floor --listen 127.0.0.1:PORT --target 127.0.0.1:PORT

The second form is the floor as a relay process (the ``splice`` path of ``bench.run``): it
accepts connections and moves each direction with the same two blocking ``splice`` calls in
a loop (a thread per direction), nothing else; EOF is passed on as a half-close.

One process, loopback TCP: a sender thread (``sendall`` of a 1 MiB block), the relay
under test between two sockets, a receiver thread (``recv_into``). Two relays, alternately:

* ``kernel relay``: :class:`migproxy.daemon.splice.KernelRelay` as the daemon runs it
  (non-blocking, poll, both directions, byte counts, idle and stop handling);
* ``bare splice``: the floor, two blocking ``splice`` calls in a loop, one direction,
  nothing else.

Reported: MB/s and the relay thread's CPU seconds per GB (``time.thread_time`` of that
thread: user + system, so the kernel's share of splicing is in it). The gap between the
two is what the kernel relay adds to the kernel's own cost. Benchmarks are not tests:
nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.report import parse_size
from migproxy.daemon import splice
from testkit.loopback import tcp_pair

BLOCK = 1 << 20


def _endpoints(size: int, source: socket.socket, sink: socket.socket) -> list[threading.Thread]:
    block = os.urandom(BLOCK)

    def send() -> None:
        for _ in range(size // BLOCK):
            source.sendall(block)
        source.shutdown(socket.SHUT_WR)

    def receive() -> None:
        buf = bytearray(BLOCK)
        got = 0
        while k := sink.recv_into(buf):
            got += k
        if got != size:
            raise RuntimeError(f"received {got} bytes, sent {size}")
        sink.shutdown(socket.SHUT_WR)

    return [threading.Thread(target=send), threading.Thread(target=receive)]


def splice_through(src: int, dst: int) -> int:
    """Move everything from ``src`` to ``dst`` (blocking sockets) through a pipe, two
    ``splice`` calls a round, until EOF: the least a splice relay does. Bytes moved."""
    r, w = os.pipe()
    moved = 0
    try:
        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), splice.PIPE_SIZE)
        while n := os.splice(src, w, splice.PIPE_SIZE):
            moved += n
            while n:
                n -= os.splice(r, dst, n)
    finally:
        os.close(r)
        os.close(w)
    return moved


def bare_splice(size: int) -> tuple[float, float]:
    """(seconds, relay CPU seconds) of the floor relay."""
    source, src_end = tcp_pair()
    dst_end, sink = tcp_pair()
    cpu: list[float] = []

    def relay() -> None:
        t = time.thread_time()
        splice_through(src_end.fileno(), dst_end.fileno())
        dst_end.shutdown(socket.SHUT_WR)
        cpu.append(time.thread_time() - t)

    threads = [threading.Thread(target=relay), *_endpoints(size, source, sink)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    seconds = time.monotonic() - t0
    for s in (source, src_end, dst_end, sink):
        s.close()
    return seconds, cpu[0]


def kernel_relay(size: int) -> tuple[float, float]:
    """(seconds, relay CPU seconds) of migproxy's kernel relay."""
    cpu: list[float] = []
    run = splice.KernelRelay._relay

    def timed(self: splice.KernelRelay) -> Any:
        t = time.thread_time()
        try:
            return run(self)
        finally:
            cpu.append(time.thread_time() - t)

    async def main() -> float:
        source, src_end = tcp_pair()
        dst_end, sink = tcp_pair()
        for s in (src_end, dst_end):
            s.setblocking(False)
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[splice.RelayEnd] = loop.create_future()
        splice.KernelRelays(1).start(src_end.detach(), dst_end.detach(), idle_timeout=0,
                                     call_soon_threadsafe=loop.call_soon_threadsafe,
                                     on_progress=lambda a, b: None,
                                     on_end=ended.set_result)
        threads = _endpoints(size, source, sink)
        t0 = time.monotonic()
        for th in threads:
            th.start()
        end = await ended
        for th in threads:
            th.join()
        seconds = time.monotonic() - t0
        source.close()
        sink.close()
        if end.how != "closed":
            raise RuntimeError(f"the kernel relay ended {end.how}: {end.error}")
        return seconds

    splice.KernelRelay._relay = timed  # type: ignore[method-assign]
    try:
        seconds = asyncio.run(main())
    finally:
        splice.KernelRelay._relay = run  # type: ignore[method-assign]
    return seconds, cpu[0]


def _one_way(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        splice_through(src.fileno(), dst.fileno())
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _relay_pair(src: socket.socket, target: tuple[str, int]) -> None:
    try:
        dst = socket.create_connection(target, timeout=20)
    except OSError:
        src.close()
        return
    dst.settimeout(None)
    back = threading.Thread(target=_one_way, args=(dst, src), daemon=True)
    back.start()
    _one_way(src, dst)
    back.join()
    src.close()
    dst.close()


def serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    """The floor as a relay process: every accepted connection to ``target``, a thread
    per direction, until killed."""
    with socket.create_server(listen) as srv:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=_relay_pair, args=(conn, target), daemon=True).start()


def _address(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host, int(port)


def compare(size: int, repeat: int) -> dict[str, Any]:
    """The kernel relay against the floor, alternately, ``repeat`` runs each."""
    size = max(BLOCK, size // BLOCK * BLOCK)
    relays: dict[str, Callable[[int], tuple[float, float]]] = {
        "kernel relay": kernel_relay, "bare splice": bare_splice}
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in relays}
    for _ in range(repeat):
        for name, fn in relays.items():
            runs[name].append(fn(size))
    res: dict[str, Any] = {"bytes": size}
    for name, rs in runs.items():
        res[name] = {"mb_s": statistics.median(size / s / 1e6 for s, _ in rs),
                     "relay_cpu_s_per_gb": statistics.median(c / (size / 1e9) for _, c in rs),
                     "runs": rs}
    k, b = res["kernel relay"], res["bare splice"]
    res["mb_s_ratio"] = k["mb_s"] / b["mb_s"]
    res["cpu_ratio"] = k["relay_cpu_s_per_gb"] / b["relay_cpu_s_per_gb"]
    return res


def print_compare(res: dict[str, Any], say: Callable[[str], None] = print) -> None:
    say(f"{'relay':<14} {'MB/s (median)':>14} {'relay CPU s/GB (median)':>24}")
    for name in ("kernel relay", "bare splice"):
        say(f"{name:<14} {res[name]['mb_s']:>14.0f} {res[name]['relay_cpu_s_per_gb']:>24.3f}")
    say(f"kernel relay / bare splice: {res['mb_s_ratio']:.2f}x MB/s, "
        f"{res['cpu_ratio']:.2f}x CPU per GB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.splice_floor",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="2G", help="bytes per run (default 2G)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per relay (default 3)")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--listen", metavar="HOST:PORT",
                    help="run the floor as a relay process instead (with --target)")
    ap.add_argument("--target", metavar="HOST:PORT")
    a = ap.parse_args(argv)
    if not splice.AVAILABLE:
        print("splice(2) is not available here (Linux only)")
        return 1
    if a.listen or a.target:
        if not (a.listen and a.target):
            ap.error("--listen and --target go together")
        serve(_address(a.listen), _address(a.target))
        return 0
    res = compare(parse_size(a.size), a.repeat)
    print_compare(res)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({k: res[k] for k in ("kernel relay", "bare splice")}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
