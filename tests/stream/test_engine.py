"""Stream engine behaviour on synthetic streams built byte by byte."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import replace

import pytest

from migproxy.arm.events import CpuRewritten, CpuSeen
from migproxy.arm.profile import default_profile, parse_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream.engine import EngineConfig, Mode, Policy, StreamEngine
from migproxy.stream.events import (
    Aborted,
    DeviceStateHeld,
    DeviceStateReleased,
    EofFramed,
    ItemFramed,
    PassthroughEntered,
    StreamComplete,
)
from migproxy.stream.reasons import Reason
from testkit.streams import SMALL, cpus, run_engine, split_at
from testkit.synthetic import DEFAULT_CPREGS, SynthSpec, build, cpu_payload

BOGUS = 0x40200000200E0298
# synth_small's shape with OPEN_RETURN_PATH: the end of the device state is found by content.
RP_STREAM = build(SynthSpec(cpus=2, full_pages=16, zero_pages=64, return_path=True))


def _cfg(**kw: object) -> EngineConfig:
    return arm_engine_config(default_profile(), **kw)  # type: ignore[arg-type]


def _stop(events: list) -> PassthroughEntered | Aborted | None:
    for e in events:
        if isinstance(e, PassthroughEntered | Aborted):
            return e
    return None


def test_no_profile_forwards_identical_and_accounts_every_byte(synth_small: bytes) -> None:
    out, events, eng = run_engine([synth_small])
    assert out == synth_small
    assert eng.mode == Mode.DONE
    items = sorted((e for e in events if isinstance(e, ItemFramed)), key=lambda e: e.offset)
    pos = 0
    for it in items:
        assert it.offset == pos
        pos += it.size
    assert pos == len(synth_small)
    kinds = [it.kind for it in items]
    assert kinds[0] == "header"
    assert kinds[1] == "configuration"
    assert kinds[-2:] == ["eof", "vmdescription"]
    assert eng.stats.pages == 16
    assert eng.stats.zero_pages == 64
    assert eng.stats.multifd_flushes == 3
    assert [c.instance_id for c in cpus(eng)] == [0, 1]
    assert cpus(eng)[0].indexes == tuple(r for r, _ in DEFAULT_CPREGS)


def test_default_profile_drops_bogus_register_and_updates_description(
        synth_small: bytes) -> None:
    out, events, _eng = run_engine([synth_small], _cfg())
    rw = [e for e in events if isinstance(e, CpuRewritten)]
    assert [e.instance_id for e in rw] == [0, 1]
    assert all(e.dropped == ((BOGUS, 0),) and e.applied for e in rw)
    assert len(out) == len(synth_small) - 2 * 16  # 8-byte id + 8-byte value per CPU
    # The output is itself a complete stream; its cpus lack the register.
    out2, _, eng2 = run_engine([out])
    assert out2 == out
    assert eng2.mode == Mode.DONE
    for cpu in cpus(eng2):
        assert BOGUS not in cpu.indexes
        assert len(cpu.indexes) == len(DEFAULT_CPREGS) - 1
    lay = eng2.layout
    assert lay is not None
    for d in lay.description["devices"]:
        if d["name"] == "cpu":
            f = {x["name"]: x for x in d["fields"]}
            assert f["cpreg_vmstate_indexes"]["array_len"] == len(DEFAULT_CPREGS) - 1
            assert f["cpreg_vmstate_values"]["array_len"] == len(DEFAULT_CPREGS) - 1


def test_rewrite_keeps_everything_but_the_arrays() -> None:
    """Dropping a register changes the cpu sections' arrays and the description's array
    lengths, and nothing else: the output is, byte for byte, the same stream built with
    cpus that never had the register (every other byte, before and after the cpus, and
    every other register's value)."""
    without = tuple(r for r in DEFAULT_CPREGS if r[0] != BOGUS)
    assert len(without) == len(DEFAULT_CPREGS) - 1  # the source's cpus have it
    out, _, _ = run_engine([build(SMALL)], _cfg())
    assert out == build(replace(SMALL, cpregs=without))


def test_insert_and_set_keep_arrays_sorted_and_in_step(synth_small: bytes) -> None:
    prof = parse_profile("""
name = "t"
[[rule]]
action = "insert"
register = "0x40200000200E0280"
value = 0
[[rule]]
action = "insert"
register = "0x6030000000139820"
value = "0x5"
[[rule]]
action = "set"
register = "ID_DFR0"
value = 0x03000006
value_is = 0x03010066
[[rule]]
action = "drop"
register = "BOGUS_DBGDTRTX"
""")
    out, events, _ = run_engine([synth_small], arm_engine_config(prof))
    rw = [e for e in events if isinstance(e, CpuRewritten)]
    assert len(rw) == 2
    assert rw[0].inserted == ((0x40200000200E0280, 0), (0x6030000000139820, 5))
    assert rw[0].set == ((0x40200000200F0082, 0x03010066, 0x03000006),)
    eng = run_engine([out])[2]
    for cpu in cpus(eng):
        assert list(cpu.indexes) == sorted(cpu.indexes)
        regs = dict(zip(cpu.indexes, cpu.values, strict=True))
        assert regs[0x40200000200E0280] == 0
        assert regs[0x6030000000139820] == 5
        assert regs[0x40200000200F0082] == 0x03000006
        assert BOGUS not in regs
        assert len(cpu.indexes) == len(DEFAULT_CPREGS) + 1


def test_refused_condition_passes_stream_through_untouched() -> None:
    regs = tuple((r, 7 if r == BOGUS else v) for r, v in DEFAULT_CPREGS)
    data = build(SynthSpec(cpregs=regs))
    out, events, eng = run_engine(split_at(data, range(0, len(data), 1000)), _cfg())
    assert out == data
    stop = _stop(events)
    assert isinstance(stop, PassthroughEntered)
    assert stop.reason == "profile_refused"
    assert "BOGUS_DBGDTRTX" in stop.message
    assert "0x7" in stop.message
    out, events, eng = run_engine([data], _cfg(policy=Policy.ABORT))
    assert isinstance(_stop(events), Aborted)
    assert out == data[: eng.forwarded_in]  # nothing of the tail was sent


def test_dry_run_reports_but_forwards_original(synth_small: bytes) -> None:
    out, events, _ = run_engine([synth_small], _cfg(dry_run=True))
    assert out == synth_small
    rw = [e for e in events if isinstance(e, CpuRewritten)]
    assert rw
    assert not any(e.applied for e in rw)
    rel = [e for e in events if isinstance(e, DeviceStateReleased)]
    assert len(rel) == 1
    assert not rel[0].rewritten


def test_tail_is_released_without_waiting_for_eof() -> None:
    """With the return path the source waits for the destination: release must not wait
    for EOF, only for the driver's quiet window (conclude) after the description."""
    eng = StreamEngine(_cfg())
    res = eng.feed(RP_STREAM)
    assert eng.mode == Mode.HOLDING
    assert eng.end_pending
    assert not any(isinstance(e, StreamComplete) for e in res.events)
    end = eng.conclude()
    assert any(isinstance(e, StreamComplete) for e in end.events)
    assert eng.mode == Mode.DONE
    assert not eng.end_pending
    assert len(res.joined()) + len(end.joined()) == len(RP_STREAM) - 32
    assert eng.conclude().data == []  # once only


def test_a_pending_end_followed_by_more_bytes_is_not_the_end() -> None:
    """More bytes after a pending end withdraw it; the source's EOF confirms one."""
    eng = StreamEngine(_cfg())
    eng.feed(RP_STREAM)
    assert eng.end_pending
    res = eng.feed(b"\x00")
    assert not eng.end_pending
    assert eng.mode == Mode.HOLDING
    assert res.data == []
    eng2 = StreamEngine(_cfg())
    first = eng2.feed(RP_STREAM)
    end = eng2.feed_eof()
    assert eng2.mode == Mode.DONE
    assert len(first.joined()) + len(end.joined()) == len(RP_STREAM) - 32


def test_held_bytes_are_not_forwarded_before_release() -> None:
    eng = StreamEngine(_cfg())
    cut = len(RP_STREAM) - 10
    first = eng.feed(RP_STREAM[:cut])
    hold = [e for e in first.events if isinstance(e, DeviceStateHeld)]
    assert len(hold) == 1
    assert len(first.joined()) == hold[0].offset
    assert eng.held_bytes == cut - hold[0].offset
    second = eng.feed(RP_STREAM[cut:])
    assert eng.mode == Mode.HOLDING
    assert eng.end_pending
    assert second.data == []
    third = eng.conclude()
    assert eng.mode == Mode.DONE
    assert len(first.joined()) + len(third.joined()) == len(RP_STREAM) - 32


def test_ram_page_data_is_forwarded_as_input_slices() -> None:
    data = build(SynthSpec(full_pages=8, zero_pages=0, part_sections=1))
    eng = StreamEngine()
    chunk = data[:20000]
    res = eng.feed(chunk)
    assert all(isinstance(d, memoryview) for d in res.data)
    assert all(d.obj is chunk for d in res.data if isinstance(d, memoryview))


def _replace(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) >= 1
    return data.replace(old, new, 1)


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda d: _replace(d, b"\x01\x00\x00\x00\x01\x03ram", b"\x01\x00\x00\x00\x01\x03rom"),
     "iterable_section"),
    (lambda d: _replace(d, struct.pack(">BHH", 8, 11, 0), struct.pack(">BHHI", 8, 7, 4, 0)),
     "postcopy_packaged"),
    (lambda d: _replace(d, struct.pack(">BHH", 8, 11, 0), struct.pack(">BHH", 8, 99, 0)),
     "unknown_command"),
    (lambda d: _replace(d, struct.pack(">BHH", 8, 11, 0), struct.pack(">BHH", 8, 8, 0)),
     "colo"),
    (lambda d: d[:8] + d[62:], "no_page_size"),
    (lambda d: _replace(d, b"configuration/target-page-bits", b"configuration/target-page-byte"),
     "unknown_configuration"),
    (lambda d: _replace(d, b"\x7e\x00\x00\x00\x01", b"\x02\x00\x00\x00\x01"), "no_footer"),
    (lambda d: _replace(d, b"\x7e\x00\x00\x00\x01", b"\x7e\x00\x00\x00\x09"), "format_error"),
])
def test_not_understood_streams_pass_through_untouched(synth_small: bytes, mutate, reason) -> None:
    data = mutate(synth_small)
    out, events, eng = run_engine(split_at(data, [13, 64, 5000, 70000]), _cfg())
    stop = _stop(events)
    assert isinstance(stop, PassthroughEntered), events[-3:]
    assert stop.reason == reason
    assert out == data
    assert eng.mode == Mode.PASSTHROUGH
    assert not any(isinstance(e, CpuRewritten) for e in events)


