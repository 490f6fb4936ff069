"""Tests of the nested KVM lab harness (migproxy/lab/kvm.py): its pieces always, and with
the lab set up (scripts/kvm-lab-setup.sh) real L1 boots: streams saved under KVM, loads on
the same and on another kernel, live migrations between two nested hosts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from migproxy.arm.events import seen_cpus
from migproxy.lab import LabUnavailable, free_port
from migproxy.lab.kvm import (
    HOST_CPUS,
    KvmLab,
    KvmStream,
    LoadItem,
    LoadOutcome,
    host_cpu_arg,
    l1_script,
    read_results,
)
from migproxy.tools.offline import run_file
from testkit.labs import REQUIRE_KVM_ENV, require_kvm_lab
from tests.e2e.test_e2e_daemon import Proxy
from tests.kvm.conftest import SaveStreams

KVM_FIRMWARE_REGS = 0x603000000014  # KVM_REG_ARM64 | SIZE_U64 | KVM_REG_ARM_FW, >> 16
QEMUS = ("7.2", "10.0")


def cpreg_ids(stream: Path) -> tuple[int, ...]:
    run = run_file(stream)
    assert run.complete, f"{stream}: {run.stop}"
    assert run.stop is None, f"{stream}: {run.stop}"
    (cpu,) = seen_cpus(run.engine.reports)
    return cpu.indexes


# -- the pieces, without the lab ---------------------------------------------------------

def test_l1_script_is_params_then_helpers_then_task() -> None:
    script = l1_script("save.sh", {"TICKS": 3, "QEMU": "chroot /trixie /usr/bin/q"})
    params = script.index("TICKS=3\n")
    assert script.index("QEMU='chroot /trixie /usr/bin/q'\n") > params
    assert params < script.index("wait_migration()") < script.index("migrate -d")


def test_read_results_takes_key_value_lines(tmp_path: Path) -> None:
    p = tmp_path / "x.result"
    assert read_results(p) == {}
    p.write_text("a=1\nnoise\nstatus=paused (postmigrate)\na=2\nerr=x=y\n")
    assert read_results(p) == {"a": "2", "status": "paused (postmigrate)", "err": "x=y"}


def test_host_cpu_max_gets_the_fast_pointer_authentication() -> None:
    assert host_cpu_arg("max") == "max,pauth-impdef=on"
    assert host_cpu_arg("neoverse-n1") == "neoverse-n1" == HOST_CPUS["neoverse-n1"]


def test_a_missing_lab_says_how_to_set_it_up(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    lab = KvmLab.load(tmp_path)
    assert not lab.available()
    assert "scripts/kvm-lab-setup.sh" in (lab.unavailable_reason() or "")
    with pytest.raises(LabUnavailable):
        lab.require()
    monkeypatch.setattr("testkit.labs.get_kvm_lab", lambda: lab)
    monkeypatch.setenv(REQUIRE_KVM_ENV, "1")
    with pytest.raises(LabUnavailable, match="not a skip"):
        require_kvm_lab()
    monkeypatch.delenv(REQUIRE_KVM_ENV)
    with pytest.raises(pytest.skip.Exception):
        require_kvm_lab()


@pytest.mark.parametrize(
    ("load_status", "after", "ticks", "last", "ok"),
    [
        ("paused", "running", [5, 6], 4, True),
        ("paused", "running", [6, 7], 4, False),  # a tick lost or repeated
        ("paused", "running", [1, 2], None, True),  # no source counter given
        ("paused", "paused", [], 4, False),
        ("exited", "", [], 4, False),
    ],
)
def test_load_outcome_ok_needs_the_next_tick(load_status: str, after: str, ticks: list[int],
                                             last: int | None, ok: bool) -> None:
    o = LoadOutcome(load_status, after, ticks, "", LoadItem(Path("s.mig"), "7.2", last))
    assert o.ok is ok
    assert o.loaded is (load_status != "exited")


def test_live_migrate_via_a_proxy_needs_the_port_it_targets(tmp_path: Path) -> None:
    lab = KvmLab.load(tmp_path)
    with pytest.raises(ValueError, match="dst_port"):
        lab.live_migrate("6.1", "6.1", "max", "7.2", via=("127.0.0.1", 1))
    with pytest.raises(ValueError, match="loopback"):
        lab.live_migrate("6.1", "6.1", "max", "7.2", via=("192.0.2.1", 1), dst_port=2)


# -- with the lab ------------------------------------------------------------------------


@pytest.mark.kvm
@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
def test_saved_streams_frame_and_carry_the_kvm_register_list(kvm_saves: SaveStreams,
                                                             kernel: str) -> None:
    saved = kvm_saves(kernel)
    lists = {}
    for q in QEMUS:
        ids = cpreg_ids(saved.streams[q].path)
        assert any(i >> 16 == KVM_FIRMWARE_REGS for i in ids), f"{q}: no KVM firmware register"
        lists[q] = ids
    # The list is the kernel's (KVM_GET_REG_LIST), whichever QEMU asked for it.
    assert lists["7.2"] == lists["10.0"]


@pytest.mark.kvm
@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
def test_save_metadata_is_the_lab_description(kvm_lab: KvmLab, kvm_saves: SaveStreams,
                                              kernel: str) -> None:
    saved = kvm_saves(kernel)
    assert saved.release == kvm_lab.kernel(kernel).release
    assert saved.midr.startswith("0x")
    assert int(saved.midr, 16) != 0
    for q in QEMUS:
        s = saved.streams[q]
        assert s.qemu_version_line == kvm_lab.qemu(q).version_line == saved.version_lines[q]
        assert (s.kernel, s.release, s.host_cpu) == (kernel, saved.release, "max")
        assert s.last_tick >= 3


@pytest.fixture(scope="module")
def loads_on_6_1(kvm_lab: KvmLab, kvm_saves: SaveStreams) -> Iterator[dict[str, LoadOutcome]]:
    """One 6.1 boot that loads the 6.1 and the 6.12 stream of each QEMU (by the same QEMU)."""
    streams: list[KvmStream] = [kvm_saves(k).streams[q] for k in ("6.1", "6.12") for q in QEMUS]
    items = [LoadItem.of(s, name=f"{s.kernel}/{s.qemu}") for s in streams]
    return {o.item.name: o for o in kvm_lab.load_streams("6.1", "max", items)}


@pytest.mark.kvm
@pytest.mark.parametrize("qemu", QEMUS)
def test_a_fresh_stream_loads_on_its_own_kernel_and_goes_on(loads_on_6_1: dict[str, LoadOutcome],
                                                            qemu: str) -> None:
    o = loads_on_6_1[f"6.1/{qemu}"]
    assert o.ok, o
    assert o.first_tick == o.expected_tick


@pytest.mark.kvm
@pytest.mark.parametrize("qemu", QEMUS)
def test_a_6_12_stream_does_not_load_on_6_1(loads_on_6_1: dict[str, LoadOutcome],
                                            kvm_saves: SaveStreams, qemu: str) -> None:
    o = loads_on_6_1[f"6.12/{qemu}"]
    assert not o.loaded, o
    assert not o.ticks, o
    assert "cpreg" in o.error, o.error
    # Why: 6.12 lists more registers than 6.1 knows.
    longer = cpreg_ids(kvm_saves("6.12").streams[qemu].path)
    shorter = cpreg_ids(kvm_saves("6.1").streams[qemu].path)
    assert len(longer) > len(shorter)
    assert f"Invalid value {len(longer)} expecting positive value <= {len(shorter)}" in o.error


@pytest.mark.kvm
def test_live_migration_through_migproxy_between_two_nested_hosts(
        kvm_lab: KvmLab, tmp_path: Path) -> None:
    dst_port = free_port()
    proxy = Proxy(tmp_path, dst_port, "--accel", "kvm").start()
    try:
        r = kvm_lab.live_migrate("6.1", "6.1", "max", "7.2",
                                 via=("127.0.0.1", proxy.listen_port), dst_port=dst_port)
    finally:
        proxy.stop()
    assert r.source_migration == "completed", (r, proxy.context())
    assert r.source_vm_status == "paused (postmigrate)"
    assert not r.source_ticks_after
    assert r.destination.running, r.destination
    assert r.destination.first_tick == (r.source_last_tick or 0) + 1
    # The stream went through the daemon.
    assert [e for e in proxy.events("closed") if e.get("channel") == "main"], proxy.context()


@pytest.mark.kvm
def test_a_refused_live_migration_with_return_path_leaves_the_source_running(
        kvm_lab: KvmLab) -> None:
    r = kvm_lab.live_migrate("6.12", "6.1", "max", "10.0", return_path=True)
    assert not r.destination.loaded, r.destination
    assert "cpreg" in r.destination.error, r.destination
    assert r.source_migration.startswith("failed"), r
    assert r.source_running, r
