"""Processes of the TCP benchmarks: the sink, the relays under test, the senders.

Everything listens and connects on 127.0.0.1 only. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import netio
from testkit.procs import HOST, REPO, free_port, popen, stop, wait_listening


class SinkProc:
    """``python -m bench.netio sink``: JSON lines in, JSON lines out."""

    def __init__(self) -> None:
        self.proc = popen([sys.executable, "-m", "bench.netio", "sink"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._q: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first.startswith("port "):
            stop(self.proc)
            raise RuntimeError(f"sink did not start: {first!r}")
        self.port = int(first.split()[1])
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(line)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = json.loads(self._q.get(timeout=timeout))
            return obj
        except queue.Empty:
            raise TimeoutError(f"no answer from the sink after {timeout:.0f}s") from None

    def expect(self, **cfg: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cfg) + "\n")
        self.proc.stdin.flush()
        if not self._next(10).get("ack"):
            raise RuntimeError("the sink did not acknowledge")

    def result(self, timeout: float) -> dict[str, Any]:
        return self._next(timeout)

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.proc.stdin.write('{"cmd": "quit"}\n')
                self.proc.stdin.flush()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                stop(self.proc)


@dataclass(frozen=True)
class RelayPath:
    """A way from the sender to the sink."""

    key: str
    label: str
    kind: str  # direct | socat | splice | bare | migproxy
    args: tuple[str, ...] = ()
    mode: str | None = None  # what the engine does to the bytes (None: unchanged)


PATHS: dict[str, RelayPath] = {p.key: p for p in (
    RelayPath("direct", "direct (no relay)", "direct"),
    RelayPath("socat", "socat (defaults, 8 KiB buffer)", "socat"),
    RelayPath("socat_1m", "socat -b 1048576", "socat", ("-b", "1048576")),
    RelayPath("splice", "splice relay (bench/splice_floor.py)", "splice"),
    RelayPath("bare", "bare relay (uvloop BufferedProtocol)", "bare"),
    RelayPath("migproxy_dry_run", "migproxy --dry-run", "migproxy", ("--dry-run",), "dry_run"),
    RelayPath("migproxy_none", "migproxy --profile none", "migproxy", ("--profile", "none"),
          "none"),
    RelayPath("migproxy", "migproxy (rewrite, default profile)", "migproxy", (), "rewrite"),
    RelayPath("migproxy_splice", "migproxy rewrite, --ram-pump splice", "migproxy",
              ("--ram-pump", "splice"), "rewrite"),
    RelayPath("migproxy_loop", "migproxy rewrite, --ram-pump off (event loop)", "migproxy",
              ("--ram-pump", "off"), "rewrite"),
)}


class Relay:
    """A running relay (or the direct path) in front of ``target_port``."""

    def __init__(self, path: RelayPath, target_port: int, log_dir: Path,
                 extra: tuple[str, ...] = ()) -> None:
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        if path.kind == "direct":
            self.port = target_port
            return
        self.port = free_port()
        target = f"{HOST}:{target_port}"
        if path.kind == "socat":
            argv = ["socat", *path.args, f"TCP-LISTEN:{self.port},bind={HOST},reuseaddr,fork",
                    f"TCP:{target}"]
        elif path.kind == "bare":
            argv = [sys.executable, "-m", "testkit.bare_relay", "--listen",
                    f"{HOST}:{self.port}", "--target", target]
        elif path.kind == "splice":
            argv = [sys.executable, "-m", "bench.splice_floor", "--listen",
                    f"{HOST}:{self.port}", "--target", target]
        else:
            argv = [sys.executable, "-m", "migproxy", "--listen", f"{HOST}:{self.port}",
                    "--target", target, "--metrics", "", "--log-format", "json",
                    *path.args, *extra]
        self.log_path = log_dir / f"{path.key}-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.proc = popen(argv, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
        try:
            wait_listening(self.port, 20, alive=lambda: self.proc is not None
                                 and self.proc.poll() is None)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def cpu(self) -> float | None:
        """CPU seconds of the relay (and, for socat, of its reaped per-connection children)."""
        if self.pid is None:
            return None
        deadline = time.monotonic() + 3
        while netio.has_children(self.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            return netio.cpu_seconds(self.pid)
        except OSError:
            return None

    def log_tail(self, n: int = 3000) -> str:
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def start_sender(port: int, shape_json: str, repeats: int, mode: str = "bulk",
                 pause: float = 0.15, start_at: float | None = None) -> subprocess.Popen[str]:
    at = [] if start_at is None else ["--start-at", repr(start_at)]
    return popen([sys.executable, "-m", "bench.netio", "send", str(port), shape_json,
                  str(repeats), "--mode", mode, "--pause", str(pause), *at],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_sender(p: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(p)
        raise TimeoutError(f"the sender did not finish in {timeout:.0f}s") from None
    if p.returncode != 0:
        raise RuntimeError(f"the sender failed ({p.returncode}): {err[-2000:]}")
    res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return res


def socat_available() -> bool:
    return shutil.which("socat") is not None


SOCAT_PATHS = ("socat", "socat_1m")
SOCAT_MISSING = "socat is not installed (apt-get install socat)"


def runnable_paths(keys: list[str], notes: list[str]) -> tuple[list[str], dict[str, str]]:
    """``keys`` without the socat paths when socat is missing (then said once in
    ``notes``), and the skipped ones with the reason."""
    if socat_available():
        return keys, {}
    note = f"{SOCAT_MISSING}: the socat paths were skipped"
    if note not in notes:
        notes.append(note)
    return ([k for k in keys if k not in SOCAT_PATHS],
            {k: SOCAT_MISSING for k in keys if k in SOCAT_PATHS})


def bench_lab(*versions: str) -> tuple[Any, str | None]:
    """The QEMU lab (``migproxy.lab``, the repository first on the path), and why these
    versions cannot run in it (None: they can)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from migproxy.lab import get_lab

    lab = get_lab()
    return lab, lab.unavailable_reason(*versions)


def log_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="migproxy-bench-"))
