"""The live migration proxy: listeners per route (one per port of a range), metrics
endpoint, signals, drain."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from typing import Any

import structlog

from migproxy.daemon.addresses import format_host_port, join_host_port
from migproxy.daemon.config import Config, Route
from migproxy.daemon.handshake_budget import HandshakeBudget
from migproxy.daemon.memory import IdleTrim
from migproxy.daemon.metrics import Metrics
from migproxy.daemon.metrics_http import MetricsServer
from migproxy.daemon.observe import watch_loop_lag
from migproxy.daemon.pump import AVAILABLE as PUMP_AVAILABLE
from migproxy.daemon.pump import PumpPath, RamPumps
from migproxy.daemon.registry import PairRegistry
from migproxy.daemon.relay import Pair
from migproxy.daemon.sdnotify import notify
from migproxy.daemon.session import ConnState
from migproxy.daemon.side import SideProtocol
from migproxy.daemon.splice import AVAILABLE as SPLICE_AVAILABLE
from migproxy.daemon.splice import COMPILED as SPLICE_COMPILED
from migproxy.daemon.splice import KernelRelays
from migproxy.stream.errors import MigproxyError
from migproxy.stream.framer import IMPLEMENTATION
from migproxy.stream.policy import HoldBudget

RESOLVE_TIMEOUT = 5.0  # seconds to look each target up at start
LAG_INTERVAL = 0.5  # seconds between two event-loop lag measurements


class StartError(MigproxyError):
    """The daemon could not start (an address cannot be bound)."""


class Daemon:
    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics(stop_reasons=dict.fromkeys(
            r for route in config.routes for r in route.engine_config().stop_reasons))
        self.registry = PairRegistry(HoldBudget(config.hold_budget),
                                     KernelRelays(config.splice_threads),
                                     HandshakeBudget(config.tls_failed_handshakes),
                                     RamPumps(PumpPath(config.ram_pump),
                                              config.ram_pump_threads))
        self.idle_trim = IdleTrim(lambda: not self.registry.pairs)
        self.registry.on_idle = self.idle_trim.maybe_idle
        self.servers: list[asyncio.Server] = []
        self.metrics_server: MetricsServer | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.log: Any = structlog.get_logger("migproxy")

    # -- start ----------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.log.info("ram_walk", implementation=IMPLEMENTATION,
                      note="compiled" if IMPLEMENTATION == "c" else
                      "pure Python (the compiled walk is not built, or MIGPROXY_NO_EXTENSIONS)")
        relays = self.registry.kernel_relays
        self.log.info("kernel_relay", threads=relays.threads,
                      loop="c" if SPLICE_COMPILED is not None else "python",
                      note=f"up to {relays.threads} untouched channels at once move by "
                      "splice(2)" if relays.threads else
                      "off: every channel goes through the event loop" +
                      ("" if SPLICE_AVAILABLE else " (no splice(2) on this system)"))
        pumps = self.registry.ram_pumps
        self.log.info("ram_pump", path=str(pumps.path), threads=pumps.threads,
                      note="RAM records of plaintext main channels move in worker threads"
                      if pumps.path != PumpPath.OFF else
                      "off: RAM records go through the event loop" +
                      ("" if PUMP_AVAILABLE else " (the compiled pump is not built, or "
                       "MIGPROXY_NO_EXTENSIONS)"))
        await self._resolve_targets()
        for route in self.config.routes:
            # One server per port of the route (a range has several), one log line.
            servers = [await self._listen(route, i) for i in range(route.listen.count)]
            self.log.info("listening",
                          listen=_listen_text(route, servers[0]),
                          target=str(route.target),
                          profile=route.profile.name if route.profile else None,
                          destination=route.destination.name if route.destination else None,
                          policy=str(route.settings.policy), dry_run=route.settings.dry_run,
                          tls_source=route.tls is not None and route.tls.source is not None,
                          tls_destination=route.tls.hostname if route.tls else None)
        m = self.config.metrics
        if m is not None:
            self.metrics_server = MetricsServer(self.metrics.registry)
            try:
                # an empty host is the operator asking for every address
                await self.metrics_server.start(m.host or "0.0.0.0", m.port)  # noqa: S104
            except OSError as e:
                self.metrics_server = None
                await self.close_servers()
                raise StartError(f"cannot serve metrics on {m}: {e.strerror or e}") from e
            self.log.info("metrics", address=format_host_port(self.metrics_server.address),
                          path="/metrics")
        self._lag_task = loop.create_task(self._watch_loop_lag())
        notify("READY=1")

    async def _listen(self, route: Route, offset: int) -> asyncio.Server:
        """Listen on port ``offset`` of ``route``; on failure close every listener."""
        loop = asyncio.get_running_loop()

        def factory() -> SideProtocol:
            return Pair(route, self.metrics, self.registry, offset).src

        address = route.listen.at(offset)
        host = address.host or None  # None: every interface, IPv4 and IPv6
        try:
            server = await loop.create_server(factory, host, address.port,
                                              reuse_address=True, backlog=128)
        except OSError as e:
            await self.close_servers()
            of = f" (route {route.listen})" if route.listen.count > 1 else ""
            raise StartError(f"cannot listen on {address}{of}: {e.strerror or e}") from e
        self.servers.append(server)
        return server

    async def _watch_loop_lag(self) -> None:
        """How late the event loop wakes up: a busy loop delays every migration."""
        await watch_loop_lag(self.metrics, LAG_INTERVAL)

    async def _resolve_targets(self) -> None:
        """Warn about targets whose names do not resolve now (they may later: not fatal)."""
        loop = asyncio.get_running_loop()
        for target in {r.target for r in self.config.routes}:
            try:
                await asyncio.wait_for(loop.getaddrinfo(target.host, target.port,
                                                        type=socket.SOCK_STREAM),
                                       RESOLVE_TIMEOUT)
            except (OSError, TimeoutError) as e:
                self.log.warning("target_unresolved", target=str(target),
                                 error=str(e) or type(e).__name__)

    def listen_addresses(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for srv in self.servers for s in srv.sockets]

    @property
    def metrics_port(self) -> int | None:
        return int(self.metrics_server.address[1]) if self.metrics_server else None

    async def close_metrics(self) -> None:
        self.idle_trim.cancel()
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
            self._lag_task = None
        if self.metrics_server is not None:
            await self.metrics_server.close()
            self.metrics_server = None

    # -- stop -----------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    async def close_servers(self) -> None:
        for s in self.servers:
            s.close()
        for s in self.servers:
            with contextlib.suppress(Exception):
                await s.wait_closed()
        self.servers = []

    async def drain(self, timeout: float) -> int:
        """Wait for in-flight pairs; abort those left after ``timeout``. Returns how many."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Connections that never sent a byte carry no migration: close them now, so an idle
        # client (a probe, a health check) cannot hold the shutdown for the whole timeout.
        for pair in list(self.registry.pairs):
            if pair.session.state == ConnState.INACTIVE:
                pair.abort_for_shutdown()
        while self.registry.pairs:
            left = deadline - loop.time()
            if left <= 0:
                break
            self.registry.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.registry.changed.wait(), left)
        aborted = 0
        for pair in list(self.registry.pairs):
            pair.abort_for_shutdown()
            aborted += 1
        return aborted

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT, drain, exit 0."""
        loop = asyncio.get_running_loop()
        await self.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self._stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        notify("STOPPING=1")
        await self.close_servers()  # stop accepting first
        n = len(self.registry.pairs)
        self.log.info("stopping", in_flight=n, drain_timeout=self.config.drain_timeout)
        aborted = await self.drain(self.config.drain_timeout)
        if aborted:
            self.log.warning("drain_timeout", aborted=aborted)
        self.registry.ram_pumps.shutdown()  # (the runs of the pairs closed were taken back)
        await self.close_metrics()
        self.log.info("stopped")
        return 0


def _listen_text(route: Route, first: asyncio.Server) -> list[str | None]:
    """The bound addresses of a route's first port, with the range's ports for a range
    (``["0.0.0.0:49152-49215", "[::]:49152-49215"]``): one entry per bound socket."""
    names = [s.getsockname() for s in first.sockets]
    if route.listen.count == 1:
        return [format_host_port(n) for n in names]
    ports = f"{route.listen.port}-{route.listen.last}"
    return [join_host_port(str(n[0]), ports) for n in names]


def run_daemon(config: Config) -> int:
    """Run the daemon on uvloop (the default asyncio loop if uvloop is missing)."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    daemon = Daemon(config)
    try:
        return int(runner(daemon.run()))
    except StartError as e:
        structlog.get_logger("migproxy").error("start_failed", error=str(e))
        return 1
