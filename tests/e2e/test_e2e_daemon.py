"""Live migrations through the real migproxy daemon between real QEMU versions (the lab).

A source QEMU runs the tick guest and migrates over loopback TCP to the daemon, which relays
to a destination QEMU listening with ``-incoming defer`` + ``migrate-incoming``. Every case
checks the guest's counter: the destination's first ``tick`` line is the source's last
counter + 1 (or, when the migration must fail, the source resumes and keeps counting).
Negative controls (direct migration, ``--dry-run``) show the same pairs fail without the
rewrite, so the positive cases can fail.

The daemon runs as a subprocess (``python -m migproxy``), logs JSON lines to a file and
serves Prometheus metrics; the tests read both. One daemon with the default profile is
shared by most cases (a fresh destination listens on its fixed target port each time), and
each case checks the change of the counters its own migration caused.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from migproxy.lab import (
    MIGRATION_FINAL_STATES,
    Lab,
    Qemu,
    free_port,
    free_port_range,
    wait_port,
)
from testkit.faults import BLOB_ADDR, BLOB_SIZE, MEMORY
from testkit.labs import require_lab

pytestmark = pytest.mark.qemu

REPO = Path(__file__).resolve().parents[2]
DBGDTRTX = "BOGUS_DBGDTRTX"
LOOPBACK = "127.0.0.1"

SampleKey = tuple[str, frozenset[tuple[str, str]]]


def _free_ports(n: int, *, besides: int = 0) -> list[int]:
    """``n`` distinct free ports, none equal to ``besides``."""
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p != besides and p not in ports:
            ports.append(p)
    return ports


def _ports(first: int, count: int) -> str:
    return str(first) if count == 1 else f"{first}-{first + count - 1}"


class Proxy:
    """A ``migproxy`` daemon subprocess on loopback, its JSON log file and its metrics.
    With ``ports`` > 1 its route is a range: ``ports`` listen ports from ``listen_port``
    to as many target ports from ``target_port``."""

    def __init__(self, log_dir: Path, target_port: int, *options: str, ports: int = 1) -> None:
        self.listen_port, self.metrics_port = _free_ports(2, besides=target_port)
        if ports > 1:
            self.listen_port = free_port_range(ports)
            while self.listen_port <= self.metrics_port < self.listen_port + ports:
                self.metrics_port = free_port()
        self.target_port = target_port
        self.log_path = log_dir / f"migproxy-{self.listen_port}.log"
        self.argv = [
            sys.executable, "-m", "migproxy",
            "--listen", f"{LOOPBACK}:{_ports(self.listen_port, ports)}",
            "--target", f"{LOOPBACK}:{_ports(target_port, ports)}",
            "--metrics", f"{LOOPBACK}:{self.metrics_port}",
            "--log-format", "json",
            *options,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        # What went through this daemon with a register dropped, for the summary test.
        self.cpus_dropped = 0
        self.completed = 0

    @property
    def uri(self) -> str:
        """What the source migrates to."""
        return f"tcp:{LOOPBACK}:{self.listen_port}"

    @property
    def target_uri(self) -> str:
        """What the destination listens on."""
        return f"tcp:{LOOPBACK}:{self.target_port}"

    def start(self, timeout: float = 20.0) -> Proxy:
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=REPO)
        # Wait for the metrics endpoint, which the daemon starts after binding its listener.
        # (Probing the listen port would make the daemon relay a connection to the target.)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"migproxy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                wait_port(self.metrics_port, LOOPBACK, timeout=0.2)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
        assert self.events("listening"), self.log()
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait for the drain; the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return None
        return self.proc.returncode

    # -- log ----------------------------------------------------------------------------
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def events(self, name: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Parsed JSON log lines (from line ``since`` on), optionally only event ``name``."""
        out: list[dict[str, Any]] = []
        for line in self.log().splitlines()[since:]:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "<not json>", "line": line}
            if name is None or ev.get("event") == name:
                out.append(ev)
        return out

    def mark(self) -> int:
        """A position in the log, for :meth:`events` ``since``."""
        return len(self.log().splitlines())

    def context(self) -> str:
        return f"migproxy log ({self.log_path}):\n{self.log()[-4000:]}"

    # -- metrics ------------------------------------------------------------------------
    def scrape(self) -> str:
        url = f"http://{LOOPBACK}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text: str = r.read().decode()
        return text

    def samples(self) -> dict[SampleKey, float]:
        out: dict[SampleKey, float] = {}
        for fam in text_string_to_metric_families(self.scrape()):
            for s in fam.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def value(self, name: str, samples: Mapping[SampleKey, float] | None = None,
              **labels: str) -> float:
        s = self.samples() if samples is None else samples
        return s.get((name, frozenset(labels.items())), 0.0)

    def wait_value(self, name: str, expected: float, timeout: float = 15.0,
                   **labels: str) -> None:
        """Wait until a sample has ``expected`` (counters are updated when a pair closes)."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.value(name, **labels)
            if v == expected:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{labels} is {v}, expected {expected}\n"
                                     f"{self.context()}")
            time.sleep(0.05)


@dataclass
class Delta:
    """Counter changes caused by one migration."""

    proxy: Proxy
    before: dict[SampleKey, float] = field(default_factory=dict)
    log_mark: int = 0

    @classmethod
    def start(cls, proxy: Proxy) -> Delta:
        return cls(proxy, proxy.samples(), proxy.mark())

    def __call__(self, name: str, **labels: str) -> float:
        return self.proxy.value(name, **labels) - self.proxy.value(name, self.before, **labels)

    def wait(self, name: str, expected: float, timeout: float = 15.0, **labels: str) -> None:
        base = self.proxy.value(name, self.before, **labels)
        self.proxy.wait_value(name, base + expected, timeout, **labels)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return self.proxy.events(name, since=self.log_mark)


def wait_event(proxy: Proxy, name: str, since: int = 0,
               timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not (found := proxy.events(name, since)):
        assert time.monotonic() < deadline, f"no {name} event\n{proxy.context()}"
        time.sleep(0.05)
    return found[0]


def start_postcopy(src: Qemu, timeout: float = 30.0) -> None:
    """Switch the source's migration to postcopy once it is active (in precopy)."""
    deadline = time.monotonic() + timeout
    while src.query_migrate().get("status") != "active":
        assert time.monotonic() < deadline, src.query_migrate()
        time.sleep(0.05)
    src.execute("migrate-start-postcopy")


