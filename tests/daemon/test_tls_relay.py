"""TLS termination over loopback, on uvloop as the daemon runs: a TLS source (Python's ssl
with a client certificate) talks to the daemon, which rewrites the plaintext and talks TLS
to a destination stand-in that records what it received and whether the stream ended with
close_notify. Certificates are made by the test (``openssl``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
import uvloop

from migproxy.daemon.server import Daemon
from migproxy.stream import wire
from testkit.pki import client_context, server_context
from tests.daemon.conftest import Pki
from tests.daemon.loopback import (
    REWRITTEN,
    STREAM,
    listen_port,
    reader_closed,
    sample,
    start_daemon,
    stop_daemon,
    wait_pairs_closed,
)

# The daemon runs on uvloop, and on asyncio's loop where uvloop is missing: every test runs
# on both (a uvloop-only difference once slipped through). pytest-asyncio's newer per-item
# loop factory hook would apply to every test of the suite, so this module keeps the
# (deprecated) policy fixture.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Overriding the \"event_loop_policy\" fixture is deprecated")


@pytest.fixture(params=["uvloop", "asyncio"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    if request.param == "uvloop":
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


@dataclass
class TlsConn:
    """One connection the TLS destination accepted."""

    reply: bytes = b""
    reply_at_end: bytes = b""  # sent after a bare close from migproxy, then close_notify
    data: bytearray = field(default_factory=bytearray)
    close_notify: bool = False  # the stream ended with TLS close_notify
    done: threading.Event = field(default_factory=threading.Event)
    peer_cn: str | None = None


class TlsTarget:
    """A TLS destination stand-in (verify-peer on), served by threads with blocking ssl
    sockets, so that it tells a close_notify from a bare TCP close on any event loop
    (asyncio's TLS transport reports both as EOF)."""

    def __init__(self, creds: Path, reply: bytes = b"", reply_at_end: bytes = b"") -> None:
        self.creds = creds
        self.reply = reply
        self.reply_at_end = reply_at_end
        self.conns: list[TlsConn] = []
        self.server: socket.socket | None = None

    async def start(self) -> int:
        self.server = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()
        return int(self.server.getsockname()[1])

    def _accept(self, server: socket.socket) -> None:
        ctx = server_context(self.creds)
        while True:
            try:
                raw, _ = server.accept()
            except OSError:
                return  # closed
            c = TlsConn(self.reply, self.reply_at_end)
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(ctx, raw, c), daemon=True).start()

    @staticmethod
    def _serve(ctx: ssl.SSLContext, raw: socket.socket, c: TlsConn) -> None:
        """TLS over memory BIOs: the TCP end is seen as it comes (a blocking ssl socket's
        OpenSSL answers a bare close with an alert)."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_side=True)

        def flush() -> None:
            if outgoing.pending:
                raw.sendall(outgoing.read())

        try:
            while True:  # the handshake
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    flush()
                    got = raw.recv(1 << 16)
                    if not got:
                        return
                    incoming.write(got)
            flush()
            subject = cast(Any, (tls.getpeercert() or {}).get("subject", ()))
            c.peer_cn = dict(x[0] for x in subject).get("commonName")
            if c.reply:
                tls.write(c.reply)
                flush()
            while True:
                while True:  # what the BIO holds (it may have come with the handshake)
                    try:
                        chunk = tls.read(1 << 16)
                    except ssl.SSLWantReadError:
                        break
                    if not chunk:
                        c.close_notify = True
                        with contextlib.suppress(ssl.SSLWantReadError):
                            tls.unwrap()  # close_notify back
                        flush()
                        return
                    c.data += chunk
                flush()
                got = raw.recv(1 << 16)
                if not got:  # TCP closed without close_notify
                    if c.reply_at_end:  # the other direction is still open
                        tls.write(c.reply_at_end)
                        with contextlib.suppress(ssl.SSLWantReadError):
                            tls.unwrap()
                        flush()
                        raw.shutdown(socket.SHUT_WR)
                        while raw.recv(1 << 16):
                            pass
                    return
                incoming.write(got)
        except (OSError, ssl.SSLError):
            pass
        finally:
            raw.close()
            c.done.set()

    async def conn(self, i: int = 0, timeout: float = 10) -> TlsConn:
        async def wait() -> TlsConn:
            while len(self.conns) <= i or not self.conns[i].done.is_set():
                await asyncio.sleep(0.01)
            return self.conns[i]
        return await asyncio.wait_for(wait(), timeout)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest_asyncio.fixture
async def tls_target(pki: Pki) -> AsyncIterator[TlsTarget]:
    t = TlsTarget(pki.creds)
    yield t
    t.close()


def send_tls(port: int, data: bytes, ctx: ssl.SSLContext, *, clean: bool = True,
             read_reply: int = 0) -> bytes:
    """A source: TLS to the daemon, ``data``, then close_notify (``clean``) or a bare TCP
    FIN (how QEMU 10.0 ends a main channel); returns ``read_reply`` bytes read back."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(data)
        reply = b""
        while len(reply) < read_reply:
            chunk = s.recv(read_reply - len(reply))
            if not chunk:
                break
            reply += chunk
        if clean:
            s.unwrap()  # close_notify, then the daemon's
        else:
            s.shutdown(socket.SHUT_WR)  # TCP FIN, no close_notify; s is plain TCP now
            try:
                while s.recv(65536):  # until the daemon closes (unread bytes would reset)
                    pass
            except OSError:
                pass
        return reply


