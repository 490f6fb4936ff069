"""A RAM record walk written from the grammar, for tests of the walks that forward
records outside the engine (the daemon's RAM pump): what a walk of some bytes takes."""

from __future__ import annotations

import struct

from migproxy.stream.engine import RamWalk


def reference_walk(data: bytes, walk: RamWalk) -> tuple[int, int, int, bool]:
    """Where a walk of ``data`` stops, written from the grammar: (position, pages, zeros,
    stopped at a record the framer decides rather than at the end or an incomplete one)."""
    ps = walk.page_size
    pos = min(walk.skip, len(data))
    if walk.skip > len(data):
        return pos, 0, 0, False
    pages = zeros = 0
    while len(data) - pos >= 8:
        word = struct.unpack_from(">Q", data, pos)[0]
        flags, offset = word & (ps - 1), word & ~(ps - 1)
        inside = walk.have_block and offset + ps <= walk.block_len
        if flags == 0x28 and inside:
            if len(data) - pos < 8 + ps:
                return pos, pages, zeros, False
            pos += 8 + ps
            pages += 1
        elif flags == 0x22 and inside:
            if len(data) - pos < 9:
                return pos, pages, zeros, False
            pos += 9
            zeros += 1
        else:
            return pos, pages, zeros, True
    return pos, pages, zeros, False
