"""Property-based tests: any split, any truncation, any corruption of real and synthetic streams.

Invariants:

* The output (and the events) do not depend on how the input is split.
* Whatever the input, the engine never raises, and in passthrough policy the output is
  either exactly the input (untouched) or a complete rewritten stream that frames again;
  never a mixture.
"""

from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migproxy.arm.events import CpuRewritten
from migproxy.arm.profile import default_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream.engine import Mode
from migproxy.stream.events import (
    DeviceStateReleased,
    ItemFramed,
    PassthroughEntered,
    SectionFramed,
)
from testkit.streams import (
    POSTCOPY_STREAMS,
    REAL_STREAMS,
    real_stream,
    run_engine,
    split_at,
    with_return_path,
)

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@functools.cache
def _reference(name: str) -> tuple[bytes, bytes, tuple]:
    data = real_stream(name) if name != "synthetic" else _synthetic()
    out, events, _ = run_engine([data], arm_engine_config(default_profile()))
    return data, out, tuple(_summary(events))


@functools.cache
def _synthetic() -> bytes:
    from testkit.synthetic import SynthSpec, build

    return build(SynthSpec(cpus=2, full_pages=40, zero_pages=200, multifd_flush=True,
                           tail_blob=2000, page_patterns=[b"\x00\x06\x00\x00\x00\x10{"]))


def _summary(events: list) -> list:
    """Events that must not depend on the split (ItemFramed, rewrites, stops)."""
    return [e for e in events if isinstance(e, ItemFramed | CpuRewritten | PassthroughEntered)]


STREAMS = ["synthetic", *REAL_STREAMS, *POSTCOPY_STREAMS]


@pytest.mark.parametrize("name", STREAMS)
@SETTINGS
@given(data=st.data())
def test_any_split_gives_identical_output(name: str, data: st.DataObject) -> None:
    stream, ref_out, ref_events = _reference(name)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=60))
    out, events, eng = run_engine(split_at(stream, cuts), arm_engine_config(default_profile()))
    assert out == ref_out
    assert tuple(_summary(events)) == ref_events
    assert eng.mode == Mode.DONE


@pytest.mark.parametrize("name", STREAMS[:2])
def test_one_byte_at_a_time(name: str) -> None:
    stream, ref_out, ref_events = _reference(name)
    # The RAM part is long and uniform; split the head and the whole tail byte by byte.
    tail = max(e.offset for e in ref_events if isinstance(e, SectionFramed) and e.type == "END")
    pieces = [stream[i:i + 1] for i in range(0, 4096)]
    pieces.append(stream[4096:tail])
    pieces += [stream[i:i + 1] for i in range(tail, len(stream))]
    out, events, _ = run_engine(pieces, arm_engine_config(default_profile()))
    assert out == ref_out
    assert tuple(_summary(events)) == ref_events


def _check_untouched_but_a_package(data: bytes, out: bytes, events: list) -> None:
    """The output is the input untouched, except (postcopy) a rewritten package that went
    out whole before the stop: everything before and after it is the input untouched."""
    package = [e for e in events if isinstance(e, DeviceStateReleased) and e.rewritten]
    if not package:
        assert out == data
        return
    r = package[0]
    pre, post = data[: r.offset], data[r.offset + r.held_bytes :]
    assert out.startswith(pre)
    assert out.endswith(post)
    assert len(out) == len(pre) + r.out_bytes + len(post)


def _check_never_mixed(data: bytes, out: bytes, events: list) -> None:
    rewritten = any(isinstance(e, CpuRewritten) for e in events)
    stopped = any(isinstance(e, PassthroughEntered) for e in events)
    if stopped:  # untouched, byte for byte (but a package released before the stop)
        _check_untouched_but_a_package(data, out, events)
    elif rewritten:
        # A complete rewritten stream: it frames again, completely.
        out2, _, eng2 = run_engine([out])
        assert eng2.mode == Mode.DONE
        assert out2 == out
    else:
        assert out == data


@pytest.mark.parametrize("name", STREAMS)
@SETTINGS
@given(data=st.data())
def test_mutated_streams_are_never_half_rewritten(name: str, data: st.DataObject) -> None:
    stream, _, _ = _reference(name)
    buf = bytearray(stream)
    n = data.draw(st.integers(1, 8))
    # Bias mutations towards the structured parts (head and tail), where they matter most.
    tail_len = min(len(buf), 40_000)
    for _ in range(n):
        region = data.draw(st.sampled_from(["head", "tail", "any"]))
        if region == "head":
            i = data.draw(st.integers(0, min(len(buf), 600) - 1))
        elif region == "tail":
            i = data.draw(st.integers(len(buf) - tail_len, len(buf) - 1))
        else:
            i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    mutated = bytes(buf)
    cuts = data.draw(st.lists(st.integers(0, len(mutated)), max_size=8))
    out, events, _ = run_engine(split_at(mutated, cuts), arm_engine_config(default_profile()))
    _check_never_mixed(mutated, out, events)


