"""Incremental framer for the streamed part of the main migration channel.

This covers everything before the device-state tail: the file header, the configuration
section, commands, and the iterable ``ram`` sections with every page record. All of it is
forwarded unchanged as soon as it is framed, so the framer only tracks state; it never
copies page data.

The framer is restartable: ``advance(buf, pos, end)`` consumes whole items only. When an
item is incomplete it returns the item's start and sets ``need`` to the number of
contiguous bytes (from that start) it requires; the caller provides them and calls again.
Page data, XBZRLE and compressed page payloads and the VM description are passed over with
``skip`` and never have to be contiguous; a command is framed whole (its payload is at most
64 KiB), so its bytes are made contiguous by the engine's carry.
"""

from __future__ import annotations

import enum
import functools
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from migproxy.stream import wire
from migproxy.stream.errors import FormatError, Unsupported
from migproxy.stream.events import (
    CommandFramed,
    ConfigurationFramed,
    EofFramed,
    Event,
    HeaderFramed,
    SectionFramed,
    VmDescriptionFramed,
)
from migproxy.stream.reasons import Reason


class Grammar(enum.IntEnum):
    """Where the framer is in the grammar of the streamed part (the framer's own state;
    the channel's state is the engine's :class:`~migproxy.stream.engine.Mode`)."""

    HEADER = 0  # the file header
    AFTER_HEADER = 1  # the byte that says whether a configuration section follows
    CONFIG = 2  # the configuration section's machine name
    CONFIG_SUB = 3  # a configuration subsection, or the end of the configuration
    CAPS = 4  # the capability names of configuration/capabilities
    TOP = 5  # a top-level record
    RAM = 6  # a RAM record of the current ram section
    MEMSIZE = 7  # the RAM block list after MEM_SIZE
    FOOTER = 8  # the footer of the current section
    SKIP = 9  # payload bytes whose content does not matter (``skip`` of them)
    AFTER_EOF = 10  # the VM description record after EOF
    DEVICE_STATE = 11  # the non-iterable device state starts at the returned position
    END = 12  # after the VM description: nothing may follow


# The framer keeps its state as a plain int (exact-int comparisons are the fastest in the
# hot loop); ``Grammar(framer.state)`` names it.
ST_HEADER = int(Grammar.HEADER)
ST_AFTER_HEADER = int(Grammar.AFTER_HEADER)
ST_CONFIG = int(Grammar.CONFIG)
ST_CONFIG_SUB = int(Grammar.CONFIG_SUB)
ST_CAPS = int(Grammar.CAPS)
ST_TOP = int(Grammar.TOP)
ST_RAM = int(Grammar.RAM)
ST_MEMSIZE = int(Grammar.MEMSIZE)
ST_FOOTER = int(Grammar.FOOTER)
ST_SKIP = int(Grammar.SKIP)
ST_AFTER_EOF = int(Grammar.AFTER_EOF)
ST_HOLD = int(Grammar.DEVICE_STATE)
ST_DONE = int(Grammar.END)

_CONT = wire.RAM_CONTINUE
_PAGE_CONT = wire.RAM_PAGE | wire.RAM_CONTINUE
_ZERO_CONT = wire.RAM_ZERO | wire.RAM_CONTINUE
_MAX_MACHINE_NAME = 256
_MAX_CAPABILITIES = 64
MAX_RAM_BLOCKS = 4096  # RAM blocks in the MEM_SIZE list (a QEMU VM has tens)
MAX_SECTIONS = 16  # iterable sections started (QEMU starts one "ram" section)


def _compiled_walk() -> Callable[..., tuple[int, int, int]] | None:
    """The compiled RAM record walk (``_ramwalk.c``), unless it is not built or
    ``MIGPROXY_NO_EXTENSIONS`` is set (to anything but empty or 0)."""
    if os.environ.get("MIGPROXY_NO_EXTENSIONS", "") not in ("", "0"):
        return None
    try:
        from migproxy.stream import _ramwalk  # type: ignore[attr-defined]
    except ImportError:
        return None
    walk: Callable[..., tuple[int, int, int]] = _ramwalk.walk
    return walk


RAM_WALK = _compiled_walk()
# Which RAM record walk frames streams: "c" (compiled) or "python". The daemon logs it.
IMPLEMENTATION = "c" if RAM_WALK is not None else "python"

