"""One TCP connection of a pair, as an asyncio ``BufferedProtocol`` (:class:`SideProtocol`):
what the transport reports goes to its owner (the pair, :class:`SideOwner`), what the pair
writes goes to the transport.

A TLS leg (:meth:`SideProtocol.start_tls`) is the same plain TCP transport with a sans-IO
:class:`~migproxy.daemon.tls_layer.TlsLayer` in between: TCP bytes go into the layer,
plaintext comes out of it into the side's receive buffer, and what the pair writes is
encrypted on the way out. The layer's events reach the owner as they come: the end of the
handshake, a close_notify or a bare TCP close as the end of the peer's direction (which of
the two is kept: :attr:`SideProtocol.bare`), a TLS error as a lost connection.

Reading control: a paused side stops reading TCP. During a TLS handshake TCP is read
whatever the pauses (the handshake must go on); plaintext is only taken out of the layer
while the side is not paused, so what arrives with the end of a handshake, or while
paused, waits in the layer, in order, before the end of the direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios
from typing import Protocol, cast

from migproxy.daemon.buffers import INITIAL_READ_SIZE, READ_SIZE, next_buffer
from migproxy.daemon.session import Side
from migproxy.daemon.tls_layer import (
    BareClose,
    CloseNotify,
    HandshakeDone,
    HandshakeFailed,
    Step,
    TlsFailed,
    TlsLayer,
)
from migproxy.daemon.tls_legs import answers_close_notify

# The largest TCP read of a TLS leg (what uvloop's TLS transport read at once): the
# plaintext buffer grows to READ_SIZE as on a plaintext leg.
CIPHER_READ_SIZE = 256 << 10
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets the connection
_INT = struct.pack("i", 0)  # the argument of FIONREAD
_UNPACK_INT = struct.Struct("i").unpack


class SideOwner(Protocol):
    """What a side tells its pair."""

    admitted: bool

    def accepted(self) -> None:
        """The source's TCP connection was accepted."""

    def data_from(self, side: Side, data: memoryview) -> None:
        """Bytes read (plaintext on a TLS leg); ``data`` is only valid during the call."""

    def ended(self, side: Side) -> None:
        """The peer ended its direction (FIN, close_notify or a bare TCP close)."""

    def lost(self, side: Side, error: str | None) -> None:
        """The connection is gone (``error``: why; None: closed)."""

    def backpressure(self, side: Side, full: bool) -> None:
        """The side's write buffer went over (``full``) or under the high-water mark."""

    def handshake_done(self, side: Side) -> None:
        """A TLS leg's handshake succeeded."""

    def handshake_failed(self, side: Side, reason: str) -> None:
        """A TLS leg's handshake failed (the side closes its connection)."""