def test_abort_policy_forwards_nothing_after_the_problem(synth_small: bytes) -> None:
    data = _replace(synth_small, struct.pack(">BHH", 8, 11, 0), struct.pack(">BHH", 8, 99, 0))
    out, events, eng = run_engine([data[:1000], data[1000:]], _cfg(policy=Policy.ABORT))
    stop = _stop(events)
    assert isinstance(stop, Aborted)
    assert stop.reason == "unknown_command"
    assert data.startswith(out)
    assert len(out) <= stop.offset
    assert eng.feed(b"more").data == []


def test_full_section_before_iterables_end_is_not_understood() -> None:
    data = build(SynthSpec())
    start = data.index(b"\x01\x00\x00\x00\x01\x03ram")
    full = (b"\x04\x00\x00\x00\x63\x05early\x00\x00\x00\x00\x00\x00\x00\x01"
            b"\x7e\x00\x00\x00\x63")
    bad = data[:start] + full + data[start:]
    out, events, _ = run_engine([bad], _cfg())
    stop = _stop(events)
    assert isinstance(stop, PassthroughEntered)
    assert stop.reason == "full_section_early"
    assert out == bad


def test_hold_cap_exceeded_releases_untouched() -> None:
    data = build(SynthSpec(tail_blob=50_000))
    out, events, _ = run_engine([data], _cfg(hold_cap=20_000))
    stop = _stop(events)
    assert isinstance(stop, PassthroughEntered)
    assert stop.reason == "hold_cap_exceeded"
    assert out == data


