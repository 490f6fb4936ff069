"""Sans-IO reader of the return path (destination -> source on the main connection).

Messages are ``be16 type, be16 length, payload`` (QEMU ``migration/migration.c``). The
return path is relayed untouched whatever happens here; reading it only tells the daemon
how the destination ended: ``SHUT`` carries a be32 status, 0 for success. After anything
this reader does not know (or ``RECV_BITMAP``, which is followed by unframed bitmap data),
it stops reading rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from migproxy.stream import wire

RP_SHUT = 1
RP_PONG = 2
RP_REQ_PAGES_ID = 3
RP_REQ_PAGES = 4
RP_RECV_BITMAP = 5
RP_RESUME_ACK = 6
RP_SWITCHOVER_ACK = 7

# type -> fixed payload length (None: as the length field says)
_LENGTHS: dict[int, int | None] = {
    RP_SHUT: 4, RP_PONG: 4, RP_REQ_PAGES_ID: None, RP_REQ_PAGES: 12, RP_RESUME_ACK: 4,
    RP_SWITCHOVER_ACK: 0,
}


@dataclass
class ReturnPathReader:
    shut_status: int | None = None  # the destination's final status, once seen
    stopped: str | None = None  # why reading stopped (the relay goes on regardless)
    messages: int = 0
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self.stopped is not None:
            return
        buf = self._buf
        buf += data
        pos = 0
        while len(buf) - pos >= 4:
            typ = wire.BE16.unpack_from(buf, pos)[0]
            length = wire.BE16.unpack_from(buf, pos + 2)[0]
            if typ == RP_RECV_BITMAP:
                self.stopped = "recv_bitmap"  # unframed bitmap data follows
                break
            if typ not in _LENGTHS:
                self.stopped = f"unknown message type {typ}"
                break
            fixed = _LENGTHS[typ]
            if fixed is not None and length != fixed:
                self.stopped = f"message type {typ} with length {length}"
                break
            if len(buf) - pos < 4 + length:
                break
            if typ == RP_SHUT:
                self.shut_status = wire.BE32.unpack_from(buf, pos + 4)[0]
            self.messages += 1
            pos += 4 + length
        if self.stopped is not None:
            self._buf = bytearray()
        else:
            del buf[:pos]