def wait_main_closed(proxy: Proxy, since: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The ``closed`` events of main channels since ``since``, once there is one.

    (Counters change just before the event is logged: wait for the log line itself.)
    """
    deadline = time.monotonic() + timeout
    while True:
        closed = [e for e in proxy.events("closed", since) if e.get("channel") == "main"]
        if closed:
            return closed
        assert time.monotonic() < deadline, f"no main channel closed\n{proxy.context()}"
        time.sleep(0.05)


def wait_refused(port: int, timeout: float = 10.0) -> None:
    """Wait until nothing accepts connections on the loopback port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                pass
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline, f"port {port} still accepts connections"
        time.sleep(0.05)


# ---------------------------------------------------------------------------- migrations

@dataclass(frozen=True)
class Migrated:
    last_tick: int
    """The source's counter when it stopped."""
    first_tick: int
    """The destination's first complete tick line (last_tick + 1)."""
    source_info: dict[str, Any]


def complete(src: Qemu, dst: Qemu, context: Callable[[], str] = str) -> Migrated:
    """Wait for a live migration to end; assert the guest continues on the destination."""
    info = src.wait_migration(60)
    assert info.get("status") == "completed", (
        f"source: {info}\ndestination stderr: {dst.stderr()}\n{context()}")
    n = src.last_counter()
    assert n is not None, src.serial()
    dinfo = dst.wait_incoming(30)
    assert dinfo.get("status") == "completed", f"destination: {dinfo}\n{context()}"
    if dst.status() != "running":
        dst.cont()
    first = dst.wait_ticks(1, 10)[0]
    assert first == n + 1, f"destination's first tick {first}, source stopped at {n}\n{context()}"
    return Migrated(n, first, info)


def migrate_live(
    lab: Lab,
    src_version: str,
    dst_version: str,
    *,
    dst_uri: str,
    via_uri: str,
    cpu: str = "cortex-a57",
    smp: int = 1,
    machine: str = "virt-10.0",
    capabilities: Mapping[str, bool] | None = None,
    parameters: Mapping[str, Any] | None = None,
    context: Callable[[], str] = str,
) -> Migrated:
    """Run a guest on ``src_version`` and live-migrate it to a ``dst_version`` destination
    listening on ``dst_uri``, the source connecting to ``via_uri``; assert it continues."""
    with (
        lab.destination(dst_version, dst_uri, capabilities=capabilities, parameters=parameters,
                        machine=machine, cpu=cpu, smp=smp) as dst,
        lab.source(src_version, machine=machine, cpu=cpu, smp=smp) as src,
    ):
        src.migrate(via_uri, capabilities, parameters)
        return complete(src, dst, context)


def migrate_expecting_failure(
    lab: Lab,
    src_version: str,
    dst_version: str,
    *,
    dst_uri: str,
    via_uri: str,
    cpu: str = "cortex-a57",
    smp: int = 1,
    machine: str = "virt-10.0",
) -> str:
    """Precopy without return-path that the destination refuses; the source is resumed and
    must keep counting. Returns the destination's stderr."""
    with (
        lab.destination(dst_version, dst_uri, machine=machine, cpu=cpu, smp=smp) as dst,
        lab.source(src_version, machine=machine, cpu=cpu, smp=smp) as src,
    ):
        src.migrate(via_uri)
        src.wait_migration(60)
        dinfo = dst.wait_incoming(30)
        assert dinfo.get("status") != "completed", "the destination accepted the stream"
        error = str(dinfo.get("error-desc", ""))
        # Without return-path the source cannot tell: it stops the guest (postmigrate).
        n = src.last_counter()
        assert n is not None
        if src.status() != "running":
            src.cont()
        assert src.status() == "running"
        assert_counting(src, n)
        return error


def assert_counting(q: Qemu, since: int) -> None:
    """The guest goes on counting past ``since``, one by one."""
    ticks = q.wait_ticks(len(q.ticks()) + 2, 10)
    assert ticks[-1] > since
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), ticks