def _redescribe(stream: bytes, edit: Callable[[dict], object]) -> bytes:
    """The stream with its VM description edited (and its length fixed)."""
    tail_at = stream.index(b"\x00\x06", stream.index(b"globalstate"))
    body = json.loads(stream[tail_at + 6:])
    edit(body)
    raw = json.dumps(body, separators=(", ", ": ")).encode()
    return stream[:tail_at + 2] + struct.pack(">I", len(raw)) + raw


def test_description_that_does_not_frame_the_tail(synth_small: bytes) -> None:
    def wrong_timer_size(body: dict) -> None:
        body["devices"][0]["fields"][0]["size"] = 9

    bad = _redescribe(synth_small, wrong_timer_size)
    out, events, _ = run_engine([bad], _cfg())
    stop = _stop(events)
    assert isinstance(stop, PassthroughEntered)
    assert stop.reason == "tail_not_framed"
    assert out == bad


def test_cpu_layout_is_checked_against_the_built_in_layout(synth_small: bytes) -> None:
    def move_arrays(body: dict) -> None:
        # Take 8 bytes from env.sp_el and give them to env.exclusive_addr: the section still
        # frames exactly, but the description now puts the cpreg arrays 8 bytes earlier.
        cpu = next(d for d in body["devices"] if d["name"] == "cpu")
        f = {x["name"]: x for x in cpu["fields"]}
        f["env.sp_el"]["array_len"] = 3
        f["env.exclusive_addr"]["size"] = 16

    bad = _redescribe(synth_small, move_arrays)
    out, events, _ = run_engine([bad], _cfg())
    stop = _stop(events)
    assert isinstance(stop, PassthroughEntered)
    assert stop.reason == "cpu_layout"
    assert "560" in stop.message
    assert out == bad