@pytest.mark.parametrize("name", STREAMS)
@SETTINGS
@given(data=st.data())
def test_truncated_streams_report_and_forward_untouched(name: str, data: st.DataObject) -> None:
    stream, _, _ = _reference(name)
    cut = data.draw(st.integers(0, len(stream) - 1))
    prefix = stream[:cut]
    out, events, eng = run_engine(split_at(prefix, [cut // 2]),
                                  arm_engine_config(default_profile()))
    _check_untouched_but_a_package(prefix, out, events)
    if cut:
        stops = [e for e in events if isinstance(e, PassthroughEntered)]
        assert len(stops) == 1
        assert stops[0].reason in ("truncated", "no_description")
        assert eng.mode == Mode.PASSTHROUGH


@SETTINGS
@given(junk=st.binary(max_size=3000), prefix=st.sampled_from([b"", b"QEVM\x00\x00\x00\x03"]))
def test_random_bytes_never_crash(junk: bytes, prefix: bytes) -> None:
    data = prefix + junk
    out, _events, _ = run_engine(split_at(data, [len(data) // 3]),
                                arm_engine_config(default_profile()))
    assert out == data


def _mutate(data: st.DataObject, stream: bytes, ram_from: int, ram_to: int) -> bytes:
    """A few random bytes changed: in the head, the RAM records, the device state, anywhere."""
    buf = bytearray(stream)
    tail_len = min(len(buf), 40_000)
    for _ in range(data.draw(st.integers(1, 6))):
        region = data.draw(st.sampled_from(["head", "ram", "tail", "any"]))
        if region == "head":
            i = data.draw(st.integers(0, min(len(buf), 600) - 1))
        elif region == "ram":
            i = data.draw(st.integers(ram_from, ram_to - 1))
        elif region == "tail":
            i = data.draw(st.integers(len(buf) - tail_len, len(buf) - 1))
        else:
            i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    return bytes(buf)


@functools.cache
def _ram_span(name: str) -> tuple[int, int]:
    """Where the RAM PART/END sections of a stream lie (from its reference events)."""
    _, _, ref_events = _reference(name)
    parts = [e for e in ref_events if isinstance(e, SectionFramed) and e.idstr == "ram"]
    return parts[0].offset, parts[-1].offset + parts[-1].size


@pytest.mark.parametrize("name", STREAMS)
@SETTINGS
@given(data=st.data())
def test_mutated_streams_give_the_same_result_for_any_split(name: str,
                                                            data: st.DataObject) -> None:
    """Split invariance holds for broken streams too: a bad record is found at the same
    offset with the same verdict whether it arrives in one read or in many."""
    stream, _, _ = _reference(name)
    mutated = _mutate(data, stream, *_ram_span(name))
    whole_out, whole_events, whole = run_engine([mutated], arm_engine_config(default_profile()))
    cuts = data.draw(st.lists(st.integers(0, len(mutated)), max_size=40))
    out, events, eng = run_engine(split_at(mutated, cuts), arm_engine_config(default_profile()))
    assert out == whole_out
    assert _summary(events) == _summary(whole_events)
    assert eng.mode == whole.mode
    assert eng.stop_reason == whole.stop_reason
    _check_never_mixed(mutated, out, events)


# -- with the return path: the end is recognised by content and confirmed by quiet ------------

@functools.cache
def _rp_reference(name: str) -> tuple[bytes, bytes, tuple]:
    data = with_return_path(real_stream(name))
    out, events, eng = run_engine([data], arm_engine_config(default_profile()), eof=False,
                                  quiet=True)
    assert eng.mode == Mode.DONE
    return data, out, tuple(_summary(events))


@pytest.mark.parametrize("name", REAL_STREAMS)
@SETTINGS
@given(data=st.data())
def test_with_the_return_path_any_split_gives_identical_output(name: str,
                                                               data: st.DataObject) -> None:
    """The quiet window passes after every read (the worst case): the end is still found
    only at the real description, whatever the split."""
    stream, ref_out, ref_events = _rp_reference(name)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=60))
    out, events, eng = run_engine(split_at(stream, cuts), arm_engine_config(default_profile()),
                                  eof=False, quiet=True)
    assert out == ref_out
    assert tuple(_summary(events)) == ref_events
    assert eng.mode == Mode.DONE


@pytest.mark.parametrize("name", REAL_STREAMS)
@SETTINGS
@given(data=st.data())
def test_with_the_return_path_mutated_streams_are_never_half_rewritten(
        name: str, data: st.DataObject) -> None:
    stream, _, _ = _rp_reference(name)
    mutated = _mutate(data, stream, *_ram_span(name))
    cuts = data.draw(st.lists(st.integers(0, len(mutated)), max_size=20))
    out, events, _ = run_engine(split_at(mutated, cuts), arm_engine_config(default_profile()),
                                quiet=True)
    _check_never_mixed(mutated, out, events)