# A migration that cannot finish until the test lets it: the guest's RAM holds random data
# (a stream of about 70 MB, more than loopback socket buffers and the daemon's high-water
# mark hold) and the destination process is stopped (SIGSTOP), so the daemon's writes back
# up, it stops reading, and the source blocks -- no timing involved.
HELD_MEMORY = MEMORY


@dataclass
class Held:
    src: Qemu
    dst: Qemu
    transferred: int
    """Bytes the source had sent when it stalled."""

    def release(self) -> None:
        assert self.dst.pid is not None
        os.kill(self.dst.pid, signal.SIGCONT)


def wait_stalled(src: Qemu, timeout: float = 30.0) -> int:
    """Wait until the source's migration stops making progress (still active)."""
    deadline = time.monotonic() + timeout
    last, same = -1, 0
    while same < 4:
        info = src.query_migrate()
        status = info.get("status")
        assert status not in MIGRATION_FINAL_STATES, f"the migration ended while held: {info}"
        transferred = int(info.get("ram", {}).get("transferred", 0))
        same = same + 1 if transferred == last and status == "active" else 0
        last = transferred
        assert time.monotonic() < deadline, f"the source did not stall: {info}"
        time.sleep(0.25)
    return last


@contextlib.contextmanager
def held_migration(lab: Lab, proxy: Proxy, blob: Path) -> Iterator[Held]:
    """A 10.0.2 -> 10.0.13 migration through ``proxy``, stalled until ``release()``."""
    loader = f"loader,file={blob},addr={BLOB_ADDR:#x},force-raw=on"
    with (
        lab.destination("10.0.13", proxy.target_uri, machine="virt-10.0",
                        memory=HELD_MEMORY) as dst,
        lab.source("10.0.2", machine="virt-10.0", memory=HELD_MEMORY,
                   extra_args=["-device", loader]) as src,
    ):
        assert dst.pid is not None
        os.kill(dst.pid, signal.SIGSTOP)
        try:
            src.migrate(proxy.uri)
            transferred = wait_stalled(src)
            # Backpressure reached the source long before the end of the guest's RAM.
            assert transferred < BLOB_SIZE, transferred
            yield Held(src, dst, transferred)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(dst.pid, signal.SIGCONT)


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def lab() -> Lab:
    return require_lab("10.0.2", "10.0.13", "11.1")


