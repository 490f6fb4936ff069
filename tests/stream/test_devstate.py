"""Unit tests of :mod:`migproxy.stream.devstate`: the bounded hold-back buffer and the
search for EOF + VMDESCRIPTION candidates at its end."""

from __future__ import annotations

import struct

import pytest

from migproxy.stream.devstate import HeldDeviceState, HoldCapExceeded


def _record(js: bytes, length: int | None = None) -> bytes:
    """EOF, VMDESCRIPTION, be32 length, JSON."""
    n = len(js) if length is None else length
    return b"\x00\x06" + struct.pack(">I", n) + js


def _held(data: bytes, cap: int = 1 << 24) -> HeldDeviceState:
    h = HeldDeviceState(1000, cap)
    h.add(data)
    return h


JS = b'{"devices": []}'

# --- the cap ----------------------------------------------------------------------------


def test_new_buffer_is_empty() -> None:
    h = HeldDeviceState(1234, 10)
    assert h.start_offset == 1234
    assert h.cap == 10
    assert len(h) == 0
    assert h.buf == bytearray()
    assert h.candidates() == []


def test_add_appends_all_kinds_of_bytes() -> None:
    h = HeldDeviceState(0, 100)
    h.add(b"ab")
    h.add(bytearray(b"cd"))
    h.add(memoryview(b"xefx")[1:3])
    assert bytes(h.buf) == b"abcdef"
    assert len(h) == 6


def test_add_up_to_the_cap_exactly() -> None:
    h = HeldDeviceState(0, 8)
    h.add(b"1234")
    h.add(b"5678")
    assert len(h) == 8
    h.add(b"")
    assert len(h) == 8


def test_add_past_the_cap_raises_and_keeps_the_buffer() -> None:
    h = HeldDeviceState(0, 8)
    h.add(b"12345")
    with pytest.raises(HoldCapExceeded, match="hold-back cap of 8 bytes"):
        h.add(b"6789")
    assert bytes(h.buf) == b"12345"
    h.add(b"678")  # what still fits is accepted
    assert bytes(h.buf) == b"12345678"
    with pytest.raises(HoldCapExceeded):
        h.add(b"9")
    assert len(h) == 8


def test_a_single_chunk_larger_than_the_cap_raises() -> None:
    h = HeldDeviceState(0, 4)
    with pytest.raises(HoldCapExceeded):
        h.add(b"12345")
    assert len(h) == 0


def test_zero_cap_accepts_nothing() -> None:
    h = HeldDeviceState(0, 0)
    h.add(b"")
    with pytest.raises(HoldCapExceeded):
        h.add(b"\x00")


# --- candidates -------------------------------------------------------------------------


def test_the_record_alone_is_a_candidate_at_zero() -> None:
    assert _held(_record(JS)).candidates() == [0]


def test_candidate_after_device_state() -> None:
    state = b"\x04\x00\x00\x00\x02\x03cpu" + bytes(40) + b"\x7e\x00\x00\x00\x02"
    assert _held(state + _record(JS)).candidates() == [len(state)]


def test_smallest_possible_record() -> None:
    assert _held(_record(b"{}")).candidates() == [0]
    assert _held(b"x" + _record(b"{}")).candidates() == [1]


def test_nothing_before_seven_bytes() -> None:
    for k in range(7):
        assert _held(_record(b"{}")[:k]).candidates() == []
    # seven bytes can never hold a description starting with { and ending with }
    assert _held(b"\x00\x06\x00\x00\x00\x01}").candidates() == []


def test_needs_a_closing_brace_at_the_end() -> None:
    assert _held(_record(b'{"a": 1} ')).candidates() == []
    assert _held(_record(b'{"a": 1]')).candidates() == []
    rec = _record(JS)
    assert _held(rec[:-1]).candidates() == []  # description not complete yet


def test_needs_an_opening_brace_after_the_length() -> None:
    assert _held(_record(b'["a"]}')).candidates() == []
    assert _held(_record(b' {"a": 1}')).candidates() == []


def test_needs_eof_and_vmdescription_bytes() -> None:
    rec = bytearray(_record(JS))
    rec[1] = 0x07
    assert _held(bytes(rec)).candidates() == []
    rec = bytearray(_record(JS))
    rec[0] = 0x01
    assert _held(bytes(rec)).candidates() == []


@pytest.mark.parametrize("delta", [-2, -1, 1, 2, 256, -len(JS)])
def test_length_must_match_exactly(delta: int) -> None:
    assert _held(b"state" + _record(JS, len(JS) + delta)).candidates() == []


def test_length_matching_only_once_more_bytes_arrive() -> None:
    # the first brace-terminated prefix is not a candidate while its length says more
    js = b'{"devices": [], "x": {}}'
    cut = js.index(b"}") + 1
    h = _held(b"dev" + _record(js)[: 6 + cut])
    assert h.candidates() == []
    h.add(js[cut:])
    assert h.candidates() == [3]


@pytest.mark.parametrize("length", [
    0x2A,  # 00 00 00 2a: last NUL at p + 4
    0x100,  # 00 00 01 00: last NUL at p + 5
    0x1234,  # 00 00 12 34: last NUL at p + 3
    0x0A0B0C,  # 00 0a 0b 0c: last NUL at p + 2
    0x10203,  # 00 01 02 03
])
def test_nuls_inside_the_length_are_allowed(length: int) -> None:
    js = b"{" + b"a" * (length - 2) + b"}"
    assert len(js) == length
    state = b"\x01\x02\x00\x03"  # device state with a NUL of its own
    h = _held(state + _record(js))
    assert h.candidates() == [len(state)]


def test_a_nul_in_the_description_hides_earlier_positions() -> None:
    # raw NUL inside the "JSON": the EOF byte is more than 5 bytes before the last NUL
    js = b'{"a": "\x00"}'
    assert _held(_record(js)).candidates() == []


def test_a_planted_record_in_device_state_is_not_the_end() -> None:
    planted = _record(b'{"x": 1}')
    real = _record(JS)
    h = _held(planted + b"\x04more state" + real)
    assert h.candidates() == [len(planted) + len(b"\x04more state")]


def test_no_nul_at_all_gives_no_candidate() -> None:
    assert _held(b"\x06\x01\x01\x01\x01{abc}").candidates() == []


def test_candidates_follow_the_growing_buffer() -> None:
    rec = _record(JS)
    h = HeldDeviceState(0, 1 << 20)
    seen = []
    for i in range(len(rec)):
        h.add(rec[i : i + 1])
        seen.append(h.candidates())
    assert seen[:-1] == [[]] * (len(rec) - 1)
    assert seen[-1] == [0]
    h.add(b" ")
    assert h.candidates() == []
