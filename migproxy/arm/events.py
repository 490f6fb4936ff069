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


@dataclass(frozen=True, slots=True)
class CpuReconciled(Event):
    """The plan for one cpu section against a destination manifest (what changes and
    why, one line each; empty if the stream already matches)."""

    instance_id: int
    destination: str  # e.g. "QEMU 11.1.3 (virt-10.0, cortex-a57)"
    changes: tuple[str, ...]
    guest_visible: tuple[str, ...]  # the opted-in changes among them
    applied: bool


def seen_cpus(events: Iterable[Event]) -> list[CpuState]:
    """The cpu sections reported in ``events`` (e.g. ``StreamEngine.reports``), in order."""
    return [e.cpu for e in events if isinstance(e, CpuSeen)]
