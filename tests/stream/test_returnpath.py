"""The return-path reader: the destination's verdict, never a guess."""

from __future__ import annotations

import struct

from migproxy.stream.returnpath import ReturnPathReader


def _msg(typ: int, payload: bytes) -> bytes:
    return struct.pack(">HH", typ, len(payload)) + payload


def test_shut_status_is_read_across_splits() -> None:
    data = (_msg(2, struct.pack(">I", 1)) + _msg(7, b"") + _msg(4, bytes(12))
            + _msg(3, struct.pack(">QI", 0, 4096) + b"\x03ram") + _msg(1, struct.pack(">I", 5)))
    for cut in range(len(data) + 1):
        rp = ReturnPathReader()
        rp.feed(data[:cut])
        rp.feed(data[cut:])
        assert rp.shut_status == 5
        assert rp.stopped is None
        assert rp.messages == 5


def test_unknown_or_malformed_messages_stop_reading() -> None:
    rp = ReturnPathReader()
    rp.feed(_msg(99, b"x") + _msg(1, struct.pack(">I", 0)))
    assert rp.stopped
    assert rp.shut_status is None
    rp = ReturnPathReader()
    rp.feed(_msg(1, b"\x00\x00"))  # SHUT must carry 4 bytes
    assert rp.stopped
    assert rp.shut_status is None
    rp = ReturnPathReader()
    rp.feed(_msg(5, b"\x03ram\x00") + bytes(100) + _msg(1, struct.pack(">I", 0)))
    assert rp.stopped == "recv_bitmap"
    assert rp.shut_status is None
