"""The compiled RAM record walk (migproxy/stream/_ramwalk.c) against a reference written
from its contract, on records at and around every boundary: block ends, page sizes,
truncation, other record kinds. (The rest of tests/stream runs every framer and engine
test with both walks, see conftest.py.)"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migproxy.stream import ramsection, wire

WALK = ramsection._compiled_walk()
pytestmark = pytest.mark.skipif(WALK is None, reason="the compiled RAM walk is not built")

PAGE_CONT = wire.RAM_PAGE | wire.RAM_CONTINUE
ZERO_CONT = wire.RAM_ZERO | wire.RAM_CONTINUE


def reference(buf: bytes, pos: int, end: int, ps: int, blen: int,
              have: bool) -> tuple[int, int, int]:
    pages = zeros = 0
    while end - pos >= 8:
        word = struct.unpack_from(">Q", buf, pos)[0]
        flags = word & (ps - 1)
        offset = word ^ flags
        inside = have and offset + ps <= blen
        if flags == PAGE_CONT and inside and end - pos - 8 >= ps:
            pos += 8 + ps
            pages += 1
        elif flags == ZERO_CONT and inside and end - pos >= 9:
            pos += 9
            zeros += 1
        else:
            break
    return pos, pages, zeros


def records(rnd: random.Random, n: int, ps: int, blen: int) -> bytes:
    out = bytearray()
    for _ in range(n):
        kind = rnd.random()
        off = rnd.choice([0, ps, blen - ps, blen, blen + ps, rnd.randrange(0, blen + 2 * ps)])
        off &= ~(ps - 1)
        if kind < 0.45:
            out += struct.pack(">Q", off | PAGE_CONT) + rnd.randbytes(ps)
        elif kind < 0.9:
            out += struct.pack(">Q", off | ZERO_CONT) + bytes((rnd.randrange(2),))
        elif kind < 0.95:
            out += struct.pack(">Q", wire.RAM_EOS)
        else:
            out += struct.pack(">Q", off | wire.RAM_PAGE) + bytes((3,)) + b"abc"
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32), ps_bits=st.sampled_from([12, 14, 16]),
       blocks=st.integers(1, 40), have=st.booleans(), cut=st.floats(0, 1))
def test_the_compiled_walk_agrees_with_the_reference(seed: int, ps_bits: int, blocks: int,
                                                     have: bool, cut: float) -> None:
    rnd = random.Random(seed)
    ps = 1 << ps_bits
    blen = blocks * ps
    buf = records(rnd, rnd.randrange(1, 30), ps, blen)
    end = int(len(buf) * cut)
    for pos in (0, rnd.randrange(0, max(1, end + 1))):
        assert WALK is not None
        assert WALK(buf, pos, end, ps, blen, have) == reference(buf, pos, end, ps, blen, have)
        assert WALK(memoryview(buf), pos, end, ps, blen, have) == \
            reference(buf, pos, end, ps, blen, have)


def test_a_block_shorter_than_a_page_holds_no_page() -> None:
    buf = struct.pack(">Q", PAGE_CONT) + bytes(4096)
    assert WALK is not None
    assert WALK(buf, 0, len(buf), 4096, 4095, True) == (0, 0, 0)
    assert WALK(buf, 0, len(buf), 4096, 4096, True) == (len(buf), 1, 0)


def test_offsets_near_2_to_the_64_do_not_wrap() -> None:
    word = ((1 << 64) - 4096) | ZERO_CONT
    buf = struct.pack(">Q", word) + b"\0"
    assert WALK is not None
    assert WALK(buf, 0, len(buf), 4096, 1 << 30, True) == (0, 0, 0)


@pytest.mark.parametrize(("pos", "end", "ps"), [(-1, 8, 4096), (0, 100, 4096), (5, 4, 4096),
                                                (0, 8, 4095), (0, 8, 256)])
def test_bad_arguments_are_a_value_error(pos: int, end: int, ps: int) -> None:
    assert WALK is not None
    with pytest.raises(ValueError, match="walk: bad"):
        WALK(bytes(8), pos, end, ps, 1 << 20, True)
