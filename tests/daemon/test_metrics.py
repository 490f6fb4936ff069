"""Unit tests of :mod:`migproxy.daemon.metrics`: the documented series exist in each
instance's own registry, with the label sets that must be there from the start."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from migproxy.daemon.admission import Refusal
from migproxy.daemon.metrics import CHANNELS, DEPRECATED, DIRECTIONS, PUMP_ENDS, Metrics
from migproxy.stream.reasons import Reason

# (family name as exposed, type, label names) -- the table in docs/operations.md (Metrics)
DOCUMENTED: list[tuple[str, str, tuple[str, ...]]] = [
    ("migproxy_build_info", "gauge", ("version", "python", "ramwalk")),
    ("migproxy_connections", "counter", ()),
    ("migproxy_connections_classified", "counter", ("channel",)),
    ("migproxy_connections_active", "gauge", ("channel",)),
    ("migproxy_migrations_active", "gauge", ()),
    ("migproxy_bytes", "counter", ("direction", "channel")),
    ("migproxy_spliced_connections", "counter", ("channel",)),
    ("migproxy_ram_pump_runs", "counter", ("ended",)),
    ("migproxy_sections", "counter", ("type",)),
    ("migproxy_ram_records", "counter", ("type",)),
    ("migproxy_cpregs_dropped", "counter", ("register",)),
    ("migproxy_cpregs_inserted", "counter", ("register",)),
    ("migproxy_cpregs_set", "counter", ("register",)),
    ("migproxy_cpu_sections_rewritten", "counter", ("mode",)),
    ("migproxy_device_state_releases", "counter", ("rewritten",)),
    ("migproxy_tail_releases", "counter", ("rewritten",)),
    ("migproxy_passthrough", "counter", ("reason",)),
    ("migproxy_aborts", "counter", ("reason",)),
    ("migproxy_device_state_held_bytes", "gauge", ()),
    ("migproxy_device_state_hold_seconds", "histogram", ()),
    ("migproxy_device_state_size_bytes", "histogram", ()),
    ("migproxy_holdback_bytes", "gauge", ()),
    ("migproxy_holdback_seconds", "histogram", ()),
    ("migproxy_holdback_size_bytes", "histogram", ()),
    ("migproxy_migrations", "counter", ("outcome",)),
    ("migproxy_migration_duration_seconds", "histogram", ("outcome",)),
    ("migproxy_connect_errors", "counter", ()),
    ("migproxy_guest_visible_changes", "counter", ()),
    ("migproxy_connections_refused", "counter", ("reason",)),
    ("migproxy_untouched", "counter", ("reason",)),
    ("migproxy_event_loop_lag_seconds", "gauge", ()),
    ("migproxy_event_loop_delay_seconds", "histogram", ()),
]
# prometheus-client's process and platform collectors (Linux: /proc)
STANDARD = {"process_virtual_memory_bytes", "process_resident_memory_bytes",
            "process_start_time_seconds", "process_cpu_seconds", "process_open_fds",
            "process_max_fds", "python_info"}


def _text(m: Metrics) -> str:
    return generate_latest(m.registry).decode("utf-8")


def _lines(m: Metrics) -> set[str]:
    """The migproxy series (the process's own, which change by themselves, left out)."""
    return {ln for ln in _text(m).splitlines()
            if ln and not ln.startswith("#") and ln.startswith("migproxy_")}


def test_documented_families_and_types() -> None:
    text = _text(Metrics())
    for name, typ, _labels in DOCUMENTED:
        exposed = name + "_total" if typ == "counter" else name
        assert f"# TYPE {exposed} {typ}\n" in text, name
        assert f"# HELP {exposed} " in text, name


def test_no_undocumented_families() -> None:
    m = Metrics()
    names = {fam.name for fam in m.registry.collect()}
    assert names == {name for name, _typ, _labels in DOCUMENTED} | STANDARD
    bare = {fam.name for fam in Metrics(process=False).registry.collect()}
    assert bare == {name for name, _typ, _labels in DOCUMENTED}


def test_process_collectors() -> None:
    r = Metrics().registry
    assert r.get_sample_value("process_resident_memory_bytes") > 0  # type: ignore[operator]
    assert r.get_sample_value("process_open_fds") >= 3  # type: ignore[operator]
    assert r.get_sample_value("process_cpu_seconds_total") >= 0  # type: ignore[operator]
    [info] = [f for f in r.collect() if f.name == "python_info"]
    assert info.samples[0].labels["implementation"]
    assert info.samples[0].value == 1


def test_build_info() -> None:
    from platform import python_version

    from migproxy import __version__
    from migproxy.stream.framer import IMPLEMENTATION
    lines = _lines(Metrics())
    assert (f'migproxy_build_info{{python="{python_version()}",ramwalk="{IMPLEMENTATION}",'
            f'version="{__version__}"}} 1.0') in lines
    assert IMPLEMENTATION in ("c", "python")


def test_deprecated_names_say_so_and_name_their_replacement() -> None:
    text = _text(Metrics())
    assert set(DEPRECATED) <= {name for name, _t, _l in DOCUMENTED}
    for old, new in DEPRECATED.items():
        exposed = old + "_total" if old.endswith("releases") else old
        help_line = next(ln for ln in text.splitlines() if ln.startswith(f"# HELP {exposed} "))
        assert "Deprecated" in help_line
        assert new in help_line
        assert f"# TYPE {new}" in text


def test_label_names() -> None:
    m = Metrics()
    m.sections.labels("FULL").inc()
    m.ram_records.labels("page").inc()
    m.cpregs_dropped.labels("BOGUS_DBGDTRTX").inc()
    m.cpregs_inserted.labels("DBGDTR_EL0").inc()
    m.cpregs_set.labels("MIDR_EL1").inc()
    m.cpu_sections_rewritten.labels("applied").inc()
    m.passthrough.labels("format_error").inc()
    m.aborts.labels("format_error").inc()
    m.migrations.labels("completed").inc()
    m.migration_seconds.labels("completed").observe(1.0)
    seen: dict[str, set[str]] = {}
    for fam in m.registry.collect():
        for s in fam.samples:
            seen.setdefault(fam.name, set()).update(k for k in s.labels if k != "le")
    for name, _typ, labels in DOCUMENTED:
        assert seen.get(name, set()) == set(labels), name


def test_pre_created_connection_series() -> None:
    lines = _lines(Metrics())
    assert "migproxy_connections_total 0.0" in lines
    for ch in ("main", "multifd", "tls", "other"):
        assert f'migproxy_connections_classified_total{{channel="{ch}"}} 0.0' in lines
        assert f'migproxy_connections_active{{channel="{ch}"}} 0.0' in lines
        for d in ("to_destination", "to_source"):
            assert f'migproxy_bytes_total{{channel="{ch}",direction="{d}"}} 0.0' in lines
    assert CHANNELS == ("main", "multifd", "tls", "other")
    assert DIRECTIONS == ("to_destination", "to_source")


def test_pre_created_tail_release_series() -> None:
    lines = _lines(Metrics())
    assert 'migproxy_tail_releases_total{rewritten="true"} 0.0' in lines
    assert 'migproxy_tail_releases_total{rewritten="false"} 0.0' in lines
    assert 'migproxy_device_state_releases_total{rewritten="true"} 0.0' in lines
    assert 'migproxy_device_state_releases_total{rewritten="false"} 0.0' in lines


def test_unlabelled_series_start_at_zero() -> None:
    lines = _lines(Metrics())
    for sample in ("migproxy_migrations_active 0.0", "migproxy_holdback_bytes 0.0",
                   "migproxy_connect_errors_total 0.0",
                   "migproxy_holdback_seconds_count 0.0", "migproxy_holdback_seconds_sum 0.0",
                   'migproxy_holdback_seconds_bucket{le="+Inf"} 0.0',
                   'migproxy_holdback_seconds_bucket{le="0.0005"} 0.0',
                   'migproxy_holdback_seconds_bucket{le="10.0"} 0.0',
                   "migproxy_holdback_size_bytes_count 0.0",
                   'migproxy_holdback_size_bytes_bucket{le="16384.0"} 0.0',
                   'migproxy_holdback_size_bytes_bucket{le="6.7108864e+07"} 0.0'):
        assert sample in lines, sample


@pytest.mark.parametrize("family", ["migproxy_sections_total", "migproxy_ram_records_total",
                                    "migproxy_cpregs_dropped_total",
                                    "migproxy_cpregs_inserted_total",
                                    "migproxy_cpregs_set_total",
                                    "migproxy_cpu_sections_rewritten_total",
                                    "migproxy_migrations_total",
                                    "migproxy_migration_duration_seconds_bucket"])
def test_other_label_sets_are_not_pre_created(family: str) -> None:
    assert not any(ln.startswith(family + "{") for ln in _lines(Metrics()))


def test_pre_created_reason_series() -> None:
    lines = _lines(Metrics())
    assert len(Reason) > 0
    for reason in Reason:
        assert f'migproxy_passthrough_total{{reason="{reason.value}"}} 0.0' in lines
        assert f'migproxy_aborts_total{{reason="{reason.value}"}} 0.0' in lines
    for family in ("migproxy_passthrough_total{", "migproxy_aborts_total{"):
        assert sum(ln.startswith(family) for ln in lines) == len(Reason)


def test_exact_series_count_at_start() -> None:
    # connections classified 4, connections_active 4, spliced 4, bytes 8, tail releases 2,
    # passthrough and aborts one per reason, refused one per refusal, classify_timeout and
    # tls_handshake, untouched (tls_not_terminated), 3 gauges, 2 counters,
    # 2 histograms (14 + 7 buckets, +Inf, count, sum)
    expected = (4 + 4 + 4 + 8 + 2 + 2 * len(Reason) + len(Refusal) + 2 + 1 + 3 + 2
                + (14 + 1 + 2) + (7 + 1 + 2))
    # added: build info, connections at accept, device-state releases 2, held bytes,
    # hold seconds and size histograms, the loop-lag histogram (12 buckets, +Inf, count, sum)
    expected += 1 + 1 + 2 + 1 + (14 + 1 + 2) + (7 + 1 + 2) + (12 + 1 + 2)
    # added: the RAM pump's runs, one per way a run ends
    expected += len(PUMP_ENDS)
    assert len(_lines(Metrics())) == expected


def test_no_created_series() -> None:
    m = Metrics()
    m.sections.labels("PART").inc()
    m.holdback_seconds.observe(0.01)
    assert "_created" not in _text(m)


def test_histogram_buckets() -> None:
    m = Metrics()
    m.holdback_seconds.observe(0.003)
    m.holdback_size.observe(70000)
    m.migration_seconds.labels("aborted").observe(42)
    reg = m.registry
    assert reg.get_sample_value("migproxy_holdback_seconds_bucket", {"le": "0.0025"}) == 0.0
    assert reg.get_sample_value("migproxy_holdback_seconds_bucket", {"le": "0.005"}) == 1.0
    assert reg.get_sample_value("migproxy_holdback_size_bytes_bucket", {"le": "65536.0"}) == 0
    assert reg.get_sample_value("migproxy_holdback_size_bytes_bucket",
                                {"le": "262144.0"}) == 1.0
    assert reg.get_sample_value("migproxy_migration_duration_seconds_bucket",
                                {"outcome": "aborted", "le": "30.0"}) == 0.0
    assert reg.get_sample_value("migproxy_migration_duration_seconds_bucket",
                                {"outcome": "aborted", "le": "60.0"}) == 1.0
    assert reg.get_sample_value("migproxy_migration_duration_seconds_sum",
                                {"outcome": "aborted"}) == 42.0


def test_updates_show_in_the_exposition() -> None:
    m = Metrics()
    m.connections_classified.labels("main").inc()
    m.bytes.labels("to_source", "multifd").inc(4096)
    m.connections_active.labels("other").set(2)
    m.migrations_active.inc()
    m.cpregs_dropped.labels("BOGUS_DBGDTRTX").inc()
    m.connect_errors.inc(3)
    lines = _lines(m)
    assert 'migproxy_connections_classified_total{channel="main"} 1.0' in lines
    assert 'migproxy_connections_classified_total{channel="multifd"} 0.0' in lines
    assert 'migproxy_bytes_total{channel="multifd",direction="to_source"} 4096.0' in lines
    assert 'migproxy_bytes_total{channel="multifd",direction="to_destination"} 0.0' in lines
    assert 'migproxy_connections_active{channel="other"} 2.0' in lines
    assert "migproxy_migrations_active 1.0" in lines
    assert 'migproxy_cpregs_dropped_total{register="BOGUS_DBGDTRTX"} 1.0' in lines
    assert "migproxy_connect_errors_total 3.0" in lines


def test_two_instances_do_not_collide() -> None:
    a = Metrics()
    b = Metrics()
    assert a.registry is not b.registry
    a.connections.inc(5)
    a.holdback_bytes.set(1234)
    a.sections.labels("FULL").inc()
    assert a.registry.get_sample_value("migproxy_connections_total") == 5
    assert b.registry.get_sample_value("migproxy_connections_total") == 0
    assert b.registry.get_sample_value("migproxy_holdback_bytes") == 0
    assert b.registry.get_sample_value("migproxy_sections_total", {"type": "FULL"}) is None
    assert _lines(b) == _lines(Metrics())


def test_given_registry_is_used() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg)
    assert m.registry is reg
    m.aborts.labels("policy").inc()
    assert reg.get_sample_value("migproxy_aborts_total", {"reason": "policy"}) == 1.0


