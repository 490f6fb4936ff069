"""TLS relay throughput: migproxy terminating TLS on both legs against ``socat`` with
OpenSSL on both legs, same sender, same sink, same certificates (made with ``openssl``).

The sender (a thread here) sends ``--mib`` MiB over TLS with a client certificate; the
relay decrypts, and encrypts again towards a TLS sink (a child process) that requires a
client certificate and counts bytes. The bytes are not a migration stream (migproxy
classifies them ``other`` and relays them untouched, as socat does), so the figure is the
cost of the TLS legs and the relay, not of the parser. Both relays listen at once and take
turns, run by run. Reported: MB/s of each relay (the median of its runs, and every run)
and their ratio (migproxy / socat).

    python -m bench.tls_relay --mib 256 --runs 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procs import free_port, popen, socat_available, stop
from bench.profile_daemon import Sampler
from testkit.pki import Ca, client_context, creds_dir, server_context

CHUNK = 1 << 20
HOST = "127.0.0.1"


def _sink(creds: Path, port: int, ready: Any, result: Any) -> None:
    """Accept TLS connections; put (bytes, seconds from first byte to end) per connection."""
    with socket.create_server((HOST, port)) as srv:
        ready.set()
        ctx = server_context(creds)
        while True:
            conn, _ = srv.accept()
            with ctx.wrap_socket(conn, server_side=True) as s:
                n, t0 = 0, None
                buf = bytearray(CHUNK)
                while True:
                    got = s.recv_into(buf)
                    if not got:
                        break
                    t0 = t0 or time.perf_counter()
                    n += got
                result.put((n, time.perf_counter() - (t0 or time.perf_counter())))


def _send(creds: Path, port: int, total: int) -> None:
    data = os.urandom(CHUNK)
    with socket.create_connection((HOST, port), timeout=60) as raw, \
            client_context(creds).wrap_socket(raw, server_hostname="localhost") as s:
        sent = 0
        while sent < total:
            s.sendall(data)
            sent += len(data)
        s.unwrap()


def _wait_port(port: int, proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """Wait until the relay accepts (the probe is a failed handshake to it: not counted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"relay exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def _relays(creds: Path, listen: int, sink: int) -> dict[str, list[str]]:
    c = str(creds)
    opts = f"cert={c}/server-cert.pem,key={c}/server-key.pem,cafile={c}/ca-cert.pem"
    return {
        "migproxy": [sys.executable, "-m", "migproxy", "--listen", f"{HOST}:{listen}",
                     "--target", f"{HOST}:{sink}", "--metrics", "", "--profile", "none",
                     "--tls-source-creds", c, "--tls-destination-creds", c,
                     "--tls-hostname", "localhost", "--log-level", "warning"],
        "socat": ["socat", f"OPENSSL-LISTEN:{listen},bind={HOST},reuseaddr,fork,{opts}",
                  f"OPENSSL:{HOST}:{sink},cert={c}/client-cert.pem,key={c}/client-key.pem,"
                  f"cafile={c}/ca-cert.pem,commonname=localhost"],
    }


def run(mib: int, runs: int, *, only: tuple[str, ...] = ("migproxy", "socat"),
        profile: bool = False) -> dict[str, Any]:
    """MB/s of each relay in ``only``: ``runs`` runs each, round robin (both relays listen
    at once, so a drift of the machine's speed falls on both alike); the median counts,
    and migproxy / socat is the ratio of the medians. With ``profile``, py-spy samples
    migproxy through its runs (``out["profile"]``)."""
    total = mib << 20
    with tempfile.TemporaryDirectory(prefix="migproxy-tls-bench-") as tmp:
        creds = creds_dir(Ca.create(Path(tmp) / "ca"), Path(tmp) / "pki")
        sink_port = free_port()
        ready = multiprocessing.Event()
        result: multiprocessing.Queue[tuple[int, float]] = multiprocessing.Queue()
        sink = multiprocessing.Process(target=_sink, args=(creds, sink_port, ready, result),
                                       daemon=True)
        sink.start()
        ready.wait(10)
        out: dict[str, Any] = {"mib": mib, "runs": runs, "mb_s": {}, "all": {}}
        procs: dict[str, tuple[int, subprocess.Popen[Any]]] = {}
        spy = None
        try:
            for name in only:
                if name == "socat" and not socat_available():
                    out["mb_s"][name] = None
                    continue
                listen = free_port()
                argv = _relays(creds, listen, sink_port)[name]
                procs[name] = (listen, popen(argv, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL))
                _wait_port(listen, procs[name][1])
            if profile and "migproxy" in procs:
                spy = Sampler(procs["migproxy"][1].pid, str(Path(tmp) / "stacks.txt"))
            for _ in range(runs):
                for name, (listen, _proc) in procs.items():
                    t0 = time.perf_counter()
                    _send(creds, listen, total)
                    n, _ = result.get(timeout=120)
                    out["all"].setdefault(name, []).append(
                        round(n / (time.perf_counter() - t0) / 1e6, 1))
            for name, rates in out["all"].items():
                out["mb_s"][name] = round(statistics.median(rates), 1)
        finally:
            if spy is not None:
                out["profile"] = spy.stop(10)
            for _listen, proc in procs.values():
                stop(proc)
            sink.kill()
        ours, theirs = out["mb_s"].get("migproxy"), out["mb_s"].get("socat")
        out["ratio"] = round(ours / theirs, 3) if ours and theirs else None
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tls_relay", description=__doc__)
    p.add_argument("--mib", type=int, default=256, help="MiB sent per run (default 256)")
    p.add_argument("--runs", type=int, default=3,
                   help="runs per relay, round robin; the median counts")
    a = p.parse_args(argv)
    print(json.dumps(run(a.mib, a.runs), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
