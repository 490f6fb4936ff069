"""A small synchronous QMP client (JSON lines), stdlib only.

It speaks QMP over a unix socket (``-qmp unix:PATH,server=on``: :meth:`QMPClient.connect`,
what the QEMU lab uses) or over a QEMU's standard input and output (``-qmp stdio``:
:meth:`QMPClient.over_pipes`, what ``migproxy manifest capture`` uses). Either way it reads
the greeting, negotiates capabilities, runs commands and keeps the asynchronous events that
arrive meanwhile.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

from migproxy.stream.errors import MigproxyError


class QMPError(MigproxyError):
    """QEMU answered a command with an error."""

    def __init__(self, command: str, error: dict[str, Any]) -> None:
        self.command = command
        self.error = error
        self.error_class: str = str(error.get("class", ""))
        self.desc: str = str(error.get("desc", ""))
        super().__init__(f"QMP {command}: {self.error_class}: {self.desc}")


class QMPConnectionError(MigproxyError):
    """The QMP socket could not be reached or was closed."""


class _Link(Protocol):
    def send(self, data: bytes) -> None: ...

    def recv(self, timeout: float) -> bytes | None:
        """Bytes read (b"": closed), or None when nothing came within ``timeout``."""

    def close(self) -> None: ...


class _SocketLink:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise QMPConnectionError(f"QMP send failed: {exc}") from exc

    def recv(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return None
        except OSError as exc:
            raise QMPConnectionError(f"QMP read failed: {exc}") from exc

    def close(self) -> None:
        self.sock.close()


class _PipeLink:
    """QMP on a QEMU's standard input and output (the process owns the pipes)."""

    def __init__(self, to_qemu: IO[bytes], from_qemu: IO[bytes]) -> None:
        self.to_qemu = to_qemu
        self.from_qemu = from_qemu

    def send(self, data: bytes) -> None:
        try:
            self.to_qemu.write(data)
            self.to_qemu.flush()
        except OSError as exc:
            raise QMPConnectionError(f"QMP send failed: {exc}") from exc

    def recv(self, timeout: float) -> bytes | None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.from_qemu, selectors.EVENT_READ)
            if not sel.select(timeout):
                return None
        try:
            return os.read(self.from_qemu.fileno(), 65536)
        except OSError as exc:
            raise QMPConnectionError(f"QMP read failed: {exc}") from exc

    def close(self) -> None:
        pass


class QMPClient:
    """Speaks QMP: greeting, ``qmp_capabilities``, commands.

    Asynchronous events that arrive while waiting for a reply are kept in
    :attr:`events` (oldest first) and never confused with replies.
    """

    def __init__(self, path: str = "") -> None:
        self.path = path
        self.greeting: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self._link: _Link | None = None
        self._buf = b""
        self._next_id = 0

    # -- connection -----------------------------------------------------
    def connect(self, timeout: float = 10.0, alive: Callable[[], bool] | None = None) -> QMPClient:
        """Connect to the unix socket ``path`` (retrying until it accepts), read the
        greeting, negotiate.

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
        self._link = _SocketLink(sock)
        return self._negotiate(deadline)

    @classmethod
    def over_pipes(cls, to_qemu: IO[bytes], from_qemu: IO[bytes],
                   timeout: float = 10.0) -> QMPClient:
        """A client of a QEMU started with ``-qmp stdio`` (``to_qemu``: its standard input,
        ``from_qemu``: its standard output), greeting read and capabilities negotiated."""
        client = cls()
        client._link = _PipeLink(to_qemu, from_qemu)
        return client._negotiate(time.monotonic() + timeout)

    def _negotiate(self, deadline: float) -> QMPClient:
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
        if self._link is not None:
            try:
                self._link.close()
            finally:
                self._link = None

    @property
    def connected(self) -> bool:
        return self._link is not None

    # -- commands -------------------------------------------------------
    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> Any:
        """Run one command and return its ``return`` value; raise :class:`QMPError`."""
        if self._link is None:
            raise QMPConnectionError("QMP not connected")
        self._next_id += 1
        cmd_id = f"migproxy-{self._next_id}"
        msg: dict[str, Any] = {"execute": command, "id": cmd_id}
        if arguments:
            msg["arguments"] = arguments
        self._link.send(json.dumps(msg).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._next_reply(deadline, f"QMP {command}: no reply within {timeout:.1f}s")
            if reply is None or reply.get("id") != cmd_id:
                continue  # an event, or a reply to an earlier command that timed out
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
            self._next_reply(deadline, f"no QMP event {name} within {timeout:.1f}s")

    def _next_reply(self, deadline: float, late: str) -> dict[str, Any] | None:
        """Read one message before ``deadline`` (else TimeoutError(``late``)): a reply, or
        None for an event (kept in :attr:`events`)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(late)
        msg = self._read_message(remaining)
        if "event" in msg:
            self.events.append(msg)
            return None
        return msg

    # -- framing --------------------------------------------------------
    def _read_message(self, timeout: float) -> dict[str, Any]:
        assert self._link is not None
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" not in self._buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("QMP read timed out")
                chunk = self._link.recv(remaining)
                if chunk is None:
                    continue
                if not chunk:
                    raise QMPConnectionError("QMP connection closed by QEMU")
                self._buf += chunk
            line, self._buf = self._buf.split(b"\n", 1)
            if line.strip():
                result: dict[str, Any] = json.loads(line)
                return result
