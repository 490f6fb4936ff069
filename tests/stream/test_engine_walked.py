"""The engine's side of the daemon's RAM pump: ``ram_walk()`` says when the next bytes may be
walked outside it, ``walked()`` accounts for them. Records walked outside and fed the rest
must give the same bytes, events and counts as feeding everything."""

from __future__ import annotations

import pytest

from migproxy.arm.profile import default_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream.engine import RamWalk, StreamEngine
from testkit.ramwalk import reference_walk
from testkit.synthetic import SynthSpec, build

STREAM = build(SynthSpec(cpus=2, part_sections=5, full_pages=700, zero_pages=900,
                         zero_ratio=0.3, multifd_flush=True, seed=7))


def outside_walk(buf: bytes, walk: RamWalk) -> tuple[int, int, int, int]:
    """What a pump would move of ``buf``: (bytes, skip left, pages, zeros)."""
    pos, pages, zeros, _ = reference_walk(buf, walk)
    return pos, max(0, walk.skip - len(buf)), pages, zeros


@pytest.mark.parametrize("chunk", [1000, 4099, 65536])
def test_walking_outside_gives_what_feeding_gives(chunk: int) -> None:
    config = arm_engine_config(default_profile())
    plain = StreamEngine(config)
    expected = b"".join(bytes(d) for i in range(0, len(STREAM), chunk)
                        for d in plain.feed(STREAM[i:i + chunk]).data)
    expected += b"".join(bytes(d) for d in plain.feed_eof().data)

    e = StreamEngine(config)
    out = bytearray()
    walked = 0
    for i in range(0, len(STREAM), chunk):
        piece = STREAM[i:i + chunk]
        walk = e.ram_walk()
        if walk is not None:
            n, skip_left, pages, zeros = outside_walk(piece, walk)
            if n:
                e.walked(n, walk, skip_left, pages, zeros)
                out += piece[:n]
                walked += n
                piece = piece[n:]
        out += b"".join(bytes(d) for d in e.feed(piece).data)
    out += b"".join(bytes(d) for d in e.feed_eof().data)
    assert walked > len(STREAM) // 3  # much of it went outside the engine
    assert bytes(out) == expected
    assert (e.received, e.sent, e.mode) == (plain.received, plain.sent, plain.mode)
    assert e.stats.snapshot() == plain.stats.snapshot()
    assert e.stats.page_bytes == plain.stats.page_bytes


def _in_ram() -> tuple[StreamEngine, RamWalk]:
    e = StreamEngine(arm_engine_config(default_profile()))
    for i in range(0, len(STREAM), 7):
        e.feed(STREAM[i:i + 7])
        walk = e.ram_walk()
        if walk is not None and walk.skip == 0 and walk.have_block:
            return e, walk
    raise AssertionError("no RAM record in the stream")


def test_no_walk_outside_ram_or_with_a_carry() -> None:
    e = StreamEngine(arm_engine_config(default_profile()))
    assert e.ram_walk() is None  # the file header comes first
    e.feed(STREAM[:5])
    assert e.ram_walk() is None
    e, walk = _in_ram()
    assert walk.page_size == 4096
    assert walk.block_len > 0
    e.feed(b"\x00\x00")  # an incomplete record word: carried
    assert e.ram_walk() is None


@pytest.mark.parametrize("bad", [
    (4104 * 2, 0, 1, 0),  # the bytes are not the records
    (9, 0, 0, 2),
    (100, 5, 0, 0),  # a skip left that the walk did not have
])
def test_walked_refuses_counts_that_do_not_add_up(bad: tuple[int, int, int, int]) -> None:
    e, walk = _in_ram()
    before = (e.received, e.sent, e.stats.snapshot())
    with pytest.raises(ValueError, match="walked"):
        e.walked(bad[0], walk, bad[1], bad[2], bad[3])
    assert (e.received, e.sent, e.stats.snapshot()) == before


def test_walked_refuses_a_walk_the_engine_no_longer_allows() -> None:
    e, walk = _in_ram()
    with pytest.raises(ValueError, match="walked"):
        e.walked(9, RamWalk(0, walk.page_size, walk.block_len + 4096, True), 0, 0, 1)
