"""Postcopy across versions, live through the daemon with ``--destination``: the device
state travels inside ``MIG_CMD_PACKAGED`` (no VM description), migproxy frames its sections
by known layouts, rewrites the cpu sections and adjusts the package's length. The guest
must continue on the destination. Negative controls: the same pairs directly, and through
the daemon with ``--dry-run``, fail. The refused pair shows what the source does when
migproxy refuses the package (``--policy abort``).

Postcopy starts while the migration is still in precopy: the bandwidth is capped at
64 KiB/s and ``migrate-start-postcopy`` is sent as soon as the migration is active."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from migproxy.lab import Lab, Qemu, free_port
from testkit.labs import require_lab
from tests.e2e.test_e2e_daemon import Delta, Proxy, complete, start_postcopy

pytestmark = pytest.mark.qemu

POSTCOPY = {"postcopy-ram": True, "return-path": True}
SLOW = {"max-bandwidth": 64 << 10}  # still in precopy when postcopy is started
MEMORY = "32M"
# (source, destination, smp): the cells of the issue
CELLS = [("10.0.2", "10.0.13", 1), ("10.0.2", "11.1.3", 2), ("11.1.3", "10.0.2", 1)]
IDS = [f"{a}->{b}-smp{n}" for a, b, n in CELLS]


@pytest.fixture(scope="module")
def lab() -> Lab:
    return require_lab("10.0.2", "10.0.13", "11.1.3")


def _postcopy(lab: Lab, src_v: str, dst_v: str, dst_uri: str, via_uri: str, *, smp: int = 1,
              cpu: str = "cortex-a57", caps: Mapping[str, bool] = POSTCOPY,
              params: Mapping[str, Any] | None = None,
              dst_params: Mapping[str, Any] | None = None,
              src_args: tuple[str, ...] = (), dst_args: tuple[str, ...] = ()
              ) -> tuple[Qemu, Qemu]:
    """Start both sides and a postcopy migration (the caller closes both)."""
    dst = lab.destination(dst_v, dst_uri, capabilities=caps, parameters=dst_params,
                          machine="virt-10.0", cpu=cpu, smp=smp, memory=MEMORY,
                          extra_args=dst_args)
    try:
        src = lab.source(src_v, machine="virt-10.0", cpu=cpu, smp=smp, memory=MEMORY,
                         extra_args=src_args)
    except BaseException:
        dst.close()
        raise
    src.migrate(via_uri, caps, {**SLOW, **(params or {})})
    start_postcopy(src)
    return src, dst


def wait_source(src: Qemu, states: frozenset[str], timeout: float = 60.0) -> dict[str, Any]:
    """Poll the source's query-migrate until its status is one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        info = src.query_migrate()
        if info.get("status") in states:
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.05)


def _assert_rewritten(p: Proxy, dst: str, smp: int) -> None:
    plans = p.events("cpu_plan")
    assert len(plans) == smp, p.context()
    assert all(pl["changes"] and pl["guest_visible"] == [] for pl in plans), plans
    assert all(f"QEMU {dst}" in pl["destination"] for pl in plans)
    released = p.events("tail_released")
    assert len(released) == 1, p.context()
    assert released[0]["rewritten"], p.context()
    assert not p.events("passthrough"), p.context()
    assert not p.events("abort"), p.context()


@pytest.mark.parametrize(("src", "dst", "smp"), CELLS, ids=IDS)
def test_postcopy_across_versions(lab: Lab, tmp_path: Path, src: str, dst: str,
                                  smp: int) -> None:
    p = Proxy(tmp_path, free_port(), "--destination", f"qemu-{dst}").start()
    try:
        s, d = _postcopy(lab, src, dst, p.target_uri, p.uri, smp=smp)
        with d, s:
            complete(s, d, p.context)
        _assert_rewritten(p, dst, smp)
    finally:
        assert p.stop() == 0, p.context()


@pytest.mark.parametrize(("src", "dst", "smp"), CELLS, ids=IDS)
def test_postcopy_directly_fails(lab: Lab, src: str, dst: str, smp: int) -> None:
    """Negative control: without migproxy the destination refuses the package's cpu
    section. (The source then ends ``postcopy-paused``, guest stopped, or ``failed``,
    guest resumed, depending on which error it sees first: both were seen.) The
    destination reports ``failed``, or, as QEMU sometimes does after its postcopy listen
    thread failed to load, stops answering QMP until it is killed: either way the
    migration did not go through."""
    port = free_port()
    s, d = _postcopy(lab, src, dst, f"tcp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}", smp=smp)
    with d, s:
        try:
            status = d.wait_incoming(30).get("status")
        except TimeoutError:  # QMP no longer answers (the hang the issue describes)
            status = "no answer"
        assert status in ("failed", "no answer"), status