async def tls_daemon(target_port: int, source: Path | None, destination: Path | None,
                     **kw: object) -> Daemon:
    return await start_daemon(target_port, tls_source_creds=str(source) if source else None,
                              tls_destination_creds=str(destination) if destination else None,
                              tls_hostname="localhost" if destination else None, **kw)


@pytest.mark.asyncio
@pytest.mark.parametrize("clean", [True, False], ids=["close_notify", "bare_fin"])
async def test_both_legs_rewritten_and_close_notify_passed_on(
        pki: Pki, tls_target: TlsTarget, clean: bool) -> None:
    d = await tls_daemon(await tls_target.start(), pki.creds, pki.creds)
    try:
        await asyncio.to_thread(send_tls, listen_port(d), STREAM, client_context(pki.creds),
                                clean=clean)
        conn = await tls_target.conn()
        assert bytes(conn.data) == REWRITTEN
        assert REWRITTEN != STREAM
        # The end is passed on as it came: close_notify, or a bare TCP close (QEMU 10.0
        # ends its main channel so; a destination that does not read the close_notify
        # would reset the connection when it closes).
        assert conn.close_notify == clean
        assert conn.peer_cn == "localhost client"  # migproxy's client certificate
        await wait_pairs_closed(d)
        assert sample(d, "migproxy_migrations_total", outcome="completed") == 1
        assert sample(d, "migproxy_connections_classified_total", channel="main") == 1
    finally:
        await stop_daemon(d)


@pytest.mark.asyncio
async def test_the_return_path_crosses_both_tls_legs(pki: Pki) -> None:
    reply = b"\x00\x01\x00\x04\x00\x00\x00\x00"  # a return-path message, as the source reads it
    target = TlsTarget(pki.creds, reply=reply)
    d = await tls_daemon(await target.start(), pki.creds, pki.creds)
    try:
        got = await asyncio.to_thread(send_tls, listen_port(d), STREAM,
                                      client_context(pki.creds), read_reply=len(reply))
        assert got == reply
        conn = await target.conn()
        assert bytes(conn.data) == REWRITTEN
        await wait_pairs_closed(d)
        to_source = sum(sample(d, "migproxy_bytes_total", direction="to_source", channel=ch)
                        for ch in ("main", "other"))  # "other": before it was classified
        assert to_source == len(reply)
    finally:
        target.close()
        await stop_daemon(d)


