"""The sans-IO TLS layer: two layers (or a layer and a peer layer made with the test's
contexts) talk to each other in memory; no socket, no event loop, no clock."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field

import pytest

from migproxy.daemon.tls import destination_context, source_context
from migproxy.daemon.tls_layer import (
    HELLO_LIMIT,
    BareClose,
    CloseNotify,
    HandshakeDone,
    HandshakeFailed,
    Step,
    TlsEvent,
    TlsLayer,
)
from testkit.pki import client_context, server_context
from tests.daemon.conftest import Pki


@dataclass
class End:
    """One end of an in-memory connection: its layer, what it read and heard."""

    layer: TlsLayer
    plaintext: bytearray = field(default_factory=bytearray)
    events: list[TlsEvent] = field(default_factory=list)
    outbox: bytearray = field(default_factory=bytearray)  # bytes on the wire towards the peer

    def take(self, step: Step) -> None:
        self.events += step.events
        self.outbox += step.to_send

    def read(self) -> None:
        buf = bytearray(64 << 10)
        while True:
            step = self.layer.read_into(memoryview(buf))
            self.plaintext += buf[:step.plaintext]
            self.take(step)
            if not step.plaintext:
                return


def deliver(frm: End, to: End, piece: int = 0) -> bool:
    """Hand what ``frm`` sent to ``to`` (in pieces of ``piece`` bytes; 0: at once)."""
    data = bytes(frm.outbox)
    frm.outbox.clear()
    for i in range(0, len(data), piece or len(data) or 1):
        to.take(to.layer.receive(data[i:i + (piece or len(data))]))
    if to.layer.established:
        to.read()
    return bool(data)


def exchange(a: End, b: End) -> None:
    while deliver(a, b) | deliver(b, a):
        pass


def connected(pki: Pki) -> tuple[End, End]:
    """migproxy's two legs' contexts: a source (client) to migproxy's server layer."""
    source = End(TlsLayer(client_context(pki.creds), server_side=False,
                          server_hostname="localhost"))
    daemon = End(TlsLayer(source_context(str(pki.creds)), server_side=True))
    source.take(source.layer.start())
    daemon.take(daemon.layer.start())
    exchange(source, daemon)
    return source, daemon


def test_the_handshake_ends_once_on_both_sides(pki: Pki) -> None:
    source, daemon = connected(pki)
    assert source.events == [HandshakeDone()]
    assert daemon.events == [HandshakeDone()]
    assert daemon.layer.version == "TLSv1.3"
    cert = daemon.layer.peer_certificate()
    assert cert is not None
    assert dict(x[0] for x in cert["subject"])["commonName"] == "localhost client"  # type: ignore[index]


def test_the_client_leg_checks_the_destinations_name(pki: Pki) -> None:
    daemon = End(TlsLayer(destination_context(str(pki.creds)), server_side=False,
                          server_hostname="localhost"))
    dest = End(TlsLayer(server_context(pki.creds), server_side=True))
    daemon.take(daemon.layer.start())
    exchange(daemon, dest)
    assert daemon.events == [HandshakeDone()]
    assert dest.events == [HandshakeDone()]

    other = End(TlsLayer(destination_context(str(pki.creds)), server_side=False,
                         server_hostname="other.example"))
    dest = End(TlsLayer(server_context(pki.creds), server_side=True))
    other.take(other.layer.start())
    exchange(other, dest)
    assert other.events == [HandshakeFailed(
        "certificate verify failed: Hostname mismatch, certificate is not valid for "
        "'other.example'.")]


def test_data_both_ways_in_any_pieces(pki: Pki) -> None:
    source, daemon = connected(pki)
    up, down = os.urandom(3 << 20), os.urandom(100_001)
    source.outbox += source.layer.send(up)  # one big write: many records
    daemon.outbox += daemon.layer.send(down)
    deliver(source, daemon, piece=4093)
    deliver(daemon, source, piece=1)
    assert bytes(daemon.plaintext) == up
    assert bytes(source.plaintext) == down
    assert daemon.events == [HandshakeDone()]
    assert source.events == [HandshakeDone()]


def test_a_small_buffer_reads_everything_in_order(pki: Pki) -> None:
    source, daemon = connected(pki)
    data = os.urandom(50_000)
    source.outbox += source.layer.send(data)
    source.outbox += source.layer.close()
    d = bytes(source.outbox)
    daemon.take(daemon.layer.receive(d))
    buf, got = bytearray(1000), bytearray()
    events: list[TlsEvent] = []
    while not events:
        step = daemon.layer.read_into(memoryview(buf))
        got += buf[:step.plaintext]
        events += step.events
        assert step.plaintext <= 1000
    assert bytes(got) == data
    assert events == [CloseNotify()]


