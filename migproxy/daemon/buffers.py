"""Receive buffers of the relay (no sockets here).

Data handed to a transport may still be referenced by it after ``write()`` returns (when
it could not all be sent at once), so a side only reuses its receive buffer when the peer
transport has nothing queued; otherwise it takes a fresh one: an earlier one that no
queued write refers to any more, else a new one.
"""

from __future__ import annotations

INITIAL_READ_SIZE = 64 << 10  # an idle or small connection never holds more
READ_SIZE = 1 << 20  # a side's receive buffer grows to this while reads fill it
RETIRED_BUFFERS = 4  # receive buffers a side keeps for reuse once no write refers to them


def unreferenced(buf: bytearray) -> bool:
    """Whether no view of ``buf`` exists any more (no queued write can read it): a
    bytearray cannot be resized while it is exported, so try a resize that changes
    nothing in the end."""
    try:
        buf.append(0)
    except BufferError:
        return False
    del buf[-1]
    return True


def next_buffer(retired: list[bytearray], old: bytearray, size: int) -> bytearray:
    """A receive buffer of ``size`` bytes to read into instead of ``old``, which a queued
    write may still refer to: an earlier one from ``retired`` that nothing refers to any
    more, else a new one. ``old`` joins ``retired`` unless RETIRED_BUFFERS are kept
    already: the transport writes in order, so the earlier ones are free first (keeping the
    newest instead, a queue deeper than RETIRED_BUFFERS reads would allocate a buffer on
    every read). A buffer dropped, or of another size, is freed when its last write is done.
    The caller must not hold a view of ``old`` or of the buffers in ``retired``."""
    retired[:] = [b for b in retired if len(b) == size]
    reuse = next((b for b in retired if unreferenced(b)), None)
    if reuse is not None:
        retired.remove(reuse)
    if len(retired) < RETIRED_BUFFERS and len(old) == size:
        retired.append(old)
    return reuse if reuse is not None else bytearray(size)
