"""Postcopy's package framed by the ARM section layouts, on real captures (tests/data/postcopy):
rewritten with a destination, split-invariant, refused exactly when a section before the
last cpu has no known layout, and deaf to fakes a guest plants in its registers."""

from __future__ import annotations

import functools
import struct

import pytest

from migproxy.arm.destination import Destination
from migproxy.arm.package_layouts import SECTION_LAYOUTS
from migproxy.arm.rewriter import arm_engine_config, arm_rewriters
from migproxy.stream.engine import EngineConfig, Mode
from migproxy.stream.events import (
    Aborted,
    DeviceStateReleased,
    PassthroughEntered,
    SectionFramed,
)
from migproxy.stream.policy import Policy
from testkit.streams import POSTCOPY_STREAMS, REAL_STREAMS, real_stream, run_engine, split_at

A57 = "postcopy/v10.0.2-virt-10.0-cortex-a57-smp1"
A57_SMP2 = "postcopy/v10.0.2-virt-10.0-cortex-a57-smp2"


def _cfg(**kw: object) -> EngineConfig:
    return arm_engine_config(None, Destination.load("qemu-10.0.13"), **kw)  # type: ignore[arg-type]


@functools.cache
def _package(name: str) -> tuple[bytes, int, int]:
    """The stream, the PACKAGED command's offset and its length."""
    data = real_stream(name)
    at = data.index(bytes.fromhex("0800070004"))
    return data, at, struct.unpack_from(">I", data, at + 5)[0]


def _sections(events: list) -> list[tuple[int, int, str, int]]:
    return [(e.offset, e.size, e.idstr, e.instance_id) for e in events
            if isinstance(e, SectionFramed) and e.type == "FULL"]


@pytest.mark.parametrize("name", POSTCOPY_STREAMS)
def test_every_capture_is_framed_to_its_end(name: str) -> None:
    data, _, _ = _package(name)
    out, events, eng = run_engine([data], arm_engine_config(None))
    assert eng.mode == Mode.DONE
    assert out == data
    names = [s[2] for s in _sections(events)]
    assert names[:3] == ["timer", "pflash_cfi01", "pflash_cfi01"]
    assert names[-1] == "cpu"


@pytest.mark.parametrize("name", [A57, A57_SMP2])
def test_rewritten_package_length_is_its_size_for_any_split(name: str) -> None:
    data, at, length = _package(name)
    ref, events, eng = run_engine([data], _cfg())
    assert eng.mode == Mode.DONE
    rel = [e for e in events if isinstance(e, DeviceStateReleased)]
    assert len(rel) == 1
    assert rel[0].rewritten
    assert rel[0].offset == at
    new_len = struct.unpack_from(">I", ref, at + 5)[0]
    assert new_len == rel[0].out_bytes - 9
    assert new_len != length
    assert ref[at + 9 + new_len :] == data[at + 9 + length :]  # the rest untouched
    pieces = [data[:at]] + [data[i : i + 1] for i in range(at, at + 9 + length + 20)]
    pieces.append(data[at + 9 + length + 20 :])
    out, _, _ = run_engine(pieces, _cfg())
    assert out == ref
    out, _, _ = run_engine(split_at(data, range(0, len(data), 1024)), _cfg())
    assert out == ref
    again, _, eng2 = run_engine([ref], arm_engine_config(None))  # the output frames again
    assert eng2.mode == Mode.DONE
    assert again == ref


def _plant(data: bytes, at: int, fake: bytes) -> bytes:
    return data[:at] + fake + data[at + len(fake) :]


@pytest.mark.parametrize("where", [64, 2800, 5100])  # xregs, cpreg values, vfp
def test_fakes_in_guest_registers_do_not_move_a_boundary(where: int) -> None:
    """A footer and a FULL section header (and a subsection marker) planted in cpu 0's
    general, FP or cpreg-value bytes: the boundaries are the same as without them."""
    data, _at, _ = _package(A57_SMP2)
    _, events, _ = run_engine([data], arm_engine_config(None))
    cpu0 = next(s for s in _sections(events) if s[2] == "cpu")
    payload = cpu0[0] + 6 + 3 + 8
    fake = (b"\x7e\x00\x00\x00\x06" + b"\x04\x00\x00\x00\x07\x07arm_gic\x00\x00\x00\x00"
            b"\x00\x00\x00\x0c" + b"\x05\x07cpu/sve\x00\x00\x00\x01")
    planted = _plant(data, payload + where, fake)
    _out, ev2, eng = run_engine(split_at(planted, [payload + where + 3]), _cfg())
    assert _sections(ev2) == _sections(events)
    # Framed as before; a planted value may still make the plan refuse (an ID register).
    assert eng.stop_reason not in ("postcopy_layout", "postcopy_packaged")