def test_missing_description_at_eof(synth_small: bytes) -> None:
    eof_at = synth_small.index(b"\x00\x06", synth_small.index(b"globalstate"))
    data = synth_small[:eof_at + 1]
    out, events, _ = run_engine([data], _cfg())
    stop = _stop(events)
    assert isinstance(stop, PassthroughEntered)
    assert stop.reason == "no_description"
    assert out == data


def test_truncated_stream_reports_offset_and_expectation(synth_small: bytes) -> None:
    data = synth_small[:5003]
    out, events, _ = run_engine([data], _cfg())
    stop = _stop(events)
    assert isinstance(stop, PassthroughEntered)
    assert stop.reason == "truncated"
    assert "offset" in stop.message
    assert "expected" in stop.message
    assert out == data


def test_garbage_is_a_format_error_at_offset_zero() -> None:
    out, events, _ = run_engine([b"GET / HTTP/1.1\r\n\r\n"], _cfg())
    stop = _stop(events)
    assert isinstance(stop, PassthroughEntered)
    assert stop.reason == "format_error"
    assert stop.offset == 0
    assert "QEVM" in stop.message
    assert out == b"GET / HTTP/1.1\r\n\r\n"


def test_data_after_a_rewritten_end_aborts() -> None:
    _out, events, eng = run_engine([RP_STREAM, b"\x00"], _cfg(), eof=False, quiet=True)
    stop = _stop(events)
    assert isinstance(stop, Aborted)
    assert stop.reason == "data_after_end"
    assert eng.mode == Mode.ABORTED


def test_data_after_an_untouched_end_passes_through() -> None:
    out, events, _ = run_engine([RP_STREAM, b"\x00"], arm_engine_config(None), eof=False,
                                quiet=True)
    stop = _stop(events)
    assert isinstance(stop, PassthroughEntered)
    assert stop.reason == "data_after_end"
    assert out == RP_STREAM + b"\x00"


