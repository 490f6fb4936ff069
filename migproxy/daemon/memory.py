"""Giving freed memory back to the system once the daemon is idle.

CPython returns large blocks to the C allocator when they are freed, but glibc keeps the
freed heap (and pymalloc its arenas) for reuse: after a flood of connections or a few
large device states the daemon's resident size stays near its peak although nothing is in
use. When the last pair closes, :class:`IdleTrim` asks glibc to release what it keeps
(``malloc_trim(0)``), at most once per ``delay`` seconds and only with no pair open (so
never on the path of a migration). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
from collections.abc import Callable


def _malloc_trim() -> Callable[[], None] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int

    def trim() -> None:
        fn(0)

    return trim


class IdleTrim:
    """Trim the heap ``delay`` seconds after the daemon became idle (if it still is)."""

    def __init__(self, idle: Callable[[], bool], delay: float = 1.0) -> None:
        self.idle = idle
        self.delay = delay
        self.trim = _malloc_trim()
        self._handle: asyncio.TimerHandle | None = None
        self.trims = 0

    def maybe_idle(self) -> None:
        """Called when a pair closed."""
        if self.trim is None or self._handle is not None or not self.idle():
            return
        self._handle = asyncio.get_event_loop().call_later(self.delay, self._run)

    def _run(self) -> None:
        self._handle = None
        if self.trim is not None and self.idle():
            gc.collect()
            self.trim()
            self.trims += 1

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
