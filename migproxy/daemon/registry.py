"""The live pairs of a daemon (:class:`PairRegistry`): the sans-IO state of each listening
port, the admission of each route, the TLS handshake budget of the source addresses, and
the one queue through which session and port commands are carried out (a command that
leads to another session's commands appends them, and nothing runs inside another pair's
commands)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Protocol

from migproxy.daemon.handshake_budget import DEFAULT_FAILURES, HandshakeBudget
from migproxy.daemon.port import Connect, PortCommand, PortState, RouteAdmission, WakeAt
from migproxy.daemon.pump import PumpPath, RamPumps
from migproxy.daemon.session import Command, Session
from migproxy.daemon.splice import KernelRelays
from migproxy.stream.policy import HoldBudget

if TYPE_CHECKING:
    from migproxy.daemon.config import Route

PortKey = tuple[int, int]  # (id of the route, offset of the listening port in its range)


class Member(Protocol):
    """What the registry needs of a pair."""

    conn: int
    admitted: bool
    port: PortState
    session: Session

    def execute(self, commands: list[Command]) -> None: ...

    def port_command(self, c: PortCommand, now: float) -> None: ...

    def abort_for_shutdown(self) -> None: ...


class SlotHold:
    """Holds a port's connect slot from outside, like a lock (for tests of the executor:
    the next connection of the port stays CONNECTING meanwhile)."""

    def __init__(self, registry: PairRegistry, port: PortState) -> None:
        self.registry = registry
        self.port = port

    async def acquire(self) -> bool:
        while not self.port.take_slot():
            await asyncio.sleep(0.005)
        return True

    def release(self) -> None:
        self.registry.execute_port(self.port, self.port.release_slot(time.monotonic()))


class PairRegistry:
    """The live pairs of a daemon; the sans-IO state of each listening port (one
    migration's channels all arrive on one port of a route) and the admission of each
    route (for a range: of all its ports together); the one queue through which session
    and port commands are carried out."""

    def __init__(self, hold_budget: HoldBudget | None = None,
                 kernel_relays: KernelRelays | None = None,
                 handshakes: HandshakeBudget | None = None,
                 ram_pumps: RamPumps | None = None) -> None:
        self.hold_budget = hold_budget  # shared by every pair's engine
        self.kernel_relays = kernel_relays or KernelRelays(0)
        self.ram_pumps = ram_pumps or RamPumps(PumpPath.OFF, 0)
        # failed TLS handshakes per source address, over every route
        self.handshakes = handshakes if handshakes is not None else \
            HandshakeBudget(DEFAULT_FAILURES)
        self.pairs: set[Member] = set()
        self._by_conn: dict[int, Member] = {}
        self._ports: dict[PortKey, PortState] = {}
        self._admission: dict[int, RouteAdmission] = {}
        self._ticks: dict[int, asyncio.TimerHandle] = {}  # by id of the port state
        self._queue: deque[Callable[[], None]] = deque()
        self._draining = False
        self.changed = asyncio.Event()
        self.on_idle: Callable[[], None] | None = None  # called when the last pair closed

    def port(self, route: Route, offset: int) -> PortState:
        """The state of listening port ``offset`` of ``route``."""
        key = (id(route), offset)
        p = self._ports.get(key)
        if p is None:
            a = self._admission.get(id(route))
            if a is None:
                a = self._admission[id(route)] = RouteAdmission(route.settings.admission)
            tls_source = route.tls is not None and route.tls.source is not None
            p = self._ports[key] = PortState(a, tls_source=tls_source)
        return p

    def connect_lock(self, pair: Member) -> SlotHold:
        """Hold ``pair``'s port's connect slot (for tests)."""
        return SlotHold(self, pair.port)

    # the queue ------------------------------------------------------------------------------
    def execute(self, pair: Member, commands: list[Command]) -> None:
        """Carry out a session's commands, after those queued before them (at once when
        nothing is queued or running: every read of a bulk transfer comes this way)."""
        if not commands:
            return
        if self._draining or self._queue:
            self._queue.append(partial(pair.execute, commands))
            self._drain()
            return
        self._draining = True
        try:
            pair.execute(commands)
            while self._queue:
                self._queue.popleft()()
        finally:
            self._draining = False

    def execute_port(self, port: PortState, commands: list[PortCommand]) -> None:
        """Carry out a port state's commands, after those queued before them."""
        if commands:
            self._queue.append(partial(self._port_commands, port, commands))
            self._drain()

    def _drain(self) -> None:
        if self._draining:
            return  # the loop below takes it
        self._draining = True
        try:
            while self._queue:
                self._queue.popleft()()
        finally:
            self._draining = False

    def _port_commands(self, port: PortState, commands: list[PortCommand]) -> None:
        now = time.monotonic()
        for c in commands:
            if isinstance(c, WakeAt):
                self._tick_at(port, c.when, now)
                continue
            pair = self._by_conn.get(c.conn)
            if pair is not None:
                pair.port_command(c, now)
            elif isinstance(c, Connect):  # gone meanwhile: the slot is free again
                self.execute_port(port, port.connect_done(c.conn, now))

    def _tick_at(self, port: PortState, when: float, now: float) -> None:
        old = self._ticks.pop(id(port), None)
        if old is not None:
            old.cancel()

        def tick() -> None:
            self._ticks.pop(id(port), None)
            self.execute_port(port, port.tick(time.monotonic()))

        self._ticks[id(port)] = asyncio.get_event_loop().call_later(max(0.0, when - now),
                                                                    tick)

    # pairs ----------------------------------------------------------------------------------
    def add(self, pair: Member) -> None:
        self.pairs.add(pair)
        self._by_conn[pair.conn] = pair
        self.changed.set()

    def remove(self, pair: Member) -> None:
        if pair.admitted:
            pair.admitted = False
            self.execute_port(pair.port, pair.port.closed(pair.conn, time.monotonic()))
        self.pairs.discard(pair)
        self._by_conn.pop(pair.conn, None)
        self.changed.set()
        if not self.pairs and self.on_idle is not None:
            self.on_idle()
