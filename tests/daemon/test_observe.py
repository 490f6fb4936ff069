"""Unit tests of :class:`~migproxy.daemon.observe.PairObserver`: session commands and engine
events to Prometheus series (a real :class:`Metrics`) and structlog lines (captured).
No sockets; asyncio only for the loop-lag watcher, driven by an injected clock."""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from migproxy.arm.profile import default_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.daemon.metrics import Metrics
from migproxy.daemon.observe import PairObserver, loop_lag, watch_loop_lag
from migproxy.daemon.session import (
    Channel,
    Classified,
    CloseReason,
    Command,
    Finished,
    Forward,
    Log,
    Outcome,
    Report,
    Session,
    SessionSettings,
    Side,
)
from migproxy.stream import wire
from migproxy.stream.engine import StreamEngine
from migproxy.stream.events import (
    Aborted,
    DeviceStateHeld,
    DeviceStateReleased,
    Event,
    PassthroughEntered,
    SectionFramed,
)
from migproxy.stream.policy import Policy
from migproxy.stream.reasons import Reason
from testkit.streams import run_engine
from testkit.synthetic import SynthSpec, build

PROFILE = default_profile()
SPEC = SynthSpec(cpus=2, full_pages=16, zero_pages=64, multifd_flush=True)
STREAM = build(SPEC)
REWRITTEN = run_engine([STREAM], arm_engine_config(PROFILE))[0]

Entries = list[dict[str, Any]]


@pytest.fixture
def logs() -> Iterator[Entries]:
    """Every log line (debug included) while the test runs; the global structlog
    configuration is restored afterwards."""
    was_configured = structlog.is_configured()
    old = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
                        cache_logger_on_first_use=False)
    try:
        with capture_logs() as entries:
            yield entries
    finally:
        if was_configured:
            structlog.configure(**old)
        else:
            structlog.reset_defaults()


def _observer(*, dry_run: bool = False) -> PairObserver:
    # Created inside the capture: the bound logger takes the configuration of its creation.
    return PairObserver(Metrics(), structlog.get_logger("migproxy").bind(conn="0001"),
                        profile=PROFILE.name, dry_run=dry_run)


def _v(obs: PairObserver, name: str, **labels: str) -> float:
    v = obs.metrics.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def _lines(entries: Entries, event: str) -> Entries:
    return [e for e in entries if e["event"] == event]


def _feed_engine(obs: PairObserver, data: bytes, *, policy: Policy = Policy.PASSTHROUGH,
                 dry_run: bool = False, chunk: int = 1000) -> tuple[list[Event], float]:
    """``data`` through a real engine in chunks, then EOF, each result reported as the
    session reports it; the events and the largest value the holdback gauge took."""
    eng = StreamEngine(arm_engine_config(PROFILE, policy=policy, dry_run=dry_run))
    events: list[Event] = []
    peak = 0.0
    for i in range(0, len(data) + chunk, chunk):
        res = eng.feed(data[i : i + chunk]) if i < len(data) else eng.feed_eof()
        events.extend(res.events)
        obs.report(Report(res.events, eng.held_bytes))
        peak = max(peak, _v(obs, "migproxy_holdback_bytes"))
    return events, peak


# -- classified ---------------------------------------------------------------------------------

def test_classified_main_counts_the_connection_and_the_migration(logs: Entries) -> None:
    obs = _observer()
    obs.classified(Classified(Channel.MAIN))
    assert _v(obs, "migproxy_connections_classified_total", channel="main") == 1
    assert _v(obs, "migproxy_connections_active", channel="main") == 1
    assert _v(obs, "migproxy_migrations_active") == 1
    assert _v(obs, "migproxy_connections_classified_total", channel="multifd") == 0
    assert _v(obs, "migproxy_connections_total") == 0  # counted at accept, not here
    assert obs.channel is Channel.MAIN
    [line] = _lines(logs, "channel")
    assert line["log_level"] == "info"
    assert line["kind"] == "main"
    assert line["profile"] == PROFILE.name
    assert line["dry_run"] is False
    assert line["conn"] == "0001"
    assert line["channel"] == "main"