_RUN_WINDOW = 4096
_LOW_NIBBLE_SET = bytes(0 if b & 0x0F == 0 else 1 for b in range(256))


def _zero_run(buf: wire.Buffer, pos: int, end: int) -> int:
    """How many complete ZERO|CONTINUE records (4 KiB pages) start at ``pos``.

    The window starts small (runs in mixed RAM are short) and grows while the run goes on.
    Each window is copied once, contiguously, and then sliced with a stride of 9 (slicing a
    memoryview with a step would copy byte by byte).
    """
    total = 0
    window = 8
    while True:
        avail = min((end - pos) // 9, window)
        if avail < 2:
            return total
        chunk = bytes(buf[pos : pos + 9 * avail])
        k = avail - len(chunk[7::9].lstrip(b"\x22"))
        if k:
            bad = chunk[6 : 9 * k : 9].translate(_LOW_NIBBLE_SET).find(1)
            if bad >= 0:
                k = bad
        total += k
        pos += 9 * k
        if k < avail:
            return total
        window = min(window * 4, _RUN_WINDOW)


_PAGE_REC = 8 + 4096  # a PAGE|CONTINUE record with its 4 KiB page


def _page_run(buf: wire.Buffer, pos: int, end: int) -> int:
    """How many complete PAGE|CONTINUE records (4 KiB pages) start at ``pos``.

    Gathers one byte per record (the low byte of each record word, then the nibble above it)
    with a strided slice; the page data itself is never copied.
    """
    total = 0
    window = 4
    while True:
        avail = min((end - pos) // _PAGE_REC, window)
        if avail < 1:
            return total
        k = avail - len(bytes(buf[pos + 7 : pos + _PAGE_REC * avail : _PAGE_REC]).lstrip(b"\x28"))
        if k:
            highs = bytes(buf[pos + 6 : pos + _PAGE_REC * k : _PAGE_REC])
            bad = highs.translate(_LOW_NIBBLE_SET).find(1)
            if bad >= 0:
                k = bad
        total += k
        pos += _PAGE_REC * k
        if k < avail:
            return total
        window = min(window * 4, 256)


@functools.cache
def _above(threshold: int) -> bytes:
    """A translate table: 1 for byte values above ``threshold``, else 0."""
    return bytes(1 if v > threshold else 0 for v in range(256))


_EXACT_BELOW = 24  # runs shorter than this are checked word by word (cheaper than slices)


@functools.cache
def _block_bound(block_len: int, page_size: int) -> tuple[int, int, int]:
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


def _in_block(buf: wire.Buffer, pos: int, k: int, stride: int,
              bound: tuple[int, int, int]) -> int:
    """How many of the ``k`` records at ``pos`` (``stride`` bytes apart) have a record word
    of at most ``limit`` (see :func:`_block_bound`): every record of a run is checked, as
    the record-by-record path checks it, so the result never depends on how the input was
    split.

    Big-endian words compare like their bytes, so a long run is decided with a few strided
    slices: the bytes before ``lane`` must be zero and byte ``lane`` at most ``top``.
    Runs this does not decide are checked word by word.
    """
    limit, lane, top = bound
    if limit < 0:
        return 0
    if k < _EXACT_BELOW:
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
    return tuple(struct.Struct(">" + f"Q{stride - 8}x" * k) for k in range(_EXACT_BELOW))


_ZERO_WORDS = _words_unpackers(9)  # ZERO|CONTINUE records (4 KiB pages)
_PAGE_WORDS = _words_unpackers(_PAGE_REC)  # PAGE|CONTINUE records (4 KiB pages)
_WORDS = {9: _ZERO_WORDS, _PAGE_REC: _PAGE_WORDS}

@dataclass
class RamStats:
    """Counts of RAM records seen on the main channel."""

    pages: int = 0
    zero_pages: int = 0
    xbzrle_pages: int = 0
    compressed_pages: int = 0
    multifd_flushes: int = 0
    eos: int = 0
    page_bytes: int = 0
    blocks: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> tuple[int, int, int, int, int]:
        return (self.pages, self.zero_pages, self.xbzrle_pages, self.compressed_pages,
                self.multifd_flushes)


@dataclass
class _Section:
    idstr: str
    instance_id: int
    version_id: int
    ended: bool = False


class StreamFramer:
    """Frames the header, configuration, commands and ``ram`` sections of a main channel."""

    def __init__(self, *, legacy_page_bits: int | None = None) -> None:
        self.state = ST_HEADER
        self.need = 0
        self.skip = 0
        self.after_skip = ST_TOP
        self.base = 0  # absolute stream offset of buf[0] in the current advance() call
        self.events: list[Event] = []
        self.stats = RamStats()
        self.page_size: int | None = None
        self.legacy_page_bits = legacy_page_bits
        self.machine: str | None = None
        self.capabilities: list[str] = []
        self.uuid: bytes | None = None
        self.config_subsections: list[str] = []  # the configuration's subsections, in order
        self.ignore_shared = False
        self.sections: dict[int, _Section] = {}
        self.open_iterables: set[int] = set()
        self.iterable_phase_done = False
        self.commands_seen: dict[str, int] = {}
        # ram state
        self._blocks: dict[bytes, int] = {}
        self._cur_block: bytes | None = None
        self._cur_block_len = 0
        self._memsize_left = 0
        # current item bookkeeping
        self._item_start = 0
        self._cur_sid = -1
        self._cur_type = 0
        self._cur_snapshot: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
        self._caps_left = 0

    # -- helpers -------------------------------------------------------------------------

    def _abs(self, pos: int) -> int:
        return self.base + pos

    def _fail(self, pos: int, expected: str, found: str | None = None) -> FormatError:
        return FormatError(self._abs(pos), expected, found)

    # -- driver --------------------------------------------------------------------------

    def advance(self, buf: wire.Buffer, pos: int, end: int) -> int:
        """Consume whole items of ``buf[pos:end]``; return the first unconsumed position."""
        self.need = 0
        while True:
            st = self.state
            if st == ST_RAM:
                pos = self._ram(buf, pos, end)
            elif st == ST_SKIP:
                n = end - pos
                if n >= self.skip:
                    pos += self.skip
                    self.skip = 0
                    self.state = self.after_skip
                    continue
                self.skip -= n
                return end
            elif st == ST_TOP:
                pos = self._top(buf, pos, end)
            elif st == ST_FOOTER:
                pos = self._footer(buf, pos, end)
            elif st == ST_MEMSIZE:
                pos = self._memsize(buf, pos, end)
            elif st == ST_HEADER:
                pos = self._header(buf, pos, end)
            elif st == ST_AFTER_HEADER:
                if pos >= end:
                    self.need = 1
                    return pos
                self.state = ST_CONFIG if buf[pos] == wire.VM_CONFIGURATION else ST_TOP
                if self.state == ST_TOP:
                    self._require_page_size(pos)
                continue
            elif st == ST_CONFIG:
                pos = self._config(buf, pos, end)
            elif st == ST_CONFIG_SUB:
                pos = self._config_sub(buf, pos, end)
            elif st == ST_CAPS:
                pos = self._caps(buf, pos, end)
            elif st == ST_AFTER_EOF:
                pos = self._after_eof(buf, pos, end)
            elif st == ST_DONE:
                if pos < end:
                    raise self._fail(pos, "the end of the stream", "more data after it")
                return pos
            else:  # ST_HOLD
                return pos
            if self.need or self.state == ST_HOLD:
                return pos
            if pos >= end and self.state != ST_SKIP:
                if self.state == ST_AFTER_HEADER:
                    continue  # that state asks for the byte it needs (need = 1)
                return pos

    # -- header and configuration ----------------------------------------------------------

    def _header(self, buf: wire.Buffer, pos: int, end: int) -> int:
        if end - pos < 8:
            self.need = 8
            return pos
        magic, version = wire.BE32.unpack_from(buf, pos)[0], wire.BE32.unpack_from(buf, pos + 4)[0]
        if magic != wire.FILE_MAGIC:
            raise self._fail(pos, "the QEVM file magic 0x5145564d", f"0x{magic:08x}")
        if version != wire.FILE_VERSION:
            raise self._fail(pos + 4, "stream version 3", str(version))
        self.events.append(HeaderFramed(self._abs(pos), 8, version))
        self.state = ST_AFTER_HEADER
        return pos + 8

    def _config(self, buf: wire.Buffer, pos: int, end: int) -> int:
        if end - pos < 5:
            self.need = 5
            return pos
        n: int = wire.BE32.unpack_from(buf, pos + 1)[0]
        if n == 0 or n > _MAX_MACHINE_NAME:
            raise self._fail(pos + 1, f"a machine name length of 1..{_MAX_MACHINE_NAME}", str(n))
        if end - pos < 5 + n:
            self.need = 5 + n
            return pos
        try:
            self.machine = bytes(buf[pos + 5 : pos + 5 + n]).decode("ascii")
        except UnicodeDecodeError:
            raise self._fail(pos + 5, "an ASCII machine type name") from None
        self._item_start = self._abs(pos)
        self.state = ST_CONFIG_SUB
        return pos + 5 + n

    def _config_sub(self, buf: wire.Buffer, pos: int, end: int) -> int:
        if end - pos < 1:
            self.need = 1
            return pos
        if buf[pos] != wire.VM_SUBSECTION:
            self.events.append(ConfigurationFramed(
                self._item_start, self._abs(pos) - self._item_start, self.machine,
                self.page_size, tuple(self.capabilities)))
            self._require_page_size(pos)
            self.state = ST_TOP
            return pos
        if end - pos < 2:
            self.need = 2
            return pos
        nlen = buf[pos + 1]
        hdr = 2 + nlen + 4
        if end - pos < hdr:
            self.need = hdr
            return pos
        name = bytes(buf[pos + 2 : pos + 2 + nlen])
        if name == b"configuration/target-page-bits":
            if end - pos < hdr + 4:
                self.need = hdr + 4
                return pos
            self.config_subsections.append(name.decode("ascii"))
            bits = wire.BE32.unpack_from(buf, pos + hdr)[0]
            if not 10 <= bits <= 16:
                raise self._fail(pos + hdr, "target page bits between 10 and 16", str(bits))
            self.page_size = 1 << bits
            return pos + hdr + 4
        if name == b"configuration/capabilities":
            if end - pos < hdr + 4:
                self.need = hdr + 4
                return pos
            count = wire.BE32.unpack_from(buf, pos + hdr)[0]
            self.config_subsections.append(name.decode("ascii"))
            if count > _MAX_CAPABILITIES:
                raise self._fail(pos + hdr, f"at most {_MAX_CAPABILITIES} capabilities", str(count))
            self._caps_left = count
            self.state = ST_CAPS
            return pos + hdr + 4
        if name == b"configuration/uuid":
            if end - pos < hdr + 16:
                self.need = hdr + 16
                return pos
            self.uuid = bytes(buf[pos + hdr : pos + hdr + 16])
            self.config_subsections.append(name.decode("ascii"))
            return pos + hdr + 16
        if name.startswith(b"configuration/"):
            raise Unsupported(Reason.UNKNOWN_CONFIGURATION,
                              f"unknown configuration subsection {name.decode('ascii', 'replace')}",
                              self._abs(pos))
        # Anything else ends the configuration (the 0x05 is not ours): not possible at top level.
        raise self._fail(pos, "a record type after the configuration", "a subsection marker")

    def _caps(self, buf: wire.Buffer, pos: int, end: int) -> int:
        while self._caps_left:
            if end - pos < 1:
                self.need = 1
                return pos
            n = buf[pos]
            if end - pos < 1 + n:
                self.need = 1 + n
                return pos
            cap = bytes(buf[pos + 1 : pos + 1 + n])
            if cap == b"mapped-ram":
                raise Unsupported(Reason.MAPPED_RAM, "the mapped-ram capability (file "
                                  "migration) is not supported", self._abs(pos))
            if cap == b"x-ignore-shared":
                self.ignore_shared = True
            self.capabilities.append(cap.decode("ascii", "replace"))
            self._caps_left -= 1
            pos += 1 + n
        self.state = ST_CONFIG_SUB
        return pos

    def _require_page_size(self, pos: int) -> None:
        if self.page_size is None:
            if self.legacy_page_bits is None:
                raise Unsupported(Reason.NO_PAGE_SIZE,
                    "the stream does not state its target page size (no "
                    "configuration/target-page-bits); set legacy_page_bits to frame it",
                    self._abs(pos))
            self.page_size = 1 << self.legacy_page_bits

    # -- top-level records ------------------------------------------------------------------

    def _top(self, buf: wire.Buffer, pos: int, end: int) -> int:
        if end - pos < 1:
            self.need = 1
            return pos
        t = buf[pos]
        if t == wire.VM_SECTION_PART or t == wire.VM_SECTION_END:
            if end - pos < 5:
                self.need = 5
                return pos
            sid = wire.BE32.unpack_from(buf, pos + 1)[0]
            sec = self.sections.get(sid)
            if sec is None or sid not in self.open_iterables:
                raise self._fail(pos + 1, "the id of an open iterable section", str(sid))
            self._begin_section(pos, t, sid)
            if t == wire.VM_SECTION_END:
                sec.ended = True
                self.open_iterables.discard(sid)
                if not self.open_iterables:
                    self.iterable_phase_done = True
            self.state = ST_RAM
            return pos + 5
        if t == wire.VM_COMMAND:
            return self._command(buf, pos, end)
        if t == wire.VM_SECTION_START or t == wire.VM_SECTION_FULL:
            if end - pos < 6:
                self.need = 6
                return pos
            nlen = buf[pos + 5]
            hdr = 6 + nlen + 8
            if end - pos < hdr:
                self.need = hdr
                return pos
            if t == wire.VM_SECTION_FULL:
                if self.iterable_phase_done:
                    self.state = ST_HOLD
                    return pos
                raise Unsupported(Reason.FULL_SECTION_EARLY,
                                  "a FULL (device state) section arrived before the iterable "
                                  "phase ended (early-setup device or postcopy); it cannot be "
                                  "framed without the VM description", self._abs(pos))
            sid = wire.BE32.unpack_from(buf, pos + 1)[0]
            idstr = bytes(buf[pos + 6 : pos + 6 + nlen]).decode("ascii", "replace")
            inst = wire.BE32.unpack_from(buf, pos + 6 + nlen)[0]
            ver = wire.BE32.unpack_from(buf, pos + 10 + nlen)[0]
            if sid in self.sections:
                raise self._fail(pos + 1, "a new section id", f"{sid}, already used")
            if len(self.sections) >= MAX_SECTIONS:
                raise Unsupported(Reason.LIMIT_EXCEEDED, f"more than {MAX_SECTIONS} iterable "
                                  "sections started", self._abs(pos))
            if idstr != "ram":
                raise Unsupported(Reason.ITERABLE_SECTION,
                                  f"iterable section {idstr!r} is not supported (only 'ram')",
                                  self._abs(pos))
            if ver != wire.RAM_SECTION_VERSION or inst != 0:
                raise Unsupported(Reason.RAM_VERSION, f"ram section version {ver} instance {inst} "
                                  "is not supported (only version 4, instance 0)", self._abs(pos))
            self.sections[sid] = _Section(idstr, inst, ver)
            self.open_iterables.add(sid)
            self.iterable_phase_done = False
            self._begin_section(pos, t, sid)
            self.state = ST_RAM
            return pos + hdr
        if t == wire.VM_EOF:
            self.events.append(EofFramed(self._abs(pos), 1))
            self.state = ST_AFTER_EOF
            return pos + 1
        raise self._fail(pos, "a record type (START, PART, END, FULL, COMMAND or EOF)",
                         f"0x{t:02x}")

    def _begin_section(self, pos: int, t: int, sid: int) -> None:
        self._item_start = self._abs(pos)
        self._cur_sid = sid
        self._cur_type = t
        self._cur_snapshot = self.stats.snapshot()

    def _command(self, buf: wire.Buffer, pos: int, end: int) -> int:
        if end - pos < 5:
            self.need = 5
            return pos
        cmd = wire.BE16.unpack_from(buf, pos + 1)[0]
        length: int = wire.BE16.unpack_from(buf, pos + 3)[0]
        spec = wire.COMMANDS.get(cmd)
        if spec is None:
            raise Unsupported(Reason.UNKNOWN_COMMAND, f"unknown migration command {cmd}",
                              self._abs(pos))
        name, fixed = spec
        if fixed is not None and length != fixed:
            raise self._fail(pos + 3, f"payload length {fixed} for command {name}", str(length))
        if cmd == wire.CMD_PACKAGED:
            raise Unsupported(Reason.POSTCOPY_PACKAGED,
                              "postcopy sends device state inside a PACKAGED command without a "
                              "VM description; it cannot be rewritten", self._abs(pos))
        if cmd == wire.CMD_ENABLE_COLO:
            raise Unsupported(Reason.COLO, "COLO streams are not supported", self._abs(pos))
        if end - pos < 5 + length:
            self.need = 5 + length
            return pos
        value: int | None = None
        summary: int | None = None
        target: int | None = None
        if cmd == wire.CMD_PING:
            value = wire.BE32.unpack_from(buf, pos + 5)[0]
        elif cmd == wire.CMD_POSTCOPY_ADVISE:
            if length not in (0, 16):
                raise self._fail(pos + 3, "a POSTCOPY_ADVISE length of 0 or 16", str(length))
            if length == 16:
                summary = wire.BE64.unpack_from(buf, pos + 5)[0]
                target = wire.BE64.unpack_from(buf, pos + 13)[0]
                if target != self.page_size:
                    raise self._fail(pos + 13, f"target page size {self.page_size}", str(target))
                if summary != target:
                    raise Unsupported(Reason.POSTCOPY_PAGE_SIZES,
                        "postcopy-ram with RAM blocks whose page size differs from the target "
                        "page size (huge pages): the block list cannot be framed exactly",
                        self._abs(pos))
        self.commands_seen[name] = self.commands_seen.get(name, 0) + 1
        self.events.append(CommandFramed(self._abs(pos), 5 + length, name, length, value,
                                         summary, target))
        return pos + 5 + length

    def _footer(self, buf: wire.Buffer, pos: int, end: int) -> int:
        if end - pos < 5:
            self.need = 5
            return pos
        if buf[pos] != wire.VM_SECTION_FOOTER:
            raise Unsupported(Reason.NO_FOOTER, "section footers are missing (only machine "
                              "types with section footers are supported)", self._abs(pos))
        sid = wire.BE32.unpack_from(buf, pos + 1)[0]
        if sid != self._cur_sid:
            raise self._fail(pos + 1, f"the footer of section {self._cur_sid}", f"section {sid}")
        pos += 5
        sec = self.sections[sid]
        s0 = self._cur_snapshot
        s1 = self.stats.snapshot()
        self.events.append(SectionFramed(
            self._item_start, self._abs(pos) - self._item_start,
            wire.RECORD_NAMES[self._cur_type], sid, sec.idstr, sec.instance_id,
            sec.version_id, pages=s1[0] - s0[0], zero_pages=s1[1] - s0[1],
            xbzrle_pages=s1[2] - s0[2], compressed_pages=s1[3] - s0[3],
            multifd_flushes=s1[4] - s0[4]))
        self.state = ST_TOP
        return pos

    def _after_eof(self, buf: wire.Buffer, pos: int, end: int) -> int:
        if end - pos < 5:
            self.need = 5
            return pos
        if buf[pos] != wire.VM_VMDESCRIPTION:
            raise self._fail(pos, "the VM description (0x06) after EOF", f"0x{buf[pos]:02x}")
        n = wire.BE32.unpack_from(buf, pos + 1)[0]
        self.events.append(VmDescriptionFramed(self._abs(pos), 5 + n, n))
        self.skip = n
        self.after_skip = ST_DONE
        self.state = ST_SKIP
        return pos + 5

    # -- ram ------------------------------------------------------------------------------

    def _memsize(self, buf: wire.Buffer, pos: int, end: int) -> int:
        extra = 8 if self.ignore_shared else 0  # the block's mr->addr (x-ignore-shared)
        while self._memsize_left > 0:
            if end - pos < 1:
                self.need = 1
                return pos
            n = buf[pos]
            size = 1 + n + 8 + extra
            if end - pos < size:
                self.need = size
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
        self.state = ST_RAM
        return pos

    def _ram(self, buf: wire.Buffer, pos: int, end: int) -> int:
        ps = self.page_size
        assert ps is not None
        mask = ps - 1
        unpack = wire.BE64.unpack_from
        cur_len = self._cur_block_len
        have_block = self._cur_block is not None
        bound = _block_bound(cur_len, ps)
        limit = bound[0]
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
                    # read): in fragmented RAM most runs are a record or two long.
                    if ps == 4096 and end - pos > 7 and buf[pos + 7] == 0x28:
                        k = _page_run(buf, pos, end)
                        if k:
                            # A record outside the block stops the run: the next turn
                            # of the loop reports it where the record is.
                            k = _in_block(buf, pos, k, _PAGE_REC, bound)
                            pages += k
                            pos += _PAGE_REC * k
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
                        k = _zero_run(buf, pos, end)
                        if k:
                            if k < _EXACT_BELOW:
                                if max(_ZERO_WORDS[k].unpack_from(buf, pos)) > limit:
                                    k = _in_block(buf, pos, k, 9, bound)
                            else:
                                k = _in_block(buf, pos, k, 9, bound)
                            zeros += k
                            pos += 9 * k
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
                bound = _block_bound(cur_len, ps)
                limit = bound[0]
        finally:
            st = self.stats
            st.pages += pages
            st.zero_pages += zeros
            st.page_bytes += pages * ps

    def _check_continue(self, pos: int, offset: int, have_block: bool, cur_len: int) -> None:
        if not have_block:
            raise self._fail(pos, "a RAM record naming its block (no block named yet)",
                             "the CONTINUE flag")
        raise self._fail(pos, f"a page offset inside the block (length 0x{cur_len:x})",
                         f"0x{offset:x}")

    def _ram_record(self, buf: wire.Buffer, pos: int, end: int, word: int, flags: int) -> int:
        ps = self.page_size
        assert ps is not None
        offset = word ^ flags
        kind = flags & ~_CONT
        if kind in (wire.RAM_ZERO, wire.RAM_PAGE, wire.RAM_XBZRLE, wire.RAM_COMPRESS_PAGE):
            hdr = 8
            if flags & _CONT:
                if self._cur_block is None:
                    raise self._fail(pos, "a RAM record naming its block (no block named yet)",
                                     "the CONTINUE flag")
                block, blen = self._cur_block, self._cur_block_len
            else:
                if end - pos < 9:
                    self.need = 9
                    return pos
                n = buf[pos + 8]
                if end - pos < 9 + n:
                    self.need = 9 + n
                    return pos
                block = bytes(buf[pos + 9 : pos + 9 + n])
                blen_opt = self._blocks.get(block)
                if blen_opt is None:
                    raise self._fail(pos + 8, "the name of a RAM block from the MEM_SIZE list",
                                     repr(block.decode("ascii", "replace")))
                blen = blen_opt
                hdr = 9 + n
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
            if kind == wire.RAM_PAGE:
                self._set_block(block, blen)
                st.pages += 1
                st.page_bytes += ps
                self.skip = ps
            elif kind == wire.RAM_XBZRLE:
                if end - pos < hdr + 3:
                    self.need = hdr + 3
                    return pos
                if buf[pos + hdr] != wire.XBZRLE_ENCODING_FLAG:
                    raise self._fail(pos + hdr, "the XBZRLE encoding flag 0x01",
                                     f"0x{buf[pos + hdr]:02x}")
                enc = wire.BE16.unpack_from(buf, pos + hdr + 1)[0]
                if enc > ps:
                    raise self._fail(pos + hdr + 1, f"an XBZRLE length of at most {ps}", str(enc))
                self._set_block(block, blen)
                st.xbzrle_pages += 1
                hdr += 3
                self.skip = enc
            else:
                if end - pos < hdr + 4:
                    self.need = hdr + 4
                    return pos
                clen = wire.BE32.unpack_from(buf, pos + hdr)[0]
                bound = ps + (ps >> 12) + (ps >> 14) + (ps >> 25) + 13  # zlib compressBound
                if clen > bound:
                    raise self._fail(pos + hdr, f"a compressed length of at most {bound}",
                                     str(clen))
                self._set_block(block, blen)
                st.compressed_pages += 1
                hdr += 4
                self.skip = clen
            self.after_skip = ST_RAM
            self.state = ST_SKIP
            return pos + hdr
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
            self._memsize_left = offset
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
