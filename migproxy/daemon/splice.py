"""The kernel relay: channels migproxy does not parse, moved by splice(2) in threads.

A connection whose bytes need no parsing any more (a multifd channel, the postcopy
preempt channel, an unterminated TLS channel, a main channel once the engine relays the
rest untouched) is handed from the event loop to a :class:`KernelRelay`: one thread that
owns both sockets and moves each direction socket -> pipe -> socket with ``splice(2)``,
so the bytes never enter Python. The thread's loop is compiled (``_kernelrelay.c``; the
same steps as :meth:`KernelRelay._relay_python`, the fallback without the extension or with
``MIGPROXY_NO_EXTENSIONS=1``): it takes the GIL once a :data:`PROGRESS_INTERVAL`, not
around every ``splice`` call. Several channels of one migration then use several cores, as
multifd intends.

Exactly what the event-loop path does, the thread does too:

* back-pressure: a direction reads only while its pipe has room, and the pipe drains only
  as fast as the peer takes it (nothing else is buffered);
* half-close: the end of one direction (EOF read, pipe drained) is passed on with
  ``shutdown(SHUT_WR)``; the relay ends when both directions have ended;
* errors: a reset or error on either socket resets both (``SO_LINGER`` 0), so each QEMU
  sees the failure;
* idle timeout: no byte either way for ``idle_timeout`` seconds resets both;
* byte counts: reported to the event loop every :data:`PROGRESS_INTERVAL` seconds and at
  the end.

Bounds: at most ``threads`` relays at once (:class:`KernelRelays`; a channel beyond that
stays on the event-loop path); each holds two pipes of at most :data:`PIPE_SIZE` bytes of
kernel memory. Only Linux has ``splice(2)``; elsewhere :data:`AVAILABLE` is false and every
channel stays on the event-loop path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from migproxy.daemon.session import Side, SpliceEnd
from migproxy.stream.extensions import compiled

AVAILABLE = sys.platform == "linux" and hasattr(os, "splice")
PIPE_SIZE = 1 << 20  # bytes a direction's pipe holds at most (the kernel may give less)
PROGRESS_INTERVAL = 1.0  # seconds between two byte-count reports to the event loop
DEFAULT_THREADS = 16  # kernel relays (threads) a daemon runs at once
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)
_LINGER_RESET = struct.pack("ii", 1, 0)
T = TypeVar("T")
# _kernelrelay.c's statuses
_CLOSED, _REPORT, _IDLE, _STOPPED, _FAILED = range(5)
# a direction for it: (src, dst, read_end, write_end, room, fill, eof, stalled, done)
_State = tuple[int, int, int, int, int, int, bool, bool, bool]
_Loop = Callable[..., tuple[int, int, int, int, _State, _State, int, int]]


def _compiled_loop() -> _Loop | None:
    if not AVAILABLE:
        return None
    loop: _Loop | None = compiled("migproxy.daemon._kernelrelay", "relay")
    return loop


COMPILED = _compiled_loop()  # None: the Python loop


@dataclass(frozen=True, slots=True)
class RelayEnd:
    """How a kernel relay ended, and the bytes it moved since its last progress report."""

    how: SpliceEnd
    side: Side | None  # for SpliceEnd.ERROR: the connection that failed
    error: str | None
    to_destination: int
    to_source: int


def _on_socket(fd: int, op: Callable[[socket.socket], T]) -> T:
    """Run ``op`` on a socket object for ``fd`` (a duplicate, closed again at once)."""
    s = socket.socket(fileno=os.dup(fd))
    try:
        return op(s)
    finally:
        s.close()


def reset_on_close(fd: int) -> None:
    """Make the close of socket ``fd`` (its last descriptor) reset the connection
    (``SO_LINGER`` 0); nothing if it cannot be set."""
    with contextlib.suppress(OSError):
        _on_socket(fd, lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                              _LINGER_RESET))


class _Direction:
    """One direction: ``src`` -> pipe -> ``dst``."""

    __slots__ = ("done", "dst", "dst_side", "eof", "fill", "moved", "read_end", "reported",
                 "room", "src", "src_side", "stalled", "write_end")

    def __init__(self, src: int, dst: int, src_side: Side, dst_side: Side) -> None:
        self.src, self.dst = src, dst
        self.src_side, self.dst_side = src_side, dst_side
        self.read_end, self.write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        # Over /proc/sys/fs/pipe-max-size or the user's pipe quota: the default size.
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.write_end, _F_SETPIPE_SZ, PIPE_SIZE)
        self.room = min(PIPE_SIZE, fcntl.fcntl(self.write_end, _F_GETPIPE_SZ))
        self.fill = 0  # bytes in the pipe
        self.eof = False  # src sent its last byte
        # A read found no room although ``fill`` < ``room``: a pipe holds buffers, not
        # bytes, and socket data may fill its buffers partly. Wait for the pipe to drain.
        self.stalled = False
        self.done = False  # ... and it reached dst, and dst was shut for writing
        self.moved = 0  # bytes written to dst
        self.reported = 0

    def close(self) -> None:
        os.close(self.read_end)
        os.close(self.write_end)

    def state(self) -> _State:
        """What the compiled loop takes (and gives back)."""
        return (self.src, self.dst, self.read_end, self.write_end, self.room, self.fill,
                self.eof, self.stalled, self.done)

    def set_state(self, state: _State, moved: int) -> None:
        self.fill, self.eof, self.stalled, self.done = state[5:]
        self.moved += moved


class _Failed(Exception):
    def __init__(self, side: Side, error: OSError) -> None:
        super().__init__(side)
        self.side = side
        self.error = error


class KernelRelay:
    """Both sockets of one connection, relayed by one thread until both directions end.

    ``source`` and ``destination`` are file descriptors the relay owns once :meth:`start`
    returned (it closes them); if creating or starting it raises (``OSError``: no pipe;
    ``RuntimeError``: no thread), the caller still owns them and nothing is left open.
    ``on_progress(to_destination, to_source)`` and ``on_end(RelayEnd)`` are called in the
    event loop's thread through ``call_soon_threadsafe``."""

    def __init__(self, source: int, destination: int, *, idle_timeout: float,
                 call_soon_threadsafe: Callable[..., object],
                 on_progress: Callable[[int, int], None],
                 on_end: Callable[[RelayEnd], None]) -> None:
        self._fds = (source, destination)
        self._idle = idle_timeout
        self._call = call_soon_threadsafe
        self._on_progress = on_progress
        self._on_end = on_end
        self._stop_abort: bool | None = None
        self._ended = False  # set in the loop's thread once on_end ran
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        dirs: list[_Direction] = []
        try:
            dirs.append(_Direction(source, destination, Side.SOURCE, Side.DESTINATION))
            dirs.append(_Direction(destination, source, Side.DESTINATION, Side.SOURCE))
        except OSError:
            for d in dirs:
                d.close()
            self._close_wake()
            raise
        self._dirs = (dirs[0], dirs[1])
        self._thread = threading.Thread(target=self._run, name="migproxy-splice", daemon=True)

    def start(self) -> None:
        try:
            self._thread.start()
        except RuntimeError:  # no thread: give the pipes back; the caller keeps the sockets
            for d in self._dirs:
                d.close()
            self._close_wake()
            raise

    def _close_wake(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)

    def stop(self) -> None:
        """Reset both connections and end (from the event loop's thread; idempotent)."""
        if self._ended or self._stop_abort is not None:
            return
        self._stop_abort = True
        with contextlib.suppress(OSError):  # full: the thread is waking anyway
            os.write(self._wake_w, b"x")

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        end: RelayEnd
        try:
            how, side, error = self._relay()
        except _Failed as f:
            how, side, error = (SpliceEnd.ERROR, f.side,
                                os.strerror(f.error.errno or 0) or str(f.error))
        except Exception as e:  # pragma: no cover - a bug: end the relay, say why
            how, side, error = SpliceEnd.ERROR, None, f"{type(e).__name__}: {e}"
        abort = how is not SpliceEnd.CLOSED
        for fd in self._fds:
            if abort:
                reset_on_close(fd)
            os.close(fd)
        for d in self._dirs:
            d.close()
        a, b = self._dirs
        end = RelayEnd(how, side, error, a.moved - a.reported, b.moved - b.reported)
        try:
            self._call(self._ended_in_loop, end)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            self._close_wake()

    def _ended_in_loop(self, end: RelayEnd) -> None:
        self._ended = True
        self._close_wake()
        self._on_end(end)

    def _relay(self) -> tuple[SpliceEnd, Side | None, str | None]:
        if COMPILED is None:
            return self._relay_python()
        a, b = self._dirs
        src, dst = self._fds
        idle_ms = max(1, int(self._idle * 1000)) if self._idle > 0 else 0
        report_ms = max(1, int(PROGRESS_INTERVAL * 1000))
        elapsed = 0
        while True:
            status, fd, err, elapsed, sa, sb, ma, mb = COMPILED(
                src, dst, self._wake_r, a.state(), b.state(), idle_ms, elapsed, report_ms)
            a.set_state(sa, ma)
            b.set_state(sb, mb)
            if status == _REPORT:
                self._report()
            elif status == _CLOSED:
                return SpliceEnd.CLOSED, None, None
            elif status == _IDLE:
                return SpliceEnd.IDLE, None, None
            elif status == _STOPPED:
                return SpliceEnd.STOPPED, None, None
            elif status == _FAILED and fd in (src, dst):
                side = Side.SOURCE if fd == src else Side.DESTINATION
                raise _Failed(side, OSError(err, os.strerror(err)))
            else:  # poll(2) failed, or a status it does not have: no side to blame
                raise OSError(err, f"the relay loop ended with status {status}: "
                                   f"{os.strerror(err)}")

    def _relay_python(self) -> tuple[SpliceEnd, Side | None, str | None]:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        polled: set[int] = set()
        last_activity = time.monotonic()
        next_report = last_activity + PROGRESS_INTERVAL
        while True:
            if any(self._pump(d) for d in self._dirs):
                last_activity = time.monotonic()
            if all(d.done for d in self._dirs):
                return SpliceEnd.CLOSED, None, None
            now = time.monotonic()
            if now >= next_report:
                self._report()
                next_report = now + PROGRESS_INTERVAL
            wait = next_report - now
            if self._idle > 0:
                idle_left = last_activity + self._idle - now
                if idle_left <= 0:
                    return SpliceEnd.IDLE, None, None
                wait = min(wait, idle_left)
            masks = self._poll_for(poller, polled)
            ready = poller.poll(max(1, int(wait * 1000) + 1))
            if self._stop_abort is not None:
                return SpliceEnd.STOPPED, None, None
            for fd, ev in ready:
                if ev & (select.POLLERR | select.POLLNVAL) and fd in masks:
                    self._raise_socket_error(fd)

    def _poll_for(self, poller: select.poll, polled: set[int]) -> dict[int, int]:
        """Register each socket for what its directions wait for; the masks."""
        src, dst = self._fds
        masks = {src: 0, dst: 0}
        for d in self._dirs:
            if not d.eof and d.fill < d.room and not d.stalled:
                masks[d.src] |= select.POLLIN
            if d.fill:
                masks[d.dst] |= select.POLLOUT
        for fd, mask in masks.items():
            # A socket with nothing to do is left out: once it is shut both ways it would
            # report POLLHUP at every poll. Its errors show at its next use.
            if mask:
                poller.register(fd, mask)
                polled.add(fd)
            elif fd in polled:
                poller.unregister(fd)
                polled.discard(fd)
        return masks

    def _raise_socket_error(self, fd: int) -> None:
        code = _on_socket(fd, lambda s: s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        side = Side.SOURCE if fd == self._fds[0] else Side.DESTINATION
        raise _Failed(side, OSError(code or errno.ECONNRESET, os.strerror(code or
                                                                          errno.ECONNRESET)))

    def _pump(self, d: _Direction) -> bool:
        """Move what can move now without blocking; True if a byte moved or ended."""
        progress = False
        while not d.done:
            moved = False
            if d.fill:
                try:
                    n = os.splice(d.read_end, d.dst, d.fill, flags=_FLAGS)
                except OSError as e:
                    if e.errno not in _AGAIN:
                        raise _Failed(d.dst_side, e) from None
                else:
                    d.fill -= n
                    d.moved += n
                    moved = n > 0
                    d.stalled = False
            if not d.eof and d.fill < d.room:
                try:
                    n = os.splice(d.src, d.write_end, d.room - d.fill, flags=_FLAGS)
                except OSError as e:
                    if e.errno not in _AGAIN:
                        raise _Failed(d.src_side, e) from None
                    d.stalled = d.fill > 0  # or nothing to read: either way the drain helps
                else:
                    if n == 0:
                        d.eof = True
                    d.fill += n
                    moved = True
            if d.eof and not d.fill:
                try:
                    _on_socket(d.dst, lambda s: s.shutdown(socket.SHUT_WR))
                except OSError as e:
                    if e.errno != errno.ENOTCONN:
                        raise _Failed(d.dst_side, e) from None
                d.done = True
                moved = True
            if not moved:
                break
            progress = True
        return progress

    def _report(self) -> None:
        a, b = self._dirs
        da, db = a.moved - a.reported, b.moved - b.reported
        if da or db:
            a.reported, b.reported = a.moved, b.moved
            # RuntimeError: the loop is closing; nobody needs the count any more.
            with contextlib.suppress(RuntimeError):
                self._call(self._on_progress, da, db)


class KernelRelays:
    """The kernel relays of a daemon, at most ``threads`` at once (0: none)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads if AVAILABLE else 0
        self.running: set[KernelRelay] = set()

    def has_room(self) -> bool:
        return len(self.running) < self.threads

    def start(self, source: int, destination: int, *, idle_timeout: float,
              call_soon_threadsafe: Callable[..., object],
              on_progress: Callable[[int, int], None],
              on_end: Callable[[RelayEnd], None]) -> KernelRelay:
        """Start relaying ``source`` <-> ``destination`` (descriptors it owns once this
        returns; on ``OSError`` or ``RuntimeError`` the caller still owns them)."""
        def ended(end: RelayEnd) -> None:
            self.running.discard(relay)
            on_end(end)

        relay = KernelRelay(source, destination, idle_timeout=idle_timeout,
                            call_soon_threadsafe=call_soon_threadsafe,
                            on_progress=on_progress, on_end=ended)
        relay.start()
        self.running.add(relay)
        return relay
