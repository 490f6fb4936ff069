"""Events the stream engine reports while it frames a migration stream: one class each.

Events are frozen dataclasses. The engine performs no I/O; it only returns them. Offsets
are absolute positions in the stream *as received* from the source. Section rewriters
(plug-ins such as :mod:`migproxy.arm`) add their own subclasses of :class:`Event`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from migproxy.stream.reasons import StopReason


class Event:
    """Base class of everything the engine reports."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ItemFramed(Event):
    """One top-level item of the stream, exactly delimited (base of the item events)."""

    kind: ClassVar[str] = "item"
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class HeaderFramed(ItemFramed):
    """The file header: ``QEVM`` magic and stream version."""

    kind: ClassVar[str] = "header"
    version: int


@dataclass(frozen=True, slots=True)
class ConfigurationFramed(ItemFramed):
    """The configuration section (machine type, target page size, capabilities)."""

    kind: ClassVar[str] = "configuration"
    machine: str | None
    page_size: int | None
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CommandFramed(ItemFramed):
    """A ``QEMU_VM_COMMAND`` record (MIG_CMD_*)."""

    kind: ClassVar[str] = "command"
    command: str
    length: int
    value: int | None = None  # PING; PACKAGED: the package's length
    pagesize_summary: int | None = None  # POSTCOPY_ADVISE
    target_page_size: int | None = None  # POSTCOPY_ADVISE


@dataclass(frozen=True, slots=True)
class SectionFramed(ItemFramed):
    """A section: START/PART/END of ``ram`` (with its record counts) or a FULL device
    section of the non-iterable device state (counts ``None``)."""

    kind: ClassVar[str] = "section"
    type: str  # START, PART, END or FULL
    section_id: int
    idstr: str
    instance_id: int
    version_id: int
    pages: int | None = None
    zero_pages: int | None = None
    xbzrle_pages: int | None = None
    compressed_pages: int | None = None
    multifd_flushes: int | None = None


@dataclass(frozen=True, slots=True)
class PackageRestKept(ItemFramed):
    """Postcopy: the part of the PACKAGED device state after the last section framed by a
    known layout (the other devices, then the closing commands), kept byte for byte."""

    kind: ClassVar[str] = "package_rest"


@dataclass(frozen=True, slots=True)
class EofFramed(ItemFramed):
    """``QEMU_VM_EOF``."""

    kind: ClassVar[str] = "eof"


@dataclass(frozen=True, slots=True)
class VmDescriptionFramed(ItemFramed):
    """The JSON VM description after EOF (``length`` bytes of JSON)."""

    kind: ClassVar[str] = "vmdescription"
    length: int


@dataclass(frozen=True, slots=True)
class DeviceStateHeld(Event):
    """The non-iterable device state starts here; it is held back until it is framed."""

    offset: int


@dataclass(frozen=True, slots=True)
class DeviceStateReleased(Event):
    """The held device state left the engine: rewritten (``rewritten``) or untouched."""

    offset: int
    held_bytes: int
    out_bytes: int
    rewritten: bool


@dataclass(frozen=True, slots=True)
class PassthroughEntered(Event):
    """The engine stopped understanding the stream; the rest is relayed untouched."""

    reason: StopReason
    message: str
    offset: int


@dataclass(frozen=True, slots=True)
class Aborted(Event):
    """The engine stopped (abort policy); nothing more is forwarded."""

    reason: StopReason
    message: str
    offset: int


@dataclass(frozen=True, slots=True)
class StreamComplete(Event):
    """The whole stream (through the VM description, if any) was framed."""

    offset: int
