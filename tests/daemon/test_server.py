"""The daemon (server.py) over real loopback TCP, without QEMU: drain, systemd
notification, the metrics endpoint, configuration errors at start, signals, several routes,
IPv6.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
import structlog.testing

from migproxy.daemon.load import load_config
from migproxy.daemon.metrics import Metrics
from migproxy.daemon.server import Daemon
from tests.daemon.loopback import (
    REWRITTEN,
    STREAM,
    Target,
    cli_args,
    listen_port,
    reader_closed,
    send_all,
    start_daemon,
    stop_daemon,
)

pytestmark = pytest.mark.asyncio


async def test_drain_waits_for_in_flight_then_aborts_the_rest(target: Target) -> None:
    d = await start_daemon(await target.start())
    r, _w = await send_all(listen_port(d), STREAM[:2000], close=False)
    await target.conn()
    await d.close_servers()
    # A migration in flight keeps the drain waiting until its timeout, then it is aborted.
    assert await d.drain(0.3) == 1
    assert await reader_closed(r)
    await d.close_metrics()


async def test_systemd_notification(target: Target, monkeypatch) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        d = await start_daemon(await target.start())
        try:
            assert sock.recv(100) == b"READY=1"
        finally:
            await stop_daemon(d, target)
            sock.close()


async def test_metrics_endpoint_serves_the_counters(target: Target) -> None:
    port = await target.start()
    cfg = load_config(None, cli_args(listen="127.0.0.1:0", target=f"127.0.0.1:{port}",
                                     metrics="127.0.0.1:0"))
    d = Daemon(cfg, Metrics())
    await d.start()
    try:
        await send_all(listen_port(d), STREAM)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 10)
        url = f"http://127.0.0.1:{d.metrics_port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        body = text.decode()
        assert 'migproxy_cpregs_dropped_total{register="BOGUS_DBGDTRTX"} 2.0' in body
        assert 'migproxy_connections_classified_total{channel="main"} 1.0' in body
        assert "migproxy_holdback_seconds_bucket" in body
        assert "_created" not in body
    finally:
        await stop_daemon(d, target)


def _run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "migproxy", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.mark.parametrize(("args", "message"), [
    (["--listen", ":4444"], "--listen and --target go together"),
    (["--listen", "4444", "--target", "h:1"], "has no port"),
    (["--listen", ":99999", "--target", "h:1"], "out of range"),
    (["--listen", ":4444", "--target", ":1"], "needs a host"),
    (["--listen", ":4444", "--target", "h:1", "--profile", "nope"], "no built-in profile"),
    (["--listen", ":4444", "--target", "h:1", "--log-level", "loud"], "invalid choice"),
    (["--listen", ":4444", "--target", "h:1", "--hold-cap", "10"], "hold_cap must be"),
    (["--listen", "::1:4444", "--target", "h:1"], "brackets"),
    (["--listen", ":49152-49215", "--target", "h:1"], "ranges of the same length"),
    (["--listen", ":1-2000", "--target", "h:1-2000"], "more than 1024"),
    (["--listen", "127.0.0.1:5-6", "--target", "127.0.0.1:5-6"], "loops back"),
    (["--config", "/nonexistent.toml"], "cannot read"),
    ([], "give --listen and --target"),
])
async def test_invalid_configuration_exits_2_at_start(args: list[str], message: str) -> None:
    r = await asyncio.to_thread(_run_cli, *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr


async def test_invalid_config_file_exits_2(tmp_path: Path) -> None:
    cases = {
        "[daemon]\nbogus = 1\n": "unknown keys",
        "[[route]]\nlisten = ':1'\n": "needs listen and target",
        "[defaults]\npolicy = 'maybe'\n[[route]]\nlisten=':1'\ntarget='h:2'\n": "policy must be",
        "[[route]]\nlisten=':1'\ntarget='h:2'\nprofile='/no/such.toml'\n": "cannot read profile",
        "not toml [": "invalid TOML",
    }
    for text, message in cases.items():
        f = tmp_path / "c.toml"
        f.write_text(text)
        r = await asyncio.to_thread(_run_cli, "--config", str(f))
        assert r.returncode == 2, (text, r.stderr)
        assert message in r.stderr, (text, r.stderr)


async def test_sigterm_drains_in_flight_migrations_then_exits_0(target: Target) -> None:
    port = await target.start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        listen = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "migproxy", "--listen", f"127.0.0.1:{listen}", "--target",
        f"127.0.0.1:{port}", "--metrics", "", "--log-format", "json", "--drain-timeout", "30",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        while b'"listening"' not in await asyncio.wait_for(proc.stdout.readline(), 20):
            pass
        _r, w = await send_all(listen, STREAM[: len(STREAM) // 2], close=False)
        c = await target.conn()
        proc.send_signal(signal.SIGTERM)
        while b'"stopping"' not in await asyncio.wait_for(proc.stdout.readline(), 20):
            pass
        # New connections are refused now, the in-flight one goes on.
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", listen)
        assert proc.returncode is None
        w.write(STREAM[len(STREAM) // 2 :])
        w.write_eof()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert bytes(c.data) == REWRITTEN
        c.writer.close()
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        rest = (await proc.stdout.read()).decode()
        assert '"outcome": "completed"' in rest
        assert '"stopped"' in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_several_routes_in_one_daemon(tmp_path: Path) -> None:
    t1, t2 = Target(), Target()
    p1, p2 = await t1.start(), await t2.start()
    prof = tmp_path / "keep.toml"
    prof.write_text('name = "keep"\n')  # no rules: relays the stream unchanged
    cfg = tmp_path / "migproxy.toml"
    cfg.write_text(f"""
