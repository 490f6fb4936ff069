"""Events of the ARM ``cpu`` rewriter (reported through the engine's results)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from migproxy.stream.events import Event


@dataclass(frozen=True, slots=True)
class CpuState:
    """The cpreg arrays of one ARM ``cpu`` section."""

    instance_id: int
    section_offset: int
    indexes: tuple[int, ...]
    values: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CpuSeen(Event):
    """An ARM cpu section was decoded."""

    cpu: CpuState


@dataclass(frozen=True, slots=True)
class CpuRewritten(Event):
    """A cpu section whose cpreg arrays were changed by the profile."""

    instance_id: int
    count_before: int
    count_after: int
    dropped: tuple[tuple[int, int], ...]
    inserted: tuple[tuple[int, int], ...]
    set: tuple[tuple[int, int, int], ...]  # (id, old value, new value)
    applied: bool  # False in dry-run: computed and reported, not applied


def seen_cpus(events: Iterable[Event]) -> list[CpuState]:
    """The cpu sections reported in ``events`` (e.g. ``StreamEngine.reports``), in order."""
    return [e.cpu for e in events if isinstance(e, CpuSeen)]