@pytest.mark.asyncio
async def test_channels_reach_the_destination_in_the_sources_order(
        pki: Pki, tls_target: TlsTarget) -> None:
    """The destination cannot peek through TLS: it takes the first connection as the main
    channel. The source opens main, then multifd channels; their first bytes may arrive in
    any order (here: the last channel's first)."""
    d = await tls_daemon(await tls_target.start(), pki.creds, pki.creds)
    ctx = client_context(pki.creds)
    port = listen_port(d)
    multifd = wire.MULTIFD_MAGIC_BYTES + b"\x00\x00\x00\x01" + b"x" * 60

    def source() -> None:
        socks = []
        try:
            for _ in range(3):  # main first, like QEMU (each handshake done before the next)
                s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20),
                                    server_hostname="localhost")
                socks.append(s)
            for i in (2, 1):
                socks[i].sendall(multifd + bytes([i]))
                socks[i].unwrap()
            socks[0].sendall(STREAM)
            socks[0].unwrap()
        finally:
            for s in socks:
                s.close()

    try:
        await asyncio.to_thread(source)
        conns = [await tls_target.conn(i) for i in range(3)]
        assert bytes(conns[0].data) == REWRITTEN
        assert [bytes(c.data[-1:]) for c in conns[1:]] == [b"\x01", b"\x02"]
        assert all(c.close_notify for c in conns)
        await wait_pairs_closed(d)
        assert sample(d, "migproxy_connections_classified_total", channel="multifd") == 2
    finally:
        await stop_daemon(d)


@pytest.mark.asyncio
@pytest.mark.parametrize("client", ["rogue", "none"])
async def test_a_wrong_client_certificate_is_refused(pki: Pki, tls_target: TlsTarget,
                                                     client: str) -> None:
    d = await tls_daemon(await tls_target.start(), pki.creds, pki.creds)
    if client == "rogue":
        ctx = client_context(pki.rogue)
        ctx.load_verify_locations(str(pki.creds / "ca-cert.pem"))  # trusts the daemon
    else:
        ctx = ssl.create_default_context(cafile=str(pki.creds / "ca-cert.pem"))
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.to_thread(send_tls, listen_port(d), STREAM, ctx)
        await asyncio.wait_for(_counted(d, "tls_handshake"), 10)
        assert tls_target.conns == []  # nothing was opened towards the destination
        assert not d.registry.pairs
        assert sample(d, "migproxy_connections_classified_total", channel="main") == 0
    finally:
        await stop_daemon(d)


async def _counted(d: Daemon, reason: str, n: int = 1) -> None:
    while sample(d, "migproxy_connections_refused_total", reason=reason) != n:
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_a_silent_connection_is_closed_after_the_handshake_timeout(
        pki: Pki, tls_target: TlsTarget) -> None:
    d = await tls_daemon(await tls_target.start(), pki.creds, pki.creds,
                         tls_handshake_timeout=0.2)
    try:
        r, w = await asyncio.open_connection("127.0.0.1", listen_port(d))
        assert await asyncio.wait_for(r.read(), 10) == b""  # closed by the daemon
        w.close()
        await asyncio.wait_for(_counted(d, "tls_handshake"), 10)
        assert tls_target.conns == []
    finally:
        await stop_daemon(d)


@pytest.mark.asyncio
async def test_plaintext_source_tls_destination(pki: Pki, tls_target: TlsTarget) -> None:
    d = await tls_daemon(await tls_target.start(), None, pki.creds)
    try:
        _r, w = await asyncio.open_connection("127.0.0.1", listen_port(d))
        w.write(STREAM)
        w.write_eof()
        conn = await tls_target.conn()
        # A plaintext FIN on a main channel becomes a bare TCP close, as QEMU ends one.
        assert bytes(conn.data) == REWRITTEN
        assert not conn.close_notify
        w.close()
    finally:
        await stop_daemon(d)


@pytest.mark.asyncio
async def test_a_tls_leg_half_closes(pki: Pki) -> None:
    """The end of a plaintext main channel reaches the TLS destination as a bare FIN; the
    destination's direction goes on: what it sends after that reaches the source, then its
    close_notify ends the pair."""
    reply = b"\x00\x01\x00\x04\x00\x00\x00\x00"
    target = TlsTarget(pki.creds, reply_at_end=reply)
    d = await tls_daemon(await target.start(), None, pki.creds)
    try:
        r, w = await asyncio.open_connection("127.0.0.1", listen_port(d))
        w.write(STREAM)
        w.write_eof()
        assert await asyncio.wait_for(r.read(), 10) == reply  # then the daemon's FIN
        conn = await target.conn()
        assert bytes(conn.data) == REWRITTEN
        assert not conn.close_notify
        w.close()
        await wait_pairs_closed(d)
        assert sample(d, "migproxy_migrations_total", outcome="completed") == 1
    finally:
        target.close()
        await stop_daemon(d)


