"""A minimal TCP relay on migproxy's I/O fast path, without the engine (the baseline).

uvloop, ``BufferedProtocol`` with a 1 MiB receive buffer, reused only while the peer
transport has nothing queued; otherwise an earlier buffer that no queued write refers to
any more, else a new one (as ``migproxy.daemon.relay`` does). Write-buffer high water
4 MiB with ``pause_reading``/``resume_reading`` back-pressure, half-close passed on.

    python -m testkit.bare_relay --listen 127.0.0.1:PORT --target 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import uvloop

from migproxy.daemon.buffers import next_buffer

READ, HIGH = 1 << 20, 4 << 20


class Side(asyncio.BufferedProtocol):
    def __init__(self, target: tuple[str, int] | None = None) -> None:
        self.target = target  # set on the accepted side: connect there first
        self.peer: Side | None = None
        self.t: Any = None
        self.raw = bytearray(READ)
        self.buf = memoryview(self.raw)
        self.retired: list[bytearray] = []
        # Read before the target was connected (uvloop may deliver reads although
        # pause_reading() was called in connection_made): None once replayed.
        self.early: list[bytes] | None = [] if target is not None else None
        self.eof = False

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        transport.set_write_buffer_limits(high=HIGH, low=HIGH // 4)
        if self.target is not None:
            transport.pause_reading()
            asyncio.get_running_loop().create_task(self.connect(self.target))

    async def connect(self, target: tuple[str, int]) -> None:
        dst = Side()
        dst.peer, self.peer = self, dst
        try:
            await asyncio.get_running_loop().create_connection(lambda: dst, *target)
        except OSError:
            self.t.abort()
            return
        for b in self.early or ():
            dst.t.write(b)
        self.early = None
        self.t.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        if self.early is not None:
            self.early.append(bytes(self.buf[:nbytes]))
            self.t.pause_reading()
            return
        assert self.peer is not None
        pt = self.peer.t
        pt.write(self.buf[:nbytes])
        if pt.get_write_buffer_size():  # the peer may still reference our buffer
            del self.buf
            self.raw = next_buffer(self.retired, self.raw, READ)
            self.buf = memoryview(self.raw)

    def eof_received(self) -> bool:
        self.eof = True
        assert self.peer is not None
        if self.peer.t.can_write_eof():
            self.peer.t.write_eof()
        if self.peer.eof:
            self.t.close()
            self.peer.t.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        pt = self.peer.t if self.peer is not None else None
        if pt is not None and exc is not None:
            pt.abort()
        elif pt is not None:
            pt.close()

    def pause_writing(self) -> None:
        assert self.peer is not None
        self.peer.t.pause_reading()

    def resume_writing(self) -> None:
        assert self.peer is not None
        self.peer.t.resume_reading()


async def serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Side(target), *listen, reuse_address=True)
    await server.serve_forever()


def _addr(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=_addr, required=True)
    ap.add_argument("--target", type=_addr, required=True)
    a = ap.parse_args(argv)
    uvloop.run(serve(a.listen, a.target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