def test_without_the_return_path_the_end_is_the_source_closing(synth_small: bytes) -> None:
    """No OPEN_RETURN_PATH: QEMU closes right after the description, so the device state is
    framed at the source's EOF and released then, not when a read happens to end at
    something that looks like a description."""
    eng = StreamEngine(_cfg())
    res = eng.feed(synth_small)
    assert eng.mode == Mode.HOLDING
    assert not any(isinstance(e, DeviceStateReleased)
                                                for e in res.events)
    hold = next(e.offset for e in res.events if isinstance(e, DeviceStateHeld))
    assert res.joined() == synth_small[:hold]  # nothing of the device state yet
    end = eng.feed_eof()
    assert eng.mode == Mode.DONE
    assert any(isinstance(e, DeviceStateReleased) and e.rewritten for e in end.events)
    assert res.joined() + end.joined() == run_engine([synth_small], _cfg())[0]
    # Bytes after the description are just more device state: at EOF nothing frames it,
    # and the stream goes out untouched.
    out, events, _ = run_engine([synth_small, b"\x00"], _cfg())
    assert out == synth_small + b"\x00"
    assert _stop(events).reason == "no_description"  # type: ignore[union-attr]


def test_cpu_payload_matches_the_arm_layout() -> None:
    payload, desc = cpu_payload(0, DEFAULT_CPREGS)
    n = struct.unpack_from(">i", payload, 568)[0]
    assert n == len(DEFAULT_CPREGS)
    assert desc["fields"][12]["name"] == "cpreg_vmstate_array_len"


def test_cpu_seen_events_carry_the_arrays(synth_small: bytes) -> None:
    _, events, _ = run_engine([synth_small])
    seen = [e.cpu for e in events if isinstance(e, CpuSeen)]
    assert [c.instance_id for c in seen] == [0, 1]
    assert seen[1].values == tuple(v for _, v in DEFAULT_CPREGS)



@pytest.mark.parametrize("bad_word_low", [0x0322, 0x0122, 0x1023])
@pytest.mark.parametrize("index", [0, 1, 2, 700, 4095, 4096, 4097, 9999])
def test_bad_record_inside_a_zero_run_is_found_at_its_offset(index: int,
                                                              bad_word_low: int) -> None:
    data = build(SynthSpec(zero_pages=12_000, full_pages=0, part_sections=1))
    first = data.index(b"\x0dmach-virt.ram", 100) + 14 + 1  # after the first (named) record
    at = first + 9 * index
    assert data[at + 7] == 0x22
    bad = bytearray(data)
    bad[at + 6 : at + 8] = (bytes(bad[at + 6 : at + 8])[0] & 0xF0 | bad_word_low >> 8,
                            bad_word_low & 0xFF)
    out, events, _ = run_engine(split_at(bytes(bad), [first + 9 * 3000 + 4]), _cfg())
    stop = _stop(events)
    assert isinstance(stop, PassthroughEntered)
    assert stop.reason == "format_error"
    assert stop.offset == at
    assert out == bad


def test_planted_description_starts_cost_a_bounded_number_of_parses(monkeypatch) -> None:
    """A device blob full of fake `00 06 <len> {` that all claim to end where a read ends.

    None of them is real (the stream goes on), so each would be a JSON parse of everything
    after it; only positions next to the last NUL byte are considered.
    """
    data = bytearray(build(SynthSpec(tail_blob=7000)))
    start = data.index(b"\x09test-blob") + 10 + 8  # after name, instance, version
    boundary = start + 900 * 7 + 300  # where the input is split, inside the blob
    for i in range(900):
        q = start + 7 * i
        data[q : q + 7] = b"\x00\x06" + struct.pack(">I", boundary - q - 6) + b"{"
    data[boundary - 1] = 0
    data = bytes(data)
    import migproxy.stream.vmdesc as vmdesc_mod

    calls = []
    real = vmdesc_mod.parse_description

    def counting(raw):  # type: ignore[no-untyped-def]
        calls.append(len(raw))
        return real(raw)

    monkeypatch.setattr(vmdesc_mod, "parse_description", counting)
    _, events, eng = run_engine([data[:boundary], data[boundary:]], _cfg())
    assert eng.mode == Mode.DONE
    assert any(isinstance(e, CpuRewritten) for e in events)
    assert len(calls) <= 6