@pytest.mark.parametrize("channel", [Channel.MULTIFD, Channel.OTHER])
def test_classified_other_channels_are_not_migrations(logs: Entries, channel: Channel) -> None:
    obs = _observer()
    obs.classified(Classified(channel))
    assert _v(obs, "migproxy_connections_classified_total", channel=str(channel)) == 1
    assert _v(obs, "migproxy_connections_active", channel=str(channel)) == 1
    assert _v(obs, "migproxy_connections_classified_total", channel="main") == 0
    assert _v(obs, "migproxy_migrations_active") == 0
    [line] = _lines(logs, "channel")
    assert line["kind"] == str(channel)
    assert line["profile"] is None
    assert line["dry_run"] is None


def test_later_lines_carry_the_channel(logs: Entries) -> None:
    obs = _observer()
    obs.classified(Classified(Channel.MULTIFD))
    obs.logged(Log("debug", "eof", {"side": "source"}))
    [line] = _lines(logs, "eof")
    assert line["channel"] == "multifd"
    assert line["side"] == "source"
    assert line["log_level"] == "debug"


# -- report -------------------------------------------------------------------------------------

def test_report_of_a_real_stream_updates_the_counters(logs: Entries) -> None:
    obs = _observer()
    obs.classified(Classified(Channel.MAIN))
    events, peak = _feed_engine(obs, STREAM)
    sections = Counter(e.type for e in events if isinstance(e, SectionFramed))
    assert sections == {"START": 1, "PART": 2, "END": 1, "FULL": 7}  # 7: the device tail
    for typ, n in sections.items():
        assert _v(obs, "migproxy_sections_total", type=typ) == n, typ
    assert _v(obs, "migproxy_ram_records_total", type="page") == SPEC.full_pages
    assert _v(obs, "migproxy_ram_records_total", type="zero") == SPEC.zero_pages
    assert _v(obs, "migproxy_ram_records_total", type="xbzrle") == 0
    assert _v(obs, "migproxy_cpregs_dropped_total", register="BOGUS_DBGDTRTX") == 2
    assert _v(obs, "migproxy_cpu_sections_rewritten_total", mode="applied") == 2
    assert _v(obs, "migproxy_cpu_sections_rewritten_total", mode="dry_run") == 0
    assert _v(obs, "migproxy_tail_releases_total", rewritten="true") == 1
    assert _v(obs, "migproxy_tail_releases_total", rewritten="false") == 0
    # The tail was held for a while, then released: the gauge is back to 0.
    assert peak > 0
    assert _v(obs, "migproxy_holdback_bytes") == 0
    assert _v(obs, "migproxy_holdback_seconds_count") == 1
    [released] = [e for e in events if isinstance(e, DeviceStateReleased)]
    assert _v(obs, "migproxy_holdback_size_bytes_sum") == released.held_bytes
    [line] = _lines(logs, "tail_released")
    assert line["held_bytes"] == released.held_bytes
    assert line["rewritten"] is True
    rewrites = _lines(logs, "cpu_rewrite")
    assert [r["cpu"] for r in rewrites] == [0, 1]
    assert all(any("BOGUS_DBGDTRTX" in d for d in r["dropped"]) for r in rewrites)
    assert all(r["cpregs_before"] - r["cpregs_after"] == 1 for r in rewrites)
    assert len(_lines(logs, "stream_complete")) == 1
    assert len(_lines(logs, "holdback_started")) == 1
    assert _v(obs, "migproxy_passthrough_total", reason="format_error") == 0


def test_report_in_dry_run_counts_would_be_rewrites_only(logs: Entries) -> None:
    obs = _observer(dry_run=True)
    obs.classified(Classified(Channel.MAIN))
    _feed_engine(obs, STREAM, dry_run=True)
    assert _v(obs, "migproxy_cpu_sections_rewritten_total", mode="dry_run") == 2
    assert _v(obs, "migproxy_cpu_sections_rewritten_total", mode="applied") == 0
    assert _v(obs, "migproxy_cpregs_dropped_total", register="BOGUS_DBGDTRTX") == 0
    assert _v(obs, "migproxy_tail_releases_total", rewritten="false") == 1
    assert len(_lines(logs, "cpu_rewrite_dry_run")) == 2
    assert _lines(logs, "cpu_rewrite") == []
    assert _v(obs, "migproxy_holdback_bytes") == 0


def test_holdback_gauge_follows_the_held_size() -> None:
    obs = _observer()
    obs.report(Report([DeviceStateHeld(100)], 4000))
    assert _v(obs, "migproxy_holdback_bytes") == 4000
    obs.report(Report([], 9000))
    assert _v(obs, "migproxy_holdback_bytes") == 9000
    obs.report(Report([], 9000))
    assert _v(obs, "migproxy_holdback_bytes") == 9000
    obs.report(Report([DeviceStateReleased(100, 9000, 8984, True)], 0))
    assert _v(obs, "migproxy_holdback_bytes") == 0
    assert _v(obs, "migproxy_holdback_seconds_count") == 1
    assert _v(obs, "migproxy_holdback_size_bytes_sum") == 9000


