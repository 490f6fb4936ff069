"""Loopback TCP for tests and benchmarks."""

from __future__ import annotations

import socket


def tcp_pair(bufsize: int | None = None) -> tuple[socket.socket, socket.socket]:
    """Two ends of one loopback TCP connection; ``bufsize``: fixed socket buffers (set
    before the connection, so no autotuning grows them)."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        for s in (srv, a):
            if bufsize is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
        a.connect(srv.getsockname())
        b, _ = srv.accept()
    return a, b
