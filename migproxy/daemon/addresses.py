"""``host:port`` text, with IPv6 hosts in brackets (``[::1]:4444``)."""

from __future__ import annotations

from typing import Any


def join_host_port(host: str, port: int | str) -> str:
    """``port`` may be a range's text (``49152-49215``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_host_port(addr: Any) -> str | None:
    """A socket address (``getsockname()``/``getpeername()`` tuple) as text; None stays
    None and anything else (a Unix socket path) is shown as it is."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return join_host_port(str(addr[0]), int(addr[1]))
    return None if addr is None else str(addr)
