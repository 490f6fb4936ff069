"""The receive buffers' reuse (:mod:`migproxy.daemon.buffers`), without sockets: a deque
of views stands for the writes a transport still queues, completed in order."""

from __future__ import annotations

from collections import deque

from migproxy.daemon.buffers import RETIRED_BUFFERS, next_buffer

SIZE = 1 << 16


def _reads(depth: int, reads: int = 200) -> tuple[int, int]:
    """Allocations and the most buffers alive at once over ``reads`` reads, each queued as a
    write of half the buffer while ``depth`` writes stay queued."""
    retired: list[bytearray] = []
    buf = bytearray(SIZE)
    queued: deque[memoryview] = deque()
    allocated = peak = 0
    for _ in range(reads):
        queued.append(memoryview(buf)[: SIZE // 2])
        if len(queued) > depth:
            queued.popleft()  # the oldest write is done
        known = {id(b) for b in retired} | {id(buf)}
        buf = next_buffer(retired, buf, SIZE)
        allocated += id(buf) not in known
        alive = {id(v.obj) for v in queued} | {id(b) for b in retired} | {id(buf)}
        peak = max(peak, len(alive))
    return allocated, peak


def test_a_queue_no_deeper_than_the_retired_buffers_allocates_only_at_first() -> None:
    for depth in range(1, RETIRED_BUFFERS + 1):
        assert _reads(depth) == (depth, depth + 1)


def test_a_deeper_queue_still_reuses_the_buffers_whose_writes_are_done() -> None:
    """The transport writes in order: the retired buffers kept are the earliest ones, free
    first (keeping the latest, every read of a queue this deep allocated one)."""
    depth = 2 * RETIRED_BUFFERS
    allocated, peak = _reads(depth)
    assert allocated <= 200 * 6 // 10
    assert peak == depth + 1  # no more alive than the queue refers to, and the current one


def test_buffers_of_another_size_are_not_kept() -> None:
    retired = [bytearray(SIZE // 4)]
    small = bytearray(SIZE // 4)
    buf = next_buffer(retired, small, SIZE)
    assert len(buf) == SIZE
    assert retired == []
