"""The quiet window that confirms the end of the device state (migproxy.daemon.quiet), and
the executor's side of it: whether a source connection has bytes not yet delivered."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from migproxy.daemon.quiet import ADAPTIVE_CAP, PAUSE_FACTOR, QuietWindow
from migproxy.daemon.session import Side
from migproxy.daemon.side import SideProtocol


def test_a_device_state_in_one_read_waits_the_floor() -> None:
    q = QuietWindow(0.001)
    q.held(5.0)
    assert q.seconds() == 0.001
    assert q.held_reads == 1
    assert q.longest_pause == 0.0


def test_pauses_between_held_reads_stretch_the_window() -> None:
    q = QuietWindow(0.001)
    for now in (5.0, 5.0002, 5.0032, 5.0035):  # a 3 ms pause in the burst
        q.held(now)
    assert q.longest_pause == pytest.approx(0.003)
    assert q.seconds() == pytest.approx(PAUSE_FACTOR * 0.003)


def test_the_stretch_is_capped_but_a_longer_floor_holds() -> None:
    q = QuietWindow(0.001)
    q.held(1.0)
    q.held(3.0)  # a 2 s pause: a stalled link, not a burst
    assert q.seconds() == ADAPTIVE_CAP
    slow = QuietWindow(0.5)
    slow.held(1.0)
    slow.held(1.01)
    assert slow.seconds() == 0.5


class _Transport:
    """What SideProtocol.quiet() asks of a transport: its socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None

    def pause_reading(self) -> None:
        pass


class _Owner:
    admitted = True


def test_a_side_is_quiet_until_a_byte_is_queued_for_it() -> None:
    a, b = socket.socketpair()
    try:
        side = SideProtocol(_Owner(), Side.SOURCE, 1 << 20)  # type: ignore[arg-type]
        side.transport = _Transport(a)  # type: ignore[assignment]
        assert side.quiet()
        b.sendall(b"\x00")
        assert not side.quiet()  # the kernel holds a byte the loop has not read
        a.recv(1)
        assert side.quiet()
        side.pause("backpressure")
        assert not side.quiet()  # paused: bytes may wait unread, cannot be told
    finally:
        a.close()
        b.close()


def test_a_side_without_a_socket_is_never_quiet() -> None:
    side = SideProtocol(_Owner(), Side.SOURCE, 1 << 20)  # type: ignore[arg-type]
    assert not side.quiet()
