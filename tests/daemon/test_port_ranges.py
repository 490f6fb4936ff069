"""Range routes through the daemon over real loopback TCP: each listening port of a range
relays to its own target port; accept order stays per port, admission per route; one
``listening`` line names the range; and the port check libvirt makes sees a port the
daemon listens on as taken (the libvirt section of docs/operations.md relies on it)."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import structlog.testing

from migproxy.daemon.load import load_config
from migproxy.daemon.metrics import Metrics
from migproxy.daemon.server import Daemon, StartError
from migproxy.lab import free_port_range
from tests.daemon.loopback import (
    REWRITTEN,
    STREAM,
    Target,
    cli_args,
    reader_closed,
    received,
    sample,
    send_all,
    stop_daemon,
)

pytestmark = pytest.mark.asyncio
PORTS = 2


@pytest_asyncio.fixture
async def targets() -> AsyncIterator[list[Target]]:
    """Two destinations on consecutive loopback ports (like two QEMU ``-incoming``)."""
    first = free_port_range(PORTS)
    ts = [Target() for _ in range(PORTS)]
    for i, t in enumerate(ts):
        await t.start(first + i)
    yield ts
    for t in ts:
        t.close()


def _target_range(ts: list[Target]) -> str:
    ports = [t.server.sockets[0].getsockname()[1] for t in ts if t.server is not None]
    return f"127.0.0.1:{ports[0]}-{ports[-1]}"


async def _range_daemon(ts: list[Target], **kw: object) -> tuple[Daemon, int]:
    """A daemon with one route from a free listen range to the targets' range; returns it
    and the listen range's first port."""
    first = free_port_range(PORTS)
    cfg = load_config(None, cli_args(listen=f"127.0.0.1:{first}-{first + PORTS - 1}",
                                     target=_target_range(ts), **kw))
    d = Daemon(cfg, Metrics())
    await d.start()
    return d, first


async def _stop(d: Daemon, ts: list[Target]) -> None:
    for t in ts:  # the destinations close first, as QEMU does when it is done
        t.close()
    await stop_daemon(d)


async def _wait_pairs(d: Daemon, n: int) -> None:
    """Until the daemon has accepted (and admitted) ``n`` connections."""
    async def wait() -> None:
        while len(d.registry.pairs) < n:
            d.registry.changed.clear()
            await d.registry.changed.wait()
    await asyncio.wait_for(wait(), 10)


async def test_each_port_relays_to_the_same_offset_of_the_target_range(
        targets: list[Target]) -> None:
    with structlog.testing.capture_logs() as logs:
        d, first = await _range_daemon(targets)
    try:
        assert sorted(p for _, p in d.listen_addresses()) == [first, first + 1]
        listening = [e for e in logs if e["event"] == "listening"]
        assert len(listening) == 1  # one line for the range, not one per port
        assert listening[0]["listen"] == [f"127.0.0.1:{first}-{first + 1}"]
        assert listening[0]["target"] == _target_range(targets)
        # Two migrations at once, one on each port.
        await asyncio.gather(send_all(first, STREAM), send_all(first + 1, STREAM))
        assert await received(targets[0]) == REWRITTEN
        assert await received(targets[1]) == REWRITTEN
        assert [len(t.conns) for t in targets] == [1, 1]
        assert sample(d, "migproxy_connections_classified_total", channel="main") == 2
    finally:
        await _stop(d, targets)


async def test_accept_order_is_per_listening_port(targets: list[Target]) -> None:
    """A silent connection on the second port is not pulled ahead of a migration on the
    first (another port is another migration), and neither is one on the first port that
    came first from the same host: a connection that has sent nothing never reaches the
    destination before the main channel (M1; the rules are tested in test_port.py)."""
    d, first = await _range_daemon(targets)
    try:
        _r1, w_other = await asyncio.open_connection("127.0.0.1", first + 1)
        _r2, w_same = await asyncio.open_connection("127.0.0.1", first)
        await _wait_pairs(d, 2)
        await send_all(first, STREAM)
        assert await received(targets[0], 0) == REWRITTEN  # the main channel first
        assert len(targets[0].conns) == 1  # the earlier silent one stayed where it was
        assert targets[1].conns == []  # the other port's connection stayed where it was
        w_same.close()
        w_other.close()
    finally:
        await _stop(d, targets)


async def test_admission_limits_cover_the_whole_range(targets: list[Target]) -> None:
    d, first = await _range_daemon(targets, max_connections=1)
    try:
        _r1, w1 = await asyncio.open_connection("127.0.0.1", first)
        await _wait_pairs(d, 1)
        r2, w2 = await asyncio.open_connection("127.0.0.1", first + 1)
        assert await reader_closed(r2)
        assert sample(d, "migproxy_connections_refused_total", reason="route_full") == 1
        assert all(t.conns == [] for t in targets)
        w1.close()
        w2.close()
    finally:
        await _stop(d, targets)


async def test_a_port_of_the_range_that_is_taken_fails_the_start(
        targets: list[Target]) -> None:
    first = free_port_range(PORTS)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first + 1))
        taken.listen()
        cfg = load_config(None, cli_args(listen=f"127.0.0.1:{first}-{first + 1}",
                                         target=_target_range(targets)))
        d = Daemon(cfg, Metrics())
        with pytest.raises(StartError, match=f"cannot listen on 127.0.0.1:{first + 1} "
                           rf"\(route 127.0.0.1:{first}-{first + 1}\)"):
            await d.start()
        assert d.servers == []
    with socket.socket() as s:  # the first port was closed again
        s.bind(("127.0.0.1", first))


async def test_libvirts_port_check_finds_a_listened_port_taken(targets: list[Target]) -> None:
    """libvirt picks an incoming migration's port by binding the wildcard address with
    SO_REUSEADDR (virPortAllocatorAcquire). A port the daemon listens on, even on one
    address only, fails that bind: libvirt's own allocation cannot hand out ports of a
    range migproxy listens on (hence explicit ports in the migrate URI)."""
    d, first = await _range_daemon(targets)
    try:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError, match="in use") as ei:
                probe.bind(("0.0.0.0", first))
        assert ei.value.errno == errno.EADDRINUSE
    finally:
        await _stop(d, targets)
