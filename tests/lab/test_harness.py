"""Tests of the lab harness itself: tick parsing always, real QEMU when the lab is set up."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import migproxy.lab.lab as lab_module
from migproxy.lab import (
    LabUnavailable,
    free_port,
    get_lab,
    last_counter,
    parse_ticks,
)
from testkit.labs import REQUIRE_ENV, require_lab


def _listening() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_free_port_range_skips_a_range_with_a_taken_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first candidate range has a listening port in it: the next candidate is taken.
    Deterministic: the candidates are given, the taken port is held by this test."""
    taken = _listening()
    try:
        busy = taken.getsockname()[1]
        with socket.socket() as probe:  # a candidate range known free a moment ago
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        candidates = iter([busy - 1, free])
        monkeypatch.setattr(lab_module, "free_port", lambda host: next(candidates))
        assert lab_module.free_port_range(2) == free
    finally:
        taken.close()


def test_free_port_range_gives_up_after_its_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = _listening()
    try:
        busy = taken.getsockname()[1]
        calls: list[int] = []

        def candidate(host: str) -> int:
            calls.append(1)
            return busy

        monkeypatch.setattr(lab_module, "free_port", candidate)
        with pytest.raises(RuntimeError, match="no 3 consecutive free ports"):
            lab_module.free_port_range(3)
        assert len(calls) == lab_module.PORT_RANGE_ATTEMPTS
    finally:
        taken.close()


def test_parse_ticks_ignores_partial_and_foreign_lines() -> None:
    assert parse_ticks("") == []
    assert parse_ticks("tick 1\ntick 2\ntick 3") == [1, 2]
    assert parse_ticks("ck 7\ntick 8\nnoise\ntick 9\n") == [8, 9]


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ("", None),
        ("tick 1\ntick 2\n", 2),
        ("tick 1\ntick 2\nti", 3),  # stopped while printing: counter already 3
        ("tick 1\ntick 2\ntick 3", 3),
        ("ti", 1),
    ],
)
def test_last_counter(log: str, expected: int | None) -> None:
    assert last_counter(log) == expected


@pytest.mark.qemu
def test_stream_roundtrip_same_version() -> None:
    lab = require_lab("10.0.2")
    s = lab.stream("10.0.2", "virt-10.0", "cortex-a57", 1)
    r = lab.load_stream("10.0.2", s.path, "virt-10.0", "cortex-a57", 1, expect_after=s.last_tick)
    assert r.ok, r.error
    assert r.first_tick == s.last_tick + 1


@pytest.mark.qemu
def test_dbgdtrtx_stream_refused_by_10_0_13() -> None:
    lab = require_lab("10.0.2", "10.0.13")
    s = lab.stream("10.0.2", "virt-10.0", "cortex-a57", 1)
    r = lab.load_stream("10.0.13", s.path, "virt-10.0", "cortex-a57", 1, expect_after=s.last_tick)
    assert not r.ok
    assert not r.loaded
    assert r.returncode == 1
    assert "device 'cpu'" in r.error


@pytest.mark.qemu
def test_live_tcp_chrooted_with_return_path() -> None:
    lab = require_lab("11.1")
    uri = f"tcp:127.0.0.1:{free_port()}"
    caps = {"return-path": True}
    with (
        lab.destination("11.1", uri, capabilities=caps, machine="virt-10.0") as dst,
        lab.source("11.1", machine="virt-10.0") as src,
    ):
        src.migrate(uri, capabilities=caps)
        assert src.wait_migration(60)["status"] == "completed"
        n = src.last_counter()
        assert dst.wait_incoming(30)["status"] == "completed"
        assert dst.wait_ticks(1, 10)[0] == (n or 0) + 1


def test_a_missing_version_is_an_error_of_the_harness_and_a_skip_or_failure_of_a_test(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LabUnavailable):
        get_lab().require("0.0")  # no such version in any lab
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="QEMU lab unavailable"):
        require_lab("0.0")
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(LabUnavailable, match="an error, not a skip"):
        require_lab("0.0")


def test_qmp_tolerates_an_event_before_the_greeting(tmp_path: Path) -> None:
    """QEMU may emit an event (RESUME) to a client that connects while it starts, before
    the greeting: the client keeps it and still negotiates."""
    import json
    import socket
    import threading

    from migproxy.lab import QMPClient

    path = str(tmp_path / "qmp.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(json.dumps({"event": "RESUME", "timestamp": {}}).encode() + b"\r\n")
            conn.sendall(json.dumps({"QMP": {"version": {}, "capabilities": []}}).encode()
                         + b"\r\n")
            req = json.loads(conn.makefile().readline())
            conn.sendall(json.dumps({"return": {}, "id": req.get("id")}).encode() + b"\r\n")
            conn.recv(1)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = QMPClient(path).connect(timeout=5)
    try:
        assert "QMP" in client.greeting
        assert [e["event"] for e in client.events] == ["RESUME"]
    finally:
        client.close()
        t.join(5)
        srv.close()