def test_postcopy_dry_run_fails(lab: Lab, tmp_path: Path) -> None:
    """Negative control through the daemon: with ``--dry-run`` the plan is reported and
    the original package goes on; the destination refuses it."""
    p = Proxy(tmp_path, free_port(), "--destination", "qemu-10.0.13", "--dry-run").start()
    try:
        s, d = _postcopy(lab, "10.0.2", "10.0.13", p.target_uri, p.uri)
        with d, s:
            assert d.wait_incoming(30).get("status") == "failed"
        assert p.events("cpu_plan_dry_run"), p.context()
        released = p.events("tail_released")
        assert len(released) == 1, p.context()
        assert not released[0]["rewritten"], p.context()
    finally:
        assert p.stop() == 0, p.context()


def test_postcopy_preempt_across_versions(lab: Lab, tmp_path: Path) -> None:
    """postcopy-preempt: a second channel for urgent pages, relayed untouched; the
    package on the main channel is rewritten."""
    caps = {**POSTCOPY, "postcopy-preempt": True}
    p = Proxy(tmp_path, free_port(), "--destination", "qemu-10.0.13").start()
    try:
        s, d = _postcopy(lab, "10.0.2", "10.0.13", p.target_uri, p.uri, caps=caps)
        with d, s:
            complete(s, d, p.context)
        _assert_rewritten(p, "10.0.13", 1)
        assert len(p.events("connect_silent")) == 1, p.context()  # the preempt channel
    finally:
        assert p.stop() == 0, p.context()


@pytest.mark.parametrize("policy", ["abort", "passthrough"])
def test_refused_postcopy_leaves_the_guest_running_on_the_source(lab: Lab, tmp_path: Path,
                                                                 policy: str) -> None:
    """-cpu max across features: migproxy refuses the package (unsafe_rewrite). With abort
    the package is never forwarded; with passthrough it goes on untouched and the
    destination fails to load it. Either way the destination fails before POSTCOPY_RUN,
    so it never ran the guest, and the source (measured: QEMU 10.0.2) fails the migration
    and resumes the guest, which goes on counting there."""
    p = Proxy(tmp_path, free_port(), "--destination", "qemu-11.1.3", "--policy", policy).start()
    try:
        s, d = _postcopy(lab, "10.0.2", "11.1.3", p.target_uri, p.uri, cpu="max")
        with d, s:
            assert d.wait_incoming(30).get("status") == "failed"
            info = wait_source(s, frozenset({"failed", "postcopy-paused", "completed"}))
            assert info["status"] == "failed", info
            n = s.last_counter()
            assert n is not None
            assert s.status() == "running"
            assert s.wait_ticks(len(s.ticks()) + 2, 10)[-1] > n
        stops = p.events(policy)
        assert [e["reason"] for e in stops] == ["unsafe_rewrite"], p.context()
        assert not p.events("tail_released"), p.context()
    finally:
        assert p.stop() == 0, p.context()


MULTIFD = {**POSTCOPY, "multifd": True}


def test_multifd_refused_with_postcopy_before_11(lab: Lab) -> None:
    """QEMU 10.0 refuses the capability pair itself (the message the docs quote); 11.1
    accepts it."""
    with (lab.source("10.0.2", machine="virt-10.0", memory=MEMORY) as q,
          pytest.raises(Exception, match="Postcopy is not yet compatible with multifd")):
        q.set_capabilities(MULTIFD)
    with lab.source("11.1.3", machine="virt-10.0", memory=MEMORY) as q:
        q.set_capabilities(MULTIFD)


def test_multifd_with_postcopy(lab: Lab, tmp_path: Path) -> None:
    """QEMU 11.1 with multifd and postcopy-ram: the precopy pages go over the multifd
    channels (relayed untouched), the package over the main channel is framed and
    released; the guest goes on on the destination."""
    p = Proxy(tmp_path, free_port(), "--destination", "qemu-11.1.3").start()
    try:
        delta = Delta.start(p)
        s, d = _postcopy(lab, "11.1.3", "11.1.3", p.target_uri, p.uri, caps=MULTIFD,
                         params={"multifd-channels": 2}, dst_params={"multifd-channels": 2})
        with d, s:
            complete(s, d, p.context)
        released = p.events("tail_released")  # the package: postcopy did start
        assert len(released) == 1, p.context()
        assert not p.events("passthrough"), p.context()
        assert not p.events("abort"), p.context()
        assert delta("migproxy_connections_classified_total", channel="multifd") == 2
        assert delta("migproxy_connections_classified_total", channel="main") == 1
    finally:
        assert p.stop() == 0, p.context()


def test_postcopy_with_gicv3_across_versions(lab: Lab, tmp_path: Path) -> None:
    """gic-version=3 (as under KVM): the package starts with arm_gicv3, whose per-vCPU
    array has no count on the wire, and arm_gicv3_its; both are framed, the two cpu
    sections rewritten, and the guest goes on on the destination."""
    gic = ("-machine", "gic-version=3")
    p = Proxy(tmp_path, free_port(), "--destination", "qemu-11.1.3").start()
    try:
        s, d = _postcopy(lab, "10.0.2", "11.1.3", p.target_uri, p.uri, smp=2,
                         src_args=gic, dst_args=gic)
        with d, s:
            complete(s, d, p.context)
        _assert_rewritten(p, "11.1.3", 2)
    finally:
        assert p.stop() == 0, p.context()
