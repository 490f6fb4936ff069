"""The two attacks the port state closes (:mod:`migproxy.daemon.port`), through real
sockets: M1 (a silent connection from the source's own address, opened just before the
migration) and M2 (idle connections filling the admission limits). The rules themselves
are tested without sockets in test_port.py."""

from __future__ import annotations

import asyncio

import pytest

from tests.daemon.loopback import (
    REWRITTEN,
    STREAM,
    Target,
    listen_port,
    reader_closed,
    received,
    sample,
    send_all,
    start_daemon,
    stop_daemon,
)

pytestmark = pytest.mark.asyncio


async def test_m1_a_silent_connection_from_the_source_never_reaches_the_target_first(
        target: Target) -> None:
    d = await start_daemon(await target.start())
    try:
        port = listen_port(d)
        _rs, scanner = await asyncio.open_connection("127.0.0.1", port)  # the same address
        while len(d.registry.pairs) < 1:
            await asyncio.sleep(0.01)
        await send_all(port, STREAM)  # the migration, well within the accept-order window
        assert await received(target, 0) == REWRITTEN  # its main channel is the first
        assert len(target.conns) == 1  # the scanner never reached the target
        scanner.close()
    finally:
        await stop_daemon(d, target)


async def test_m2_idle_connections_at_the_limit_do_not_refuse_a_migration(
        target: Target) -> None:
    d = await start_daemon(await target.start(), max_per_peer=5)
    try:
        port = listen_port(d)
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        while len(d.registry.pairs) < 5:
            await asyncio.sleep(0.01)
        await send_all(port, STREAM)  # the address is full: the migration still goes
        assert await received(target, 0) == REWRITTEN
        assert await reader_closed(idle[0][0])  # the oldest idle one made room
        assert sample(d, "migproxy_connections_refused_total", reason="evicted") == 1
        assert sample(d, "migproxy_connections_refused_total", reason="peer_full") == 0
        for _r, w in idle:
            w.close()
    finally:
        await stop_daemon(d, target)
