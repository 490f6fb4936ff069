"""One QEMU process of the lab running the ``tick`` witness guest, driven over QMP."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from migproxy.tools.qmp import QMPClient, QMPConnectionError, QMPError

_TICK_RE = re.compile(r"^tick (\d+)\r?$")

# query-migrate states after which nothing more happens.
MIGRATION_FINAL_STATES = frozenset({"completed", "failed", "cancelled"})

# Unix socket paths are limited to 107 bytes on Linux.
_SUN_PATH_MAX = 107


class QemuError(Exception):
    """A QEMU process did not behave as the lab expected."""


class QemuExited(QemuError):
    """The QEMU process exited while the harness still needed it."""

    def __init__(self, message: str, returncode: int | None, stderr: str) -> None:
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{message} (exit code {returncode}): {stderr.strip()[-2000:]}")


@dataclass(frozen=True)
class QemuVersion:
    """One QEMU binary of the lab, as described in lab.json."""

    key: str
    """Lab key: "7.2", "10.0.2", "10.0.13" or "11.1"."""
    version: str
    """Exact upstream version, e.g. "11.1.3"."""
    version_line: str
    argv: tuple[str, ...]
    """Command prefix that runs qemu-system-aarch64 (may start with chroot ROOT)."""
    env: Mapping[str, str] = field(default_factory=dict)
    chroot: str | None = None
    """The root the binary runs in, or None for host binaries."""

    @property
    def default_machine(self) -> str:
        """A versioned virt machine type that exists on this version (virt-10.0 on 10+)."""
        major, minor = self.version.split(".")[:2]
        return "virt-7.2" if (int(major), int(minor)) < (10, 0) else "virt-10.0"


def parse_ticks(text: str) -> list[int]:
    """Values of the complete ``tick N`` lines of a serial log, in order."""
    lines = text.split("\n")[:-1]  # the last element is an unfinished line (or "")
    out: list[int] = []
    for line in lines:
        m = _TICK_RE.match(line)
        if m:
            out.append(int(m.group(1)))
    return out


def last_counter(text: str) -> int | None:
    """The guest counter value at the end of a serial log.

    The guest increments its counter before printing ``tick N``; when the
    log ends in the middle of such a line (the VM stopped while printing),
    the counter is already one more than the last complete line.  The
    destination of a migration then finishes that line and its first
    complete line is the counter + 1, so this is the number to compare with.
    """
    ticks = parse_ticks(text)
    last = ticks[-1] if ticks else None
    tail = text.rsplit("\n", 1)[-1]
    if tail and "tick ".startswith(tail[:5]):
        return (last or 0) + 1
    return last


class Qemu:
    """A qemu-system-aarch64 process running the tick guest.

    Files (QMP socket, serial log, stderr) live in a private run directory
    below the lab's shared work directory, so the same paths work for host
    and chrooted binaries.  Use as a context manager, or call :meth:`close`;
    the process is always killed.  The run directory is deleted on close
    unless ``keep`` is set, the context exits with an exception, or
    ``MIGPROXY_LAB_KEEP=1``.
    """

    def __init__(
        self,
        version: QemuVersion,
        *,
        kernel: str,
        run_root: str | os.PathLike[str],
        machine: str | None = None,
        cpu: str = "cortex-a57",
        smp: int = 1,
        memory: str = "64M",
        incoming: str | None = None,
        paused: bool = False,
        extra_args: Sequence[str] = (),
        name: str = "vm",
        keep: bool = False,
    ) -> None:
        self.version = version
        self.kernel = kernel
        self.machine = machine or version.default_machine
        self.cpu = cpu
        self.smp = smp
        self.memory = memory
        self.incoming = incoming
        self.paused = paused
        self.extra_args = tuple(extra_args)
        self.keep = keep or os.environ.get("MIGPROXY_LAB_KEEP") == "1"
        Path(run_root).mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{name}-{version.key}")
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{safe}-", dir=run_root))
        self.qmp_path = self.run_dir / "qmp.sock"
        self.serial_path = self.run_dir / "serial.log"
        self.stderr_path = self.run_dir / "stderr.log"
        self.stdout_path = self.run_dir / "stdout.log"
        if len(str(self.qmp_path).encode()) > _SUN_PATH_MAX:
            raise QemuError(f"QMP socket path too long for AF_UNIX: {self.qmp_path}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp = QMPClient(str(self.qmp_path))
        self.started_at = 0.0

    # -- lifecycle ----------------------------------------------------------
    @property
    def argv(self) -> list[str]:
        """The full command line."""
        args = [
            *self.version.argv,
            "-M", self.machine,
            "-cpu", self.cpu,
            "-smp", str(self.smp),
            "-m", self.memory,
            "-nographic", "-nodefaults", "-no-user-config",
            "-serial", f"file:{self.serial_path}",
            "-kernel", self.kernel,
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]  # fmt: skip
        if self.paused:
            args.append("-S")
        if self.incoming is not None:
            args += ["-incoming", self.incoming]
        args += self.extra_args
        return args

    def start(self, timeout: float = 20.0) -> Qemu:
        """Start the process and connect QMP. Raises :class:`QemuExited` on early death."""
        if self.proc is not None:
            raise QemuError("already started")
        env = {**os.environ, **self.version.env}
        (self.run_dir / "cmdline").write_text(" ".join(self.argv) + "\n")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        try:
            self.qmp.connect(timeout=timeout, alive=self.alive)
        except (QMPConnectionError, TimeoutError) as exc:
            # QEMU closing the socket usually means it is exiting: let it finish.
            if isinstance(exc, QMPConnectionError):
                self.wait_exit(2)
            if not self.alive():
                raise QemuExited("QEMU exited at start", self.returncode, self.stderr()) from exc
            self.close()
            raise
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def wait_exit(self, timeout: float) -> int | None:
        """Wait for the process to exit on its own; return its exit code or None."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL)."""
        self.qmp.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        except ProcessLookupError:
            pass

    def close(self, keep: bool | None = None) -> None:
        """Kill the process and remove the run directory (unless kept)."""
        self.kill()
        if not (self.keep if keep is None else keep):
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> Qemu:
        if self.proc is None:
            try:
                self.start()
            except BaseException:
                self.close(keep=True)
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(keep=True if exc_type is not None else None)

    def __repr__(self) -> str:
        return (
            f"<Qemu {self.version.key} {self.machine} {self.cpu} smp{self.smp} "
            f"pid={self.pid} dir={self.run_dir}>"
        )

    # -- output ---------------------------------------------------------------
    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def serial(self) -> str:
        try:
            return self.serial_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def ticks(self) -> list[int]:
        """Values of the complete ``tick N`` lines printed so far."""
        return parse_ticks(self.serial())

    def last_counter(self) -> int | None:
        """The guest's counter as far as the serial log shows (see :func:`last_counter`)."""
        return last_counter(self.serial())

    def wait_ticks(self, n: int, timeout: float = 10.0) -> list[int]:
        """Wait until at least ``n`` complete tick lines were printed; return all ticks."""
        deadline = time.monotonic() + timeout
        while True:
            ticks = self.ticks()
            if len(ticks) >= n:
                return ticks
            if not self.alive():
                raise QemuExited(
                    f"QEMU exited after {len(ticks)} ticks", self.returncode, self.stderr()
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self!r}: {len(ticks)} of {n} ticks after {timeout:.1f}s; "
                    f"serial tail {self.serial()[-200:]!r}"
                )
            time.sleep(0.05)

    # -- QMP helpers ------------------------------------------------------------
    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> Any:
        try:
            return self.qmp.execute(command, arguments, timeout=timeout)
        except QMPConnectionError as exc:
            if self.wait_exit(0.5) is not None:
                raise QemuExited(
                    f"QEMU exited during {command}", self.returncode, self.stderr()
                ) from exc
            raise

    def status(self) -> str:
        """The run state from query-status ("running", "paused", "postmigrate", ...)."""
        return str(self.execute("query-status")["status"])

    def cont(self) -> None:
        self.execute("cont")

    def stop(self) -> None:
        self.execute("stop")

    def quit(self) -> None:
        with contextlib.suppress(QMPConnectionError, QemuExited):
            self.execute("quit", timeout=5)
        self.wait_exit(5)

    def set_capabilities(self, capabilities: Mapping[str, bool]) -> None:
        if capabilities:
            caps = [{"capability": k, "state": bool(v)} for k, v in capabilities.items()]
            self.execute("migrate-set-capabilities", {"capabilities": caps})

    def set_parameters(self, parameters: Mapping[str, Any]) -> None:
        if parameters:
            self.execute("migrate-set-parameters", dict(parameters))

    def migrate(
        self,
        uri: str,
        capabilities: Mapping[str, bool] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        """Set capabilities/parameters, then start an outgoing migration to ``uri``."""
        self._configured("migrate", uri, capabilities, parameters)

    def migrate_incoming(
        self,
        uri: str,
        capabilities: Mapping[str, bool] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        """For ``-incoming defer``: set capabilities/parameters, then listen on ``uri``."""
        self._configured("migrate-incoming", uri, capabilities, parameters)

    def _configured(self, command: str, uri: str, capabilities: Mapping[str, bool] | None,
                    parameters: Mapping[str, Any] | None) -> None:
        self.set_capabilities(capabilities or {})
        self.set_parameters(parameters or {})
        self.execute(command, {"uri": uri})

    def query_migrate(self) -> dict[str, Any]:
        result: dict[str, Any] = self.execute("query-migrate")
        return result

    def wait_migration(self, timeout: float = 60.0, poll: float = 0.05) -> dict[str, Any]:
        """Poll query-migrate until completed/failed/cancelled; return the final dict.

        Meant for the source.  Raises :class:`QemuExited` if the process dies.
        """
        deadline = time.monotonic() + timeout
        info: dict[str, Any] = {}
        while True:
            info = self.query_migrate()
            if info.get("status") in MIGRATION_FINAL_STATES:
                return info
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self!r}: migration not finished after {timeout}s: {info}")
            time.sleep(poll)

    def wait_incoming(self, timeout: float = 60.0, poll: float = 0.05) -> dict[str, Any]:
        """Wait for an incoming migration to end; never raises on a failed load.

        Returns the destination's final query-migrate dict with "status"
        "completed", or, when QEMU exited (a failed load makes QEMU exit with
        the reason on stderr), ``{"status": "failed", "exited": True,
        "returncode": N, "error-desc": stderr}``.  While the load is still in
        progress the destination reports "setup"/"active"; with ``-S`` it
        then stays paused, without it the guest starts running by itself.
        """
        deadline = time.monotonic() + timeout
        info: dict[str, Any] = {}
        while True:
            try:
                info = self.query_migrate()
            except (QemuExited, QMPConnectionError, QMPError):
                info = {}
            if not self.alive():
                self.wait_exit(1)
                return {
                    "status": "failed",
                    "exited": True,
                    "returncode": self.returncode,
                    "error-desc": self.stderr().strip(),
                    "last-info": info,
                }
            if info.get("status") in MIGRATION_FINAL_STATES:
                if info["status"] != "completed":
                    # Give QEMU a moment to print its error and exit.
                    self.wait_exit(2)
                    info.setdefault("error-desc", self.stderr().strip())
                return info
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self!r}: incoming migration not done after {timeout}s: "
                    f"{info}; stderr {self.stderr()[-500:]!r}"
                )
            time.sleep(poll)
