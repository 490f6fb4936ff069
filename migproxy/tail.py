"""The held device-state tail.

From the first FULL section after the iterable phase, bytes are held (under a cap) until
the tail can be framed. The tail ends with ``EOF (0x00)``, ``VMDESCRIPTION (0x06)``,
``be32 length`` and the JSON. The length sits at the *start* of the description, so the end
of the stream can only be recognised once all of it has arrived: a position ``p`` is a
possible EOF when ``held[p:p+2] == 00 06`` and ``p + 6 + length`` equals everything held
so far. Such a position is only a hypothesis: it is accepted only when the description found
there frames every held byte before it exactly (:func:`migproxy.vmdesc.frame_tail`). The
hypotheses are indexed by the total length at which they would complete, so each held byte
is examined once (O(n) over the whole tail, whatever the split of the input).
"""

from __future__ import annotations

from migproxy import wire

_MARK = bytes((wire.VM_EOF, wire.VM_VMDESCRIPTION))
_BRACE = ord("{")
MAX_PENDING = 65536


class HoldCapExceeded(Exception):
    pass


class HeldTail:
    """A bounded buffer for the tail, with the index of possible EOF positions."""

    def __init__(self, start_offset: int, cap: int) -> None:
        self.start_offset = start_offset
        self.cap = cap
        self.buf = bytearray()
        self._scan = 0
        self._candidates: dict[int, list[int]] = {}
        self._pending = 0

    def __len__(self) -> int:
        return len(self.buf)

    def add(self, data: bytes | bytearray | memoryview) -> None:
        if len(self.buf) + len(data) > self.cap:
            raise HoldCapExceeded(
                f"the device-state tail exceeds the hold-back cap of {self.cap} bytes")
        self.buf += data
        self._index()

    def _index(self) -> None:
        buf = self.buf
        limit = len(buf) - 7  # a candidate needs its header and the JSON's first byte
        i = self._scan
        while i <= limit:
            p = buf.find(_MARK, i, limit + 2)
            if p < 0:
                break
            total = p + 6 + wire.BE32.unpack_from(buf, p + 2)[0]
            if buf[p + 6] == _BRACE and len(buf) <= total <= self.cap:
                self._candidates.setdefault(total, []).append(p)
                self._pending += 1
            i = p + 1
        self._scan = max(self._scan, limit + 1)
        if self._pending > MAX_PENDING:
            n = len(buf)
            self._candidates = {t: ps for t, ps in self._candidates.items() if t >= n}
            self._pending = sum(len(ps) for ps in self._candidates.values())
            if self._pending > MAX_PENDING:
                raise HoldCapExceeded(f"more than {MAX_PENDING} possible description starts "
                                      "in the tail")

    def candidates(self) -> list[int]:
        """EOF positions whose description would end exactly at the current end."""
        return self._candidates.get(len(self.buf), [])
