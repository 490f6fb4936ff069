"""The RAM section walk: the block list after ``MEM_SIZE`` and every RAM record.

The records the walk meets by the million (``PAGE|CONTINUE`` and ``ZERO|CONTINUE``) are
taken by the compiled walk (``_ramwalk.c``) when it is built, else by the pure-Python loop
of :meth:`RamSectionFramer._ram` with its strided run counting
(:mod:`migproxy.stream.ramruns`). ``RAM_WALK`` is the one place that selects between the
two: the compiled walk stops before any record it does not take, and the Python loop frames
that record exactly as without it, so both frame every stream to the same bytes and events
whatever the split (the tests run each with and without it).
"""

from __future__ import annotations

from collections.abc import Callable

from migproxy.stream import mappedram, wire
from migproxy.stream.errors import Unsupported
from migproxy.stream.extensions import compiled
from migproxy.stream.framerstate import (
    ST_FOOTER,
    ST_MEMSIZE,
    ST_RAM,
    ST_SKIP,
    FramerState,
)
from migproxy.stream.ramruns import PAGE_REC, ZERO_REC, block_bound, page_run, zero_run
from migproxy.stream.reasons import Reason

_CONT = wire.RAM_CONTINUE
_PAGE_CONT = wire.RAM_PAGE | wire.RAM_CONTINUE
_ZERO_CONT = wire.RAM_ZERO | wire.RAM_CONTINUE
_PAGE_KINDS = (wire.RAM_ZERO, wire.RAM_PAGE, wire.RAM_XBZRLE, wire.RAM_COMPRESS_PAGE)
MAX_RAM_BLOCKS = 4096  # RAM blocks in the MEM_SIZE list (a QEMU VM has tens)


def _compiled_walk() -> Callable[..., tuple[int, int, int]] | None:
    """The compiled RAM record walk (``_ramwalk.c``), unless it is not built or
    ``MIGPROXY_NO_EXTENSIONS`` is set (to anything but empty or 0)."""
    walk: Callable[..., tuple[int, int, int]] | None = compiled("migproxy.stream._ramwalk",
                                                                 "walk")
    return walk


# The compiled walk, or None for the pure-Python one (tests and benchmarks set it).
RAM_WALK = _compiled_walk()
# Which RAM record walk frames streams: "c" (compiled) or "python". The daemon logs it.
IMPLEMENTATION = "c" if RAM_WALK is not None else "python"


