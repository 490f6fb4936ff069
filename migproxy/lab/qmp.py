"""A tiny synchronous QMP client (JSON lines over a unix socket), stdlib only."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any


class QMPError(Exception):
    """QEMU answered a command with an error."""

    def __init__(self, command: str, error: dict[str, Any]) -> None:
        self.command = command
        self.error = error
        self.error_class: str = str(error.get("class", ""))
        self.desc: str = str(error.get("desc", ""))
        super().__init__(f"QMP {command}: {self.error_class}: {self.desc}")


class QMPConnectionError(Exception):
    """The QMP socket could not be reached or was closed."""


class QMPClient:
    """Speaks QMP on a unix socket: greeting, ``qmp_capabilities``, commands.

    Asynchronous events that arrive while waiting for a reply are kept in
    :attr:`events` (oldest first) and never confused with replies.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.greeting: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._buf = b""
        self._next_id = 0

    # -- connection -----------------------------------------------------
    def connect(self, timeout: float = 10.0, alive: Callable[[], bool] | None = None) -> QMPClient:
        """Connect (retrying until the socket accepts), read the greeting, negotiate.

        ``alive`` is polled between attempts; when it returns False the wait
        stops early (the QEMU process died before opening its socket).
        """
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
                break
            except OSError as exc:
                sock.close()
                last = exc
            if alive is not None and not alive():
                raise QMPConnectionError(f"QEMU exited before QMP was up ({self.path})")
            if time.monotonic() >= deadline:
                raise QMPConnectionError(f"cannot connect to QMP {self.path}: {last}")
            time.sleep(0.02)
        self._sock = sock
        msg = self._read_message(max(0.5, deadline - time.monotonic()))
        while "event" in msg and "QMP" not in msg:
            # A client that connects while QEMU starts may see an event (RESUME of a guest
            # started without -S) before the greeting: keep it, read on.
            self.events.append(msg)
            msg = self._read_message(max(0.5, deadline - time.monotonic()))
        if "QMP" not in msg:
            raise QMPConnectionError(f"unexpected QMP greeting: {msg!r}")
        self.greeting = msg
        self.execute("qmp_capabilities", timeout=max(1.0, deadline - time.monotonic()))
        return self

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    # -- commands -------------------------------------------------------
    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> Any:
        """Run one command and return its ``return`` value; raise :class:`QMPError`."""
        if self._sock is None:
            raise QMPConnectionError("QMP not connected")
        self._next_id += 1
        cmd_id = f"lab-{self._next_id}"
        msg: dict[str, Any] = {"execute": command, "id": cmd_id}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            raise QMPConnectionError(f"QMP send failed: {exc}") from exc
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"QMP {command}: no reply within {timeout:.1f}s")
            reply = self._read_message(remaining)
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") != cmd_id:
                continue  # a reply to an earlier command that timed out
            if "error" in reply:
                raise QMPError(command, reply["error"])
            return reply.get("return")

    def wait_event(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """Return (and remove) the first event called ``name``, waiting if needed."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("event") == name:
                    return self.events.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no QMP event {name} within {timeout:.1f}s")
            msg = self._read_message(remaining)
            if "event" in msg:
                self.events.append(msg)

    # -- framing --------------------------------------------------------
    def _read_message(self, timeout: float) -> dict[str, Any]:
        assert self._sock is not None
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" not in self._buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("QMP read timed out")
                self._sock.settimeout(remaining)
                try:
                    chunk = self._sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError as exc:
                    raise QMPConnectionError(f"QMP read failed: {exc}") from exc
                if not chunk:
                    raise QMPConnectionError("QMP connection closed by QEMU")
                self._buf += chunk
            line, self._buf = self._buf.split(b"\n", 1)
            if line.strip():
                result: dict[str, Any] = json.loads(line)
                return result
