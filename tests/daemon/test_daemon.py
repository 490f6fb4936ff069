"""The daemon's behaviour over real loopback TCP, without QEMU.

Assertions are about bytes, events, states and bounds — never about how fast anything is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from migproxy.arm.profile import default_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.daemon.config import load_config
from migproxy.daemon.metrics import Metrics
from migproxy.daemon.server import Daemon
from migproxy.stream import wire
from testkit.synthetic import SynthSpec, build
from tests.conftest import run_engine

pytestmark = pytest.mark.asyncio

STREAM = build(SynthSpec(cpus=2, full_pages=200, zero_pages=2000, multifd_flush=True))
REWRITTEN = run_engine([STREAM], arm_engine_config(default_profile()))[0]


@dataclass
class Conn:
    data: bytearray = field(default_factory=bytearray)
    eof: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.StreamWriter | None = None
    error: BaseException | None = None


class Target:
    """A destination stand-in: records what each connection receives."""

    def __init__(self, reply: bytes = b"", read_delay: float = 0.0,
                 read_size: int = 1 << 20) -> None:
        self.conns: list[Conn] = []
        self.new = asyncio.Event()
        self.reply = reply
        self.read_delay = read_delay
        self.read_size = read_size
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        c = Conn(writer=w)
        self.conns.append(c)
        self.new.set()
        if self.reply:
            w.write(self.reply)
        try:
            while True:
                if self.read_delay:
                    await asyncio.sleep(self.read_delay)
                b = await r.read(self.read_size)
                if not b:
                    break
                c.data += b
        except (ConnectionError, OSError) as e:
            c.error = e
        c.eof.set()

    async def conn(self, i: int = 0, timeout: float = 10) -> Conn:
        async def wait() -> Conn:
            while len(self.conns) <= i:
                self.new.clear()
                await self.new.wait()
            return self.conns[i]
        return await asyncio.wait_for(wait(), timeout)

    def close(self) -> None:
        """Close like a destination QEMU does when it is done: every connection, then the
        listener."""
        for c in self.conns:
            if c.writer is not None and not c.writer.is_closing():
                c.writer.close()
        if self.server:
            self.server.close()


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"metrics": ""}
    base.update(kw)
    return argparse.Namespace(**base)


@pytest_asyncio.fixture
async def target() -> AsyncIterator[Target]:
    t = Target()
    yield t
    t.close()


async def _daemon(target_port: int, **kw: object) -> Daemon:
    cfg = load_config(None, _args(listen="127.0.0.1:0", target=f"127.0.0.1:{target_port}", **kw))
    d = Daemon(cfg, Metrics())
    await d.start()
    return d


async def _stop(d: Daemon, target: Target | None = None, timeout: float = 5) -> None:
    if target is not None:
        target.close()
    await d.close_servers()
    await d.drain(timeout)


def _port(d: Daemon) -> int:
    return d.listen_addresses()[0][1]


def _sample(d: Daemon, name: str, **labels: str) -> float:
    v = d.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if v is None else v


async def _send_all(port: int, data: bytes, *, chunk: int = 65536,
                    close: bool = True) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for i in range(0, len(data), chunk):
        w.write(data[i : i + chunk])
        await w.drain()
    if close:
        w.write_eof()
    return r, w


async def _closed(r: asyncio.StreamReader) -> bool:
    """The daemon closed this connection: an EOF, or a reset (an aborted pair)."""
    try:
        return await asyncio.wait_for(r.read(), 10) == b""
    except ConnectionResetError:
        return True


async def _wait_pairs_closed(d: Daemon, timeout: float = 10) -> None:
    async def wait() -> None:
        while d.registry.pairs:
            d.registry.changed.clear()
            await d.registry.changed.wait()
    await asyncio.wait_for(wait(), timeout)


async def test_main_channel_is_rewritten_end_to_end(target: Target) -> None:
    d = await _daemon(await target.start())
    try:
        r, _w = await _send_all(_port(d), STREAM)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert bytes(c.data) == REWRITTEN
        c.writer.close()  # the destination closes: the pair ends
        assert await asyncio.wait_for(r.read(), 10) == b""
        await _wait_pairs_closed(d)
        assert _sample(d, "migproxy_cpregs_dropped_total", register="BOGUS_DBGDTRTX") == 2
        assert _sample(d, "migproxy_migrations_total", outcome="completed") == 1
        assert _sample(d, "migproxy_bytes_total", direction="to_destination",
                       channel="main") == len(REWRITTEN)
        assert _sample(d, "migproxy_connections_total", channel="main") == 1
        assert _sample(d, "migproxy_migrations_active") == 0
        assert _sample(d, "migproxy_ram_records_total", type="zero") == 2000
        assert _sample(d, "migproxy_holdback_seconds_count") == 1
        assert _sample(d, "migproxy_holdback_bytes") == 0
    finally:
        await _stop(d, target)


async def test_return_path_is_relayed_at_once_and_half_close_is_passed_on(
        target: Target) -> None:
    d = await _daemon(await target.start())
    try:
        # Only the first half of the stream: the source is mid-migration.
        r, w = await _send_all(_port(d), STREAM[: len(STREAM) // 2], close=False)
        c = await target.conn()
        pong = struct.pack(">HHI", 2, 4, 1)
        c.writer.write(pong)
        await c.writer.drain()
        assert await asyncio.wait_for(r.readexactly(len(pong)), 10) == pong
        # The source half-closes: the destination sees EOF, and can still answer.
        w.write(STREAM[len(STREAM) // 2 :])
        w.write_eof()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert bytes(c.data) == REWRITTEN
        shut = struct.pack(">HHI", 1, 4, 0)
        c.writer.write(shut)
        await c.writer.drain()
        assert await asyncio.wait_for(r.readexactly(len(shut)), 10) == shut
        c.writer.close()
        assert await asyncio.wait_for(r.read(), 10) == b""
        await _wait_pairs_closed(d)
    finally:
        await _stop(d, target)


@pytest.mark.parametrize("cut", [0, 3, 100, len(STREAM) // 2, len(STREAM) - 7])
async def test_source_reset_at_any_point_closes_the_destination(target: Target,
                                                                 cut: int) -> None:
    d = await _daemon(await target.start())
    try:
        s = socket.create_connection(("127.0.0.1", _port(d)))
        s.sendall(STREAM[:cut])
        if cut == 0:
            await asyncio.sleep(0.05)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # RST before any byte: the target never hears of it
            await _wait_pairs_closed(d)
            assert target.conns == []
            return
        c = await target.conn()
        await asyncio.sleep(0.05)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST
        await asyncio.wait_for(c.eof.wait(), 10)
        await _wait_pairs_closed(d)
        # Whatever arrived is a prefix of the input: nothing invented, nothing rewritten
        # half-way.
        assert STREAM.startswith(bytes(c.data))
        assert _sample(d, "migproxy_connections_active", channel="main") == 0
    finally:
        await _stop(d, target)


@pytest.mark.parametrize("cut", [0, 5000, len(STREAM) // 2])
async def test_destination_reset_closes_the_source(target: Target, cut: int) -> None:
    d = await _daemon(await target.start())
    try:
        r, w = await asyncio.open_connection("127.0.0.1", _port(d))
        w.write(STREAM[: max(cut, 4)])
        await w.drain()
        c = await target.conn()
        sock = c.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.writer.transport.abort()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(r.readexactly(1), 10)
        await _wait_pairs_closed(d)
        assert _sample(d, "migproxy_migrations_total", outcome="failed") == 1
    finally:
        await _stop(d, target)


async def test_slow_destination_keeps_memory_bounded() -> None:
    """The source is paused while the destination side is above the high-water mark."""
    target = Target(read_delay=0.002, read_size=16384)
    port = await target.start()
    big = build(SynthSpec(ram_bytes=256 << 20, full_pages=6000, zero_pages=0,
                          part_sections=4))
    d = await _daemon(port, high_water=256 * 1024)
    peak = 0
    try:
        async def watch() -> None:
            nonlocal peak
            while True:
                for p in list(d.registry.pairs):
                    t = p.dst.transport
                    if t is not None and not t.is_closing():
                        peak = max(peak, t.get_write_buffer_size())
                await asyncio.sleep(0.001)

        watcher = asyncio.create_task(watch())
        _r, _w = await _send_all(_port(d), big, chunk=1 << 20)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 60)
        watcher.cancel()
        assert len(c.data) == len(big) - 16  # one cpu, BOGUS_DBGDTRTX dropped
        # Byte for byte: receive buffers still referenced by queued writes are not reused.
        expected = run_engine([big], arm_engine_config(default_profile()))[0]
        assert bytes(c.data) == expected
        # Queued towards the destination: at most the high-water mark plus one read.
        assert 0 < peak <= 256 * 1024 + (1 << 20)
    finally:
        target.close()
        await _stop(d, target)


async def test_several_migrations_at_once_are_independent(target: Target) -> None:
    d = await _daemon(await target.start())
    streams = [build(SynthSpec(cpus=n, zero_pages=500 * n, full_pages=10 * n, seed=n))
               for n in (1, 2, 3, 4)]
    try:
        results = await asyncio.gather(*(_send_all(_port(d), s, chunk=7000) for s in streams))
        for _ in streams:
            await target.conn(len(streams) - 1)
        for c in target.conns:
            await asyncio.wait_for(c.eof.wait(), 20)
        expected = {run_engine([s], arm_engine_config(default_profile()))[0]
                    for s in streams}
        assert {bytes(c.data) for c in target.conns} == expected
        assert _sample(d, "migproxy_cpregs_dropped_total", register="BOGUS_DBGDTRTX") == 10
        for _, w in results:
            w.close()
    finally:
        await _stop(d, target)


async def test_multifd_and_other_channels_are_relayed_untouched(target: Target) -> None:
    d = await _daemon(await target.start())
    multifd = wire.MULTIFD_MAGIC_BYTES + struct.pack(">I", 1) + bytes(56) + STREAM[:5000]
    other = b"\x00\x00\x00\x00\x00\x00\x00\x08" + STREAM[5000:9000]
    tiny = b"ab"
    try:
        for payload in (multifd, other, tiny):
            await _send_all(_port(d), payload)
        for i, payload in enumerate((multifd, other, tiny)):
            c = await target.conn(i)
            await asyncio.wait_for(c.eof.wait(), 10)
            assert bytes(c.data) == payload
        assert _sample(d, "migproxy_connections_total", channel="multifd") == 1
        assert _sample(d, "migproxy_connections_total", channel="other") == 2
        assert _sample(d, "migproxy_connections_total", channel="main") == 0
    finally:
        await _stop(d, target)


async def test_abort_policy_closes_both_sides(target: Target) -> None:
    d = await _daemon(await target.start(), policy="abort")
    bad = STREAM.replace(struct.pack(">BHH", 8, 11, 0), struct.pack(">BHH", 8, 99, 0), 1)
    try:
        r, _w = await _send_all(_port(d), bad, close=False)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert bad.startswith(bytes(c.data)) and len(c.data) < len(bad)
        assert await _closed(r)
        await _wait_pairs_closed(d)
        assert _sample(d, "migproxy_aborts_total", reason="unknown_command") == 1
        assert _sample(d, "migproxy_migrations_total", outcome="aborted") == 1
    finally:
        await _stop(d, target)


async def test_passthrough_policy_forwards_the_rest_untouched(target: Target) -> None:
    d = await _daemon(await target.start())
    bad = STREAM.replace(struct.pack(">BHH", 8, 11, 0), struct.pack(">BHH", 8, 99, 0), 1)
    try:
        await _send_all(_port(d), bad)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert bytes(c.data) == bad
        assert _sample(d, "migproxy_passthrough_total", reason="unknown_command") == 1
    finally:
        await _stop(d, target)


async def test_dry_run_forwards_unchanged_and_counts(target: Target) -> None:
    d = await _daemon(await target.start(), dry_run=True)
    try:
        await _send_all(_port(d), STREAM)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert bytes(c.data) == STREAM
        assert _sample(d, "migproxy_cpu_sections_rewritten_total", mode="dry_run") == 2
        assert _sample(d, "migproxy_cpregs_dropped_total", register="BOGUS_DBGDTRTX") == 0
    finally:
        await _stop(d, target)


async def test_unreachable_target_closes_the_source() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, not listening: connection refused
        d = await _daemon(dead)
        try:
            r, w = await asyncio.open_connection("127.0.0.1", _port(d))
            w.write(STREAM[:100])
            assert await _closed(r)
            await _wait_pairs_closed(d)
            assert _sample(d, "migproxy_connect_errors_total") == 1
        finally:
            await _stop(d)


async def test_idle_pairs_are_closed(target: Target) -> None:
    d = await _daemon(await target.start(), idle_timeout=0.2)
    try:
        r, w = await asyncio.open_connection("127.0.0.1", _port(d))
        w.write(STREAM[:1000])
        await w.drain()
        c = await target.conn()
        assert await _closed(r)
        await asyncio.wait_for(c.eof.wait(), 10)
        await _wait_pairs_closed(d)
    finally:
        await _stop(d, target)


async def test_drain_waits_for_in_flight_then_aborts_the_rest(target: Target) -> None:
    d = await _daemon(await target.start())
    r, _w = await _send_all(_port(d), STREAM[:2000], close=False)
    await target.conn()
    await d.close_servers()
    # A migration in flight keeps the drain waiting until its timeout, then it is aborted.
    assert await d.drain(0.3) == 1
    assert await _closed(r)


async def test_systemd_notification(target: Target, monkeypatch) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        d = await _daemon(await target.start())
        try:
            assert sock.recv(100) == b"READY=1"
        finally:
            await _stop(d, target)
            sock.close()


async def test_metrics_endpoint_serves_the_counters(target: Target) -> None:
    cfg = load_config(None, _args(listen="127.0.0.1:0", target=f"127.0.0.1:{await target.start()}",
                                  metrics="127.0.0.1:0"))
    d = Daemon(cfg, Metrics())
    await d.start()
    try:
        await _send_all(_port(d), STREAM)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 10)
        url = f"http://127.0.0.1:{d.metrics_port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        body = text.decode()
        assert 'migproxy_cpregs_dropped_total{register="BOGUS_DBGDTRTX"} 2.0' in body
        assert 'migproxy_connections_total{channel="main"} 1.0' in body
        assert "migproxy_holdback_seconds_bucket" in body
        assert "_created" not in body
    finally:
        await _stop(d, target)
        if d.metrics_server:
            d.metrics_server.shutdown()
            d.metrics_server.server_close()


# -- the command line -----------------------------------------------------------------------

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
        _r, w = await _send_all(listen, STREAM[: len(STREAM) // 2], close=False)
        c = await target.conn()
        proc.send_signal(signal.SIGTERM)
        while b'"stopping"' not in await asyncio.wait_for(proc.stdout.readline(), 20):
            pass
        # New connections are refused now, the in-flight one goes on.
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", listen)
        assert proc.returncode is None
        w.write(STREAM[len(STREAM) // 2 :])
        w.write_eof()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert bytes(c.data) == REWRITTEN
        c.writer.close()
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        rest = (await proc.stdout.read()).decode()
        assert '"outcome": "completed"' in rest and '"stopped"' in rest
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
        await _send_all(a, STREAM)
        await _send_all(b, STREAM)
        c1, c2 = await t1.conn(), await t2.conn()
        await asyncio.wait_for(c1.eof.wait(), 10)
        await asyncio.wait_for(c2.eof.wait(), 10)
        assert bytes(c1.data) == REWRITTEN
        assert bytes(c2.data) == STREAM
    finally:
        t1.close()
        t2.close()
        await _stop(d)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback on this machine")
async def test_ipv6_listen_address(target: Target) -> None:
    cfg = load_config(None, _args(listen="[::1]:0", target=f"127.0.0.1:{await target.start()}"))
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
        await _stop(d, target)


async def test_a_bare_probe_never_reaches_the_target(target: Target) -> None:
    """Health checks (connect, close) must not open a connection to the destination."""
    d = await _daemon(await target.start())
    try:
        for _ in range(3):
            _r, w = await asyncio.open_connection("127.0.0.1", _port(d))
            w.close()
            await w.wait_closed()
        await _wait_pairs_closed(d)
        # A real stream afterwards is the first (and only) connection the target sees.
        await _send_all(_port(d), STREAM)
        c = await target.conn()
        await asyncio.wait_for(c.eof.wait(), 10)
        assert len(target.conns) == 1 and bytes(c.data) == REWRITTEN
    finally:
        await _stop(d, target)


async def test_target_connections_are_opened_in_accept_order(target: Target) -> None:
    """A main channel that has not sent a byte yet still reaches the target before a
    multifd channel accepted after it (destinations that assign channels by arrival order)."""
    d = await _daemon(await target.start())
    try:
        _r1, w1 = await asyncio.open_connection("127.0.0.1", _port(d))  # main, silent for now
        await asyncio.sleep(0.05)
        multifd = wire.MULTIFD_MAGIC_BYTES + struct.pack(">I", 1) + bytes(56)
        await _send_all(_port(d), multifd)
        first = await target.conn(0)
        second = await target.conn(1)
        w1.write(STREAM)
        w1.write_eof()
        await asyncio.wait_for(first.eof.wait(), 10)
        await asyncio.wait_for(second.eof.wait(), 10)
        assert bytes(first.data) == REWRITTEN
        assert bytes(second.data) == multifd
    finally:
        await _stop(d, target)


async def test_memory_does_not_grow_with_the_stream_under_backpressure() -> None:
    """200 MB to a destination that reads slowly: the daemon's allocations stay bounded
    (what it queues towards the destination, plus a few receive buffers)."""
    import hashlib
    import tracemalloc

    from testkit.synthetic import generate

    received = 0
    digest = hashlib.sha256()
    done = asyncio.Event()

    async def slow_sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal received
        while True:
            await asyncio.sleep(0.001)
            b = await r.read(65536)
            if not b:
                break
            received += len(b)
            digest.update(b)
        done.set()
        w.close()

    server = await asyncio.start_server(slow_sink, "127.0.0.1", 0)
    spec = SynthSpec(ram_bytes=1 << 30, full_pages=48_000, zero_pages=4000, part_sections=8)
    d = await _daemon(server.sockets[0].getsockname()[1], high_water=1 << 20)
    tracemalloc.start()
    try:
        _, w = await asyncio.open_connection("127.0.0.1", _port(d))
        total = 0
        for chunk in generate(spec):
            w.write(chunk)
            total += len(chunk)
            await w.drain()
        w.write_eof()
        await asyncio.wait_for(done.wait(), 120)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        server.close()
        await _stop(d)
    assert total > 190_000_000
    assert received == total - 16  # BOGUS_DBGDTRTX dropped from the one cpu
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB"
    print(f"peak traced memory {peak / 2**20:.1f} MiB for {total / 1e6:.0f} MB")


@pytest.mark.parametrize(("status", "outcome"), [(0, "completed"), (1, "destination_failed")])
async def test_the_destinations_verdict_on_the_return_path_sets_the_outcome(
        target: Target, status: int, outcome: str) -> None:
    d = await _daemon(await target.start())
    try:
        r, w = await _send_all(_port(d), STREAM, close=False)
        c = await target.conn()
        # PONG 1 (answering PING 1), then SHUT with the load's status, as QEMU sends them.
        rp = struct.pack(">HHI", 2, 4, 1) + struct.pack(">HHI", 1, 4, status)
        c.writer.write(rp[:5])
        await c.writer.drain()
        await asyncio.sleep(0.01)
        c.writer.write(rp[5:])
        await c.writer.drain()
        assert await asyncio.wait_for(r.readexactly(len(rp)), 10) == rp
        w.write_eof()
        await asyncio.wait_for(c.eof.wait(), 10)
        c.writer.close()
        await _wait_pairs_closed(d)
        assert _sample(d, "migproxy_migrations_total", outcome=outcome) == 1
    finally:
        await _stop(d, target)