class RamSectionFramer(FramerState):
    """Frames the records of a ``ram`` section (a part of
    :class:`~migproxy.stream.framer.StreamFramer`)."""

    def _memsize(self, buf: wire.Buffer, pos: int, end: int) -> int:
        extra = 8 if self.ignore_shared else 0  # the block's mr->addr (x-ignore-shared)
        header = mappedram.HEADER_SIZE if self.mapped_ram else 0
        while self._memsize_left > 0:
            if end - pos < 1:
                self.need = 1
                return pos
            n = buf[pos]
            size = 1 + n + 8 + extra
            if end - pos < size + header:
                self.need = size + header
                return pos
            if n == 0:
                raise self._fail(pos, "a RAM block name")
            name = bytes(buf[pos + 1 : pos + 1 + n])
            used = wire.BE64.unpack_from(buf, pos + 1 + n)[0]
            if not 0 < used <= self._memsize_left:
                raise self._fail(pos + 1 + n, f"a block length of 1 to {self._memsize_left}",
                                 str(used))
            if name in self._blocks:
                raise self._fail(pos + 1, "a RAM block name not listed before",
                                 repr(name.decode("ascii", "replace")))
            if len(self._blocks) >= MAX_RAM_BLOCKS:
                raise Unsupported(Reason.LIMIT_EXCEEDED, f"more than {MAX_RAM_BLOCKS} RAM "
                                  "blocks in the MEM_SIZE list", self._abs(pos))
            self._blocks[name] = used
            self.stats.blocks[name.decode("ascii", "replace")] = used
            self._memsize_left -= used
            pos += size
            if header:
                block = self._mapped_ram_header(buf, pos, name, used)
                pos += header
                if block.region_end > block.region_start:
                    # The stream goes on after the block's region in the file.
                    self.skip = block.region_end - block.region_start
                    self.after_skip = ST_MEMSIZE
                    self.state = ST_SKIP
                    return pos
        self.state = ST_RAM
        return pos

    def region_left(self) -> int:
        """The bytes of a mapped-ram region the framer is passing over (0 if it is not):
        a reader of the file may seek past them instead of reading them, and give the
        framer as many bytes of any content (they are not looked at)."""
        if self.state == ST_SKIP and self.after_skip == ST_MEMSIZE:
            return self.skip
        return 0

    def _mapped_ram_header(self, buf: wire.Buffer, pos: int, name: bytes,
                           used: int) -> mappedram.MappedRamBlock:
        """The mapped-ram header of the block just listed, at ``buf[pos]``."""
        assert self.file_offset is not None
        assert self.page_size is not None
        block = mappedram.parse_header(
            buf, pos, at=self._abs(pos), file_offset=self.file_offset,
            name=name.decode("ascii", "replace"), used_length=used, page_size=self.page_size,
            ignore_shared=self.ignore_shared)
        self.mapped_ram_blocks.append(block)
        return block

    def _ram(self, buf: wire.Buffer, pos: int, end: int) -> int:
        """The RAM records from ``pos``: the hot loop (kept in one function, its state in
        locals). Anything but PAGE|CONTINUE and ZERO|CONTINUE goes to :meth:`_ram_record`."""
        ps = self.page_size
        assert ps is not None
        mask = ps - 1
        unpack = wire.BE64.unpack_from
        cur_len = self._cur_block_len
        have_block = self._cur_block is not None
        bound = block_bound(cur_len, ps)
        pages = zeros = 0
        walk = RAM_WALK
        try:
            while True:
                if walk is not None:
                    # The compiled walk takes every PAGE|CONTINUE and ZERO|CONTINUE record
                    # it can and stops where the Python loop below must decide.
                    pos, p, z = walk(buf, pos, end, ps, cur_len, have_block)
                    pages += p
                    zeros += z
                if end - pos < 8:
                    self.need = 8
                    return pos
                word = unpack(buf, pos)[0]
                flags = word & mask
                if flags == _PAGE_CONT:
                    if not have_block or (word ^ flags) + ps > cur_len:
                        self._check_continue(pos, word ^ flags, have_block, cur_len)
                    pages += 1
                    pos += 8
                    rem = end - pos
                    if rem < ps:
                        self.skip = ps - rem
                        self.after_skip = ST_RAM
                        self.state = ST_SKIP
                        return end
                    pos += ps
                    # Look for a run only where the next record continues it (one byte
                    # read): in fragmented RAM most runs are a record or two long. A record
                    # outside the block stops the run: the next turn of the loop reports
                    # it where the record is.
                    if ps == 4096 and end - pos > 7 and buf[pos + 7] == 0x28:
                        k = page_run(buf, pos, end, bound)
                        pages += k
                        pos += PAGE_REC * k
                    continue
                if flags == _ZERO_CONT:
                    if end - pos < 9:
                        self.need = 9
                        return pos
                    if not have_block or (word ^ flags) + ps > cur_len:
                        self._check_continue(pos, word ^ flags, have_block, cur_len)
                    zeros += 1
                    pos += 9
                    if ps == 4096 and end - pos > 16 and buf[pos + 7] == 0x22:
                        # A run of ZERO|CONTINUE records is a 9-byte stride whose last word
                        # byte is 0x22 and whose next-to-last has a zero low nibble: count
                        # the run with strided slices instead of one loop turn per record.
                        k = zero_run(buf, pos, end, bound)
                        zeros += k
                        pos += ZERO_REC * k
                    continue
                # Any other record: the general (slower) path.
                new_pos = self._ram_record(buf, pos, end, word, flags)
                if new_pos == pos:  # incomplete (need set) or state change at pos
                    return pos
                pos = new_pos
                if self.state != ST_RAM:
                    return pos
                cur_len = self._cur_block_len
                have_block = self._cur_block is not None
                bound = block_bound(cur_len, ps)
        finally:
            self.stats.count(pages, zeros, ps)

    def _check_continue(self, pos: int, offset: int, have_block: bool, cur_len: int) -> None:
        if not have_block:
            raise self._fail(pos, "a RAM record naming its block (no block named yet)",
                             "the CONTINUE flag")
        raise self._fail(pos, f"a page offset inside the block (length 0x{cur_len:x})",
                         f"0x{offset:x}")

    def _ram_record(self, buf: wire.Buffer, pos: int, end: int, word: int, flags: int) -> int:
        """Any RAM record the hot loop does not take itself."""
        kind = flags & ~_CONT
        if kind in _PAGE_KINDS:
            return self._page_record(buf, pos, end, word, flags, kind)
        return self._control_record(pos, word, flags, kind)

    def _page_record(self, buf: wire.Buffer, pos: int, end: int, word: int, flags: int,
                     kind: int) -> int:
        """A ZERO, PAGE, XBZRLE or COMPRESS_PAGE record (with or without CONTINUE)."""
        ps = self.page_size
        assert ps is not None
        named = self._record_block(buf, pos, end, flags)
        if named is None:
            return pos
        block, blen, hdr = named
        offset = word ^ flags
        if offset + ps > blen:
            raise self._fail(pos, f"a page offset inside the block (length 0x{blen:x})",
                             f"0x{offset:x}")
        st = self.stats
        if kind == wire.RAM_ZERO:
            if end - pos < hdr + 1:
                self.need = hdr + 1
                return pos
            self._set_block(block, blen)
            st.zero_pages += 1
            return pos + hdr + 1
        payload = self._page_payload(buf, pos, end, hdr, kind)
        if payload is None:
            return pos
        more, skip = payload
        self._set_block(block, blen)
        if kind == wire.RAM_PAGE:
            st.pages += 1
            st.page_bytes += ps
        elif kind == wire.RAM_XBZRLE:
            st.xbzrle_pages += 1
        else:
            st.compressed_pages += 1
        self.skip = skip
        self.after_skip = ST_RAM
        self.state = ST_SKIP
        return pos + hdr + more

    def _record_block(self, buf: wire.Buffer, pos: int, end: int,
                      flags: int) -> tuple[bytes, int, int] | None:
        """The block of a page record, its length and the size of the record's header: the
        current block (CONTINUE) or the one the record names. None if incomplete."""
        if flags & _CONT:
            if self._cur_block is None:
                raise self._fail(pos, "a RAM record naming its block (no block named yet)",
                                 "the CONTINUE flag")
            return self._cur_block, self._cur_block_len, 8
        if end - pos < 9:
            self.need = 9
            return None
        n = buf[pos + 8]
        if end - pos < 9 + n:
            self.need = 9 + n
            return None
        block = bytes(buf[pos + 9 : pos + 9 + n])
        blen = self._blocks.get(block)
        if blen is None:
            raise self._fail(pos + 8, "the name of a RAM block from the MEM_SIZE list",
                             repr(block.decode("ascii", "replace")))
        return block, blen, 9 + n

    def _page_payload(self, buf: wire.Buffer, pos: int, end: int, hdr: int,
                      kind: int) -> tuple[int, int] | None:
        """For a PAGE, XBZRLE or COMPRESS_PAGE record whose header is ``hdr`` bytes: the
        bytes of its payload header and the payload bytes to pass over. None if
        incomplete."""
        ps = self.page_size
        assert ps is not None
        if kind == wire.RAM_PAGE:
            return 0, ps
        if kind == wire.RAM_XBZRLE:
            if end - pos < hdr + 3:
                self.need = hdr + 3
                return None
            if buf[pos + hdr] != wire.XBZRLE_ENCODING_FLAG:
                raise self._fail(pos + hdr, "the XBZRLE encoding flag 0x01",
                                 f"0x{buf[pos + hdr]:02x}")
            enc = wire.BE16.unpack_from(buf, pos + hdr + 1)[0]
            if enc > ps:
                raise self._fail(pos + hdr + 1, f"an XBZRLE length of at most {ps}", str(enc))
            return 3, enc
        if end - pos < hdr + 4:
            self.need = hdr + 4
            return None
        clen = wire.BE32.unpack_from(buf, pos + hdr)[0]
        bound = ps + (ps >> 12) + (ps >> 14) + (ps >> 25) + 13  # zlib compressBound
        if clen > bound:
            raise self._fail(pos + hdr, f"a compressed length of at most {bound}", str(clen))
        return 4, clen

    def _control_record(self, pos: int, word: int, flags: int, kind: int) -> int:
        """EOS, MULTIFD_FLUSH or MEM_SIZE (anything else is refused)."""
        if word == wire.RAM_EOS:
            self.stats.eos += 1
            self.state = ST_FOOTER
            return pos + 8
        if word == wire.RAM_MULTIFD_FLUSH:
            self.stats.multifd_flushes += 1
            return pos + 8
        if flags == wire.RAM_MEM_SIZE:
            if self._cur_type != wire.VM_SECTION_START or self._blocks:
                raise self._fail(pos, "a page record (MEM_SIZE only starts the first section)")
            self._memsize_left = word ^ flags
            self.state = ST_MEMSIZE
            return pos + 8
        if kind == wire.RAM_HOOK:
            raise Unsupported(Reason.RAM_HOOK, "RAM hook records (RDMA) are not supported",
                              self._abs(pos))
        raise self._fail(pos, "a RAM record (ZERO, PAGE, XBZRLE, COMPRESS_PAGE, MEM_SIZE, "
                         "MULTIFD_FLUSH or EOS)", f"flags 0x{flags:x} in word 0x{word:016x}")

    def _set_block(self, block: bytes, blen: int) -> None:
        self._cur_block = block
        self._cur_block_len = blen