def test_close_notify_ends_one_direction_only(pki: Pki) -> None:
    source, daemon = connected(pki)
    source.outbox += source.layer.send(b"stream") + source.layer.close()
    deliver(source, daemon)
    assert daemon.plaintext == b"stream"
    assert daemon.events[-1] == CloseNotify()
    assert source.layer.send(b"more") == b""  # nothing after close_notify
    # TLS 1.3: the other direction goes on, then ends with its own close_notify.
    daemon.outbox += daemon.layer.send(b"return path") + daemon.layer.close()
    deliver(daemon, source)
    assert source.plaintext == b"return path"
    assert source.events[-1] == CloseNotify()
    assert daemon.events.count(CloseNotify()) == 1


def test_a_bare_close_comes_after_the_data_before_it(pki: Pki) -> None:
    source, daemon = connected(pki)
    source.outbox += source.layer.send(b"main channel")
    deliver(source, daemon)
    daemon.take(daemon.layer.receive_eof())
    daemon.read()
    assert daemon.plaintext == b"main channel"
    assert daemon.events == [HandshakeDone(), BareClose()]
    daemon.read()  # the end is said once
    assert daemon.events == [HandshakeDone(), BareClose()]


def test_a_close_inside_a_record_is_a_bare_close(pki: Pki) -> None:
    source, daemon = connected(pki)
    record = source.layer.send(b"x" * 1000)
    daemon.take(daemon.layer.receive(record[:-10]))
    daemon.take(daemon.layer.receive_eof())
    daemon.read()
    assert daemon.plaintext == b""
    assert daemon.events == [HandshakeDone(), BareClose()]


def test_the_end_waits_while_the_reader_does_not_read(pki: Pki) -> None:
    source, daemon = connected(pki)
    source.outbox += source.layer.send(b"a" * 10) + source.layer.close()
    daemon.take(daemon.layer.receive(bytes(source.outbox)))
    daemon.take(daemon.layer.receive_eof())
    assert daemon.layer.buffered
    assert daemon.events == [HandshakeDone()]
    daemon.read()
    assert daemon.plaintext == b"a" * 10
    assert daemon.events[-1] == CloseNotify()
    assert not daemon.layer.buffered


@pytest.mark.parametrize("client", ["rogue", "none"])
def test_a_wrong_client_certificate_fails_the_handshake(pki: Pki, client: str) -> None:
    if client == "rogue":
        ctx = client_context(pki.rogue)
        ctx.load_verify_locations(str(pki.creds / "ca-cert.pem"))  # trusts the daemon
    else:
        ctx = ssl.create_default_context(cafile=str(pki.creds / "ca-cert.pem"))
    source = End(TlsLayer(ctx, server_side=False, server_hostname="localhost"))
    daemon = End(TlsLayer(source_context(str(pki.creds)), server_side=True))
    source.take(source.layer.start())
    exchange(source, daemon)
    assert len(daemon.events) == 1
    assert isinstance(daemon.events[0], HandshakeFailed)
    reason = daemon.events[0].reason
    assert ("certificate verify failed" in reason if client == "rogue"
            else "certificate" in reason), reason
    assert not daemon.layer.established
    assert daemon.layer.failed
    assert daemon.layer.send(b"x") == b""
    assert daemon.layer.receive(b"more") == Step()  # a failed layer takes nothing more


def test_a_peer_that_does_not_speak_tls_fails_the_handshake(pki: Pki) -> None:
    daemon = TlsLayer(source_context(str(pki.creds)), server_side=True)
    step = daemon.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(step.events) == 1
    assert isinstance(step.events[0], HandshakeFailed)
    assert "http request" in step.events[0].reason or "wrong version" in step.events[0].reason


def test_a_close_during_the_handshake_fails_it(pki: Pki) -> None:
    daemon = TlsLayer(source_context(str(pki.creds)), server_side=True)
    assert daemon.receive(b"\x16\x03\x01") == Step()  # the start of a record: waits
    assert daemon.receive_eof().events == [
        HandshakeFailed("the peer closed during the handshake")]


def test_a_hello_longer_than_the_limit_fails_the_handshake(pki: Pki) -> None:
    daemon = TlsLayer(source_context(str(pki.creds)), server_side=True, hello_limit=1000)
    record = b"\x16\x03\x01\x40\x00"  # a handshake record of 16 KiB: OpenSSL waits for all
    assert daemon.receive(record + b"\x01" * (1000 - len(record))) == Step()
    assert daemon.receive(b"\x01").events == [
        HandshakeFailed("no TLS handshake in the first 1000 bytes")]
    assert daemon.failed


def test_a_real_handshake_fits_the_hello_limit(pki: Pki) -> None:
    _, daemon = connected(pki)
    assert 0 < daemon.layer.received < HELLO_LIMIT