@pytest.fixture(scope="module")
def proxy(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """One daemon with the default profile, shared by the cases below."""
    p = Proxy(tmp_path_factory.mktemp("migproxy"), free_port()).start()
    try:
        yield p
    finally:
        rc = p.stop()
    assert rc == 0, f"migproxy did not exit 0 on SIGTERM ({rc})\n{p.context()}"


@pytest.fixture
def own_proxy(lab: Lab, tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    """Start a daemon of the test's own (``own_proxy("--dry-run")``); stopped afterwards."""
    started: list[Proxy] = []

    def start(*options: str) -> Proxy:
        p = Proxy(tmp_path, free_port(), *options).start()
        started.append(p)
        return p

    yield start
    for p in started:
        rc = p.stop()
        assert rc == 0, f"migproxy did not exit 0 on SIGTERM ({rc})\n{p.context()}"


def _through(proxy: Proxy, lab: Lab, src: str, dst: str, cpus_dropped: int,
             **kwargs: Any) -> tuple[Migrated, Delta]:
    """Migrate through the shared proxy; check the counters of this one migration."""
    delta = Delta.start(proxy)
    m = migrate_live(lab, src, dst, dst_uri=proxy.target_uri, via_uri=proxy.uri,
                     context=proxy.context, **kwargs)
    delta.wait("migproxy_migrations_total", 1, outcome="completed")
    assert delta("migproxy_cpregs_dropped_total", register=DBGDTRTX) == cpus_dropped
    assert delta("migproxy_connections_classified_total", channel="main") == 1
    rewritten = "true" if cpus_dropped else "false"
    assert delta("migproxy_tail_releases_total", rewritten=rewritten) == 1
    assert proxy.value("migproxy_migrations_active") == 0
    closed = wait_main_closed(proxy, delta.log_mark)
    assert [e["outcome"] for e in closed] == ["completed"], closed
    proxy.cpus_dropped += cpus_dropped
    proxy.completed += 1
    return m, delta


# ---------------------------------------------------------------------------- cases

def test_direct_10_0_2_to_10_0_13_fails(lab: Lab) -> None:
    """Negative control: without migproxy 10.0.13 refuses the 10.0.2 cpu section."""
    port = free_port()
    error = migrate_expecting_failure(lab, "10.0.2", "10.0.13", dst_uri=f"tcp:{LOOPBACK}:{port}",
                                      via_uri=f"tcp:{LOOPBACK}:{port}")
    assert "device 'cpu'" in error, error


@pytest.mark.parametrize("cpu", ["cortex-a57", "max"])
@pytest.mark.parametrize("smp", [1, 2])
def test_10_0_2_to_10_0_13_with_the_default_profile(lab: Lab, proxy: Proxy, cpu: str,
                                                    smp: int) -> None:
    _, delta = _through(proxy, lab, "10.0.2", "10.0.13", smp, cpu=cpu, smp=smp)
    rewrites = delta.events("cpu_rewrite")
    assert sorted(e["cpu"] for e in rewrites) == list(range(smp)), rewrites
    for e in rewrites:
        assert e["cpregs_after"] == e["cpregs_before"] - 1
        assert [d.split("(")[0] for d in e["dropped"]] == [DBGDTRTX]
        assert "0x40200000200E0298" in e["dropped"][0]


def test_return_path_10_0_2_to_10_0_13(lab: Lab, proxy: Proxy) -> None:
    caps = {"return-path": True}
    _, delta = _through(proxy, lab, "10.0.2", "10.0.13", 1, capabilities=caps)
    # The return path carries the destination's replies (at least SHUT) back to the source.
    assert delta("migproxy_bytes_total", direction="to_source", channel="main") > 0


def test_multifd_with_return_path_10_0_2_to_10_0_13(lab: Lab, proxy: Proxy) -> None:
    caps = {"multifd": True, "return-path": True}
    params = {"multifd-channels": 2}
    _, delta = _through(proxy, lab, "10.0.2", "10.0.13", 1, capabilities=caps,
                        parameters=params)
    assert delta("migproxy_connections_classified_total", channel="multifd") == 2
    assert delta("migproxy_connections_classified_total", channel="other") == 0
    assert delta("migproxy_bytes_total", direction="to_destination", channel="multifd") > 0
    # Nothing in a multifd channel is parsed: the kernel relays it (splice(2)).
    assert delta("migproxy_spliced_connections_total", channel="multifd") == 2
    rewrites = delta.events("cpu_rewrite")
    assert [e["channel"] for e in rewrites] == ["main"], rewrites
    channels = sorted(e["kind"] for e in delta.events("channel"))
    assert channels == ["main", "multifd", "multifd"], channels
    delta.wait("migproxy_connections_active", 0, channel="multifd")


@pytest.mark.parametrize("version", ["10.0.2", "11.1"])
def test_same_version_through_the_default_profile(lab: Lab, proxy: Proxy, version: str) -> None:
    # 10.0.2 sends DBGDTRTX (dropped, 10.0.2 loads it without); 11.1 no longer does.
    dropped = 1 if version == "10.0.2" else 0
    _, delta = _through(proxy, lab, version, version, dropped)
    assert len(delta.events("cpu_rewrite")) == dropped


def test_metrics_during_a_migration(lab: Lab, proxy: Proxy, blob: Path) -> None:
    """While a migration is in flight the daemon reports it as active."""
    delta = Delta.start(proxy)
    with held_migration(lab, proxy, blob) as held:
        s = proxy.samples()
        assert proxy.value("migproxy_migrations_active", s) == 1
        assert proxy.value("migproxy_connections_active", s, channel="main") == 1
        sent = (proxy.value("migproxy_bytes_total", s, direction="to_destination", channel="main")
                - proxy.value("migproxy_bytes_total", delta.before, direction="to_destination",
                              channel="main"))
        assert 0 < sent <= held.transferred
        assert proxy.value("migproxy_migrations_total", s, outcome="completed") == proxy.value(
            "migproxy_migrations_total", delta.before, outcome="completed")
        held.release()
        complete(held.src, held.dst, proxy.context)
    delta.wait("migproxy_migrations_total", 1, outcome="completed")
    assert delta("migproxy_cpregs_dropped_total", register=DBGDTRTX) == 1
    assert proxy.value("migproxy_migrations_active") == 0
    assert proxy.value("migproxy_connections_active", channel="main") == 0
    proxy.cpus_dropped += 1
    proxy.completed += 1


def test_sigterm_drains_an_in_flight_migration(lab: Lab, own_proxy: Callable[..., Proxy],
                                               blob: Path) -> None:
    p = own_proxy()
    assert p.proc is not None
    with held_migration(lab, p, blob) as held:
        mark = p.mark()
        p.proc.send_signal(signal.SIGTERM)
        stopping = wait_event(p, "stopping", since=mark)
        assert stopping["in_flight"] == 1, stopping
        wait_refused(p.listen_port)  # no new migrations while draining
        assert p.proc.poll() is None, "migproxy exited before the migration finished"
        held.release()
        complete(held.src, held.dst, p.context)
    assert p.proc.wait(30) == 0, p.context()
    after = [e["event"] for e in p.events(since=mark)]
    assert after.index("closed") < after.index("stopped"), after
    closed = wait_main_closed(p, mark)
    assert [e["outcome"] for e in closed] == ["completed"], closed


def test_cancelled_migration(lab: Lab, own_proxy: Callable[..., Proxy], blob: Path) -> None:
    """migrate_cancel on the source: the guest runs on, the daemon closes the pair."""
    p = own_proxy()
    delta = Delta.start(p)
    with held_migration(lab, p, blob) as held:
        held.src.execute("migrate_cancel")
        assert held.src.wait_migration(30).get("status") == "cancelled"
        assert held.src.status() == "running"
        held.release()
        assert held.dst.wait_incoming(30).get("status") != "completed"
        n = held.src.last_counter()
        assert n is not None
        assert_counting(held.src, n)
    closed = wait_main_closed(p, delta.log_mark)  # logged after every metric update
    assert len(closed) == 1, closed
    assert closed[0]["outcome"] != "completed", closed
    assert p.value("migproxy_migrations_active") == 0
    assert p.value("migproxy_connections_active", channel="main") == 0
    assert p.value("migproxy_holdback_bytes") == 0
    assert delta("migproxy_migrations_total", outcome="completed") == 0


@pytest.mark.parametrize("killed", ["migproxy", "destination"])
def test_kill_9_mid_migration_leaves_the_guest_running_on_the_source(
        lab: Lab, tmp_path: Path, blob: Path, killed: str) -> None:
    """SIGKILL of migproxy, or of the destination behind it, while RAM is streaming: the
    source sees the connection fail, reports the migration failed and the guest goes on
    counting there, as with a direct migration whose connection breaks."""
    p = Proxy(tmp_path, free_port()).start()
    assert p.proc is not None
    try:
        with held_migration(lab, p, blob) as held:
            if killed == "migproxy":
                p.proc.kill()
                p.proc.wait(10)
            else:
                assert held.dst.pid is not None
                os.kill(held.dst.pid, signal.SIGKILL)
            info = held.src.wait_migration(60)
            assert info.get("status") == "failed", info
            assert held.src.status() == "running"
            n = held.src.last_counter()
            assert n is not None
            assert_counting(held.src, n)
            if killed == "migproxy":
                held.release()
                assert held.dst.wait_incoming(30).get("status") != "completed"
        if killed == "destination":
            closed = wait_main_closed(p, 0)
            assert len(closed) == 1, closed
            assert closed[0]["outcome"] != "completed", closed
    finally:
        if p.proc.poll() is None:
            p.stop()


@pytest.mark.parametrize("smp", [1, 2])
def test_10_0_2_to_11_1_with_a_profile_from_cpregs_diff(lab: Lab, own_proxy: Callable[..., Proxy],
                                                        tmp_path: Path, smp: int) -> None:
    src = lab.stream("10.0.2", "virt-10.0", "cortex-a57", smp)
    ref = lab.stream("11.1", "virt-10.0", "cortex-a57", smp)
    profile = tmp_path / f"10.0.2-to-11.1-smp{smp}.toml"
    diff = subprocess.run(
        [sys.executable, "-m", "migproxy", "cpregs", "diff", str(src.path), str(ref.path),
         "--emit-profile", str(profile)], capture_output=True, text=True, cwd=REPO, check=False)
    assert diff.returncode == 0, diff.stderr
    p = own_proxy("--profile", str(profile))
    delta = Delta.start(p)
    migrate_live(lab, "10.0.2", "11.1", dst_uri=p.target_uri, via_uri=p.uri, smp=smp,
                 context=p.context)
    delta.wait("migproxy_migrations_total", 1, outcome="completed")
    for reg in (DBGDTRTX, "ID_AA64ISAR0_EL1"):
        assert delta("migproxy_cpregs_dropped_total", register=reg) == smp, p.context()
    rewrites = delta.events("cpu_rewrite")
    assert sorted(e["cpu"] for e in rewrites) == list(range(smp))
    if smp == 2:
        # CPU 1 also needs the debug registers 11.1 has and 10.0.2 does not send for it.
        inserted = {d.split("(")[0] for e in rewrites for d in e["inserted"]}
        assert {"DBGDTRTXint", "DBGDTR_EL0"} <= inserted, rewrites


def test_dry_run_forwards_unchanged_and_reports(lab: Lab,
                                                own_proxy: Callable[..., Proxy]) -> None:
    p = own_proxy("--dry-run")
    delta = Delta.start(p)
    error = migrate_expecting_failure(lab, "10.0.2", "10.0.13", dst_uri=p.target_uri,
                                      via_uri=p.uri)
    assert "device 'cpu'" in error, error
    reports = delta.events("cpu_rewrite_dry_run")
    assert len(reports) == 1, p.context()
    assert any(d.startswith(DBGDTRTX + "(") for d in reports[0]["dropped"]), reports
    assert not delta.events("cpu_rewrite")
    delta.wait("migproxy_cpu_sections_rewritten_total", 1, mode="dry_run")
    assert delta("migproxy_cpu_sections_rewritten_total", mode="applied") == 0
    assert delta("migproxy_cpregs_dropped_total", register=DBGDTRTX) == 0
    # Forwarded unchanged: as many bytes out as in.
    closed = wait_main_closed(p, delta.log_mark)
    assert len(closed) == 1, closed
    assert closed[0]["bytes_in"] == closed[0]["bytes_out"], closed


def test_metrics_after_the_migrations(lab: Lab, proxy: Proxy) -> None:
    """The shared daemon's totals cover every CPU migrated through it (run last)."""
    if proxy.cpus_dropped == 0:  # this test alone: migrate something first
        _through(proxy, lab, "10.0.2", "10.0.13", 1)
    s = proxy.samples()
    dropped = proxy.value("migproxy_cpregs_dropped_total", s, register=DBGDTRTX)
    assert dropped >= proxy.cpus_dropped > 0
    assert proxy.value("migproxy_migrations_total", s, outcome="completed") >= proxy.completed
    assert proxy.value("migproxy_migrations_active", s) == 0
    text = proxy.scrape()
    assert f'migproxy_cpregs_dropped_total{{register="{DBGDTRTX}"}} {dropped}' in text
    assert 'migproxy_migrations_total{outcome="completed"}' in text


def test_the_demo_runs(lab: Lab) -> None:
    """scripts/demo.py (the README's demonstration) still does what it says."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py")], capture_output=True,
                       text=True, cwd=REPO, env=env, timeout=300, check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert f'migproxy_cpregs_dropped_total{{register="{DBGDTRTX}"}} 1.0' in r.stdout, out
    assert '"event": "cpu_rewrite"' in r.stdout, out


def test_dry_run_with_return_path_reports_the_destinations_failure(
        lab: Lab, own_proxy: Callable[..., Proxy]) -> None:
    """With return-path the destination's SHUT status reaches the daemon: a refused stream
    is counted as destination_failed, not completed; the source notices and keeps running."""
    p = own_proxy("--dry-run")
    delta = Delta.start(p)
    caps = {"return-path": True}
    with (
        lab.destination("10.0.13", p.target_uri, capabilities=caps, machine="virt-10.0") as dst,
        lab.source("10.0.2", machine="virt-10.0") as src,
    ):
        src.migrate(p.uri, capabilities=caps)
        info = src.wait_migration(60)
        assert info.get("status") == "failed", info
        dinfo = dst.wait_incoming(30)
        assert dinfo.get("status") != "completed"
        n = src.last_counter()
        assert n is not None
        assert src.status() == "running"
        assert_counting(src, n)
    delta.wait("migproxy_migrations_total", 1, outcome="destination_failed")
    assert delta("migproxy_migrations_total", outcome="completed") == 0
    shut = delta.events("destination_shut")
    assert len(shut) == 1, shut
    assert shut[0]["status"] != 0, shut


def test_postcopy_preempt_plaintext(lab: Lab, proxy: Proxy, blob: Path) -> None:
    """The postcopy preempt channel sends nothing until a page is urgent, and the
    destination waits for it before it serves page faults: migproxy connects it because a
    main channel from the same source is open. Same version (postcopy's package is framed
    and released, as the log says); the guest's RAM holds random data and the
    bandwidth is capped, so the migration is still in precopy when postcopy starts."""
    caps = {"postcopy-ram": True, "postcopy-preempt": True, "return-path": True}
    delta = Delta.start(proxy)
    loader = f"loader,file={blob},addr={BLOB_ADDR:#x},force-raw=on"
    with (
        lab.destination("10.0.2", proxy.target_uri, capabilities=caps, machine="virt-10.0",
                        memory=MEMORY) as dst,
        lab.source("10.0.2", machine="virt-10.0", memory=MEMORY,
                   extra_args=["-device", loader]) as src,
    ):
        src.migrate(proxy.uri, caps, {"max-bandwidth": 64 << 20})
        start_postcopy(src)
        complete(src, dst, proxy.context)
    released = delta.events("tail_released")  # the package, framed by known layouts
    assert len(released) == 1, proxy.context()
    assert not delta.events("passthrough"), proxy.context()
    assert delta("migproxy_connections_classified_total", channel="main") == 1
    silent = delta.events("connect_silent")  # the preempt channel, connected unasked
    assert len(silent) == 1, proxy.context()
    deadline = time.monotonic() + 15
    while not (closed := [e for e in delta.events("closed") if e["conn"] == silent[0]["conn"]]):
        assert time.monotonic() < deadline, proxy.context()
        time.sleep(0.05)
    assert closed[0]["outcome"] == "relayed", closed
