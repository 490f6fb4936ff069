"""Hostile main channels for the soak test and the flood benchmark: what a peer that is
not QEMU (or a broken one) might send a migproxy daemon."""

from __future__ import annotations

import asyncio
import json
import struct

from migproxy.stream import wire
from testkit.synthetic import SynthSpec, build

MiB = 1 << 20


def description_at(stream: bytes) -> int:
    """Where EOF + VMDESCRIPTION start (the footer before them may hold 00 06 too)."""
    at = stream.index(b"\x00\x06", stream.index(b"globalstate"))
    while stream[at + 6 : at + 7] != b"{":
        at = stream.index(b"\x00\x06", at + 1)
    return at


def with_description(stream: bytes, body: bytes) -> bytes:
    """``stream`` with its VM description replaced by ``body``."""
    at = description_at(stream)
    return stream[: at + 2] + struct.pack(">I", len(body)) + body


def hostile_streams(*, blocks: int = 50_000, description_mib: int = 20) -> dict[str, bytes]:
    """A RAM block-list flood, a huge description (``description_mib`` MiB of ``{}``), a
    description nested 600 deep, and HTTP garbage."""
    small = build(SynthSpec(cpus=1))
    head = small[: small.index(struct.pack(">Q", (64 << 20) | wire.RAM_MEM_SIZE))]
    flood = head + struct.pack(">Q", (1 << 30) | wire.RAM_MEM_SIZE) + b"".join(
        bytes((8,)) + b"blk%05d" % i + struct.pack(">Q", 0) for i in range(blocks))
    desc = json.loads(small[description_at(small) + 6 :])
    deep: list[object] = []
    for _ in range(600):
        deep = [deep]
    desc["x-deep"] = deep
    huge = b'{"devices": [' + b", ".join([b"{}"] * (description_mib * MiB // 4)) + b"]}"
    return {
        "block_flood": flood,
        "huge_description": with_description(small, huge),
        "nested_description": with_description(small, json.dumps(desc).encode()),
        "garbage": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 100,
    }


async def send_and_half_close(port: int, data: bytes, *, linger: float = 0.0,
                              close: bool = False) -> None:
    """Connect to 127.0.0.1:``port``, send ``data``, half-close; then wait ``linger``
    seconds and, with ``close``, close the connection."""
    _r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    await w.drain()
    w.write_eof()
    await w.drain()
    await asyncio.sleep(linger)
    if close:
        w.close()
