"""Child processes of the tests and benchmarks that run QEMU or relays: started with the
repository on the path and tied to their parent, stopped within bounds, waited for until
they listen. Loopback only; every wait is bounded."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def py_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


try:
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork
except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc
    _prctl = None
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: SIGTERM this child when the benchmark process dies (PR_SET_PDEATHSIG),
    so no relay, sink or sender outlives an interrupted run."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def popen(argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` for the benchmark's helpers: repository on the path, tied to us."""
    return subprocess.Popen(argv, env=py_env(), cwd=REPO, preexec_fn=die_with_parent, **kw)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int | None:
    """SIGTERM, wait (bounded), then SIGKILL. Only for processes this module started."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def listening(port: int) -> bool:
    """True if something listens on 127.0.0.1:port or 0.0.0.0:port (from /proc/net/tcp)."""
    want = f":{port:04X}"
    try:
        with open("/proc/net/tcp", encoding="ascii") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "0A" and parts[1].endswith(want):
                    return True
    except OSError:
        pass
    return False


def wait_listening(port: int, timeout: float = 15.0, alive: Any = None) -> None:
    """Wait (bounded) until a listener is on ``port``, without connecting to it."""
    deadline = time.monotonic() + timeout
    while not listening(port):
        if alive is not None and not alive():
            raise RuntimeError(f"the process that should listen on {port} exited")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout}s")
        time.sleep(0.02)
