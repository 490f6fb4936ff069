"""The stream framer's state: where it is in the grammar and what it has framed so far.

:class:`FramerState` is the state the three parts of the framer share: the configuration
section (:mod:`migproxy.stream.configuration`), the RAM section walk
(:mod:`migproxy.stream.ramsection`) and the top-level records
(:mod:`migproxy.stream.framer`, whose ``StreamFramer`` is all three).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from migproxy.stream.errors import FormatError
from migproxy.stream.events import Event
from migproxy.stream.mappedram import MappedRamBlock


class Grammar(enum.IntEnum):
    """Where the framer is in the grammar of the streamed part (the framer's own state;
    the channel's state is the engine's :class:`~migproxy.stream.enginestate.Mode`)."""

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
    END = 12  # after the VM description (postcopy: after EOF): nothing may follow
    PACKAGE = 13  # postcopy's PACKAGED command starts at the returned position


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
ST_PACKAGE = int(Grammar.PACKAGE)


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

    def count(self, pages: int, zeros: int, page_size: int) -> None:
        """``pages`` PAGE and ``zeros`` ZERO records of ``page_size``-byte pages framed."""
        self.pages += pages
        self.zero_pages += zeros
        self.page_bytes += pages * page_size

    def snapshot(self) -> tuple[int, int, int, int, int]:
        return (self.pages, self.zero_pages, self.xbzrle_pages, self.compressed_pages,
                self.multifd_flushes)


@dataclass(frozen=True, slots=True)
class RamWalk:
    """Where the framer is inside a ``ram`` section's records, for a walk outside it (the
    daemon's RAM pump): ``skip`` bytes of a page already framed come first, then records
    of pages of ``page_size`` bytes in the current block (``block_len`` bytes long, or
    ``have_block`` false: none named yet). The walk takes ``PAGE|CONTINUE`` and
    ``ZERO|CONTINUE`` records exactly as the compiled walk does and stops before any other
    record, leaving it to the framer."""

    skip: int
    page_size: int
    block_len: int
    have_block: bool


@dataclass
class Section:
    """An iterable section the stream started (QEMU's ``ram``)."""

    idstr: str
    instance_id: int
    version_id: int
    ended: bool = False


class FramerState:
    """The framer's state, shared by the parts of :class:`~migproxy.stream.framer.StreamFramer`.

    ``advance`` consumes whole items only: when an item is incomplete the framer sets
    ``need`` (contiguous bytes from the item's start); payload it passes over is counted in
    ``skip``, after which the state becomes ``after_skip``.
    """

    def __init__(self, *, legacy_page_bits: int | None = None,
                 file_offset: int | None = None) -> None:
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
        # Where the stream starts in the file it is read from (a file read at its own
        # offsets: mapped-ram is framed), or None for a channel (mapped-ram is refused).
        self.file_offset = file_offset
        self.mapped_ram = False  # the mapped-ram capability: RAM at fixed file offsets
        self.mapped_ram_blocks: list[MappedRamBlock] = []
        self.sections: dict[int, Section] = {}
        self.open_iterables: set[int] = set()
        self.iterable_phase_done = False
        self.commands_seen: dict[str, int] = {}
        # postcopy: frame the PACKAGED command (the engine holds and frames the package);
        # without it, postcopy is refused at the PACKAGED command, or already at
        # POSTCOPY_ADVISE when ``refuse_postcopy`` is set (rewriters that cannot do it)
        self.frame_packages = False
        self.refuse_postcopy = False
        self.package_length = 0  # the be32 length of the PACKAGED command met
        self.package_seen = False  # a package was released: EOF ends the stream
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

    def _abs(self, pos: int) -> int:
        return self.base + pos

    def ram_walk(self) -> RamWalk | None:
        """The RAM records the framer is in, as a :class:`RamWalk`; None unless it waits
        for the next record of a ``ram`` section (or the rest of a page's data). Only for
        a caller that holds no bytes of an incomplete record (the engine's carry is
        empty): the framer's ``need`` then only says that the last call ended at a
        record's start."""
        ps = self.page_size
        if ps is None:
            return None
        if self.state == ST_RAM:
            skip = 0
        elif self.state == ST_SKIP and self.after_skip == ST_RAM:
            skip = self.skip
        else:
            return None
        return RamWalk(skip, ps, self._cur_block_len, self._cur_block is not None)

    def walked(self, skip_left: int, pages: int, zeros: int) -> None:
        """Records of the :meth:`ram_walk` were framed outside: ``pages`` PAGE|CONTINUE and
        ``zeros`` ZERO|CONTINUE records, after the skip (``skip_left`` of it is still to
        come, and then no record was)."""
        ps = self.page_size
        assert ps is not None
        assert self.state in (ST_RAM, ST_SKIP)
        self.stats.count(pages, zeros, ps)
        self.need = 0
        if skip_left:
            self.skip = skip_left
            self.after_skip = ST_RAM
            self.state = ST_SKIP
        else:
            self.skip = 0
            self.state = ST_RAM

    def _fail(self, pos: int, expected: str, found: str | None = None) -> FormatError:
        return FormatError(self._abs(pos), expected, found)
