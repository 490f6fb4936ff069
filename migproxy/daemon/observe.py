"""What the daemon makes of a session's reports: metrics and log lines.

One :class:`PairObserver` per connection pair. It is the only place that maps engine
events (:mod:`migproxy.stream.events`, :mod:`migproxy.arm.events`) and session commands
(:class:`~migproxy.daemon.session.Classified`, ``Report``, ``Log``, ``Finished``) to
Prometheus series and structlog lines, so both can be tested without sockets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from migproxy.arm.events import CpuReconciled, CpuRewritten
from migproxy.arm.registers import describe, format_id
from migproxy.daemon.admission import Refusal
from migproxy.daemon.metrics import TLS_HANDSHAKE, Metrics
from migproxy.daemon.session import (
    TLS_NOT_TERMINATED,
    Channel,
    Classified,
    CloseReason,
    Finished,
    Log,
    Report,
)
from migproxy.stream.events import (
    Aborted,
    CommandFramed,
    DeviceStateHeld,
    DeviceStateReleased,
    Event,
    PassthroughEntered,
    SectionFramed,
    StreamComplete,
)
from migproxy.stream.reasons import Reason

_POSTCOPY_NOTE = ("postcopy: the PACKAGED device state cannot be framed by the section "
                  "layouts known; relaying untouched")


def _reg(r: int, v: int) -> str:
    return f"{describe(r)}({format_id(r)})=0x{v:x}"


class PairObserver:
    """Metrics and logs of one connection pair."""

    def __init__(self, metrics: Metrics, log: Any, *, profile: str | None,
                 dry_run: bool) -> None:
        self.metrics = metrics
        self.log = log
        self.channel: Channel | None = None
        self._profile = profile
        self._dry_run = dry_run
        self._bytes: dict[tuple[str, Channel], Any] = {}  # migproxy_bytes by its labels
        self._hold_t0: float | None = None
        self._held_reported = 0

    def bind(self, **context: Any) -> None:
        self.log = self.log.bind(**context)

    def accepted(self, **context: Any) -> None:
        """A connection was accepted (``context``: what its log lines carry from now on)."""
        self.metrics.connections.inc()
        self.bind(**context)

    def refused(self, reason: Refusal) -> None:
        self.metrics.connections_refused.labels(reason).inc()
        self.log.warning("refused", reason=str(reason))

    def pumped(self, ended: str) -> None:
        """A RAM pump run ended (``ended``: one of metrics.PUMP_ENDS)."""
        self.metrics.ram_pump_runs.labels(ended).inc()

    def spliced(self) -> None:
        self.metrics.spliced.labels(self.channel or Channel.OTHER).inc()

    def tls_refused(self, error: str) -> None:
        """The source's TLS handshake failed: closed, nothing opened towards the target."""
        self.metrics.connections_refused.labels(TLS_HANDSHAKE).inc()
        self.log.warning("tls_handshake_failed", reason=TLS_HANDSHAKE, error=error)

    def forwarded(self, direction: str, n: int) -> None:
        key = (direction, self.channel or Channel.OTHER)
        counter = self._bytes.get(key)
        if counter is None:  # looked up once: labels() costs a lock and a tuple per read
            counter = self._bytes[key] = self.metrics.bytes.labels(*key)
        counter.inc(n)

    def classified(self, c: Classified) -> None:
        self.channel = c.channel
        m = self.metrics
        main = c.channel == Channel.MAIN
        if main:
            m.migrations_active.inc()
        m.connections_classified.labels(c.channel).inc()
        m.connections_active.labels(c.channel).inc()
        if c.channel == Channel.TLS:
            m.untouched.labels(TLS_NOT_TERMINATED).inc()
        self.log = self.log.bind(channel=str(c.channel))
        self.log.info("channel", kind=str(c.channel), profile=self._profile if main else None,
                      dry_run=self._dry_run if main else None)

    def logged(self, c: Log) -> None:
        getattr(self.log, c.level)(c.event, **c.fields)

    def report(self, c: Report) -> None:
        self.events(c.events)
        held = c.held_bytes
        if held != self._held_reported:
            self._held_changed(held - self._held_reported)
            self._held_reported = held

    def _held_changed(self, delta: int) -> None:
        self.metrics.device_state_held_bytes.inc(delta)
        self.metrics.holdback_bytes.inc(delta)  # deprecated name

    def events(self, events: list[Event]) -> None:
        m = self.metrics
        for e in events:
            if isinstance(e, SectionFramed):
                m.sections.labels(e.type).inc()
                for n, label in ((e.pages, "page"), (e.zero_pages, "zero"),
                                 (e.xbzrle_pages, "xbzrle"), (e.compressed_pages, "compressed")):
                    if n:
                        m.ram_records.labels(label).inc(n)
            elif isinstance(e, CommandFramed):
                self.log.debug("command", command=e.command)
            elif isinstance(e, CpuRewritten):
                self._cpu_rewritten(e)
            elif isinstance(e, CpuReconciled):
                if e.applied and e.guest_visible:
                    m.guest_visible_changes.inc(len(e.guest_visible))
                self.log.info("cpu_plan" if e.applied else "cpu_plan_dry_run", cpu=e.instance_id,
                              destination=e.destination, changes=list(e.changes),
                              guest_visible=list(e.guest_visible))
            elif isinstance(e, DeviceStateHeld):
                self._hold_t0 = time.monotonic()
                self.log.debug("holdback_started", offset=e.offset)
            elif isinstance(e, DeviceStateReleased):
                self._hold_done(e.held_bytes)
                flag = "true" if e.rewritten else "false"
                m.device_state_releases.labels(flag).inc()
                m.tail_releases.labels(flag).inc()  # deprecated name
                self.log.info("tail_released", held_bytes=e.held_bytes, out_bytes=e.out_bytes,
                              rewritten=e.rewritten)
            elif isinstance(e, PassthroughEntered):
                self._hold_done(None)
                m.passthrough.labels(e.reason).inc()
                extra = ({"note": _POSTCOPY_NOTE}
                         if e.reason in (Reason.POSTCOPY_PACKAGED, Reason.POSTCOPY_LAYOUT)
                         else {})
                self.log.warning("passthrough", reason=str(e.reason), detail=e.message,
                                 offset=e.offset, **extra)
            elif isinstance(e, Aborted):
                self._hold_done(None)
                m.aborts.labels(e.reason).inc()
                self.log.error("abort", reason=str(e.reason), detail=e.message, offset=e.offset)
            elif isinstance(e, StreamComplete):
                self.log.info("stream_complete", offset=e.offset)

    def _cpu_rewritten(self, e: CpuRewritten) -> None:
        m = self.metrics
        m.cpu_sections_rewritten.labels("applied" if e.applied else "dry_run").inc()
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
            dropped=[_reg(r, v) for r, v in e.dropped],
            inserted=[_reg(r, v) for r, v in e.inserted],
            set=[f"{describe(r)}({format_id(r)}) 0x{o:x}->0x{n:x}" for r, o, n in e.set])

    def _hold_done(self, held: int | None) -> None:
        if self._hold_t0 is not None:
            if held is not None:
                m = self.metrics
                seconds = time.monotonic() - self._hold_t0
                m.device_state_hold_seconds.observe(seconds)
                m.device_state_size.observe(held)
                m.holdback_seconds.observe(seconds)  # deprecated names
                m.holdback_size.observe(held)
            self._hold_t0 = None

    def finished(self, c: Finished) -> None:
        m = self.metrics
        if c.reason == CloseReason.CONNECT_FAILED:
            m.connect_errors.inc()
        elif c.reason in (CloseReason.CLASSIFY_TIMEOUT, CloseReason.EVICTED):
            m.connections_refused.labels(str(c.reason)).inc()
        if c.channel is not None:
            m.connections_active.labels(c.channel).dec()
        if c.channel == Channel.MAIN:
            m.migrations_active.dec()
            m.migrations.labels(c.outcome).inc()
            m.migration_seconds.labels(c.outcome).observe(c.seconds)
            if self._held_reported:
                self._held_changed(-self._held_reported)
                self._held_reported = 0
        log = self.log.warning if c.abort else self.log.info
        log("closed", outcome=str(c.outcome), reason=None if c.reason is None else str(c.reason),
            seconds=round(c.seconds, 3), bytes_in=c.bytes_in, bytes_out=c.bytes_out)


def loop_lag(started: float, woke: float, interval: float) -> float:
    """How late a callback asked for ``interval`` after ``started`` ran at ``woke``."""
    return max(0.0, woke - started - interval)


async def watch_loop_lag(metrics: Metrics, interval: float, *,
                         clock: Callable[[], float] | None = None,
                         sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
    """Measure the event loop's lag every ``interval`` seconds, forever: one timer at a
    time, so the cost is one wakeup per interval. ``clock`` defaults to the loop's."""
    now = clock or asyncio.get_running_loop().time
    while True:
        started = now()
        await sleep(interval)
        lag = loop_lag(started, now(), interval)
        metrics.event_loop_lag.set(lag)
        metrics.event_loop_delay.observe(lag)
