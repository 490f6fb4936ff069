"""Events the stream engine reports while it frames a migration stream.

Events are plain frozen dataclasses; the engine never performs I/O, it only returns them.
Offsets are absolute positions in the stream *as received* from the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ItemFramed:
    """One top-level item of the stream, exactly delimited.

    ``kind`` is one of ``header``, ``configuration``, ``command``, ``section``, ``eof``,
    ``vmdescription``. For sections ``detail`` holds ``type`` (START/PART/END/FULL),
    ``section_id``, ``idstr``, ``instance_id``, ``version_id``.
    """

    offset: int
    size: int
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CpuState:
    """The cpreg arrays of one ARM ``cpu`` section."""

    instance_id: int
    section_offset: int
    indexes: tuple[int, ...]
    values: tuple[int, ...]


@dataclass(frozen=True)
class CpuSeen:
    cpu: CpuState


@dataclass(frozen=True)
class CpuRewritten:
    """A cpu section whose cpreg arrays were changed by the profile."""

    instance_id: int
    count_before: int
    count_after: int
    dropped: tuple[tuple[int, int], ...]
    inserted: tuple[tuple[int, int], ...]
    set: tuple[tuple[int, int, int], ...]  # (id, old value, new value)
    applied: bool  # False in dry-run: computed and reported, not applied


@dataclass(frozen=True)
class HoldStarted:
    """The device-state tail starts here; it is held back until it can be framed."""

    offset: int


@dataclass(frozen=True)
class TailReleased:
    """The held tail left the engine: rewritten (``rewritten``) or untouched."""

    offset: int
    held_bytes: int
    out_bytes: int
    rewritten: bool


@dataclass(frozen=True)
class PassthroughEntered:
    """The engine stopped understanding the stream; the rest is relayed untouched."""

    reason: str
    message: str
    offset: int


@dataclass(frozen=True)
class Aborted:
    """The engine stopped (abort policy); nothing more is forwarded."""

    reason: str
    message: str
    offset: int


@dataclass(frozen=True)
class StreamComplete:
    """The whole stream (through the VM description, if any) was framed."""

    offset: int


Event = (
    ItemFramed
    | CpuSeen
    | CpuRewritten
    | HoldStarted
    | TailReleased
    | PassthroughEntered
    | Aborted
    | StreamComplete
)