class SideProtocol(asyncio.BufferedProtocol):
    """One TCP connection of a pair."""

    def __init__(self, owner: SideOwner, side: Side, high_water: int) -> None:
        self.owner = owner
        self.side = side
        self.high_water = high_water
        self.transport: asyncio.Transport | None = None
        self.read_size = INITIAL_READ_SIZE
        self._buf = bytearray(self.read_size)
        self._mv = memoryview(self._buf)
        self._retired: list[bytearray] = []  # earlier buffers, maybe still being written
        self.closed = False
        self.handed_over = False  # the socket belongs to a kernel relay now
        self.eof = False  # the peer ended its direction (FIN, close_notify, bare close)
        self.tls: TlsLayer | None = None  # a TLS leg: the TLS session over this TCP
        # a TLS leg: what TCP reads, before decryption (grows as the receive buffer does)
        self._cipher = memoryview(b"")
        self.bare = False  # a TLS peer that ended with a bare TCP close, no close_notify
        self.write_ended = False  # this leg's direction towards the peer ended
        self._delivering = False
        self._pause_reasons: set[str] = set()

    # TLS ---------------------------------------------------------------------------------
    def start_tls(self, layer: TlsLayer) -> None:
        """Run a TLS session over this connection (a client sends its ClientHello now)."""
        self.tls = layer
        self._cipher = memoryview(bytearray(INITIAL_READ_SIZE))
        self._take(layer.start())

    def _tls_paused(self) -> bool:
        """Whether TCP reading follows the pauses (not while a handshake runs)."""
        return self.tls is None or self.tls.established or self.tls.failed

    def _take(self, step: Step) -> None:
        """Send what the TLS layer gave to send; pass its events on."""
        t = self.transport
        if step.to_send and t is not None and not t.is_closing() and not self.write_ended \
                and not (self.tls is not None and self.tls.failed and not self.tls.established):
            # (a failed handshake's alert is not sent: the connection is reset, as the
            # peer sees at its next read or write whatever it has read already)
            t.write(step.to_send)
        for e in step.events:
            if isinstance(e, HandshakeDone):
                if self._pause_reasons and t is not None and not self.closed:
                    t.pause_reading()  # paused meanwhile: from now on TCP too
                self.owner.handshake_done(self.side)
            elif isinstance(e, HandshakeFailed):
                self.owner.handshake_failed(self.side, e.reason)
            elif isinstance(e, CloseNotify | BareClose):
                self._ended(bare=isinstance(e, BareClose))
            elif isinstance(e, TlsFailed):
                self.owner.lost(self.side, e.reason)

    def _ended(self, *, bare: bool) -> None:
        if self.eof:
            return
        self.eof = True
        self.bare = bare
        self.owner.ended(self.side)
        if not bare and answers_close_notify():
            self.end_direction(close_notify=True)

    def _deliver(self) -> None:
        """Take the plaintext (then the end) out of the TLS layer while not paused."""
        layer = self.tls
        if layer is None or self._delivering:
            return
        self._delivering = True
        try:
            while (layer.established and not layer.failed and not layer.ended
                   and not self._pause_reasons and not self.closed
                   and self.transport is not None and not self.transport.is_closing()):
                mv = self._mv
                step = layer.read_into(mv)
                n = step.plaintext
                if n:
                    self._got(n)
                if step.events or step.to_send:
                    self._take(step)
                elif n < len(mv):
                    break  # the layer holds no more (it stops early only when full)
        finally:
            self._delivering = False

    # writing -----------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        t = self.transport
        if t is None or self.write_ended:
            return
        if self.tls is None:
            t.write(data)
        else:
            t.write(self.tls.send(data))

    def holds_references(self) -> bool:
        """Whether the transport may still refer to written data (it queues some; a TLS
        leg queues ciphertext, never the caller's bytes)."""
        t = self.transport
        return self.tls is None and t is not None and t.get_write_buffer_size() > 0

    def quiet(self) -> bool:
        """Whether nothing has arrived that this side has not delivered: reading is not
        paused, the kernel queues no byte of the connection (FIONREAD) and a TLS leg's
        layer holds no plaintext. False when that cannot be told."""
        t = self.transport
        if t is None or self.closed or self._pause_reasons or \
                (self.tls is not None and self.tls.buffered):
            return False
        sock = t.get_extra_info("socket")
        if sock is None:
            return False
        try:
            queued = fcntl.ioctl(sock.fileno(), termios.FIONREAD, _INT)
        except (OSError, ValueError):
            return False
        waiting: int = _UNPACK_INT(queued)[0]
        return waiting == 0

    def end_direction(self, *, close_notify: bool) -> None:
        """End this leg's direction towards its peer after what is queued: FIN; on a TLS
        leg close_notify then FIN (``close_notify``), or a bare FIN. The other direction
        goes on (half-close)."""
        t = self.transport
        if t is None or t.is_closing() or self.write_ended:
            return
        self.write_ended = True
        if self.tls is not None:
            if close_notify:
                t.write(self.tls.close())
            else:
                self.tls.closed = True  # nothing more goes out
        if t.can_write_eof():
            t.write_eof()

    def reset(self) -> None:
        """Drop the connection with a TCP reset (a failed handshake: the peer sees the
        refusal at its next read or write, whatever it has read already)."""
        t = self.transport
        if t is None or t.is_closing():
            return
        sock = t.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        t.abort()

    def close(self, *, abort: bool) -> None:
        """Close the connection (a TLS leg whose direction is still open: close_notify
        first, as a TLS transport's close() does)."""
        t = self.transport
        if t is None or t.is_closing():
            return
        if abort:
            t.abort()
            return
        if self.tls is not None and not self.write_ended:
            self.write_ended = True
            t.write(self.tls.close())
        t.close()

    # reading control ------------------------------------------------------------------
    def pause(self, reason: str) -> None:
        # Asked again on every read that should not have come: uvloop starts reading
        # after connection_made returns, so a pause requested inside it is lost, and a
        # connecting session would then take in the whole stream (pause_reading() on a
        # paused transport does nothing).
        if self.transport is not None and not self.closed and self._tls_paused():
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def paused_except(self, reason: str) -> bool:
        """Whether reading is paused for any reason but ``reason``."""
        return bool(self._pause_reasons) and self._pause_reasons != {reason}

    def resume(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and self.transport is not None and not self.closed:
            self.transport.resume_reading()
            if self.tls is not None and self.tls.buffered:
                # What waited in the TLS layer, after the commands being carried out.
                asyncio.get_event_loop().call_soon(self._deliver)

    def fresh_buffer(self) -> None:
        """The peer transport still queues data that may point into the current buffer:
        read into another one. The old one lives as long as the transport needs it; an
        earlier one that no write refers to any more is reused (allocating and zeroing a
        1 MiB buffer per read cost an eighth of the daemon's time under backpressure)."""
        del self._mv  # our own view: the reuse test must see only the transport's
        self._buf = next_buffer(self._retired, self._buf, self.read_size)
        self._mv = memoryview(self._buf)

    def _got(self, nbytes: int) -> None:
        full = nbytes == self.read_size
        self.owner.data_from(self.side, self._mv[:nbytes])
        if full and self.read_size < READ_SIZE:
            # Reads fill the buffer: a bulk transfer. Read into a larger one from now on
            # (the old one stays alive as long as a queued write refers to it).
            self.read_size = min(self.read_size * 4, READ_SIZE)
            self.fresh_buffer()

    # protocol callbacks -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = self.transport = cast(asyncio.Transport, transport)
        hw = self.high_water
        t.set_write_buffer_limits(high=hw, low=hw // 4)
        if self._pause_reasons and self._tls_paused():  # paused before the transport existed
            t.pause_reading()
        if self.side is Side.SOURCE and not self.owner.admitted:
            self.owner.accepted()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._mv if self.tls is None else self._cipher

    def buffer_updated(self, nbytes: int) -> None:
        layer = self.tls
        if layer is None:
            self._got(nbytes)
            return
        self._take(layer.receive(self._cipher[:nbytes]))
        if nbytes == len(self._cipher) and nbytes < CIPHER_READ_SIZE:
            # Reads fill it: a bulk transfer (the layer copied what it took).
            self._cipher = memoryview(bytearray(min(nbytes * 4, CIPHER_READ_SIZE)))
        if self._pause_reasons and layer.established and self.transport is not None:
            self.transport.pause_reading()  # (asked again: see pause())
        self._deliver()

    def eof_received(self) -> bool:
        if self.handed_over:
            return True
        if self.tls is None:
            self.eof = True
            self.owner.ended(self.side)
        else:
            # The end of the direction comes out of the layer after the data before it:
            # close_notify, else a bare close; during the handshake, its failure.
            self._take(self.tls.receive_eof())
            self._deliver()
        return True  # keep the other direction open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.handed_over:
            return  # the transport let go of its socket; the kernel relay has a duplicate
        error = None if exc is None else (str(exc) or type(exc).__name__)
        layer = self.tls
        if layer is not None and not layer.established:
            if not layer.failed:
                layer.failed = True
                self.owner.handshake_failed(
                    self.side, error or "the peer closed during the handshake")
            return
        self.owner.lost(self.side, error)

    def pause_writing(self) -> None:
        if not self.handed_over:
            self.owner.backpressure(self.side, True)

    def resume_writing(self) -> None:
        if not self.handed_over:
            self.owner.backpressure(self.side, False)
