"""Postcopy's package with a GICv3 first (``arm_gicv3``, ``arm_gicv3_its``): framed by
their layouts although the per-vCPU array has no count on the wire. On TCG captures with
``gic-version=3`` (tests/data/postcopy/gicv3) and on packages made of the device state of
the real KVM streams (tests/data/kvm: the same sections QEMU puts in a package)."""

from __future__ import annotations

import functools
import struct

import pytest

from migproxy.arm.destination import Destination
from migproxy.arm.package_layouts import (
    ARM_PACKAGE_LAYOUTS,
    GICV3_ARRAY_END,
    GICV3_CPU_V1,
    GICV3_ITS_V0,
    GICV3_V1,
)
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream import wire
from migproxy.stream.engine import Mode
from migproxy.stream.events import DeviceStateReleased, PassthroughEntered, SectionFramed
from migproxy.stream.package import (
    RUN_COMMAND,
    FieldLayout,
    PackageLayout,
    PackageNotFramed,
    frame_package,
)
from migproxy.stream.vmdesc import FullSection
from testkit.streams import (
    KVM_STREAMS,
    POSTCOPY_GICV3_STREAMS,
    real_stream,
    run_engine,
    split_at,
)

LISTEN = bytes.fromhex("0800040000")
PING_3 = bytes.fromhex("080003000400000003")
ELEMENT = sum(f.size * f.count for f in GICV3_CPU_V1.fields)  # 272 bytes without subsections


def _package_of(data: bytes) -> tuple[int, int]:
    at = data.index(bytes.fromhex("0800070004"))
    return at, struct.unpack_from(">I", data, at + 5)[0]


def _frame(pkg: bytes) -> PackageLayout:
    return frame_package(pkg, 0, len(pkg), ARM_PACKAGE_LAYOUTS)


@functools.cache
def _kvm_package(name: str) -> tuple[bytes, list[tuple[str, int, int]]]:
    """A package of the KVM stream's device state (LISTEN, its FULL sections, PING 3,
    POSTCOPY_RUN) and the (idstr, instance, size) of those sections as precopy framed them."""
    data = real_stream(name)
    _, events, _ = run_engine([data], arm_engine_config(None))
    full = [e for e in events if isinstance(e, SectionFramed) and e.type == "FULL"]
    body = data[full[0].offset : full[-1].offset + full[-1].size]
    sections = [(s.idstr, s.instance_id, s.size) for s in full]
    return LISTEN + body + PING_3 + RUN_COMMAND, sections


def _gic(pkg: PackageLayout) -> FullSection:
    return next(s for s in pkg.sections if s.idstr == "arm_gicv3")


@pytest.mark.parametrize("name", POSTCOPY_GICV3_STREAMS)
def test_gicv3_captures_are_framed_and_rewritten(name: str) -> None:
    data = real_stream(name)
    at, length = _package_of(data)
    pkg = _frame(data[at + 9 : at + 9 + length])
    smp = int(name.rsplit("smp", 1)[1])
    names = [s.idstr for s in pkg.sections]
    assert names[:2] == ["arm_gicv3", "arm_gicv3_its"]
    assert names.count("cpu") == smp
    assert pkg.elements(_gic(pkg), "cpu") == smp
    cfg = arm_engine_config(None, Destination.load("qemu-10.0.13"))
    ref, events, eng = run_engine([data], cfg)
    assert eng.mode == Mode.DONE
    (rel,) = [e for e in events if isinstance(e, DeviceStateReleased)]
    assert rel.rewritten
    out, _, _ = run_engine(split_at(data, range(at, at + 9 + length, 997)), cfg)
    assert out == ref
    again, ev2, eng2 = run_engine([ref], arm_engine_config(None))  # the output frames again
    assert eng2.mode == Mode.DONE
    assert again == ref
    first = next(e for e in ev2 if isinstance(e, SectionFramed) and e.type == "FULL")
    assert first.idstr == "arm_gicv3"


@pytest.mark.parametrize("name", KVM_STREAMS)
def test_kvm_device_state_frames_as_a_package(name: str) -> None:
    """Every section up to the cpu is framed where precopy's VM description put it."""
    pkg_bytes, precopy = _kvm_package(name)
    pkg = _frame(pkg_bytes)
    got = [(s.idstr, s.instance_id, s.end - s.offset) for s in pkg.sections]
    last_cpu = max(i for i, s in enumerate(precopy) if s[0] == "cpu")
    assert got == precopy[: last_cpu + 1]
    assert got[0][0] == "arm_gicv3"
    assert pkg.elements(_gic(pkg), "cpu") == 1