@pytest.mark.asyncio
async def test_a_destination_with_another_name_is_not_connected(
        pki: Pki, tls_target: TlsTarget) -> None:
    port = await tls_target.start()
    d = await start_daemon(port, tls_destination_creds=str(pki.creds),
                           tls_hostname="other.example")
    try:
        r, w = await asyncio.open_connection("127.0.0.1", listen_port(d))
        w.write(STREAM)
        assert await reader_closed(r)  # aborted: the source sees the failure
        w.close()
        await wait_pairs_closed(d)
        assert sample(d, "migproxy_connect_errors_total") == 1
        assert sample(d, "migproxy_migrations_total", outcome="completed") == 0
    finally:
        await stop_daemon(d)


@pytest.mark.asyncio
async def test_tls_on_a_route_without_termination_is_relayed_untouched_and_counted(
        pki: Pki, tls_target: TlsTarget) -> None:
    """The source's TLS session goes through the daemon to the destination as it is."""
    d = await start_daemon(await tls_target.start())
    try:
        await asyncio.to_thread(send_tls, listen_port(d), STREAM, client_context(pki.creds))
        conn = await tls_target.conn()
        assert bytes(conn.data) == STREAM  # decrypted by the destination: not rewritten
        await wait_pairs_closed(d)
        assert sample(d, "migproxy_untouched_total", reason="tls_not_terminated") == 1
        assert sample(d, "migproxy_connections_classified_total", channel="tls") == 1
        assert sample(d, "migproxy_cpu_sections_rewritten_total", mode="applied") == 0
    finally:
        await stop_daemon(d)


@pytest.mark.asyncio
async def test_accept_order_holds_when_the_main_handshake_ends_last(
        pki: Pki, tls_target: TlsTarget) -> None:
    """QEMU's main channel may end its handshake after the multifd channels it opened
    later end theirs: the order of the TCP connections is the one that counts."""
    d = await tls_daemon(await tls_target.start(), pki.creds, pki.creds)
    ctx = client_context(pki.creds)
    port = listen_port(d)
    multifd = wire.MULTIFD_MAGIC_BYTES + b"\x00\x00\x00\x01" + b"m" * 60

    def source() -> None:
        main_raw = socket.create_connection(("127.0.0.1", port), timeout=20)  # no hello yet
        try:
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20),
                                 server_hostname="localhost") as mfd:
                mfd.sendall(multifd)
                mfd.unwrap()
            with ctx.wrap_socket(main_raw, server_hostname="localhost") as main:
                main.sendall(STREAM)
                main.unwrap()
        finally:
            main_raw.close()

    try:
        await asyncio.to_thread(source)
        first, second = await tls_target.conn(0), await tls_target.conn(1)
        assert bytes(first.data) == REWRITTEN
        assert bytes(second.data) == multifd
        await wait_pairs_closed(d)
    finally:
        await stop_daemon(d)


@pytest.mark.asyncio
async def test_an_address_past_its_failed_handshakes_is_refused_before_another(
        pki: Pki, tls_target: TlsTarget) -> None:
    """A ClientHello flood costs a handshake each: past its budget of failed handshakes an
    address is refused at once, counted apart; a good source from another address goes on."""
    d = await tls_daemon(await tls_target.start(), pki.creds, pki.creds,
                         tls_failed_handshakes=2)
    port = listen_port(d)
    try:
        for _ in range(2):  # not TLS: each a failed handshake
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET / HTTP/1.0\r\n\r\n")
            with contextlib.suppress(ConnectionError):
                assert await asyncio.wait_for(r.read(), 10) == b""
            w.close()
        await asyncio.wait_for(_counted(d, "tls_handshake", 2), 10)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(r.read(), 10) == b""  # closed before a byte
        w.close()
        await asyncio.wait_for(_counted(d, "tls_handshake_budget"), 10)
        assert sample(d, "migproxy_connections_refused_total", reason="tls_handshake") == 2
        # Another address (127.0.0.2 is loopback too) has its own budget.
        def source() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=20,
                                          source_address=("127.0.0.2", 0)) as raw, \
                    client_context(pki.creds).wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(STREAM)
                s.unwrap()
        await asyncio.to_thread(source)
        assert bytes((await tls_target.conn()).data) == REWRITTEN
    finally:
        await stop_daemon(d)
