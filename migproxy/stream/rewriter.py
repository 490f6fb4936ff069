"""Section rewriters: the plug-in point of the engine for device state.

The engine frames the non-iterable device state with the VM description and hands every
FULL section to the rewriters it was configured with; it knows nothing about what a section
holds. A rewriter (the ARM ``cpu`` rewriter in :mod:`migproxy.arm.rewriter` is one) works in
two phases, so that nothing is emitted unless every section agrees:

1. ``decode``: for each section the rewriter ``claims``, read what it needs and report it
   (events). Raise :class:`~migproxy.stream.errors.SectionRefused` when the section is not
   in a layout the rewriter understands.
2. ``plan``: say how the section changes, as :class:`SectionEdit` (byte splices inside the
   section and new element counts for fields of its description entry), or ``None``.
   Raise :class:`~migproxy.stream.errors.SectionRefused` when a rule refuses.

With the return path there is a step before both: ``recognises`` says whether a claimed
section's description entry is a layout the rewriter knows field for field; a candidate
end of the device state is only taken when every claimed section is recognised.

Only when every plan is in does the engine build the new device state (splices in stream
order, the description updated) and release it; a refusal anywhere leaves the whole stream
untouched (passthrough) or stops it (abort), per policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from migproxy.stream import wire
from migproxy.stream.events import Event
from migproxy.stream.vmdesc import FullSection, StreamFacts

Buffer = wire.Buffer


@dataclass(frozen=True)
class Splice:
    """Replace ``held[start:end]`` (offsets in the held device state) with ``data``."""

    start: int
    end: int
    data: bytes


@dataclass
class SectionEdit:
    """How one FULL section changes."""

    section: FullSection
    splices: list[Splice]
    field_counts: dict[str, int] = field(default_factory=dict)  # field name -> elements
    events: list[Event] = field(default_factory=list)  # reported with the plan
    # top-level subsections the splices remove whole (their description entries go too)
    removed_subsections: frozenset[str] = frozenset()


@dataclass
class Decoded:
    """What ``decode`` found in one section: its events and the rewriter's own data."""

    section: FullSection
    events: list[Event]
    data: Any = None


class SectionRewriter(Protocol):
    """A plug-in that understands (and may rewrite) some device sections. It may also
    declare ``reasons``: the :class:`~migproxy.stream.reasons.StopReason` members its
    :class:`~migproxy.stream.errors.SectionRefused` carry (listed so that their metrics
    series exist from the start: :func:`~migproxy.stream.reasons.stop_reasons`)."""

    name: str

    def begin(self, facts: StreamFacts) -> None:
        """A device state is about to be decoded: what the streamed part said (machine
        type, page size), for rewriters whose plan depends on it."""
        ...

    def claims(self, section: FullSection, device: Mapping[str, Any]) -> bool:
        """Whether this rewriter handles the section (``device``: its description entry)."""
        ...

    def recognises(self, section: FullSection, device: Mapping[str, Any]) -> str | None:
        """None if the claimed section's description entry is, field for field, a layout
        this rewriter knows; otherwise why not. With the return path the end of the device
        state is recognised by content, and a candidate is only taken when every claimed
        section is recognised: a guest that plants a description in its own registers
        cannot make the section it sits in end early without changing that layout."""
        ...

    def decode(self, held: Buffer, section: FullSection, offset: int) -> Decoded:
        """Read a claimed section of ``held``; ``offset`` is the stream offset of held[0]."""
        ...

    def plan(self, decoded: Decoded, *, apply: bool) -> SectionEdit | None:
        """The change to make (``apply`` False: dry run, report it as not applied)."""
        ...