@pytest.mark.parametrize("bad_word_low", [0x0328, 0x0128, 0x0029])
@pytest.mark.parametrize("index", [0, 1, 3, 4, 5, 20, 21, 100, 299])
def test_bad_record_inside_a_full_page_run_is_found_at_its_offset(index: int,
                                                                   bad_word_low: int) -> None:
    data = build(SynthSpec(zero_pages=0, full_pages=301, part_sections=1))
    first = data.index(b"\x0dmach-virt.ram", 100) + 14 + 4096  # after the named record
    at = first + (8 + 4096) * index
    assert data[at + 7] == 0x28
    bad = bytearray(data)
    bad[at + 6 : at + 8] = (bytes(bad[at + 6 : at + 8])[0] & 0xF0 | bad_word_low >> 8,
                            bad_word_low & 0xFF)
    out, events, _ = run_engine(split_at(bytes(bad), [first + 4104 * 50 + 3000]), _cfg())
    stop = _stop(events)
    assert isinstance(stop, PassthroughEntered)
    assert stop.reason == "format_error"
    assert stop.offset == at
    assert out == bad


def test_eof_without_device_state_or_description_is_complete() -> None:
    data = build(SynthSpec(zero_pages=10, full_pages=1))
    end_at = data.index(b"\x03\x00\x00\x00\x01") + 5 + 8 + 5  # after the RAM END section
    stream = data[:end_at] + b"\x00"
    out, events, _ = run_engine([stream], _cfg())
    assert out == stream
    assert _stop(events) is None
    assert any(isinstance(e, EofFramed) for e in events)


def test_a_deeply_nested_description_entry_is_rewritten(synth_small: bytes) -> None:
    def nest(body: dict) -> None:
        deep: list = []
        for _ in range(600):  # json.loads takes it; copying it recursively would not
            deep = [deep]
        cpu = next(d for d in body["devices"] if d["name"] == "cpu")
        cpu["x-vendor-note"] = deep

    data = _redescribe(synth_small, nest)
    out, events, eng = run_engine([data], _cfg())
    assert eng.mode == Mode.DONE
    assert _stop(events) is None
    assert out[: out.index(b"cpu")] == data[: data.index(b"cpu")]
    assert [e.instance_id for e in events if isinstance(e, CpuRewritten)] == [0, 1]
    again, _, eng2 = run_engine([out])
    assert eng2.mode == Mode.DONE
    assert again == out


