"""The RAM pump: a main channel's RAM records moved from socket to socket in a thread.

Most of a main channel is RAM records the engine forwards unchanged. On the event-loop
path each read goes through uvloop, the session and the engine, all on the one event-loop
thread. While the engine says that the next bytes are such
records (:meth:`~migproxy.daemon.session.Session.ram_walk`), the executor hands the source
socket's reading and the destination socket's writing to a :class:`RamPump`: the compiled
pump (``_rampump.c``) reads, walks every record with the framer's own walk
(``migproxy/stream/ramwalk.h``) and writes, in a worker thread without the GIL, and hands
back at the first record the framer must decide (the end of a section, a block change),
when the source goes quiet, at the end of its direction, or after a budget of bytes or
time. What it read and did not forward goes back to the engine through the usual path; the
engine accounts for the records forwarded (:meth:`~migproxy.stream.engine.StreamEngine.walked`)
without seeing them. So the bytes, events and decisions are exactly those of the
event-loop path; only who carries them out changes.

Two data paths (:class:`PumpPath`): ``splice`` moves the bytes socket -> pipe -> socket
with splice(2) and gives the walk a tee(2) copy (one copy of each byte instead of two);
``copy`` uses read(2) and write(2). ``off``, no built extension (``MIGPROXY_NO_EXTENSIONS``)
or no room (:class:`RamPumps`, ``ram_pump_threads``): the event-loop path.

Bounds: each pump holds a :data:`BUFFER_SIZE` buffer and, splicing, two pipes of at most
:data:`PIPE_SIZE` bytes; it runs at most :data:`YIELD_SECONDS` or :data:`BUDGET` bytes
before it reports to the event loop, and hands back after :data:`QUIET_SECONDS` without a
byte. The event loop takes it back at once (an eventfd) to close the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from migproxy.daemon.splice import reset_on_close
from migproxy.stream.engine import RamWalk
from migproxy.stream.enginestate import Chunk
from migproxy.stream.extensions import compiled

BUFFER_SIZE = 1 << 20  # bytes a pump reads at once at most (and keeps of a record)
PIPE_SIZE = 1 << 20  # bytes each of a splicing pump's two pipes holds at most
BUDGET = 256 << 20  # bytes a pump forwards before it reports to the event loop
YIELD_SECONDS = 0.2  # seconds a pump runs before it reports to the event loop
QUIET_SECONDS = 0.1  # seconds without a byte after which a pump hands back
DEFAULT_THREADS = 16  # pumps a daemon runs at once
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class PumpPath(enum.StrEnum):
    """How a pump moves the bytes it forwards."""

    SPLICE = "splice"  # splice(2) through a pipe, tee(2) a copy for the walk
    COPY = "copy"  # read(2) and write(2)
    OFF = "off"  # no pump: the event-loop path


class PumpStatus(enum.IntEnum):
    """Why a pump handed back (``_rampump.c``'s PUMP_ codes)."""

    RECORD = 0  # a record the framer decides
    EOF = 1  # the source ended its direction
    WAKE = 2  # the event loop took it back (to close the connection)
    QUIET = 3  # no byte for QUIET_SECONDS
    BUDGET = 4  # BUDGET bytes or YIELD_SECONDS
    READ_ERROR = 5  # the source failed
    WRITE_ERROR = 6  # the destination failed
    FULL = 7  # splicing: the pipe is full of an incomplete record
    PIPE_ERROR = 8  # tee(2) or a pipe failed: copy from now on (nothing was lost)


def _extension() -> Callable[..., tuple[int, int, int, int, int, int, int]] | None:
    if sys.platform != "linux":
        return None
    pump: Callable[..., tuple[int, int, int, int, int, int, int]] | None = compiled(
        "migproxy.daemon._rampump", "pump")
    return pump


_PUMP = _extension()
AVAILABLE = _PUMP is not None


@dataclass(frozen=True, slots=True)
class PumpRun:
    """What one run of a pump did."""

    walk: RamWalk  # what it was allowed to walk
    status: PumpStatus
    forwarded: int  # bytes moved to the destination
    pages: int  # PAGE|CONTINUE records among them
    zeros: int  # ZERO|CONTINUE records among them
    skip_left: int  # of walk.skip, not yet come
    # read and not forwarded: the engine's, in order; a view of the pump's buffer, valid
    # until its next run reads (which first writes its prefix, so the prefix may be a
    # slice of this)
    leftover: memoryview
    error: str | None  # READ_ERROR, WRITE_ERROR, PIPE_ERROR: why

    @property
    def lost_position(self) -> bool:
        """Whether the stream's position is lost (a write may have been cut short): the
        connection cannot go on."""
        return self.status in (PumpStatus.WAKE, PumpStatus.READ_ERROR,
                               PumpStatus.WRITE_ERROR)


class RamPump:
    """The pump of one main channel: duplicates of its two sockets (so that the event loop
    may close its transports while a run ends), an eventfd to take it back, a buffer and,
    splicing, two pipes. Runs one at a time (:meth:`run`, in a worker thread)."""

    def __init__(self, source: int, destination: int, path: PumpPath,
                 pipe_size: int = PIPE_SIZE) -> None:
        if path == PumpPath.OFF:
            raise ValueError("no pump on the event-loop path")
        self._fds: list[int] = []
        try:
            self.source = self._own(os.dup(source))
            self.destination = self._own(os.dup(destination))
            self.wake = self._own(os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
            self.pipes: tuple[int, int, int, int] | None = None
            if path == PumpPath.SPLICE:
                a_r, a_w = (self._own(fd) for fd in os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK))
                b_r, b_w = (self._own(fd) for fd in os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK))
                for fd in (a_w, b_w):
                    with contextlib.suppress(OSError):  # else the default size
                        fcntl.fcntl(fd, _F_SETPIPE_SZ, pipe_size)
                self.pipes = (a_r, a_w, b_r, b_w)
        except OSError:
            self.close(reset=False)
            raise
        self.buffer = bytearray(BUFFER_SIZE)
        self._view = memoryview(self.buffer)
        self.closed = False

    def _own(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    @property
    def path(self) -> PumpPath:
        return PumpPath.COPY if self.pipes is None else PumpPath.SPLICE

    @staticmethod
    def can_walk(walk: RamWalk) -> bool:
        """Whether a pump's buffer holds two records of ``walk``'s pages."""
        return 2 * (walk.page_size + 8) <= BUFFER_SIZE

    def run(self, walk: RamWalk, prefix: Chunk | None = None, *, budget: int | None = None,
            yield_seconds: float | None = None,
            quiet_seconds: float | None = None) -> PumpRun:
        """Write ``prefix`` to the destination (what the engine sent of the last run's
        leftover), then move RAM records until one of :class:`PumpStatus` (blocking: a
        worker thread's). The limits default to :data:`BUDGET`, :data:`YIELD_SECONDS`
        and :data:`QUIET_SECONDS`."""
        assert _PUMP is not None
        status, fwd, pages, zeros, skip_left, leftover, err = _PUMP(
            self.source, self.destination, self.wake, self.buffer, walk.skip, walk.page_size,
            walk.block_len, walk.have_block, BUDGET if budget is None else budget,
            int((YIELD_SECONDS if yield_seconds is None else yield_seconds) * 1000),
            int((QUIET_SECONDS if quiet_seconds is None else quiet_seconds) * 1000),
            self.pipes, prefix)
        st = PumpStatus(status)
        error = None
        if st in (PumpStatus.READ_ERROR, PumpStatus.WRITE_ERROR, PumpStatus.PIPE_ERROR):
            error = f"[Errno {err}] {os.strerror(err)}" if err else "unknown error"
        return PumpRun(walk, st, fwd, pages, zeros, skip_left, self._view[:leftover], error)

    def stop(self) -> None:
        """Take a running pump back at once (it returns WAKE)."""
        with contextlib.suppress(OSError):
            os.eventfd_write(self.wake, 1)

    def stop_splicing(self) -> None:
        """After PIPE_ERROR: the copy path from now on (the pipes may hold junk)."""
        if self.pipes is not None:
            for fd in self.pipes:
                self._fds.remove(fd)
                os.close(fd)
            self.pipes = None

    def close(self, *, reset: bool) -> None:
        """Close the duplicates (``reset``: with SO_LINGER 0, so a connection the event
        loop aborted is reset, not ended with a FIN)."""
        self.closed = True
        if reset:
            for fd in self._fds[:2]:
                reset_on_close(fd)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


class _Worker:
    """A pump's own thread: one run at a time, each handed over with a semaphore and
    reported on the event loop (``call_soon_threadsafe``); cheaper at every section end
    than a thread pool's queue and futures."""

    def __init__(self, pump: RamPump, call_soon_threadsafe: Callable[..., object]) -> None:
        self.pump = pump
        self._call_soon = call_soon_threadsafe
        self._go = threading.Semaphore(0)
        self._job: tuple[RamWalk, Chunk | None, Callable[[PumpRun | BaseException], None]] \
            | None = None
        self._stopped = False
        self.thread = threading.Thread(target=self._serve, name="migproxy-pump", daemon=True)
        self.thread.start()

    def submit(self, walk: RamWalk, prefix: Chunk | None,
               done: Callable[[PumpRun | BaseException], None]) -> None:
        self._job = (walk, prefix, done)
        self._go.release()

    def stop(self) -> None:
        """End the thread once it waits for a run (a run in progress ends first)."""
        self._stopped = True
        self._go.release()

    def _serve(self) -> None:
        while True:
            self._go.acquire()
            job, self._job = self._job, None
            if self._stopped or job is None:
                return
            walk, prefix, done = job
            result: PumpRun | BaseException
            try:
                result = self.pump.run(walk, prefix)
            except Exception as e:  # a bug: reported, the pair closes
                result = e
            try:
                self._call_soon(done, result)
            except RuntimeError:  # the event loop is closed: nobody to report to
                return


class RamPumps:
    """The pumps of a daemon: at most ``threads`` of them hold a worker thread of their
    own at once (a channel that finds none free stays on the event-loop path meanwhile);
    a pump keeps its thread until it is closed."""

    def __init__(self, path: PumpPath, threads: int = DEFAULT_THREADS) -> None:
        self.path = path if AVAILABLE and threads > 0 else PumpPath.OFF
        self.threads = threads
        self.running = 0
        self.runs = 0  # runs started
        self._workers: dict[RamPump, _Worker] = {}

    def has_room(self, pump: RamPump | None = None) -> bool:
        """Whether ``pump`` (or a new one) may run now."""
        if self.path == PumpPath.OFF:
            return False
        if pump is not None and pump in self._workers:
            return True
        return len(self._workers) < self.threads

    def start(self, pump: RamPump, walk: RamWalk, prefix: Chunk | None,
              done: Callable[[PumpRun | BaseException], None]) -> None:
        """Run ``pump`` (``prefix`` first) in its worker thread; ``done`` gets its run (or
        what it raised) on the event loop."""
        worker = self._workers.get(pump)
        if worker is None:
            worker = self._workers[pump] = _Worker(
                pump, asyncio.get_event_loop().call_soon_threadsafe)
        self.running += 1
        self.runs += 1

        def finished(result: PumpRun | BaseException) -> None:
            self.running -= 1
            done(result)

        worker.submit(walk, prefix, finished)

    def close(self, pump: RamPump, *, reset: bool) -> None:
        """Close a pump that is not running (see :meth:`RamPump.close`) and end its
        worker thread."""
        pump.close(reset=reset)
        worker = self._workers.pop(pump, None)
        if worker is not None:
            worker.stop()

    def shutdown(self) -> None:
        """Stop every worker thread (each ends once its run, if any, ends)."""
        for worker in self._workers.values():
            worker.stop()
        self._workers.clear()