[daemon]
metrics = ""
[defaults]
policy = "passthrough"
[[route]]
listen = "127.0.0.1:0"
target = "127.0.0.1:{p1}"
[[route]]
listen = "127.0.0.1:0"
target = "127.0.0.1:{p2}"
profile = "{prof}"
""")
    d = Daemon(load_config(str(cfg), argparse.Namespace()), Metrics())
    await d.start()
    try:
        (_, a), (_, b) = d.listen_addresses()
        await send_all(a, STREAM)
        await send_all(b, STREAM)
        c1, c2 = await t1.conn(), await t2.conn()
        await asyncio.wait_for(c1.eof.wait(), 10)
        await asyncio.wait_for(c2.eof.wait(), 10)
        assert bytes(c1.data) == REWRITTEN
        assert bytes(c2.data) == STREAM
    finally:
        t1.close()
        t2.close()
        await stop_daemon(d)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback on this machine")
async def test_ipv6_listen_address(target: Target) -> None:
    cfg = load_config(None, cli_args(listen="[::1]:0", target=f"127.0.0.1:{await target.start()}"))
    d = Daemon(cfg, Metrics())
    await d.start()
    try:
        host, port = d.listen_addresses()[0][:2]
        assert host == "::1"
        _r, w = await asyncio.open_connection("::1", port)
        w.write(STREAM)
        w.write_eof()
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert bytes(c.data) == REWRITTEN
    finally:
        await stop_daemon(d, target)


async def test_a_target_that_does_not_resolve_is_a_warning_not_a_failure() -> None:
    cfg = load_config(None, cli_args(listen="127.0.0.1:0", target="nonexistent.invalid:4444"))
    d = Daemon(cfg, Metrics())
    with structlog.testing.capture_logs() as logs:
        await d.start()
    try:
        assert d.listen_addresses()  # it listens all the same
        warn = [e for e in logs if e["event"] == "target_unresolved"]
        assert len(warn) == 1
        assert warn[0]["target"] == "nonexistent.invalid:4444"
        assert warn[0]["log_level"] == "warning"
    finally:
        await stop_daemon(d)


async def test_an_idle_client_does_not_hold_the_drain(target: Target) -> None:
    """A connection that never sent a byte carries no migration: the drain closes it at
    once instead of waiting the whole drain timeout for it; a migration in flight is still
    waited for."""
    d = await start_daemon(await target.start())
    try:
        idle_r, _idle_w = await asyncio.open_connection("127.0.0.1", listen_port(d),
                                                        local_addr=("127.0.0.2", 0))
        r, w = await send_all(listen_port(d), STREAM[:5000], close=False)
        conn = await target.conn()
        while len(d.registry.pairs) < 2:
            await asyncio.sleep(0.01)
        await d.close_servers()
        drain = asyncio.ensure_future(d.drain(300))
        assert await asyncio.wait_for(reader_closed(idle_r), 10)  # closed at once
        assert len(d.registry.pairs) == 1
        assert not drain.done()
        w.write(STREAM[5000:])
        w.write_eof()
        await asyncio.wait_for(conn.eof.wait(), 10)
        conn.writer.close()  # the destination closes its side too: the migration is done
        assert await asyncio.wait_for(drain, 10) == 0  # it finished: nothing was aborted
        assert await reader_closed(r)
    finally:
        await stop_daemon(d, target)
