"""What the engine does when it stops understanding a stream, and its size limits."""

from __future__ import annotations

import enum

DEFAULT_HOLD_CAP = 64 * 1024 * 1024  # bytes of non-iterable device state held back
MAX_ITEM = 1024 * 1024  # largest item (record header, command) buffered contiguously


class Policy(enum.StrEnum):
    """Passthrough: relay the rest untouched. Abort: forward nothing more."""

    PASSTHROUGH = "passthrough"
    ABORT = "abort"