def test_an_unknown_section_before_the_cpu_is_relayed_untouched() -> None:
    data, at, _ = _package(A57)
    bad = data.replace(b"\x05timer", b"\x05timex", 1)  # a section with no known layout
    for policy in (Policy.PASSTHROUGH, Policy.ABORT):
        out, events, _eng = run_engine([bad], _cfg(policy=policy))
        stop = next(e for e in events if isinstance(e, PassthroughEntered | Aborted))
        assert stop.reason == "postcopy_layout"
        assert out == (bad if policy == Policy.PASSTHROUGH else bad[:at])


def test_an_unknown_cpu_subsection_is_refused() -> None:
    data, _, _ = _package(A57)
    bad = data.replace(b"\x07cpu/vfp", b"\x07cpu/vfx", 1)
    out, events, _ = run_engine([bad], _cfg())
    stop = next(e for e in events if isinstance(e, PassthroughEntered))
    assert stop.reason == "postcopy_layout"
    assert out == bad


def test_a_package_over_the_hold_cap_is_refused_by_its_length() -> None:
    data, at, length = _package(A57)
    out, events, _ = run_engine([data], _cfg(hold_cap=length))
    stop = next(e for e in events if isinstance(e, PassthroughEntered))
    assert stop.reason == "hold_cap_exceeded"
    assert stop.offset == at
    assert out == data


def test_a_stream_cut_inside_the_package_is_truncated() -> None:
    data, at, _ = _package(A57)
    out, _events, eng = run_engine([data[: at + 100]], _cfg())
    assert eng.stop_reason == "truncated"
    assert out == data[: at + 100]


def test_without_package_layouts_postcopy_is_refused_at_advise() -> None:
    data, _, _ = _package(A57)
    cfg = EngineConfig(rewriters=arm_rewriters(None), policy=Policy.ABORT)
    advise = data.index(bytes.fromhex("0800030010"))
    out, events, _ = run_engine(split_at(data, [advise]), cfg)
    stop = next(e for e in events if isinstance(e, Aborted))
    assert stop.reason == "postcopy_packaged"
    assert stop.offset == advise
    assert len(out) == advise


@pytest.mark.parametrize("name", REAL_STREAMS)
def test_the_layouts_match_the_precopy_descriptions(name: str) -> None:
    """Every timer, pflash_cfi01, cpu_common and cpu entry of the VM descriptions of the
    precopy captures has the fields (sizes and counts) and subsections of its layout."""
    _, _, eng = run_engine([real_stream(name)], arm_engine_config(None))
    assert eng.layout is not None
    for dev in eng.layout.description["devices"]:
        layout = SECTION_LAYOUTS.get((dev["name"], dev["version"]))
        if dev["name"] not in ("timer", "pflash_cfi01", "cpu_common", "cpu"):
            continue
        assert layout is not None, dev["name"]
        got = [(f["size"], f.get("array_len", 1)) for f in dev["fields"]]
        want = [(f.size, f.count) for f in layout.fields if f.count_field is None or
                any(g["name"] == f.name for g in dev["fields"])]
        if dev["name"] != "cpu":
            assert got == want, dev["name"]
        else:
            assert [s for s, c in got] == [f.size for f in layout.fields][: len(got)] or \
                len(got) == len(layout.fields) - 2
        subs = {s.name: s for s in layout.subsections}
        for sub in dev.get("subsections", []):
            assert sub["vmsd_name"] in subs, sub["vmsd_name"]
            known = subs[sub["vmsd_name"]]
            assert sub["version"] == known.version
            assert sum(f["size"] * f.get("array_len", 1) for f in sub["fields"]) == \
                sum(f.size * f.count for f in known.fields)