@pytest.mark.parametrize("policy", [Policy.PASSTHROUGH, Policy.ABORT])
@pytest.mark.parametrize("where", ["streaming", "holding", "eof"])
def test_an_exception_inside_the_engine_is_a_stop_never_a_crash(
        synth_small: bytes, monkeypatch: pytest.MonkeyPatch, policy: Policy,
        where: str) -> None:
    """A bug anywhere in the engine becomes ``internal_error``: the input goes out untouched
    (passthrough) or nothing more does (abort); the caller never sees the exception."""
    from migproxy.arm.rewriter import ArmCpuRewriter
    from migproxy.stream.framer import StreamFramer

    calls = {"n": 0}
    if where == "streaming":
        real = StreamFramer.advance

        def advance(self: StreamFramer, *a: object) -> int:
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("boom in the framer")
            return real(self, *a)  # type: ignore[arg-type]

        monkeypatch.setattr(StreamFramer, "advance", advance)
    elif where == "holding":
        def decode(self: object, *a: object) -> object:
            raise KeyError("boom in a rewriter")

        monkeypatch.setattr(ArmCpuRewriter, "decode", decode)
    data = synth_small if where != "eof" else synth_small[: len(synth_small) // 2]
    if where == "eof":
        monkeypatch.setattr(StreamEngine, "_eof", lambda self, res: 1 / 0)
    eng = StreamEngine(_cfg(policy=policy))
    out = bytearray()
    events: list = []
    for i in range(0, len(data), 4096):  # several feeds: the failure is not at the start
        res = eng.feed(data[i : i + 4096])
        out += res.joined()
        events += res.events
    res = eng.feed_eof()
    out += res.joined()
    events += res.events
    assert eng.stop_reason == Reason.INTERNAL_ERROR
    stop = next(e for e in events if isinstance(e, PassthroughEntered | Aborted))
    assert stop.reason == Reason.INTERNAL_ERROR
    assert ("ZeroDivisionError" if where == "eof" else "boom") in stop.message
    if policy == Policy.PASSTHROUGH:
        assert eng.mode == Mode.PASSTHROUGH
        assert bytes(out) == data
    else:
        assert eng.mode == Mode.ABORTED
        assert data.startswith(bytes(out))
        if where != "eof":  # at EOF everything streamed was out already; nothing was held
            assert len(out) < len(data)


def test_a_description_over_max_description_is_never_parsed(
        synth_small: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    import migproxy.stream.vmdesc as vmdesc_mod

    parses: list[int] = []
    real = vmdesc_mod.parse_description
    monkeypatch.setattr(vmdesc_mod, "parse_description",
                        lambda raw: parses.append(len(raw)) or real(raw))
    tail_at = synth_small.index(b"\x00\x06", synth_small.index(b"globalstate"))
    size = len(synth_small) - tail_at - 6
    out, events, eng = run_engine([synth_small], _cfg(max_description=size - 1))
    assert parses == []
    assert out == synth_small
    stop = _stop(events)
    assert isinstance(stop, PassthroughEntered)
    assert stop.reason == "no_description"
    assert f"a {size}-byte description was not parsed" in stop.message
    # At the cap itself it is parsed and the stream is rewritten.
    out, events, eng = run_engine([synth_small], _cfg(max_description=size))
    # (the second parse is the self-check of the rewritten description)
    assert eng.mode == Mode.DONE
    assert parses[0] == size
    assert len(parses) == 2


def test_a_description_with_too_many_objects_is_never_parsed(
        synth_small: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    import migproxy.stream.vmdesc as vmdesc_mod
    from migproxy.stream.policy import MAX_DESCRIPTION_CONTAINERS

    def pad(body: dict) -> None:
        body["x-padding"] = [{} for _ in range(MAX_DESCRIPTION_CONTAINERS)]

    data = _redescribe(synth_small, pad)
    parses: list[int] = []
    monkeypatch.setattr(vmdesc_mod, "parse_description", lambda raw: parses.append(1))
    out, events, _ = run_engine([data], _cfg())
    assert parses == []
    assert out == data
    stop = _stop(events)
    assert isinstance(stop, PassthroughEntered)
    assert stop.reason == "no_description"
    assert "objects and arrays" in stop.message


def test_the_last_nul_is_tracked_as_bytes_arrive() -> None:
    from migproxy.stream.devstate import HeldDeviceState

    held = HeldDeviceState(0, 1 << 20)
    for piece in (b"ab\x00cd", b"efg", b"\x00\x00h", b"", b"}"):
        held.add(piece)
        assert held.last_nul == held.buf.rfind(b"\x00")


def test_a_fake_description_in_device_state_cannot_end_a_stream_without_return_path() -> None:
    """A guest that plants ``00 06 <len> {...}`` in device state it controls, with a read
    ending right after it, used to turn the migration into passthrough. Without the return
    path the end is the source closing: the plant changes nothing."""
    fake_json = b'{"devices": []}'
    fake = b"\x00\x06" + struct.pack(">I", len(fake_json)) + fake_json
    base = build(SynthSpec(cpus=2, tail_blob=4096))
    blob_at = base.index(b"test-blob") + len(b"test-blob") + 8  # the blob's payload
    data = base[:blob_at + 100] + fake + base[blob_at + 100 + len(fake):]
    cut = blob_at + 100 + len(fake)  # a read ends right after the fake
    whole, _, eng1 = run_engine([data], _cfg())
    split, events, eng2 = run_engine([data[:cut], data[cut:]], _cfg())
    assert eng1.mode == eng2.mode == Mode.DONE
    assert split == whole
    assert [e.instance_id for e in events if isinstance(e, CpuRewritten)] == [0, 1]


def test_engines_sharing_a_hold_budget_never_hold_more_than_it(synth_small: bytes) -> None:
    from migproxy.stream.policy import HoldBudget

    first = StreamEngine(_cfg())
    first.feed(synth_small)  # no return path: the device state is held until EOF
    held = first.held_bytes
    budget = HoldBudget(held + 100)
    a = StreamEngine(_cfg(hold_budget=budget))
    b = StreamEngine(_cfg(hold_budget=budget))
    a.feed(synth_small)
    assert a.mode == Mode.HOLDING
    assert budget.used == held
    res = b.feed(synth_small)  # would need another `held` bytes: not there
    stop = _stop(res.events)
    assert isinstance(stop, PassthroughEntered)
    assert stop.reason == Reason.HOLD_BUDGET_EXHAUSTED
    assert res.joined() == synth_small
    assert budget.used == held
    a.feed_eof()
    assert a.mode == Mode.DONE
    assert budget.used == 0
    c = StreamEngine(_cfg(hold_budget=budget))
    c.feed(synth_small)
    assert budget.used == held
    c.close()  # the channel died mid-hold
    assert budget.used == 0
    c.close()  # idempotent
    assert budget.used == 0


def _planted(base: bytes) -> tuple[bytes, int]:
    """``base`` with a fake description planted in its test-blob device, and where a read
    boundary right after the fake lies."""
    fake_json = b'{"devices": []}'
    fake = b"\x00\x06" + struct.pack(">I", len(fake_json)) + fake_json
    blob_at = base.index(b"test-blob") + len(b"test-blob") + 8
    return base[:blob_at + 100] + fake + base[blob_at + 100 + len(fake):], \
        blob_at + 100 + len(fake)


def test_with_the_return_path_a_planted_fake_is_not_a_verdict() -> None:
    data, cut = _planted(build(SynthSpec(cpus=2, tail_blob=4096, return_path=True)))
    eng = StreamEngine(_cfg())
    first = eng.feed(data[:cut])  # a read ends right after the fake: it parses, no frame
    assert eng.mode == Mode.HOLDING
    assert eng.end_unconfirmed
    assert _stop(first.events) is None
    rest = eng.feed(data[cut:])  # the rest of the real device state: the real end frames
    assert eng.end_pending
    assert not eng.end_unconfirmed
    end = eng.conclude()
    assert eng.mode == Mode.DONE
    assert first.joined() + rest.joined() + end.joined() == run_engine([data], _cfg())[0]
    assert [e.instance_id for e in end.events if isinstance(e, CpuRewritten)] == [0, 1]


def test_with_the_return_path_an_unframed_end_is_concluded_by_the_driver() -> None:
    def wrong_timer_size(body: dict) -> None:
        body["devices"][0]["fields"][0]["size"] = 9

    bad = _redescribe(RP_STREAM, wrong_timer_size)
    for finish in ("conclude", "eof"):
        eng = StreamEngine(_cfg())
        res = eng.feed(bad)
        hold = next(e.offset for e in res.events if isinstance(e, DeviceStateHeld))
        assert eng.end_unconfirmed
        assert res.joined() == bad[:hold]
        end = eng.conclude() if finish == "conclude" else eng.feed_eof()
        stop = _stop(end.events)
        assert isinstance(stop, PassthroughEntered)
        assert stop.reason == "tail_not_framed"
        assert res.joined() + end.joined() == bad
        assert eng.mode == Mode.PASSTHROUGH
        assert eng.conclude().data == []  # once only


# -- the release computed ahead ------------------------------------------------------------


def test_the_release_computed_ahead_is_the_release() -> None:
    """With the return path the release of a framed end is computed when the end is found
    (while the quiet window runs); confirming it then only emits it: the same bytes and
    events as computing it then."""
    outs = []
    for ahead in (True, False):
        eng = StreamEngine(_cfg())
        first = eng.feed(RP_STREAM)
        assert eng.prepared is not None
        assert not [e for e in first.events if isinstance(e, DeviceStateReleased)]
        if not ahead:
            eng.prepared = None  # computed at the end instead
        end = eng.conclude()
        outs.append((first.joined(), end.joined(), [type(e) for e in end.events]))
        assert eng.mode == Mode.DONE
        assert eng.prepared is None
    assert outs[0] == outs[1]
    assert DeviceStateReleased in outs[0][2]


def test_a_byte_after_the_end_drops_the_release_computed_for_it() -> None:
    eng = StreamEngine(_cfg())
    eng.feed(RP_STREAM)
    assert eng.prepared is not None
    eng.feed(b"\x00")
    assert eng.prepared is None
    assert eng.conclude().data == []
    assert eng.mode == Mode.HOLDING
