"""Destination manifests: the file format, the shipped sets, and that a manifest captured
from a paused QEMU agrees with what the same build sends for a running guest."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import pytest

from migproxy.arm.events import CpuSeen
from migproxy.arm.manifest import (
    Manifest,
    ManifestError,
    load_manifest,
    load_set,
    manifest_from_engine,
    shipped_sets,
)
from migproxy.arm.registers import is_id_register
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream.engine import StreamEngine
from testkit.streams import REAL_STREAMS, real_stream


def _engine(name: str) -> StreamEngine:
    eng = StreamEngine(arm_engine_config(None))
    eng.feed(real_stream(name))
    eng.feed_eof()
    return eng


def _parts(name: str) -> tuple[str, str, str]:
    """``v10.0.2-virt-10.0-cortex-a57-smp1`` -> (10.0.2, virt-10.0, cortex-a57)."""
    version, rest = name[1:].split("-", 1)
    machine = "-".join(rest.split("-")[:2])
    cpu = rest[len(machine) + 1 :].rsplit("-smp", 1)[0]
    return version, machine, cpu


def test_every_lab_version_has_a_shipped_set() -> None:
    tcg = [s for s in shipped_sets() if s.startswith("qemu-")]
    assert tcg == ["qemu-10.0.13", "qemu-10.0.2", "qemu-11.1.3", "qemu-7.2.22"]
    assert load_set("qemu-7.2.22").keys == [("virt-7.2", "cortex-a57"), ("virt-7.2", "max")]
    for name in tcg[:3]:
        assert len(load_set(name).manifests) == 4


KVM_DATA = Path(__file__).resolve().parent.parent / "data" / "kvm"
KVM_STREAMS = json.loads((KVM_DATA / "streams.json").read_text())["streams"]


def test_every_kvm_stream_has_a_shipped_set_that_names_its_host() -> None:
    """One set per QEMU build on one kernel on one host CPU, made from the stream that
    build saved under KVM (scripts/make-kvm-manifests.py): the same ids and values, and the
    kernel and host CPU recorded."""
    kvm = [s for s in shipped_sets() if s.startswith("linux-")]
    assert len(kvm) == len(KVM_STREAMS) > 0
    for file, meta in KVM_STREAMS.items():
        kernel = ".".join(meta["kernel"].split("-")[0].split("+")[0].split(".")[:2])
        name = f"linux-{kernel}-{meta['host_cpu']}-qemu-{meta['qemu']}"
        (m,) = load_set(name).manifests
        assert (m.accel, m.cpu, m.kernel, m.host_cpu, m.qemu) == (
            "kvm", "host", meta["kernel"], meta["host_cpu"], meta["qemu"])
        eng = StreamEngine(arm_engine_config(None))
        eng.feed(lzma.decompress((KVM_DATA / file).read_bytes()))
        eng.feed_eof()
        (state,) = [e.cpu for e in eng.reports if isinstance(e, CpuSeen)]
        assert tuple(zip(state.indexes, state.values, strict=True)) == m.cpregs
        assert m.host.startswith(f"QEMU {meta['qemu']}, Linux {meta['kernel']}")


@pytest.mark.parametrize("name", REAL_STREAMS)
def test_the_shipped_manifest_agrees_with_a_running_guests_stream(name: str) -> None:
    """The manifests were captured from paused QEMUs with no guest; the streams in
    tests/data were saved by the same builds with the tick guest running. The register
    ids are the same, and so is every constant ID register's value."""
    version, machine, cpu = _parts(name)
    m = load_set(f"qemu-{version}").get(machine, cpu)
    assert m is not None
    assert m.qemu == version
    eng = _engine(name)
    seen = [e.cpu for e in eng.reports if isinstance(e, CpuSeen)]
    for state in seen:
        assert list(state.indexes) == [i for i, _v in m.cpregs]
        ids = {i: v for i, v in zip(state.indexes, state.values, strict=True)
               if is_id_register(i)}
        assert ids == {i: v for i, v in m.cpregs if is_id_register(i)}
    desc_cpu = next(d for d in eng.layout.description["devices"] if d["name"] == "cpu")
    assert desc_cpu["version"] == m.cpu_section_version
    # A running guest may send more subsections than a paused one, never fewer here.
    sent = [s["vmsd_name"] for s in desc_cpu.get("subsections", [])]
    assert [s for s in sent if s in m.subsections] == list(m.subsections)


def test_from_engine_and_json_round_trip(tmp_path: Path) -> None:
    m = manifest_from_engine(_engine("v10.0.2-virt-10.0-cortex-a57-smp1"), cpu="cortex-a57",
                             qemu="10.0.2", made={"by": "test"})
    assert m.machine == "virt-10.0"
    assert m.smp == 1
    assert m.subsections == (
        "cpu/vfp", "cpu/irq-line-state")
    path = tmp_path / "m.json"
    path.write_text(m.dumps())
    back = load_manifest(path)
    assert back == m
    assert back.made == {"by": "test"}
    assert json.loads(path.read_text())["cpregs"][0]["name"]  # names for a reader


@pytest.mark.parametrize(("edit", "message"), [
    (lambda o: o.update(format=2), "not a migproxy manifest"),
    (lambda o: o.pop("machine"), "malformed manifest"),
    (lambda o: o["cpregs"].reverse(), "not strictly ascending"),
    (lambda o: o["cpregs"].append(o["cpregs"][-1]), "not strictly ascending"),
    (lambda o: o["cpregs"][0].update(id="zz"), "malformed manifest"),
    (lambda o: o.update(cpregs=[]), "not strictly ascending"),
])
def test_a_bad_manifest_is_named(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    obj = load_set("qemu-10.0.2").manifests[0].to_json()
    edit(obj)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ManifestError, match=message):
        load_manifest(path)


def test_sets_from_directories_files_and_unknown_names(tmp_path: Path) -> None:
    m = load_set("qemu-11.1.3").get("virt-10.0", "max")
    assert isinstance(m, Manifest)
    (tmp_path / "a.json").write_text(m.dumps())
    assert load_set(str(tmp_path)).manifests == (m,)
    assert load_set(str(tmp_path / "a.json")).get("virt-10.0", "max") == m
    (tmp_path / "b.json").write_text(m.dumps())
    with pytest.raises(ManifestError, match="two manifests for the same"):
        load_set(str(tmp_path))
    with pytest.raises(ManifestError, match=r"no manifest set 'qemu-9\.9'"):
        load_set("qemu-9.9")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no manifest files"):
        load_set(str(tmp_path / "empty"))
