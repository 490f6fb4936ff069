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

:class:`StreamFramer` is this module's dispatcher over the grammar (``advance``) and the
top-level records (sections, commands, footers, EOF and the VM description); its parts are
in their own modules:

- :mod:`migproxy.stream.framerstate`: the state they share (``Grammar``, ``RamStats``);
- :mod:`migproxy.stream.configuration`: the file header and the configuration section;
- :mod:`migproxy.stream.ramsection`: the RAM section walk, with the choice between the
  compiled and the pure-Python RAM record walk (``RAM_WALK``, ``IMPLEMENTATION``);
- :mod:`migproxy.stream.ramruns`: the Python walk's strided run counting.
"""

from __future__ import annotations

from collections.abc import Callable

from migproxy.stream import wire
from migproxy.stream.configuration import ConfigurationFramer
from migproxy.stream.errors import Unsupported
from migproxy.stream.events import (
    CommandFramed,
    EofFramed,
    SectionFramed,
    VmDescriptionFramed,
)
from migproxy.stream.framerstate import (
    ST_AFTER_EOF,
    ST_AFTER_HEADER,
    ST_CAPS,
    ST_CONFIG,
    ST_CONFIG_SUB,
    ST_DONE,
    ST_FOOTER,
    ST_HEADER,
    ST_HOLD,
    ST_MEMSIZE,
    ST_PACKAGE,
    ST_RAM,
    ST_SKIP,
    ST_TOP,
    Grammar,
    RamStats,
    Section,
)
from migproxy.stream.ramruns import block_bound as _block_bound
from migproxy.stream.ramruns import in_block as _in_block
from migproxy.stream.ramsection import IMPLEMENTATION, MAX_RAM_BLOCKS, RamSectionFramer
from migproxy.stream.reasons import Reason

# Names other modules, the tests and the benchmarks take from here.
__all__ = ["IMPLEMENTATION", "MAX_RAM_BLOCKS", "MAX_SECTIONS", "ST_AFTER_EOF",
           "ST_AFTER_HEADER", "ST_CAPS", "ST_CONFIG", "ST_CONFIG_SUB", "ST_DONE", "ST_FOOTER",
           "ST_HEADER", "ST_HOLD", "ST_MEMSIZE", "ST_PACKAGE", "ST_RAM", "ST_SKIP", "ST_TOP",
           "Grammar", "RamStats", "StreamFramer", "_block_bound", "_in_block"]

MAX_SECTIONS = 16  # iterable sections started (QEMU starts one "ram" section)

_Step = Callable[["StreamFramer", wire.Buffer, int, int], int]


class StreamFramer(ConfigurationFramer, RamSectionFramer):
    """Frames the header, configuration, commands and ``ram`` sections of a main channel."""

    # The step of each grammar state but the frequent ones, which ``advance`` tests first.
    _STEPS: dict[int, _Step]

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
            elif st in (ST_HOLD, ST_PACKAGE):
                return pos
            else:
                pos = self._STEPS[st](self, buf, pos, end)
            if self.need or self.state in (ST_HOLD, ST_PACKAGE):
                return pos
            if pos >= end and self.state != ST_SKIP:
                if self.state == ST_AFTER_HEADER:
                    continue  # that state asks for the byte it needs (need = 1)
                return pos

    def _done(self, buf: wire.Buffer, pos: int, end: int) -> int:
        if pos < end:
            raise self._fail(pos, "the end of the stream", "more data after it")
        return pos

    # -- top-level records ------------------------------------------------------------------

    def _top(self, buf: wire.Buffer, pos: int, end: int) -> int:
        if end - pos < 1:
            self.need = 1
            return pos
        t = buf[pos]
        if t == wire.VM_SECTION_PART or t == wire.VM_SECTION_END:
            return self._section_continued(buf, pos, end, t)
        if t == wire.VM_COMMAND:
            return self._command(buf, pos, end)
        if t == wire.VM_SECTION_START or t == wire.VM_SECTION_FULL:
            return self._section_started(buf, pos, end, t)
        if t == wire.VM_EOF:
            self.events.append(EofFramed(self._abs(pos), 1))
            # Postcopy sends no VM description: EOF ends the stream.
            self.state = ST_DONE if self.package_seen else ST_AFTER_EOF
            return pos + 1
        raise self._fail(pos, "a record type (START, PART, END, FULL, COMMAND or EOF)",
                         f"0x{t:02x}")

    def _section_continued(self, buf: wire.Buffer, pos: int, end: int, t: int) -> int:
        """PART or END of an open iterable section."""
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

    def _section_started(self, buf: wire.Buffer, pos: int, end: int, t: int) -> int:
        """START of an iterable section, or FULL: the device state (after the iterable
        phase) begins."""
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
        self.sections[sid] = Section(idstr, inst, ver)
        self.open_iterables.add(sid)
        self.iterable_phase_done = False
        self._begin_section(pos, t, sid)
        self.state = ST_RAM
        return pos + hdr

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
            return self._packaged(buf, pos, end)
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
            if self.refuse_postcopy:
                raise Unsupported(Reason.POSTCOPY_PACKAGED,
                                  "postcopy was advised, and the section rewriters cannot frame "
                                  "the PACKAGED device state: refused before the source stops "
                                  "the guest", self._abs(pos))
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

    def _packaged(self, buf: wire.Buffer, pos: int, end: int) -> int:
        """POSTCOPY's PACKAGED command: its be32 length, then a package of that many bytes
        (:mod:`migproxy.stream.package`). The framer stops before it (``ST_PACKAGE``); the
        engine holds and frames the package, then hands the framer the bytes after it."""
        if not self.frame_packages:
            raise Unsupported(Reason.POSTCOPY_PACKAGED,
                              "postcopy sends device state inside a PACKAGED command without a "
                              "VM description, and no section layouts are configured to frame "
                              "it", self._abs(pos))
        if end - pos < 9:
            self.need = 9
            return pos
        if self.package_seen:
            raise self._fail(pos, "one PACKAGED command", "a second one")
        self.package_length = wire.BE32.unpack_from(buf, pos + 5)[0]
        self.commands_seen["PACKAGED"] = self.commands_seen.get("PACKAGED", 0) + 1
        self.events.append(CommandFramed(self._abs(pos), 9, "PACKAGED", 4,
                                         self.package_length))
        self.state = ST_PACKAGE
        return pos

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

StreamFramer._STEPS = {
    ST_HEADER: StreamFramer._header,
    ST_AFTER_HEADER: StreamFramer._after_header,
    ST_CONFIG: StreamFramer._config,
    ST_CONFIG_SUB: StreamFramer._config_sub,
    ST_CAPS: StreamFramer._caps,
    ST_MEMSIZE: StreamFramer._memsize,
    ST_FOOTER: StreamFramer._footer,
    ST_AFTER_EOF: StreamFramer._after_eof,
    ST_DONE: StreamFramer._done,
}
