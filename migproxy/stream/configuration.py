"""The file header and the configuration section of the main channel.

The header (magic and version), then optionally the configuration section: the machine
type name and its subsections (target page bits, capabilities, uuid). Everything after it
is top-level records (:mod:`migproxy.stream.framer`). The page size stated here (or the
legacy one configured for a stream without it) is what the RAM walk frames pages with.
"""

from __future__ import annotations

from migproxy.stream import wire
from migproxy.stream.errors import Unsupported
from migproxy.stream.events import ConfigurationFramed, HeaderFramed
from migproxy.stream.framerstate import (
    ST_AFTER_HEADER,
    ST_CAPS,
    ST_CONFIG,
    ST_CONFIG_SUB,
    ST_TOP,
    FramerState,
)
from migproxy.stream.reasons import Reason

_MAX_MACHINE_NAME = 256
_MAX_CAPABILITIES = 64


class ConfigurationFramer(FramerState):
    """Frames the file header and the configuration section (a part of
    :class:`~migproxy.stream.framer.StreamFramer`)."""

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

    def _after_header(self, buf: wire.Buffer, pos: int, end: int) -> int:
        """The byte after the header: a configuration section, or top-level records."""
        if pos >= end:
            self.need = 1
            return pos
        self.state = ST_CONFIG if buf[pos] == wire.VM_CONFIGURATION else ST_TOP
        if self.state == ST_TOP:
            self._require_page_size(pos)
        return pos

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
                if self.file_offset is None:
                    raise Unsupported(Reason.MAPPED_RAM, "the mapped-ram capability (file "
                                      "migration) is not supported on a channel (only in "
                                      "a file, offline)", self._abs(pos))
                self.mapped_ram = True
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
