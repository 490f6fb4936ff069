"""The suite's targets on synthetic result dicts: exact verdicts at the goal boundaries."""

from __future__ import annotations

from typing import Any

import pytest

from bench.targets import EPS, at_least, at_most, missed, targets


def _paths(**mb_s: float) -> dict[str, Any]:
    return {k: {"label": k, "mb_s": {"median": v}, "relay_cpu_s_per_gb": None}
            for k, v in mb_s.items()}


def _throughput(zero_ratio: float | None, **mb_s: float) -> dict[str, Any]:
    return {"shape": {"zero_ratio": zero_ratio}, "paths": _paths(**mb_s)}


def _by_name(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["target"]: t for t in targets(res)}


def _only(res: dict[str, Any], prefix: str) -> dict[str, Any]:
    found = [t for t in targets(res) if t["target"].startswith(prefix)]
    assert len(found) == 1, found
    return found[0]


def test_comparisons_hold_at_the_goal_and_not_past_it() -> None:
    assert at_least(1.0, 1.0)
    assert at_most(1.05, 1.05)
    assert at_most(23.1 - 20.1, 3.0)  # 3.0000000000000018 in floats: still the goal
    assert not at_least(1.0 - 1e-6, 1.0)
    assert not at_most(3.0 + 1e-6, 3.0)
    assert at_least(None, 1.0) is None
    assert at_most(None, 1.0) is None
    assert EPS < 1e-6


@pytest.mark.parametrize(("ours", "met"), [(2000.0, True), (1999.0, False), (2400.0, True)])
def test_main_channel_against_the_faster_of_socat_and_the_splice_relay(
        ours: float, met: bool) -> None:
    for socat, splice in ((2000.0, 1500.0), (1500.0, 2000.0)):  # either may be the faster
        res = {"throughput": _throughput(None, migproxy=ours, socat_1m=socat, splice=splice,
                                         bare=1000.0),
               "throughput_fragmented": _throughput(0.3, migproxy=ours, socat_1m=socat,
                                                    splice=splice)}
        ts = [t for t in targets(res) if t["issue"] == "18"]
        assert [t["target"] for t in ts] == [
            "main channel rewritten, migproxy / faster of socat -b 1M and splice relay "
            "(long runs)",
            "main channel rewritten, migproxy / faster of socat -b 1M and splice relay "
            "(fragmented RAM, p zero 0.3)"]
        for t in ts:
            assert t["value"] == pytest.approx(ours / 2000.0)
            assert t["met"] is met
            assert t["goal"] == ">= 1.0x"
        assert ts[0]["limit"] == "throughput:throughput"
        assert ts[1]["limit"] == "throughput:throughput_fragmented"
        bare = _only(res, "main channel rewritten, migproxy / bare relay (long runs)")
        assert bare["met"] is None
        assert bare["value"] == pytest.approx(ours / 1000.0)


def test_main_channel_without_socat_compares_with_the_splice_relay_alone() -> None:
    res = {"throughput": _throughput(None, migproxy=900.0, splice=1000.0)}
    t = _only(res, "main channel rewritten, migproxy / faster")
    assert t["value"] == pytest.approx(0.9)
    assert t["met"] is False
    res = {"throughput": _throughput(None, migproxy=900.0)}
    t = _only(res, "main channel rewritten, migproxy / faster")
    assert t["value"] is None
    assert t["met"] is None


def _channels(ours_mb: float, socat_mb: float, ours_cpu: float, floor_cpu: float,
              par_ours: float, par_direct: float) -> dict[str, Any]:
    single = _paths(migproxy=ours_mb, socat_1m=socat_mb, splice=1.0, direct=1.0)
    single["migproxy"]["relay_cpu_s_per_gb"] = ours_cpu
    single["splice"]["relay_cpu_s_per_gb"] = floor_cpu
    single["socat_1m"]["relay_cpu_s_per_gb"] = 0.5
    parallel = _paths(migproxy=par_ours, direct=par_direct)
    parallel["migproxy"]["x_one_channel"] = 1.1
    return {"channels": {"channels": 4, "single": single, "parallel": parallel}}


