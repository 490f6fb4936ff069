"""A ClientHello flood on a TLS route, and a migration beside it.

A daemon (a separate process, on uvloop as in production) terminates TLS from the source
and relays plaintext to a sink. Flooders connect from 127.0.0.1, each send a real
ClientHello (no client certificate), read the server's first flight (the daemon has done
its key exchange and signed: the expensive part) and close. Meanwhile a source from
127.0.0.2 (its own address, a good certificate) sends a synthetic migration stream over
TLS; reported: the seconds from its connect to the sink's last byte, alone and during the
flood, the flood's handshakes answered and refused, and the daemon's CPU seconds.

    python -m bench.tls_flood [--flooders 8] [--seconds 3] [--budget N]

``--budget``: ``tls_failed_handshakes`` (omitted: the daemon's default; 0: no limit);
``--repo``: the checkout whose daemon runs (another branch, for a before/after).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.netio import cpu_seconds
from bench.procs import REPO, free_port, stop
from testkit.pki import Ca, client_context, creds_dir
from testkit.synthetic import SynthSpec, build

HOST = "127.0.0.1"
SOURCE = "127.0.0.2"  # the migration's own address (loopback too)


class Sink:
    """Accepts plaintext connections; records when each one ended and its bytes."""

    def __init__(self) -> None:
        self.sock = socket.create_server((HOST, 0))
        self.port = int(self.sock.getsockname()[1])
        self.done: list[tuple[int, float]] = []
        self.event = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        n = 0
        with conn:
            while chunk := conn.recv(1 << 20):
                n += len(chunk)
        if n:
            self.done.append((n, time.perf_counter()))
            self.event.set()


def _hello(ctx: ssl.SSLContext) -> bytes:
    """A client's first flight (one ClientHello), made in memory."""
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def flood(port: int, ctx: ssl.SSLContext, until: float, counts: dict[str, int],
          lock: threading.Lock) -> None:
    hello = _hello(ctx)
    while time.perf_counter() < until:
        try:
            with socket.create_connection((HOST, port), timeout=5) as s:
                s.sendall(hello)
                got = s.recv(1 << 16)
            key = "answered" if got else "refused"
        except OSError:
            key = "refused"
        with lock:
            counts[key] += 1


def migrate(port: int, creds: Path, stream: bytes, sink: Sink) -> float:
    sink.event.clear()
    before = len(sink.done)
    t0 = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=30,
                                  source_address=(SOURCE, 0)) as raw, \
            client_context(creds).wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(stream)
        s.unwrap()
    while len(sink.done) == before:
        if not sink.event.wait(30):
            raise TimeoutError("the migration did not reach the sink")
        sink.event.clear()
    return sink.done[-1][1] - t0


def run(flooders: int, seconds: float, budget: int | None, repo: Path) -> dict[str, Any]:
    stream = build(SynthSpec(cpus=2, full_pages=2000, zero_pages=2000))
    with tempfile.TemporaryDirectory(prefix="migproxy-tls-flood-") as tmp:
        creds = creds_dir(Ca.create(Path(tmp) / "ca"), Path(tmp) / "pki")
        sink = Sink()
        listen = free_port()
        argv = [sys.executable, "-m", "migproxy", "--listen", f"{HOST}:{listen}",
                "--target", f"{HOST}:{sink.port}", "--metrics", "", "--profile", "none",
                "--tls-source-creds", str(creds), "--log-level", "error"]
        if budget is not None:
            argv += ["--tls-failed-handshakes", str(budget)]
        env = dict(os.environ, PYTHONPATH=str(repo))
        proc = subprocess.Popen(argv, cwd=repo, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection((HOST, listen), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the daemon did not start") from None
                    time.sleep(0.05)
            alone = min(migrate(listen, creds, stream, sink) for _ in range(3))
            counts = {"answered": 0, "refused": 0}
            lock = threading.Lock()
            cpu0 = cpu_seconds(proc.pid)
            until = time.perf_counter() + seconds
            threads = [threading.Thread(target=flood, args=(listen, ssl.create_default_context(
                cafile=str(creds / "ca-cert.pem")), until, counts, lock)) for _ in range(flooders)]
            for t in threads:
                t.start()
            time.sleep(seconds / 3)
            during = [migrate(listen, creds, stream, sink)]
            during.append(migrate(listen, creds, stream, sink))
            for t in threads:
                t.join()
            cpu = cpu_seconds(proc.pid) - cpu0
        finally:
            stop(proc)
            sink.sock.close()
    return {"repo": str(repo), "budget": budget, "flooders": flooders, "seconds": seconds,
            "stream_mib": round(len(stream) / (1 << 20), 1),
            "migration_alone_s": round(alone, 3),
            "migration_during_flood_s": [round(x, 3) for x in during],
            "flood_handshakes_answered": counts["answered"],
            "flood_refused": counts["refused"], "daemon_cpu_s_during_flood": round(cpu, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tls_flood", description=__doc__)
    p.add_argument("--flooders", type=int, default=8, help="flooding threads (default 8)")
    p.add_argument("--seconds", type=float, default=3.0, help="flood length (default 3)")
    p.add_argument("--budget", type=int, default=None,
                   help="tls_failed_handshakes (default: the daemon's; 0: no limit)")
    p.add_argument("--repo", type=Path, default=REPO, help="the checkout whose daemon runs")
    a = p.parse_args(argv)
    print(json.dumps(run(a.flooders, a.seconds, a.budget, a.repo.resolve()), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