def test_a_registry_holds_one_instance() -> None:
    reg = CollectorRegistry()
    Metrics(reg)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics(reg)


def test_not_in_the_default_registry() -> None:
    m = Metrics()
    m.connections.inc()
    assert not any(fam.name.startswith("migproxy_") for fam in REGISTRY.collect())
    assert REGISTRY.get_sample_value("migproxy_connections_total") is None


def test_a_plug_ins_reasons_are_pre_created_too() -> None:
    """The ARM plug-in declares its own reasons; a metrics registry given them has their
    series from the start, after the core's."""
    from migproxy.arm.reasons import ArmReason
    from migproxy.arm.rewriter import arm_engine_config

    reasons = arm_engine_config(None).stop_reasons
    assert reasons == (*Reason, *ArmReason)
    lines = _lines(Metrics(stop_reasons=reasons))
    for reason in reasons:
        assert f'migproxy_passthrough_total{{reason="{reason.value}"}} 0.0' in lines
        assert f'migproxy_aborts_total{{reason="{reason.value}"}} 0.0' in lines


def test_the_daemon_pre_creates_its_routes_reasons() -> None:
    from migproxy.daemon.load import load_config
    from migproxy.daemon.server import Daemon

    cfg = load_config(None, {"listen": "127.0.0.1:0", "target": "127.0.0.1:9"})
    lines = _lines(Daemon(cfg).metrics)
    assert 'migproxy_aborts_total{reason="unsafe_rewrite"} 0.0' in lines
    assert 'migproxy_passthrough_total{reason="cpu_layout"} 0.0' in lines
