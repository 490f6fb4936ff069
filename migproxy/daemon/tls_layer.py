"""One TLS session as a sans-IO layer: ``ssl.SSLObject`` over two ``ssl.MemoryBIO``.

No sockets, no event loop: the caller hands in what TCP received (:meth:`TlsLayer.receive`,
:meth:`TlsLayer.receive_eof`), takes out the plaintext (:meth:`TlsLayer.read_into`) and
sends what each step returns (``to_send``: handshake messages, alerts, ciphertext). What
happens to the session is said by events:

* :class:`HandshakeDone`, :class:`HandshakeFailed` (with a one-line reason): the handshake
  ended; a failure also comes from a peer that sends more than ``hello_limit`` bytes
  without completing it (a client's first flight is one ClientHello, at most 16 KiB + 5
  bytes) or that closes before it is done;
* :class:`CloseNotify`: the peer ended its direction with close_notify;
* :class:`BareClose`: the peer ended its direction with a bare TCP close (no close_notify);
* :class:`TlsFailed`: a record that does not decrypt, or any other TLS error after the
  handshake.

The end of a direction comes out of :meth:`TlsLayer.read_into` once the plaintext before it
was read, so a caller that stops reading (a paused side) keeps the order: data, then end.
Sending: :meth:`TlsLayer.send` (ciphertext of some plaintext), :meth:`TlsLayer.close`
(close_notify; nothing is sent after it). A close_notify ends one direction only: the
layer reads on until the peer's end (half-close; TLS 1.3 allows it, and a TLS 1.2 peer
answers it and closes).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import cast

from migproxy.daemon.tls import handshake_error

# Bytes a peer may send before its handshake is complete (a client's first flight is one
# ClientHello, at most 16 KiB + 5 bytes; its second flight its certificate chain).
HELLO_LIMIT = 64 << 10


@dataclass(frozen=True)
class HandshakeDone:
    """The handshake succeeded (the peer's certificate verified)."""


@dataclass(frozen=True)
class HandshakeFailed:
    """The handshake failed: no TLS session (``reason``: why, one line)."""

    reason: str


@dataclass(frozen=True)
class CloseNotify:
    """The peer ended its direction with close_notify."""


@dataclass(frozen=True)
class BareClose:
    """The peer ended its direction with a bare TCP close, without close_notify."""


@dataclass(frozen=True)
class TlsFailed:
    """A TLS error after the handshake (a record that does not decrypt, an alert)."""

    reason: str


TlsEvent = HandshakeDone | HandshakeFailed | CloseNotify | BareClose | TlsFailed


@dataclass
class Step:
    """What one call gave: events, bytes to send to the peer, plaintext bytes read."""

    events: list[TlsEvent] = field(default_factory=list)
    to_send: bytes = b""
    plaintext: int = 0


class TlsLayer:
    """One TLS session, server (``server_side``) or client (``server_hostname``: the name
    the server's certificate must carry)."""

    def __init__(self, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None, hello_limit: int = HELLO_LIMIT) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._in, self._out, server_side=server_side,
                                     server_hostname=server_hostname)
        self.hello_limit = hello_limit
        self.received = 0  # bytes received while the handshake was under way
        self.established = False  # the handshake succeeded
        self.failed = False  # the handshake failed, or TLS failed after it
        self.ended = False  # the peer's direction ended (close_notify or bare close)
        self.closed = False  # close_notify sent: nothing more goes out

    # the handshake ---------------------------------------------------------------------
    def start(self) -> Step:
        """Start the handshake (a client: its ClientHello; a server waits for one)."""
        return self._handshake()

    def _handshake(self) -> Step:
        step = Step()
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            if self.received > self.hello_limit:
                self.failed = True
                step.events.append(HandshakeFailed(
                    f"no TLS handshake in the first {self.hello_limit} bytes"))
            elif self._in.eof:
                self.failed = True
                step.events.append(HandshakeFailed("the peer closed during the handshake"))
        except ssl.SSLEOFError:
            self.failed = True
            step.events.append(HandshakeFailed("the peer closed during the handshake"))
        except (ssl.SSLError, OSError) as e:
            self.failed = True
            step.events.append(HandshakeFailed(handshake_error(e)))
        else:
            self.established = True
            step.events.append(HandshakeDone())
        step.to_send = self._out.read()
        return step

    @property
    def version(self) -> str | None:
        """The negotiated protocol version (``TLSv1.3``), once the handshake is done."""
        return self._ssl.version()

    def peer_certificate(self) -> dict[str, object] | None:
        cert = self._ssl.getpeercert()
        return dict(cert) if cert else None

    # receiving -------------------------------------------------------------------------
    def receive(self, data: bytes | bytearray | memoryview) -> Step:
        """Bytes TCP received. During the handshake: drives it (events, bytes to send);
        after it: kept for :meth:`read_into`."""
        if self.failed or not data:
            return Step()
        self._in.write(data)
        if self.established:
            return Step()
        self.received += len(data)
        return self._handshake()

    def receive_eof(self) -> Step:
        """TCP received the peer's FIN."""
        if self._in.eof:
            return Step()
        self._in.write_eof()
        if self.failed or self.established:
            return Step()  # the end comes out of read_into, after the data before it
        return self._handshake()

    def read_into(self, buf: memoryview) -> Step:
        """Plaintext into ``buf`` (as much as is decrypted and fits), and the end of the
        peer's direction once everything before it was read."""
        step = Step()
        if not self.established or self.failed or self.ended:
            return step
        n = 0
        size = len(buf)
        read = self._ssl.read
        bio = self._in
        try:
            while n < size:
                if not bio.pending and not bio.eof and not self._ssl.pending():
                    break  # nothing to decrypt (spares the SSLWantReadError)
                got = cast(int, read(size - n, buf[n:]))  # (with a buffer: a count)
                if not got:  # ssl reads nothing at a close_notify (SSL_ERROR_ZERO_RETURN)
                    self.ended = True
                    step.events.append(CloseNotify())
                    break
                n += got
        except ssl.SSLWantReadError:
            if self._in.eof and n == 0 and not self._ssl.pending():
                self.ended = True
                step.events.append(BareClose())
        except ssl.SSLZeroReturnError:
            self.ended = True
            step.events.append(CloseNotify())
        except ssl.SSLEOFError:  # a bare close, maybe inside a record (truncated)
            self.ended = True
            step.events.append(BareClose())
        except (ssl.SSLError, OSError) as e:
            self.failed = True
            step.events.append(TlsFailed(handshake_error(e)))
        step.plaintext = n
        out = self._out.read()  # (a key update's answer, an alert)
        step.to_send = b"" if self.closed else out  # nothing after the end of this direction
        return step

    @property
    def buffered(self) -> bool:
        """Whether received bytes wait for :meth:`read_into` (plaintext, or the end)."""
        return self._in.pending > 0 or self._ssl.pending() > 0 or \
            (self._in.eof and not self.ended)

    # sending ---------------------------------------------------------------------------
    def send(self, data: bytes | bytearray | memoryview) -> bytes:
        """The ciphertext of ``data`` (nothing once close_notify was sent)."""
        if self.closed or not self.established or self.failed:
            return b""
        self._ssl.write(data)
        return self._out.read()

    def close(self) -> bytes:
        """close_notify: this direction ends (nothing is sent after it)."""
        if self.closed or not self.established or self.failed:
            self.closed = True
            return b""
        self.closed = True
        try:
            self._ssl.unwrap()
        except ssl.SSLWantReadError:
            pass  # the peer's close_notify is not awaited here
        except (ssl.SSLError, OSError):
            pass
        return self._out.read()
