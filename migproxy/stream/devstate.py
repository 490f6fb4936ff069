"""The held non-iterable device state (QEMU's ``qemu_savevm_state_complete_precopy_non_iterable``).

From the first FULL section after the iterable phase, bytes are held (under a cap) until
they can be framed. The device state ends with ``EOF (0x00)``, ``VMDESCRIPTION (0x06)``,
``be32 length`` and the JSON. The length sits at the *start* of the description, so the end
of the stream can only be recognised once all of it has arrived.

Where the EOF can be: the description's JSON holds no NUL byte, so the real EOF byte is the
last NUL of what is held, or sits at most 5 bytes before it (the be32 length may contain
NULs). A position ``p`` in that range is a candidate when ``held[p:p+2] == 00 06``, the JSON
starts with ``{`` and ``p + 6 + length`` equals everything held so far. A candidate is only
a hypothesis: it is accepted only when the description found there frames every held byte
before it exactly (:func:`migproxy.stream.vmdesc.frame_device_state`). So at most six positions are
examined per input, whatever the guest planted in device state, and finding them costs a
backwards search to the last NUL (in practice the length of the JSON received so far).
"""

from __future__ import annotations

from migproxy.stream import wire
from migproxy.stream.errors import MigproxyError
from migproxy.stream.policy import HoldBudget

_EOF_VMDESC = bytes((wire.VM_EOF, wire.VM_VMDESCRIPTION))
_BRACE = ord("{")


class HoldCapExceeded(MigproxyError):
    """The device state outgrew the engine's hold_cap."""


class HoldBudgetExhausted(MigproxyError):
    """The engines sharing a hold budget hold all of it."""


class HeldDeviceState:
    """A bounded buffer for the tail."""

    def __init__(self, start_offset: int, cap: int, budget: HoldBudget | None = None) -> None:
        self.start_offset = start_offset
        self.cap = cap
        self.budget = budget
        self.buf = bytearray()
        self.last_nul = -1  # position of the last NUL held (tracked as bytes arrive)

    def __len__(self) -> int:
        return len(self.buf)

    def add(self, data: bytes | bytearray | memoryview) -> None:
        if len(self.buf) + len(data) > self.cap:
            raise HoldCapExceeded(
                f"the device-state tail exceeds the hold-back cap of {self.cap} bytes")
        if self.budget is not None and not self.budget.take(len(data)):
            raise HoldBudgetExhausted(
                f"the shared hold budget of {self.budget.total} bytes is in use by other "
                "migrations")
        old = len(self.buf)
        self.buf += data
        i = self.buf.rfind(b"\x00", old)  # only the new bytes: no rescan of what is held
        if i >= 0:
            self.last_nul = i

    def free(self) -> None:
        """Give what is held back to the budget (the buffer is being dropped)."""
        if self.budget is not None:
            self.budget.give(len(self.buf))
            self.budget = None

    def candidates(self) -> list[int]:
        """Possible EOF positions whose description would end exactly at the current end,
        newest first."""
        buf = self.buf
        n = len(buf)
        if n < 7 or buf[-1] != ord("}"):
            return []
        last_nul = self.last_nul
        out = []
        for p in range(min(last_nul, n - 7), max(last_nul - 6, -1), -1):
            if buf[p : p + 2] == _EOF_VMDESC and buf[p + 6] == _BRACE and \
                    p + 6 + wire.BE32.unpack_from(buf, p + 2)[0] == n:
                out.append(p)
        return out