def test_holdback_gauge_is_summed_over_pairs() -> None:
    m = Metrics()
    a = PairObserver(m, structlog.get_logger(), profile=None, dry_run=False)
    b = PairObserver(m, structlog.get_logger(), profile=None, dry_run=False)
    a.report(Report([], 1000))
    b.report(Report([], 500))
    assert m.registry.get_sample_value("migproxy_holdback_bytes") == 1500
    a.report(Report([], 0))
    assert m.registry.get_sample_value("migproxy_holdback_bytes") == 500


@pytest.mark.parametrize("reason", [Reason.FORMAT_ERROR, Reason.UNKNOWN_COMMAND,
                                    Reason.HOLD_CAP_EXCEEDED])
def test_passthrough_is_counted_and_logged_with_its_reason(logs: Entries,
                                                            reason: Reason) -> None:
    obs = _observer()
    obs.report(Report([PassthroughEntered(reason, "what went wrong", 1234)], 0))
    assert _v(obs, "migproxy_passthrough_total", reason=str(reason)) == 1
    assert _v(obs, "migproxy_aborts_total", reason=str(reason)) == 0
    [line] = _lines(logs, "passthrough")
    assert line["log_level"] == "warning"
    assert line["reason"] == str(reason)
    assert line["detail"] == "what went wrong"
    assert line["offset"] == 1234
    assert "note" not in line


def test_postcopy_passthrough_explains_itself(logs: Entries) -> None:
    obs = _observer()
    obs.report(Report([PassthroughEntered(Reason.POSTCOPY_PACKAGED, "PACKAGED", 9)], 0))
    assert _v(obs, "migproxy_passthrough_total", reason="postcopy_packaged") == 1
    [line] = _lines(logs, "passthrough")
    assert "postcopy" in line["note"]


@pytest.mark.parametrize("reason", [Reason.FORMAT_ERROR, Reason.TRUNCATED])
def test_abort_is_counted_and_logged_with_its_reason(logs: Entries, reason: Reason) -> None:
    obs = _observer()
    obs.report(Report([Aborted(reason, "stopped here", 77)], 0))
    assert _v(obs, "migproxy_aborts_total", reason=str(reason)) == 1
    assert _v(obs, "migproxy_passthrough_total", reason=str(reason)) == 0
    [line] = _lines(logs, "abort")
    assert line["log_level"] == "error"
    assert line["reason"] == str(reason)
    assert line["detail"] == "stopped here"
    assert line["offset"] == 77


def test_a_bad_ram_record_of_a_real_stream_is_counted_as_passthrough(logs: Entries) -> None:
    part = STREAM.index(bytes((wire.VM_SECTION_PART,)) + struct.pack(">I", 1))
    bad = STREAM[: part + 12] + b"\xff" + STREAM[part + 13 :]
    obs = _observer()
    obs.classified(Classified(Channel.MAIN))
    _feed_engine(obs, bad)
    assert _v(obs, "migproxy_passthrough_total", reason="format_error") == 1
    assert [line["reason"] for line in _lines(logs, "passthrough")] == ["format_error"]
    assert _v(obs, "migproxy_tail_releases_total", rewritten="true") == 0
    assert _v(obs, "migproxy_holdback_seconds_count") == 0


