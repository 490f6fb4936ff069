"""systemd readiness notification (``Type=notify``) without libsystemd.

Sends a datagram to ``$NOTIFY_SOCKET`` (a filesystem path or an abstract socket starting
with ``@``). Does nothing when the variable is unset.
"""

from __future__ import annotations

import os
import socket


def notify(state: str, env: dict[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``); return whether a notification was sent."""
    addr = (env if env is not None else os.environ).get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(addr)
            s.sendall(state.encode("utf-8"))
        except OSError:
            return False
    return True
