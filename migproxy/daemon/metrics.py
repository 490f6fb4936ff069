"""Prometheus metrics of the daemon.

Names follow the Prometheus conventions (``migproxy_`` prefix, base units, ``_total`` for
counters, which prometheus-client appends). Labels are low-cardinality: channel kind,
direction, section type, record type, register name (bounded by the profiles), reason,
outcome. No VM ids, no addresses.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from migproxy import __version__
from migproxy.daemon.admission import Refusal
from migproxy.daemon.pump import PumpStatus
from migproxy.daemon.session import TLS_NOT_TERMINATED, CloseReason
from migproxy.stream.framer import IMPLEMENTATION
from migproxy.stream.reasons import Reason, StopReason

CLASSIFY_TIMEOUT = str(CloseReason.CLASSIFY_TIMEOUT)  # a refused label beside the Refusals
TLS_HANDSHAKE = "tls_handshake"  # refused: the source's TLS handshake failed

CHANNELS = ("main", "multifd", "tls", "other")
DIRECTIONS = ("to_destination", "to_source")
# How a RAM pump run ends (PumpStatus, lower case; internal_error: the run raised)
PUMP_ENDS = (*(st.name.lower() for st in PumpStatus), "internal_error")

# Families kept for one release under their old names ("tail", "holdback": the device
# state), with the same values as their replacements. Removed in the release after 0.1.
DEPRECATED = {
    "migproxy_tail_releases": "migproxy_device_state_releases",
    "migproxy_holdback_bytes": "migproxy_device_state_held_bytes",
    "migproxy_holdback_seconds": "migproxy_device_state_hold_seconds",
    "migproxy_holdback_size_bytes": "migproxy_device_state_size_bytes",
}
_HOLD_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                 10)
_HOLD_SIZE = (16384, 65536, 262144, 1 << 20, 4 << 20, 16 << 20, 64 << 20)
_LOOP_LAG = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def _deprecated(name: str) -> str:
    return f"Deprecated, removed in the next release: the same as {DEPRECATED[name]}. "


class Metrics:
    """All metrics, in their own registry (one per daemon; tests make their own).

    ``process``: also the standard process (``process_*``: CPU, RSS, file descriptors) and
    platform (``python_info``) collectors of prometheus-client on this registry.
    ``stop_reasons``: the reasons whose passthrough and abort series exist from the start
    (the core's, and those the routes' plug-ins declare: ``EngineConfig.stop_reasons``)."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 process: bool = True,
                 stop_reasons: Iterable[StopReason] = tuple(Reason)) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they only add noise here
        r = self.registry = registry or CollectorRegistry()
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.build_info = Gauge(
            "migproxy_build_info", "Always 1: the version of migproxy, of Python, and which "
            "RAM walk runs (c: compiled, python: the pure-Python fallback)",
            ["version", "python", "ramwalk"], registry=r)
        self.build_info.labels(__version__, platform.python_version(), IMPLEMENTATION).set(1)
        self.connections = Counter(
            "migproxy_connections", "Accepted connections (counted at accept, before their "
            "channel is known; refused ones included)", registry=r)
        self.connections_classified = Counter(
            "migproxy_connections_classified", "Connections whose channel kind was "
            "recognised (from their first bytes), by channel kind", ["channel"], registry=r)
        self.connections_active = Gauge(
            "migproxy_connections_active", "Open connection pairs, by channel kind",
            ["channel"], registry=r)
        self.migrations_active = Gauge(
            "migproxy_migrations_active", "Main channels currently being relayed", registry=r)
        self.bytes = Counter(
            "migproxy_bytes", "Bytes relayed, by direction and channel kind",
            ["direction", "channel"], registry=r)
        self.spliced = Counter(
            "migproxy_spliced_connections", "Connections whose rest was relayed in the kernel "
            "(splice(2)), by channel kind", ["channel"], registry=r)
        self.ram_pump_runs = Counter(
            "migproxy_ram_pump_runs", "Runs of the RAM pump (a main channel's RAM records "
            "moved in a worker thread), by how each ended", ["ended"], registry=r)
        self.sections = Counter(
            "migproxy_sections", "Main-channel sections framed, by type (START/PART/END/FULL)",
            ["type"], registry=r)
        self.ram_records = Counter(
            "migproxy_ram_records", "RAM records framed on the main channel, by record type",
            ["type"], registry=r)
        self.cpregs_dropped = Counter(
            "migproxy_cpregs_dropped", "cpreg entries dropped from cpu sections, by register",
            ["register"], registry=r)
        self.cpregs_inserted = Counter(
            "migproxy_cpregs_inserted", "cpreg entries inserted into cpu sections, by register",
            ["register"], registry=r)
        self.cpregs_set = Counter(
            "migproxy_cpregs_set", "cpreg values changed in cpu sections, by register",
            ["register"], registry=r)
        self.guest_visible_changes = Counter(
            "migproxy_guest_visible_changes",
            "Changes a guest can notice, made only because the route opted in for the register "
            "(allow_guest_visible)", registry=r)
        self.cpu_sections_rewritten = Counter(
            "migproxy_cpu_sections_rewritten",
            "cpu sections whose cpreg arrays were rewritten (dry_run: would have been)",
            ["mode"], registry=r)
        self.device_state_releases = Counter(
            "migproxy_device_state_releases", "Device states (held back until their "
            "description was read) released, rewritten or untouched", ["rewritten"],
            registry=r)
        self.tail_releases = Counter(
            "migproxy_tail_releases", _deprecated("migproxy_tail_releases")
            + "Device-state tails released, rewritten or untouched", ["rewritten"],
            registry=r)
        self.passthrough = Counter(
            "migproxy_passthrough", "Main channels that fell back to untouched relaying, "
            "by reason", ["reason"], registry=r)
        self.aborts = Counter(
            "migproxy_aborts", "Main channels aborted by policy, by reason", ["reason"],
            registry=r)
        self.device_state_held_bytes = Gauge(
            "migproxy_device_state_held_bytes", "Device-state bytes currently held back",
            registry=r)
        self.device_state_hold_seconds = Histogram(
            "migproxy_device_state_hold_seconds",
            "Time the device state was held (first held byte to release)",
            buckets=_HOLD_SECONDS, registry=r)
        self.device_state_size = Histogram(
            "migproxy_device_state_size_bytes", "Size of released device states",
            buckets=_HOLD_SIZE, registry=r)
        self.holdback_bytes = Gauge(
            "migproxy_holdback_bytes", _deprecated("migproxy_holdback_bytes")
            + "Device-state bytes currently held back", registry=r)
        self.holdback_seconds = Histogram(
            "migproxy_holdback_seconds", _deprecated("migproxy_holdback_seconds")
            + "Time the device-state tail was held (first held byte to release)",
            buckets=_HOLD_SECONDS, registry=r)
        self.holdback_size = Histogram(
            "migproxy_holdback_size_bytes", _deprecated("migproxy_holdback_size_bytes")
            + "Size of released device-state tails", buckets=_HOLD_SIZE, registry=r)
        self.migrations = Counter(
            "migproxy_migrations", "Finished main channels, by outcome", ["outcome"],
            registry=r)
        self.migration_seconds = Histogram(
            "migproxy_migration_duration_seconds", "Duration of main channels, by outcome",
            ["outcome"], buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r)
        self.event_loop_lag = Gauge(
            "migproxy_event_loop_lag_seconds",
            "How late the daemon's event loop last woke up (measured every 0.5 s)",
            registry=r)
        self.event_loop_delay = Histogram(
            "migproxy_event_loop_delay_seconds",
            "How late the daemon's event loop woke up, every measurement (every 0.5 s, "
            "a timer's lateness)", buckets=_LOOP_LAG, registry=r)
        self.connections_refused = Counter(
            "migproxy_connections_refused",
            "Connections closed without being relayed, by reason: refused by admission, "
            "evicted to make room for a migration's channel, a failed TLS handshake, a "
            "source address past its budget of failed TLS handshakes, or silent past "
            "classify_timeout",
            ["reason"], registry=r)
        self.untouched = Counter(
            "migproxy_untouched",
            "Connections relayed untouched from their first byte because migproxy cannot "
            "read them, by reason (tls_not_terminated: TLS on a route without TLS "
            "termination)", ["reason"], registry=r)
        self.connect_errors = Counter(
            "migproxy_connect_errors", "Failed connections to the target", registry=r)
        # Pre-create the label sets that must exist from the start (zero-valued series).
        for ch in CHANNELS:
            self.connections_classified.labels(ch)
            self.connections_active.labels(ch)
            self.spliced.labels(ch)
            for d in DIRECTIONS:
                self.bytes.labels(d, ch)
        for ended in PUMP_ENDS:
            self.ram_pump_runs.labels(ended)
        for flag in ("true", "false"):
            self.device_state_releases.labels(flag)
            self.tail_releases.labels(flag)
        for reason in stop_reasons:
            self.passthrough.labels(reason)
            self.aborts.labels(reason)
        for refusal in (*Refusal, CLASSIFY_TIMEOUT, TLS_HANDSHAKE):
            self.connections_refused.labels(refusal)
        self.untouched.labels(TLS_NOT_TERMINATED)
