"""A bounded hostile soak through one daemon, over loopback: idle connections from
another host, hostile main channels (a RAM block flood, a 20 MiB description, a deeply
nested description, a byte trickle, garbage) and one real migration at the same time.

Asserted: the real migration is rewritten exactly; no hostile channel stops the others;
the daemon's traced memory stays bounded while it runs and comes back down after. Nothing
here is a timing assertion (every wait has a generous cap).
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import pytest

from testkit.hostile import MiB, hostile_streams, send_and_half_close
from tests.daemon.loopback import (
    REWRITTEN,
    STREAM,
    Target,
    listen_port,
    sample,
    start_daemon,
    stop_daemon,
    wait_pairs_closed,
)

pytestmark = pytest.mark.asyncio

IDLE = 300


async def _trickle(port: int, data: bytes, stop: asyncio.Event) -> None:
    _r, w = await asyncio.open_connection("127.0.0.1", port)
    for b in data:
        if stop.is_set():
            break
        w.write(bytes((b,)))
        await asyncio.sleep(0.002)
    w.close()


class LagProbe:
    """How late a 10 ms sleep on the daemon's loop wakes up, at worst, while it runs."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - t - 0.01)

    def stop(self) -> float:
        self._task.cancel()
        return self.worst


# The event loop may be late by this much at worst during the soak: a feed() that blocks
# the loop (the issue measured 5.8 s for a 60 MiB description) would stall every migration.
LAG_BOUND = 1.0  # seconds; generous for a loaded CI machine, far below a stall


async def test_hostile_soak_keeps_a_real_migration_exact_and_memory_bounded() -> None:
    hostile = hostile_streams()
    lag = LagProbe()
    target = Target()
    d = await start_daemon(await target.start())
    port = listen_port(d)
    idle = []
    stop = asyncio.Event()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(IDLE):  # from another host: never pulled into the migration's order
            idle.append(await asyncio.open_connection("127.0.0.1", port,
                                                      local_addr=("127.0.0.2", 0)))
        trickle = asyncio.ensure_future(_trickle(port, STREAM[:3000], stop))
        await asyncio.gather(*(send_and_half_close(port, data) for data in hostile.values()))
        await send_and_half_close(port, STREAM)  # the real migration, last
        # Every channel that sent anything reaches the target; find the real one.
        async def real() -> bytes:
            while True:
                for c in target.conns:
                    if c.eof.is_set() and bytes(c.data[:8]) == STREAM[:8] and \
                            len(c.data) == len(REWRITTEN) and bytes(c.data) == REWRITTEN:
                        return bytes(c.data)
                await asyncio.sleep(0.05)
        assert await asyncio.wait_for(real(), 60) == REWRITTEN
        peak = tracemalloc.get_traced_memory()[1] - base
        # The 20 MiB description is held until its source closes (then relayed untouched:
        # never parsed) and the target stand-in keeps what it received: well under 160 MiB.
        assert peak < 160 * MiB, peak / MiB
        assert sample(d, "migproxy_passthrough_total", reason="format_error") == 1  # flood
        assert sample(d, "migproxy_connections_classified_total", channel="other") == 1  # garbage
        assert sample(d, "migproxy_passthrough_total", reason="no_description") >= 1
        stop.set()
        await trickle
        for _r, w in idle:
            w.close()
        for c in target.conns:
            if c.writer is not None:
                c.writer.close()
        await wait_pairs_closed(d, timeout=60)
        worst = lag.stop()
        assert worst < LAG_BOUND, worst
        target.conns.clear()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] - base
        assert after < 8 * MiB, after / MiB  # everything given back
    finally:
        lag.stop()
        tracemalloc.stop()
        stop.set()
        for _r, w in idle:
            w.close()
        await stop_daemon(d, target)
