"""Runs of RAM records counted with strided slices (the pure-Python walk's fast path).

A guest's RAM arrives as long runs of the same record: ``ZERO|CONTINUE`` (a record word
and one fill byte) or ``PAGE|CONTINUE`` (a record word and a 4 KiB page). Where the next
record continues such a run, :func:`zero_run` and :func:`page_run` count it with a few
strided slices instead of one loop turn per record, and check every record of it against
its RAM block as the record-by-record path does (:func:`in_block`), so the framer's verdict
never depends on how the input was split.
"""

from __future__ import annotations

import functools
import struct

from migproxy.stream import wire

_RUN_WINDOW = 4096
_LOW_NIBBLE_SET = bytes(0 if b & 0x0F == 0 else 1 for b in range(256))
ZERO_REC = 8 + 1  # a ZERO|CONTINUE record with its fill byte
PAGE_REC = 8 + 4096  # a PAGE|CONTINUE record with its 4 KiB page
EXACT_BELOW = 24  # runs shorter than this are checked word by word (cheaper than slices)

# A block's bound (see block_bound): (limit, lane, top).
Bound = tuple[int, int, int]


def zero_run(buf: wire.Buffer, pos: int, end: int, bound: Bound) -> int:
    """How many complete ZERO|CONTINUE records (4 KiB pages) inside the block of ``bound``
    start at ``pos`` (the run stops before the first record outside it).

    The window starts small (runs in mixed RAM are short) and grows while the run goes on.
    Each window is copied once, contiguously, and then sliced with a stride of 9 (slicing a
    memoryview with a step would copy byte by byte).
    """
    total = 0
    window = 8
    at = pos
    while True:
        avail = min((end - at) // ZERO_REC, window)
        if avail < 2:
            break
        chunk = bytes(buf[at : at + ZERO_REC * avail])
        k = avail - len(chunk[7::ZERO_REC].lstrip(b"\x22"))
        if k:
            bad = chunk[6 : ZERO_REC * k : ZERO_REC].translate(_LOW_NIBBLE_SET).find(1)
            if bad >= 0:
                k = bad
        total += k
        at += ZERO_REC * k
        if k < avail:
            break
        window = min(window * 4, _RUN_WINDOW)
    if total >= EXACT_BELOW or (
            total and max(_ZERO_WORDS[total].unpack_from(buf, pos)) > bound[0]):
        return in_block(buf, pos, total, ZERO_REC, bound)
    return total


def page_run(buf: wire.Buffer, pos: int, end: int, bound: Bound) -> int:
    """How many complete PAGE|CONTINUE records (4 KiB pages) inside the block of ``bound``
    start at ``pos`` (the run stops before the first record outside it).

    Gathers one byte per record (the low byte of each record word, then the nibble above it)
    with a strided slice; the page data itself is never copied.
    """
    total = 0
    window = 4
    at = pos
    while True:
        avail = min((end - at) // PAGE_REC, window)
        if avail < 1:
            break
        k = avail - len(bytes(buf[at + 7 : at + PAGE_REC * avail : PAGE_REC]).lstrip(b"\x28"))
        if k:
            highs = bytes(buf[at + 6 : at + PAGE_REC * k : PAGE_REC])
            bad = highs.translate(_LOW_NIBBLE_SET).find(1)
            if bad >= 0:
                k = bad
        total += k
        at += PAGE_REC * k
        if k < avail:
            break
        window = min(window * 4, 256)
    return in_block(buf, pos, total, PAGE_REC, bound) if total else 0


@functools.cache
def _above(threshold: int) -> bytes:
    """A translate table: 1 for byte values above ``threshold``, else 0."""
    return bytes(1 if v > threshold else 0 for v in range(256))


@functools.cache
def block_bound(block_len: int, page_size: int) -> Bound:
    """For a block: the largest record word whose page lies inside it (``limit``, -1 if
    none does), the index of its first non-zero byte (``lane``) and the largest value that
    byte of a record word may have when the bytes before it are zero (``top``)."""
    if block_len < page_size:
        return -1, 0, -1
    mask = page_size - 1
    limit = ((block_len - page_size) & ~mask) | mask
    lb = limit.to_bytes(8, "big")
    lane = next(b for b in range(8) if lb[b])
    top = lb[lane] if lb[lane + 1 :] == b"\xff" * (7 - lane) else lb[lane] - 1
    return limit, lane, top


def in_block(buf: wire.Buffer, pos: int, k: int, stride: int, bound: Bound) -> int:
    """How many of the ``k`` records at ``pos`` (``stride`` bytes apart) have a record word
    of at most ``limit`` (see :func:`block_bound`): every record of a run is checked, as
    the record-by-record path checks it, so the result never depends on how the input was
    split.

    Big-endian words compare like their bytes, so a long run is decided with a few strided
    slices: the bytes before ``lane`` must be zero and byte ``lane`` at most ``top``.
    Runs this does not decide are checked word by word.
    """
    limit, lane, top = bound
    if limit < 0:
        return 0
    if k < EXACT_BELOW:
        words = _WORDS[stride][k].unpack_from(buf, pos)
        return next((j for j, w in enumerate(words) if w > limit), k)
    # A long run: one byte lane per byte of the record words.
    span = stride * k
    if stride < 64:  # short records: one contiguous copy, then fast strided slices
        src = bytes(buf[pos : pos + span])
        lanes = [src[b::stride] for b in range(lane + 1)]
    else:  # page records: gather only the words (the page data is never copied), as two
        # strided 4-byte views (bytes 0-3 and 4-7 of each word), then split into lanes
        mv = memoryview(buf)
        n4 = stride // 4
        hi = mv[pos : pos + span].cast("I")[::n4].tobytes()
        lo = mv[pos + 4 : pos + span].cast("I")[::n4].tobytes() if lane >= 4 else b""
        lanes = [(hi if b < 4 else lo)[b % 4 :: 4] for b in range(lane + 1)]
    if not any(lanes[b].strip(b"\0") for b in range(lane)) and \
            lanes[lane].translate(_above(top)).find(1) < 0:
        return k
    unpack = wire.BE64.unpack_from
    for j in range(k):
        if unpack(buf, pos + stride * j)[0] > limit:
            return j
    return k


def _words_unpackers(stride: int) -> tuple[struct.Struct, ...]:
    """Unpackers of the record words of ``k`` records ``stride`` bytes apart, by ``k``."""
    return tuple(struct.Struct(">" + f"Q{stride - 8}x" * k) for k in range(EXACT_BELOW))


_ZERO_WORDS = _words_unpackers(ZERO_REC)  # ZERO|CONTINUE records (4 KiB pages)
_PAGE_WORDS = _words_unpackers(PAGE_REC)  # PAGE|CONTINUE records (4 KiB pages)
_WORDS = {ZERO_REC: _ZERO_WORDS, PAGE_REC: _PAGE_WORDS}
