"""What the engine does when it stops understanding a stream, and its size limits."""

from __future__ import annotations

import enum

DEFAULT_HOLD_CAP = 64 * 1024 * 1024  # bytes of non-iterable device state held back
DEFAULT_MAX_DESCRIPTION = 16 * 1024 * 1024  # bytes of VM description JSON parsed at most
# The largest item the framer needs contiguous: a command (5-byte header, payload of at most
# 65535 bytes). Record headers, block lists and the configuration are far smaller.
MAX_ITEM = 5 + 0xFFFF
# Containers ({ and [) a VM description may hold before it is parsed (a real one has a few
# thousand; this bounds the objects json.loads builds, whatever the size cap).
MAX_DESCRIPTION_CONTAINERS = 200_000


class HoldBudget:
    """Bytes of device state all the engines sharing it may hold at once (the daemon has
    one for all its migrations: hold_cap bounds one, this bounds their sum)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.total:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


class Policy(enum.StrEnum):
    """Passthrough: relay the rest untouched. Abort: forward nothing more."""

    PASSTHROUGH = "passthrough"
    ABORT = "abort"
