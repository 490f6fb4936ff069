"""Connection pairs: one accepted connection, one connection to the target, bytes both ways.

The first bytes from the source say what a connection is: ``QEVM`` is a main channel (its
source → destination direction goes through the stream engine), the multifd magic is a
multifd channel, anything else (postcopy preempt, postcopy recovery) is relayed untouched.
The destination → source direction (the return path on the main channel) is always relayed
untouched, at once.

I/O uses ``BufferedProtocol`` with large receive buffers. Data handed to a transport may
still be referenced by it after ``write()`` returns (when it could not all be sent at
once), so a side only reuses its receive buffer when the peer transport has nothing queued;
otherwise it takes a fresh one.

Half-close: an EOF from one side is passed on with ``write_eof()``; the pair closes when both
directions have ended. An error or reset on either side aborts both, so each QEMU sees the
failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import TYPE_CHECKING, Any

import structlog

from migproxy.arm.registers import describe, format_id
from migproxy.stream import wire
from migproxy.stream.engine import EngineConfig, FeedResult, Mode, StreamEngine
from migproxy.stream.events import (
    Aborted,
    CpuRewritten,
    Event,
    HoldStarted,
    ItemFramed,
    PassthroughEntered,
    StreamComplete,
    TailReleased,
)
from migproxy.stream.returnpath import ReturnPathReader

if TYPE_CHECKING:
    from migproxy.daemon.config import Route
    from migproxy.daemon.metrics import Metrics

READ_SIZE = 1 << 20
CLASSIFY_BYTES = 4
_ids = itertools.count(1)


class _Side(asyncio.BufferedProtocol):
    """One TCP connection of a pair."""

    def __init__(self, pair: Pair, name: str) -> None:
        self.pair = pair
        self.name = name  # "source" or "destination"
        self.transport: Any = None  # asyncio or uvloop transport
        self._buf = bytearray(READ_SIZE)
        self._mv = memoryview(self._buf)
        self.eof = False
        self.closed = False
        self._pause_reasons: set[str] = set()

    # reading control ------------------------------------------------------------------
    def pause(self, reason: str) -> None:
        if not self._pause_reasons and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def fresh_buffer(self) -> None:
        """The peer transport still queues data that may point into the current buffer:
        read into a new one. The old one lives as long as the transport needs it."""
        self._buf = bytearray(READ_SIZE)
        self._mv = memoryview(self._buf)

    # protocol callbacks -----------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        hw = self.pair.route.settings.high_water
        transport.set_write_buffer_limits(high=hw, low=hw // 4)
        self.pair.side_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._mv

    def buffer_updated(self, nbytes: int) -> None:
        self.pair.data_from(self, self._mv[:nbytes])

    def eof_received(self) -> bool:
        self.eof = True
        self.pair.eof_from(self)
        return True  # keep the other direction open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pair.lost(self, exc)

    def pause_writing(self) -> None:
        self.pair.peer(self).pause("backpressure")

    def resume_writing(self) -> None:
        self.pair.peer(self).resume("backpressure")


class Pair:
    """An accepted connection and its connection to the target."""

    def __init__(self, route: Route, metrics: Metrics, registry: PairRegistry) -> None:
        self.route = route
        self.metrics = metrics
        self.registry = registry
        self.id = f"{next(_ids):04d}"
        self.src = _Side(self, "source")
        self.dst = _Side(self, "destination")
        self.channel: str | None = None  # main | multifd | other, once classified
        self.engine: StreamEngine | None = None
        self.return_path: ReturnPathReader | None = None  # main channels only
        self._prefix = bytearray()
        self._pending_src: list[bytes | bytearray | memoryview] = []
        self._src_eof_pending = False
        self.started = time.monotonic()
        self._last_activity = self.started
        self._hold_t0: float | None = None
        self._held_reported = 0
        self._idle_handle: asyncio.TimerHandle | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self.closing = False
        self.outcome: str | None = None
        self.done = asyncio.get_event_loop().create_future()
        self.log: Any = structlog.get_logger("migproxy").bind(
            conn=self.id, route=str(route.listen), target=str(route.target))

    # sides --------------------------------------------------------------------------------
    def peer(self, side: _Side) -> _Side:
        return self.dst if side is self.src else self.src

    def side_made(self, side: _Side) -> None:
        if side is self.src:
            peer = side.transport.get_extra_info("peername") if side.transport else None
            self.log = self.log.bind(peer=_fmt_peer(peer))
            self.registry.add(self)
            # The target connection is opened on the first byte from the source (a bare TCP
            # probe must not reach the destination, which would take it for a broken
            # migration), or earlier when a later connection of the same route needs it:
            # connections reach the target in accept order.
            self.registry.pending(self.route).append(self)
            self._arm_idle()

    def start_connect(self) -> None:
        """Open the target connection (and, first, those of earlier accepted connections)."""
        if self._connect_task is not None or self.closing:
            return
        queue = self.registry.pending(self.route)
        while queue:
            earlier = queue.pop(0)
            earlier._begin_connect()
            if earlier is self:
                return
        self._begin_connect()

    def _begin_connect(self) -> None:
        if self._connect_task is not None or self.closing:
            return
        self.src.pause("connecting")
        self._connect_task = asyncio.get_event_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_event_loop()
        t = self.route.target
        s = self.route.settings
        try:
            # Connect in accept order, one at a time per route: destinations that assign
            # channels by arrival order (QEMU 7.2, TLS) must see the main channel first.
            async with self.registry.connect_lock(self.route):
                await asyncio.wait_for(
                    loop.create_connection(lambda: self.dst, t.host, t.port),
                    timeout=s.connect_timeout)
        except (OSError, TimeoutError) as e:
            self.metrics.connect_errors.inc()
            self.log.error("connect_failed", error=str(e) or type(e).__name__)
            self._abort("connect_failed")
            return
        if self.closing:
            self._close_transport(self.dst, abort=True)
            return
        self.log.debug("connected")
        # Replay what arrived before the target was up (the loop may deliver a first read
        # even though reading was paused in connection_made).
        pending, self._pending_src = self._pending_src, []
        for chunk in pending:
            self._from_source(memoryview(chunk))
            if self.closing:
                return
        if self._src_eof_pending:
            self.eof_from(self.src)
            if self.closing:
                return
        self.src.resume("connecting")

    # data ---------------------------------------------------------------------------------
    def data_from(self, side: _Side, data: memoryview) -> None:
        if self.closing:
            return
        self._last_activity = time.monotonic()
        if side is self.dst:
            self._send(self.src, [data], "to_source")
            rp = self.return_path
            if rp is not None and rp.stopped is None:
                before = rp.shut_status
                rp.feed(data)
                if rp.shut_status is not None and before is None:
                    log = self.log.info if rp.shut_status == 0 else self.log.warning
                    log("destination_shut", status=rp.shut_status)
            return
        if self.dst.transport is None:
            self._pending_src.append(bytes(data))
            self.start_connect()
            if self.src.transport is not None:
                self.src.transport.pause_reading()
            return
        self._from_source(data)

    def _from_source(self, data: memoryview) -> None:
        if self.channel is None:
            self._prefix += data
            if len(self._prefix) < CLASSIFY_BYTES:
                return
            self._classify(bytes(self._prefix[:CLASSIFY_BYTES]))
            data = memoryview(bytes(self._prefix))
            self._prefix = bytearray()
        if self.engine is None:
            self._send(self.dst, [data], "to_destination")
            return
        self._engine_result(self.engine.feed(data))

    def _engine_result(self, res: FeedResult) -> bool:
        """Act on what the engine returned; False if the pair was aborted by policy."""
        assert self.engine is not None
        if res.data:  # bytes first: logging and metrics must not delay the switchover
            self._send(self.dst, res.data, "to_destination")
        self._handle_events(res.events)
        self._track_hold()
        if self.engine.mode == Mode.ABORTED:
            self._abort("policy_abort")
            return False
        return True

    def _send(self, to: _Side, chunks: list[bytes | bytearray | memoryview],
              direction: str) -> None:
        t = to.transport
        if t is None or to.closed or t.is_closing():
            return
        n = 0
        for c in chunks:
            if len(c):
                t.write(c)
                n += len(c)
        if n:
            self.metrics.bytes.labels(direction, self.channel or "other").inc(n)
        if t.get_write_buffer_size():
            # The transport may hold references into the reading side's buffer.
            self.peer(to).fresh_buffer()

    def _classify(self, head: bytes) -> None:
        if head == wire.MAGIC_BYTES:
            self.channel = "main"
            st = self.route.settings
            self.engine = StreamEngine(EngineConfig(
                profile=self.route.profile, policy=st.policy, dry_run=st.dry_run,
                hold_cap=st.hold_cap))
            self.metrics.migrations_active.inc()
            self.return_path = ReturnPathReader()
        elif head == wire.MULTIFD_MAGIC_BYTES:
            self.channel = "multifd"
        else:
            self.channel = "other"
        self.metrics.connections.labels(self.channel).inc()
        self.metrics.connections_active.labels(self.channel).inc()
        self.log = self.log.bind(channel=self.channel)
        self.log.info("channel", kind=self.channel,
                      profile=self.route.profile.name if self.engine and self.route.profile
                      else None, dry_run=self.route.settings.dry_run if self.engine else None)

    # engine events -> metrics and logs ----------------------------------------------------
    def _handle_events(self, events: list[Event]) -> None:
        m = self.metrics
        for e in events:
            if isinstance(e, ItemFramed):
                if e.kind == "section":
                    m.sections.labels(e.detail["type"]).inc()
                    d = e.detail
                    if "pages" in d:
                        for key, label in (("pages", "page"), ("zero_pages", "zero"),
                                           ("xbzrle_pages", "xbzrle"),
                                           ("compressed_pages", "compressed")):
                            if d[key]:
                                m.ram_records.labels(label).inc(d[key])
                elif e.kind == "command":
                    self.log.debug("command", command=e.detail.get("command"))
            elif isinstance(e, CpuRewritten):
                mode = "applied" if e.applied else "dry_run"
                m.cpu_sections_rewritten.labels(mode).inc()
                if e.applied:
                    for r, _v in e.dropped:
                        m.cpregs_dropped.labels(describe(r)).inc()
                    for r, _v in e.inserted:
                        m.cpregs_inserted.labels(describe(r)).inc()
                    for r, _o, _n in e.set:
                        m.cpregs_set.labels(describe(r)).inc()
                self.log.info(
                    "cpu_rewrite" if e.applied else "cpu_rewrite_dry_run",
                    cpu=e.instance_id, cpregs_before=e.count_before, cpregs_after=e.count_after,
                    dropped=[f"{describe(r)}({format_id(r)})=0x{v:x}" for r, v in e.dropped],
                    inserted=[f"{describe(r)}({format_id(r)})=0x{v:x}" for r, v in e.inserted],
                    set=[f"{describe(r)}({format_id(r)}) 0x{o:x}->0x{n:x}" for r, o, n in e.set])
            elif isinstance(e, HoldStarted):
                self._hold_t0 = time.monotonic()
                self.log.debug("holdback_started", offset=e.offset)
            elif isinstance(e, TailReleased):
                self._tail_done(e.held_bytes)
                m.tail_releases.labels("true" if e.rewritten else "false").inc()
                self.log.info("tail_released", held_bytes=e.held_bytes, out_bytes=e.out_bytes,
                              rewritten=e.rewritten)
            elif isinstance(e, PassthroughEntered):
                self._tail_done(None)
                m.passthrough.labels(e.reason).inc()
                extra = {}
                if e.reason == "postcopy_packaged":
                    extra["note"] = ("postcopy: the device state travels inside a PACKAGED "
                                     "command and cannot be rewritten; relaying untouched")
                self.log.warning("passthrough", reason=e.reason, detail=e.message,
                                 offset=e.offset, **extra)
            elif isinstance(e, Aborted):
                self._tail_done(None)
                m.aborts.labels(e.reason).inc()
                self.log.error("abort", reason=e.reason, detail=e.message, offset=e.offset)
            elif isinstance(e, StreamComplete):
                self.log.info("stream_complete", offset=e.offset)

    def _tail_done(self, held: int | None) -> None:
        if self._hold_t0 is not None:
            if held is not None:
                self.metrics.holdback_seconds.observe(time.monotonic() - self._hold_t0)
                self.metrics.holdback_size.observe(held)
            self._hold_t0 = None

    def _track_hold(self) -> None:
        assert self.engine is not None
        held = self.engine.held_bytes
        if held != self._held_reported:
            self.metrics.holdback_bytes.inc(held - self._held_reported)
            self._held_reported = held

    # end of streams -------------------------------------------------------------------------
    def eof_from(self, side: _Side) -> None:
        if self.closing:
            return
        if side is self.src and self.dst.transport is None:
            if self._connect_task is None and not self._pending_src:
                # Nothing was ever sent: a probe. The target never hears of it.
                self.src.eof = True
                self._finish("no_data")
                return
            self._src_eof_pending = True  # handled once the target is connected
            self.start_connect()
            return
        peer = self.peer(side)
        if side is self.src:
            if self.channel is None and self._prefix:
                # Fewer than 4 bytes ever arrived: relay them as they are.
                self._classify(bytes(self._prefix).ljust(CLASSIFY_BYTES, b"\0"))
                self._send(self.dst, [bytes(self._prefix)], "to_destination")
                self._prefix = bytearray()
            if self.engine is not None and not self._engine_result(self.engine.feed_eof()):
                return
        self.log.debug("eof", side=side.name)
        t = peer.transport
        if t is not None and not t.is_closing() and t.can_write_eof():
            t.write_eof()
        if self.src.eof and self.dst.eof:
            self._finish(None)

    def lost(self, side: _Side, exc: Exception | None) -> None:
        if self.closing:
            return
        if exc is not None:
            self.log.warning("connection_lost", side=side.name, error=str(exc))
            self._abort(f"{side.name}_error")
        else:
            # Closed cleanly by the peer: flush what is queued for the other side, then close.
            self._finish(None if side.eof and self.peer(side).eof else f"{side.name}_closed")

    # closing -------------------------------------------------------------------------------
    def _arm_idle(self) -> None:
        idle = self.route.settings.idle_timeout
        if idle <= 0:
            return
        loop = asyncio.get_event_loop()
        due = self._last_activity + idle - time.monotonic()
        if due <= 0:
            self.log.warning("idle_timeout", seconds=idle)
            self._abort("idle_timeout")
            return
        self._idle_handle = loop.call_later(due, self._arm_idle)

    def _close_transport(self, side: _Side, *, abort: bool) -> None:
        t = side.transport
        if t is not None and not t.is_closing():
            if abort:
                t.abort()
            else:
                t.close()

    def _outcome(self, error: str | None) -> str:
        if self.channel is None:
            return "empty"  # closed before a byte arrived (a probe); the target never knew
        if self.engine is None:
            return "relayed" if error is None else "failed"
        mode = self.engine.mode
        if mode == Mode.ABORTED:
            return "aborted"
        if mode == Mode.PASSTHROUGH:
            # The source stopped sending mid-stream (a cancelled or failed migration).
            if self.engine.stop_reason in ("truncated", "no_description"):
                return "incomplete"
            return "passthrough"
        if mode == Mode.DONE:
            # With the return path, the destination says how its load ended (SHUT status).
            rp = self.return_path
            if rp is not None and rp.shut_status not in (None, 0):
                return "destination_failed"
            return "completed"
        return "failed"

    def _abort(self, reason: str) -> None:
        self._end(reason, abort=True)

    def _finish(self, reason: str | None) -> None:
        self._end(reason, abort=False)

    def abort_for_shutdown(self) -> None:
        self._abort("shutdown")

    def _end(self, reason: str | None, *, abort: bool) -> None:
        if self.closing:
            return
        self.closing = True
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        self._close_transport(self.src, abort=abort)
        self._close_transport(self.dst, abort=abort)
        self.outcome = self._outcome(reason if abort else None)
        dur = time.monotonic() - self.started
        if self.channel is not None:
            self.metrics.connections_active.labels(self.channel).dec()
        if self.engine is not None:
            self.metrics.migrations_active.dec()
            self.metrics.migrations.labels(self.outcome).inc()
            self.metrics.migration_seconds.labels(self.outcome).observe(dur)
            if self._held_reported:
                self.metrics.holdback_bytes.dec(self._held_reported)
                self._held_reported = 0
        log = self.log.warning if abort else self.log.info
        log("closed", outcome=self.outcome, reason=reason, seconds=round(dur, 3),
            bytes_in=self.engine.received if self.engine else None,
            bytes_out=self.engine.sent if self.engine else None)
        self.registry.remove(self)
        if self._connect_task is None:
            with contextlib.suppress(ValueError):
                self.registry.pending(self.route).remove(self)
        if not self.done.done():
            self.done.set_result(self.outcome)


class PairRegistry:
    """The live pairs of a daemon, and the per-route connect order."""

    def __init__(self) -> None:
        self.pairs: set[Pair] = set()
        self._locks: dict[int, asyncio.Lock] = {}
        self._pending: dict[int, list[Pair]] = {}
        self.changed = asyncio.Event()

    def connect_lock(self, route: Route) -> asyncio.Lock:
        return self._locks.setdefault(id(route), asyncio.Lock())

    def pending(self, route: Route) -> list[Pair]:
        """Accepted connections of a route whose target connection is not started yet."""
        return self._pending.setdefault(id(route), [])

    def add(self, pair: Pair) -> None:
        self.pairs.add(pair)
        self.changed.set()

    def remove(self, pair: Pair) -> None:
        self.pairs.discard(pair)
        self.changed.set()


def _fmt_peer(peer: Any) -> str | None:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return None if peer is None else str(peer)