@pytest.mark.parametrize(("args", "verdicts"), [
    ((1000.0, 1000.0, 0.42, 0.40, 950.0, 1000.0), (True, True, True)),  # all at the goal
    ((999.0, 1000.0, 0.421, 0.40, 949.0, 1000.0), (False, False, False)),  # just past it
    ((1500.0, 1000.0, 0.30, 0.40, 1200.0, 1000.0), (True, True, True)),
])
def test_untouched_and_parallel_channels(args: tuple[float, ...],
                                         verdicts: tuple[bool, bool, bool]) -> None:
    res = _channels(*args)
    speed = _only(res, "untouched channel, migproxy / socat -b 1M")
    cpu = _only(res, "untouched channel, migproxy CPU/GB / splice floor's")
    par = _only(res, "main + 4 multifd channels, migproxy / direct aggregate")
    assert (speed["met"], cpu["met"], par["met"]) == verdicts
    assert cpu["value"] == pytest.approx(args[2] / args[3])
    assert (speed["limit"], cpu["limit"], par["limit"]) == ("channel", "channel", "parallel")
    assert _only(res, "untouched channel, migproxy CPU/GB / socat")["met"] is None


def test_cpu_against_the_floor_is_not_judged_without_the_floor() -> None:
    res = _channels(1000.0, 1000.0, 0.42, 0.0, 950.0, 1000.0)  # CPU below /proc's resolution
    assert _only(res, "untouched channel, migproxy CPU/GB / splice")["met"] is None


@pytest.mark.parametrize(("ours", "met"), [(400.0, True), (399.9, False), (500.0, True)])
def test_tls_against_socat(ours: float, met: bool) -> None:
    t = _only({"tls": {"mb_s": {"migproxy": ours, "socat": 400.0}}}, "TLS")
    assert t["met"] is met
    assert t["issue"] == "18"
    assert t["limit"] == "tls"
    t = _only({"tls": {"mb_s": {"migproxy": ours, "socat": None}}}, "TLS")
    assert t["met"] is None


def test_tls_is_judged_on_medians_and_shows_the_best_runs() -> None:
    tls = {"mb_s": {"migproxy": 960.0, "socat": 900.0},
           "all": {"migproxy": [950.0, 960.0, 970.0], "socat": [850.0, 900.0, 1040.0]}}
    t = _only({"tls": tls}, "TLS")
    assert t["met"] is True  # the medians, though socat's best run is ahead
    assert t["value"] == pytest.approx(960.0 / 900.0)
    assert "best 970 against 1040" in t["detail"]


def _qemu(total: tuple[float, float], guest: tuple[float, float]) -> dict[str, Any]:
    def med(t: float, g: float) -> dict[str, float]:
        return {"total_time_ms": t, "guest_downtime_ms": g, "downtime_ms": g - 1}
    cfg = {"median": {"direct": med(200.0, 15.0), "bare": med(total[1], guest[1]),
                      "migproxy": med(total[0], guest[0])}}
    return {"qemu": {"configs": {"default": cfg, "return-path": cfg}}}


@pytest.mark.parametrize(("total", "guest", "verdicts"), [
    ((306.0, 300.0), (23.1, 20.1), (True, True)),  # exactly 1.02x and exactly + 3 ms
    ((306.1, 300.0), (23.2, 20.1), (False, False)),
    ((290.0, 300.0), (19.0, 20.1), (True, True)),  # faster than the bare relay
])
def test_qemu_total_time_and_added_downtime(total: tuple[float, float],
                                            guest: tuple[float, float],
                                            verdicts: tuple[bool, bool]) -> None:
    ts = _by_name(_qemu(total, guest))
    for cfg in ("default", "return-path"):
        tt = ts[f"QEMU total-time, migproxy / bare relay ({cfg})"]
        dt = ts[f"QEMU STOP->RESUME, migproxy - bare relay, ms ({cfg})"]
        assert (tt["met"], dt["met"]) == verdicts
        assert tt["goal"] == "<= 1.02x"
        assert dt["goal"] == "<= +3 ms"
        assert dt["value"] == pytest.approx(guest[0] - guest[1])
        assert tt["limit"] == dt["limit"] == f"qemu:{cfg}"
        assert ts[f"QEMU total-time, migproxy / direct ({cfg})"]["met"] is None


def test_missed_lists_only_measured_misses_of_issue_18() -> None:
    res = {**_qemu((400.0, 300.0), (19.0, 20.1)),
           "tls": {"mb_s": {"migproxy": 100.0, "socat": None}},
           "memory": {"cases": {"1 x small": {"peak_hwm_kb": 40_000},
                                "1 x big": {"peak_hwm_kb": 400_000}}}}
    ts = targets(res)
    assert any(t["met"] is False and t["issue"] == "" for t in ts)  # memory: not issue 18
    assert [t["target"] for t in missed(ts)] == [
        "QEMU total-time, migproxy / bare relay (default)",
        "QEMU total-time, migproxy / bare relay (return-path)"]
    assert all({"target", "value", "goal", "met", "issue", "limit", "detail"} == t.keys()
               for t in ts)