def test_a_gic_with_more_elements_than_vcpus_is_not_framed() -> None:
    """One more element of per-vCPU state than there are vCPUs: refused, postcopy_layout."""
    pkg_bytes, _ = _kvm_package(KVM_STREAMS[0])
    gic = _gic(_frame(pkg_bytes))
    array = gic.fields[-1]
    assert array.name == "cpu"
    assert array.end - array.offset == ELEMENT
    doubled = (pkg_bytes[: array.end] + pkg_bytes[array.offset : array.end]
               + pkg_bytes[array.end :])
    with pytest.raises(PackageNotFramed) as e:
        _frame(doubled)
    assert e.value.reason == "postcopy_layout"
    assert "per-vCPU state for 2 vCPUs" in str(e.value)


def test_a_gic_without_its_closing_subsection_is_not_framed() -> None:
    pkg_bytes, _ = _kvm_package(KVM_STREAMS[0])
    name = GICV3_ARRAY_END.encode()
    bad = pkg_bytes.replace(name, name[:-1] + b"X", 1)
    with pytest.raises(PackageNotFramed) as e:
        _frame(bad)
    assert e.value.reason == "postcopy_layout"


@pytest.mark.parametrize("field", ["gicr_propbaser", "gicr_ipriorityr", "icc_apr"])
def test_a_marker_planted_in_guest_gic_registers_does_not_move_a_boundary(field: str) -> None:
    """The closing subsection's marker (and a footer) written into registers the guest
    sets: only an element's first bytes (``level``, no guest's) are looked at."""
    data = real_stream(POSTCOPY_GICV3_STREAMS[-1])
    at, length = _package_of(data)
    pkg_bytes = data[at + 9 : at + 9 + length]
    pkg = _frame(pkg_bytes)
    array = _gic(pkg).fields[-1]
    where = array.offset + _offset_in_element(field)
    fake = bytes((wire.VM_SUBSECTION, len(GICV3_ARRAY_END))) + GICV3_ARRAY_END.encode()[:16]
    planted = pkg_bytes[:where] + fake + pkg_bytes[where + len(fake) :]
    again = _frame(planted)
    assert [(s.idstr, s.offset, s.end) for s in again.sections] == \
        [(s.idstr, s.offset, s.end) for s in pkg.sections]
    assert again.elements(_gic(again), "cpu") == 2


def _offset_in_element(name: str) -> int:
    pos = 0
    for f in GICV3_CPU_V1.fields:
        if f.name == name:
            return pos
        pos += f.size * f.count
    raise KeyError(name)


@pytest.mark.parametrize("name", KVM_STREAMS)
def test_the_gic_layouts_match_the_kvm_descriptions(name: str) -> None:
    """arm_gicv3 (with its per-vCPU struct) and arm_gicv3_its as the VM descriptions of
    the KVM captures list them (QEMU 7.2 and 10.0)."""
    _, _, eng = run_engine([real_stream(name)], arm_engine_config(None))
    assert eng.layout is not None
    devs = {d["name"]: d for d in eng.layout.description["devices"]}
    for layout in (GICV3_V1, GICV3_ITS_V0):
        dev = devs[layout.name]
        assert dev["version"] == layout.version
        assert [f["name"] for f in dev["fields"]] == [f.name for f in layout.fields]
        for got, want in zip(dev["fields"], layout.fields, strict=True):
            if want.element is not None:
                _same_fields(got["struct"]["fields"], want.element.fields)
                assert got["size"] == ELEMENT  # one vCPU
            else:
                assert (got["size"], got.get("array_len", 1)) == (want.size, want.count)
        subs = {s.name: s for s in layout.subsections}
        for sub in dev.get("subsections", []):
            _same_fields(sub["fields"], subs[sub["vmsd_name"]].fields)


def _same_fields(got: list[dict], want: tuple[FieldLayout, ...]) -> None:
    assert [(f["name"], f["size"], f.get("array_len", 1)) for f in got] == \
        [(f.name, f.size, f.count) for f in want]


def test_an_unknown_gic_cpu_subsection_is_refused() -> None:
    data = real_stream(POSTCOPY_GICV3_STREAMS[0])
    bad = data.replace(b"arm_gicv3_cpu/sre_el1", b"arm_gicv3_cpu/sre_elX", 1)
    out, events, _ = run_engine([bad], arm_engine_config(None, Destination.load("qemu-10.0.13")))
    stop = next(e for e in events if isinstance(e, PassthroughEntered))
    assert stop.reason == "postcopy_layout"
    assert out == bad
