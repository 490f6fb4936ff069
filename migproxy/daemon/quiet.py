"""The quiet window that confirms the end of the held device state (with the return path).

With the return path the source does not close after the VM description: it waits for the
destination, so the engine recognises the end by content (a description that frames every
held byte and passes its checks) and the session confirms it by silence. The silence is
what tells the real end from a description a guest planted in its device state: after
the real one QEMU sends nothing until the destination answers, while a planted one is
followed by the rest of the device state from the same burst (QEMU writes the whole
non-iterable state at once, with the VM stopped, in 32 KiB pieces).

The window is the route's ``end_quiet`` (1 ms by default) or, when the device state came
in several reads, ``PAUSE_FACTOR`` times the longest pause between them, whichever is
longer, up to ``ADAPTIVE_CAP``: a source whose burst arrives with pauses (a slow link, a
loaded host) is given a window that outlasts them; one whose whole device state arrived at
once waits only the floor. Sans-IO: the session reports arrivals with its clock.
"""

from __future__ import annotations

from dataclasses import dataclass

# How many times the longest pause inside the held burst the window lasts at least (the
# pause measured includes the daemon's own work between reads: an overestimate).
PAUSE_FACTOR = 2
# The most the pauses can stretch the window to (a longer end_quiet still applies).
ADAPTIVE_CAP = 0.1  # seconds


@dataclass
class QuietWindow:
    """The pauses of one main channel's held burst, and the quiet window they ask for."""

    floor: float  # the route's end_quiet, seconds
    held_reads: int = 0  # reads that carried held device state
    longest_pause: float = 0.0  # seconds between two of them, the longest
    _last: float | None = None

    def held(self, now: float) -> None:
        """A read that carried held device state arrived at ``now``."""
        if self._last is not None:
            self.longest_pause = max(self.longest_pause, now - self._last)
        self._last = now
        self.held_reads += 1

    def seconds(self) -> float:
        """How long no byte may come after a candidate end before it is taken."""
        return max(self.floor, min(ADAPTIVE_CAP, PAUSE_FACTOR * self.longest_pause))