def test_abort_policy_on_a_real_stream_is_counted_as_abort(logs: Entries) -> None:
    obs = _observer()
    obs.classified(Classified(Channel.MAIN))
    _feed_engine(obs, STREAM[: len(STREAM) // 2], policy=Policy.ABORT)
    assert _v(obs, "migproxy_aborts_total", reason="truncated") == 1
    assert [line["reason"] for line in _lines(logs, "abort")] == ["truncated"]


def test_a_tail_cut_short_is_not_a_release(logs: Entries) -> None:
    obs = _observer()
    obs.classified(Classified(Channel.MAIN))
    events, peak = _feed_engine(obs, STREAM[:-7])
    assert peak > 0
    assert [e.reason for e in events if isinstance(e, PassthroughEntered)] == [
        Reason.NO_DESCRIPTION]
    assert _v(obs, "migproxy_passthrough_total", reason="no_description") == 1
    assert _v(obs, "migproxy_holdback_seconds_count") == 0  # not a release
    assert _v(obs, "migproxy_holdback_size_bytes_count") == 0
    assert _v(obs, "migproxy_holdback_bytes") == 0  # relayed untouched: nothing held


def test_accepted_counts_the_connection_before_its_channel_is_known(logs: Entries) -> None:
    obs = _observer()
    obs.accepted(peer="192.0.2.1:5000")
    assert _v(obs, "migproxy_connections_total") == 1
    assert all(_v(obs, "migproxy_connections_classified_total", channel=ch) == 0
               for ch in ("main", "multifd", "tls", "other"))
    obs.log.info("probe")
    [line] = _lines(logs, "probe")
    assert line["peer"] == "192.0.2.1:5000"  # bound for the connection's later lines
    obs.classified(Classified(Channel.MULTIFD))
    assert _v(obs, "migproxy_connections_total") == 1
    assert _v(obs, "migproxy_connections_classified_total", channel="multifd") == 1


# -- finished -----------------------------------------------------------------------------------

def test_finished_main_decrements_the_gauges_and_counts_the_outcome(logs: Entries) -> None:
    obs = _observer()
    obs.classified(Classified(Channel.MAIN))
    obs.finished(Finished(Outcome.COMPLETED, None, False, Channel.MAIN, 2.5, 1000, 984))
    assert _v(obs, "migproxy_connections_active", channel="main") == 0
    assert _v(obs, "migproxy_migrations_active") == 0
    assert _v(obs, "migproxy_connections_classified_total", channel="main") == 1  # a counter stays
    assert _v(obs, "migproxy_migrations_total", outcome="completed") == 1
    assert _v(obs, "migproxy_migration_duration_seconds_count", outcome="completed") == 1
    assert _v(obs, "migproxy_migration_duration_seconds_sum", outcome="completed") == 2.5
    assert _v(obs, "migproxy_connect_errors_total") == 0
    [line] = _lines(logs, "closed")
    assert line["log_level"] == "info"
    assert line["outcome"] == "completed"
    assert line["reason"] is None
    assert line["seconds"] == 2.5
    assert line["bytes_in"] == 1000
    assert line["bytes_out"] == 984
    assert line["channel"] == "main"


@pytest.mark.parametrize(("outcome", "reason"), [
    (Outcome.FAILED, CloseReason.SOURCE_ERROR), (Outcome.ABORTED, CloseReason.POLICY_ABORT),
    (Outcome.FAILED, CloseReason.IDLE_TIMEOUT), (Outcome.FAILED, CloseReason.SHUTDOWN)])
def test_finished_with_abort_logs_a_warning(logs: Entries, outcome: Outcome,
                                            reason: CloseReason) -> None:
    obs = _observer()
    obs.classified(Classified(Channel.MAIN))
    obs.finished(Finished(outcome, reason, True, Channel.MAIN, 1.0, 10, 0))
    assert _v(obs, "migproxy_migrations_total", outcome=str(outcome)) == 1
    assert _v(obs, "migproxy_migrations_active") == 0
    [line] = _lines(logs, "closed")
    assert line["log_level"] == "warning"
    assert line["outcome"] == str(outcome)
    assert line["reason"] == str(reason)


def test_finished_while_holding_gives_back_the_held_bytes() -> None:
    obs = _observer()
    obs.classified(Classified(Channel.MAIN))
    obs.report(Report([DeviceStateHeld(10)], 5000))
    assert _v(obs, "migproxy_holdback_bytes") == 5000
    obs.finished(Finished(Outcome.FAILED, CloseReason.SOURCE_ERROR, True, Channel.MAIN, 1.0,
                          6000, 1000))
    assert _v(obs, "migproxy_holdback_bytes") == 0


def test_finished_connect_failed_counts_a_connect_error(logs: Entries) -> None:
    obs = _observer()
    obs.finished(Finished(Outcome.EMPTY, CloseReason.CONNECT_FAILED, True, None, 3.0, None,
                          None))
    assert _v(obs, "migproxy_connect_errors_total") == 1
    for ch in ("main", "multifd", "other"):  # never classified: nothing to decrement
        assert _v(obs, "migproxy_connections_active", channel=ch) == 0
    assert _v(obs, "migproxy_migrations_active") == 0
    assert _v(obs, "migproxy_migrations_total", outcome="empty") == 0
    [line] = _lines(logs, "closed")
    assert line["log_level"] == "warning"
    assert line["outcome"] == "empty"
    assert line["reason"] == "connect_failed"
    assert line["bytes_in"] is None
    assert line["bytes_out"] is None


def test_finished_probe_counts_nothing(logs: Entries) -> None:
    obs = _observer()
    obs.finished(Finished(Outcome.EMPTY, CloseReason.NO_DATA, False, None, 0.01, None, None))
    assert _v(obs, "migproxy_connect_errors_total") == 0
    assert _v(obs, "migproxy_migrations_total", outcome="empty") == 0
    [line] = _lines(logs, "closed")
    assert line["log_level"] == "info"
    assert line["reason"] == "no_data"


def test_finished_multifd_is_not_a_migration(logs: Entries) -> None:
    obs = _observer()
    obs.classified(Classified(Channel.MULTIFD))
    obs.finished(Finished(Outcome.RELAYED, None, False, Channel.MULTIFD, 1.0, None, None))
    assert _v(obs, "migproxy_connections_active", channel="multifd") == 0
    assert _v(obs, "migproxy_migrations_total", outcome="relayed") == 0
    assert _v(obs, "migproxy_migrations_active") == 0
    [line] = _lines(logs, "closed")
    assert line["outcome"] == "relayed"
    assert line["channel"] == "multifd"


# -- forwarded and logged -------------------------------------------------------------------------

def test_forwarded_counts_bytes_by_direction_and_channel() -> None:
    obs = _observer()
    obs.forwarded("to_destination", 3)  # before classification: "other"
    assert _v(obs, "migproxy_bytes_total", direction="to_destination", channel="other") == 3
    obs.classified(Classified(Channel.MAIN))
    obs.forwarded("to_destination", 1000)
    obs.forwarded("to_destination", 24)
    obs.forwarded("to_source", 8)
    assert _v(obs, "migproxy_bytes_total", direction="to_destination", channel="main") == 1024
    assert _v(obs, "migproxy_bytes_total", direction="to_source", channel="main") == 8
    assert _v(obs, "migproxy_bytes_total", direction="to_destination", channel="other") == 3
    assert _v(obs, "migproxy_bytes_total", direction="to_source", channel="multifd") == 0


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_logged_uses_the_level_and_fields(logs: Entries, level: str) -> None:
    obs = _observer()
    obs.logged(Log(level, "destination_shut", {"status": 1}))
    [line] = _lines(logs, "destination_shut")
    assert line["log_level"] == level
    assert line["status"] == 1
    assert line["conn"] == "0001"


# -- a session's commands through the observer ----------------------------------------------------

_DIRECTION = {Side.DESTINATION: "to_destination", Side.SOURCE: "to_source"}


def _observe(obs: PairObserver, cmds: list[Command]) -> None:
    """What the executor does with the observer's share of the commands."""
    for c in cmds:
        if isinstance(c, Forward):
            n = sum(len(x) for x in c.chunks)
            if n:
                obs.forwarded(_DIRECTION[c.to], n)
        elif isinstance(c, Report):
            obs.report(c)
        elif isinstance(c, Classified):
            obs.classified(c)
        elif isinstance(c, Log):
            obs.logged(c)
        elif isinstance(c, Finished):
            obs.finished(c)


def test_a_whole_main_channel_through_session_and_observer(logs: Entries) -> None:
    """The loopback test of a rewritten main channel, without sockets."""
    obs = _observer()
    s = Session(SessionSettings(arm_engine_config(PROFILE), 0.0), 0.0)
    _observe(obs, s.on_accepted())
    _observe(obs, s.on_source_data(memoryview(STREAM[:5000]), 0.1))
    _observe(obs, s.on_target_connected(0.2))
    assert _v(obs, "migproxy_migrations_active") == 1
    for i in range(5000, len(STREAM), 5000):
        _observe(obs, s.on_source_data(memoryview(STREAM[i : i + 5000]), 0.3))
    _observe(obs, s.on_eof(Side.SOURCE, 0.4))
    shut = struct.pack(">HHI", 1, 4, 0)
    _observe(obs, s.on_destination_data(memoryview(shut), 0.5))
    _observe(obs, s.on_eof(Side.DESTINATION, 0.6))
    assert s.closed
    assert _v(obs, "migproxy_cpregs_dropped_total", register="BOGUS_DBGDTRTX") == 2
    assert _v(obs, "migproxy_migrations_total", outcome="completed") == 1
    assert _v(obs, "migproxy_bytes_total", direction="to_destination",
              channel="main") == len(REWRITTEN)
    assert _v(obs, "migproxy_bytes_total", direction="to_source", channel="main") == len(shut)
    assert _v(obs, "migproxy_connections_classified_total", channel="main") == 1
    assert _v(obs, "migproxy_connections_active", channel="main") == 0
    assert _v(obs, "migproxy_migrations_active") == 0
    assert _v(obs, "migproxy_ram_records_total", type="zero") == SPEC.zero_pages
    assert _v(obs, "migproxy_holdback_seconds_count") == 1
    assert _v(obs, "migproxy_holdback_bytes") == 0
    [line] = _lines(logs, "closed")
    assert line["outcome"] == "completed"
    assert line["reason"] is None
    assert line["bytes_in"] == len(STREAM)
    assert line["bytes_out"] == len(REWRITTEN)
    assert line["seconds"] == 0.6
    [shut_line] = _lines(logs, "destination_shut")
    assert shut_line["status"] == 0
    assert shut_line["log_level"] == "info"


# -- device state: new names and the deprecated ones ----------------------------------------

def test_device_state_series_and_their_deprecated_names_agree(logs: Entries) -> None:
    obs = _observer()
    obs.classified(Classified(Channel.MAIN))
    _events, peak = _feed_engine(obs, STREAM)
    assert peak > 0
    assert _v(obs, "migproxy_device_state_releases_total", rewritten="true") == 1
    pairs = [("migproxy_device_state_releases_total", "migproxy_tail_releases_total"),
             ("migproxy_device_state_held_bytes", "migproxy_holdback_bytes"),
             ("migproxy_device_state_hold_seconds_count", "migproxy_holdback_seconds_count"),
             ("migproxy_device_state_hold_seconds_sum", "migproxy_holdback_seconds_sum"),
             ("migproxy_device_state_size_bytes_sum", "migproxy_holdback_size_bytes_sum")]
    for new, old in pairs:
        for labels in ({"rewritten": "true"}, {"rewritten": "false"}) if "releases" in new \
                else ({},):
            assert _v(obs, new, **labels) == _v(obs, old, **labels), (new, labels)
    obs.report(Report([], 7000))
    assert _v(obs, "migproxy_device_state_held_bytes") == 7000
    assert _v(obs, "migproxy_holdback_bytes") == 7000
    obs.finished(Finished(Outcome.FAILED, None, True, Channel.MAIN, 1.0, 0, 0))
    assert _v(obs, "migproxy_device_state_held_bytes") == 0
    assert _v(obs, "migproxy_holdback_bytes") == 0


# -- event-loop lag -----------------------------------------------------------------------------

def test_loop_lag_is_the_lateness_past_the_interval() -> None:
    assert loop_lag(10.0, 10.5, 0.5) == 0.0
    assert loop_lag(10.0, 10.75, 0.5) == pytest.approx(0.25)
    assert loop_lag(10.0, 10.4, 0.5) == 0.0  # early (clock granularity): not negative


@pytest.mark.asyncio
async def test_watch_loop_lag_records_each_measurement() -> None:
    """An injected clock and sleep: the wakeups come 0, 0.003, 0.2 and 2 s late."""
    m = Metrics(process=False)
    late = iter([0.0, 0.003, 0.2, 2.0])
    t = [100.0]

    class Stop(Exception):
        pass

    async def sleep(interval: float) -> None:
        try:
            t[0] += interval + next(late)
        except StopIteration:
            raise Stop from None

    with pytest.raises(Stop):
        await watch_loop_lag(m, 0.5, clock=lambda: t[0], sleep=sleep)
    r = m.registry
    assert r.get_sample_value("migproxy_event_loop_delay_seconds_count") == 4
    assert r.get_sample_value("migproxy_event_loop_delay_seconds_sum") == pytest.approx(2.203)
    assert r.get_sample_value("migproxy_event_loop_delay_seconds_bucket", {"le": "0.001"}) == 1
    assert r.get_sample_value("migproxy_event_loop_delay_seconds_bucket", {"le": "0.005"}) == 2
    assert r.get_sample_value("migproxy_event_loop_delay_seconds_bucket", {"le": "0.25"}) == 3
    assert r.get_sample_value("migproxy_event_loop_delay_seconds_bucket", {"le": "1.0"}) == 3
    assert r.get_sample_value("migproxy_event_loop_lag_seconds") == pytest.approx(2.0)  # last
