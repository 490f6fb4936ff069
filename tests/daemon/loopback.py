"""Loopback helpers for the daemon tests: a target server, a daemon on a free port, and
ways to read its metrics and wait for its pairs."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from migproxy.arm.profile import default_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.daemon.load import load_config
from migproxy.daemon.metrics import Metrics
from migproxy.daemon.server import Daemon
from testkit.streams import run_engine
from testkit.synthetic import SynthSpec, build

STREAM = build(SynthSpec(cpus=2, full_pages=200, zero_pages=2000, multifd_flush=True))
REWRITTEN = run_engine([STREAM], arm_engine_config(default_profile()))[0]


@dataclass
class Conn:
    data: bytearray = field(default_factory=bytearray)
    eof: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.StreamWriter | None = None
    error: BaseException | None = None


class Target:
    """A destination stand-in: records what each connection receives."""

    def __init__(self, reply: bytes = b"", read_delay: float = 0.0,
                 read_size: int = 1 << 20) -> None:
        self.conns: list[Conn] = []
        self.new = asyncio.Event()
        self.reply = reply
        self.read_delay = read_delay
        self.read_size = read_size
        self.server: asyncio.AbstractServer | None = None

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        c = Conn(writer=w)
        self.conns.append(c)
        self.new.set()
        if self.reply:
            w.write(self.reply)
        try:
            while True:
                if self.read_delay:
                    await asyncio.sleep(self.read_delay)
                b = await r.read(self.read_size)
                if not b:
                    break
                c.data += b
        except (ConnectionError, OSError) as e:
            c.error = e
        c.eof.set()

    async def conn(self, i: int = 0, timeout: float = 10) -> Conn:
        async def wait() -> Conn:
            while len(self.conns) <= i:
                self.new.clear()
                await self.new.wait()
            return self.conns[i]
        return await asyncio.wait_for(wait(), timeout)

    def close(self) -> None:
        """Close like a destination QEMU does when it is done: every connection, then the
        listener."""
        for c in self.conns:
            if c.writer is not None and not c.writer.is_closing():
                c.writer.close()
        if self.server:
            self.server.close()


def cli_args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"metrics": ""}
    base.update(kw)
    return argparse.Namespace(**base)


async def start_daemon(target_port: int, **kw: object) -> Daemon:
    cfg = load_config(None, cli_args(listen="127.0.0.1:0", target=f"127.0.0.1:{target_port}", **kw))
    d = Daemon(cfg, Metrics())
    await d.start()
    return d


async def stop_daemon(d: Daemon, target: Target | None = None, timeout: float = 5) -> None:
    if target is not None:
        target.close()
    await d.close_servers()
    await d.drain(timeout)
    await d.close_metrics()


def listen_port(d: Daemon) -> int:
    return d.listen_addresses()[0][1]


def sample(d: Daemon, name: str, **labels: str) -> float:
    v = d.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if v is None else v


async def send_all(port: int, data: bytes, *, chunk: int = 65536,
                    close: bool = True) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for i in range(0, len(data), chunk):
        w.write(data[i : i + chunk])
        await w.drain()
    if close:
        w.write_eof()
    return r, w


async def reader_closed(r: asyncio.StreamReader) -> bool:
    """The daemon closed this connection: an EOF, or a reset (an aborted pair)."""
    try:
        return await asyncio.wait_for(r.read(), 10) == b""
    except ConnectionResetError:
        return True


async def received(target: Target, i: int = 0, timeout: float = 10) -> bytes:
    """Everything the target's connection ``i`` received, once the daemon closed it."""
    c = await target.conn(i)
    await asyncio.wait_for(c.eof.wait(), timeout)
    return bytes(c.data)


async def wait_pairs_closed(d: Daemon, timeout: float = 10) -> None:
    async def wait() -> None:
        while d.registry.pairs:
            d.registry.changed.clear()
            await d.registry.changed.wait()
    await asyncio.wait_for(wait(), timeout)


async def until(cond: Callable[[], object], what: str, timeout: float = 10) -> None:
    """Wait, polling every 5 ms, until ``cond()`` is true; fail naming ``what`` after
    ``timeout`` seconds. For ordering a test by a state of the daemon, never by a sleep."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.005)


async def wait_accepted(d: Daemon, n: int, timeout: float = 10) -> None:
    """Until the daemon has accepted ``n`` connections that are still open (each is a pair
    in its registry, in the order of its accepts)."""
    await until(lambda: len(d.registry.pairs) >= n, f"{n} connections accepted", timeout)
