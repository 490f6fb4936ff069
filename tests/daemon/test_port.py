"""The cross-connection rules of a listening port (:mod:`migproxy.daemon.port`), without
sockets or sleeps: each test plays notifications and asserts the exact commands, in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from migproxy.daemon.admission import AdmissionLimits, Refusal
from migproxy.daemon.port import (
    ADMISSION_GRACE,
    PROBATION_MAX,
    Connect,
    Evict,
    Expire,
    PortCommand,
    PortState,
    Refuse,
    RouteAdmission,
    Wake,
    WakeAt,
)
from migproxy.daemon.session import ACCEPT_ORDER_WINDOW as W
from migproxy.daemon.session import Channel
from migproxy.stream import wire

QEVM = wire.MAGIC_BYTES
MULTIFD = wire.MULTIFD_MAGIC_BYTES
HELLO = b"\x16\x03\x01\x02"
GARBAGE = b"GET "
SRC = "192.0.2.1"  # the migration source
OTHER_HOST = "192.0.2.9"


@dataclass
class Playbook:
    """The ports of one route. ``play(port, "notification", *args, expect=[...])`` feeds
    a notification and asserts the commands it returns, exactly and in order."""

    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    ports: int = 1
    tls: bool = False
    log: list[tuple[str, tuple[Any, ...], list[PortCommand]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.admission = RouteAdmission(self.limits)
        self.port = [PortState(self.admission, tls_source=self.tls) for _ in range(self.ports)]

    def play(self, what: str, *args: Any, expect: Sequence[PortCommand], port: int = 0) -> None:
        got = getattr(self.port[port], what)(*args)
        self.log.append((what, args, got))
        assert got == list(expect), f"{what}{args}: {got} != {list(expect)}"


# -- accept order (M1) --------------------------------------------------------------------

def test_a_main_channel_connects_at_once_and_no_silent_connection_goes_before_it() -> None:
    """M1: a scanner on the source host, opened just before the migration, stays put."""
    pb = Playbook()
    pb.play("accepted", 1, SRC, 0.0, expect=[])  # the scanner: silent
    pb.play("accepted", 2, SRC, 0.5, expect=[])  # the main channel
    pb.play("requested", 2, QEVM, 0.51, expect=[Connect(2)])
    pb.play("connect_done", 2, 0.52, expect=[])
    pb.play("classified", 2, Channel.MAIN, 0.52, expect=[])  # 1 came before: not woken
    pb.play("accepted", 3, SRC, 0.53, expect=[Wake(3)])  # the preempt channel, after it
    pb.play("requested", 3, b"", 0.54, expect=[Connect(3)])
    pb.play("connect_done", 3, 0.55, expect=[])
    pb.play("classify_deadline", 1, 30.0, expect=[])  # a main channel is open: kept
    pb.play("closed", 2, 40.0, expect=[])
    pb.play("classify_deadline", 1, 60.0, expect=[Expire(1)])


def test_a_multifd_channel_whose_main_is_still_silent_waits_for_it() -> None:
    """The multifd channel's magic comes first; the main channel, accepted before it, is
    connected first as soon as it sends (no silent connection is pulled in)."""
    pb = Playbook()
    pb.play("accepted", 1, SRC, 0.0, expect=[])  # a scanner
    pb.play("accepted", 2, SRC, 0.5, expect=[])  # main
    pb.play("accepted", 3, SRC, 0.501, expect=[])  # multifd
    pb.play("requested", 3, MULTIFD, 0.502, expect=[WakeAt(0.502 + W)])
    pb.play("requested", 2, QEVM, 0.503, expect=[Connect(2)])
    pb.play("connect_done", 2, 0.504, expect=[Connect(3)])  # a main is connected: it goes
    pb.play("connect_done", 3, 0.505, expect=[])
    pb.play("tick", 0.502 + W, expect=[])  # nothing waits any more


def test_a_multifd_channel_that_waited_the_window_pulls_the_silent_ones_in_order() -> None:
    """An odd source whose main channel stays silent: after the window the multifd channel
    pulls the silent connections it waited for in (its main channel is among them)."""
    pb = Playbook()
    pb.play("accepted", 1, SRC, 0.0, expect=[])
    pb.play("accepted", 2, SRC, 0.1, expect=[])
    pb.play("requested", 2, MULTIFD, 0.2, expect=[WakeAt(0.2 + W)])
    pb.play("tick", 0.2 + W, expect=[Wake(1)])
    pb.play("requested", 1, b"", 2.3, expect=[Connect(1)])
    pb.play("connect_done", 1, 2.4, expect=[Connect(2)])


def test_other_channels_that_waited_the_window_go_alone() -> None:
    """Unterminated TLS (every channel a ClientHello) or garbage: nothing silent is pulled
    in; the earliest that asked goes first."""
    pb = Playbook()
    pb.play("accepted", 1, SRC, 0.0, expect=[])  # silent
    pb.play("accepted", 2, SRC, 0.5, expect=[])
    pb.play("accepted", 3, SRC, 0.6, expect=[])
    pb.play("requested", 3, HELLO, 0.7, expect=[WakeAt(0.7 + W)])
    pb.play("requested", 2, HELLO, 0.8, expect=[])
    pb.play("tick", 0.7 + W, expect=[WakeAt(0.8 + W)])  # 3 waits for 2, still waiting
    pb.play("tick", 0.8 + W, expect=[Connect(2)])
    pb.play("connect_done", 2, 3.0, expect=[Connect(3)])


def test_silent_connections_from_other_hosts_or_long_before_are_not_waited_for() -> None:
    pb = Playbook()
    pb.play("accepted", 1, OTHER_HOST, 9.0, expect=[])
    pb.play("accepted", 2, SRC, 0.0, expect=[])  # long before
    pb.play("accepted", 3, SRC, 10.0, expect=[])
    pb.play("requested", 3, MULTIFD, 10.1, expect=[Connect(3)])


def test_one_connect_at_a_time_in_accept_order() -> None:
    pb = Playbook()
    for i in (1, 2, 3):
        pb.play("accepted", i, SRC, 0.0, expect=[])
    pb.play("requested", 1, QEVM, 0.1, expect=[Connect(1)])
    pb.play("requested", 3, MULTIFD, 0.1, expect=[WakeAt(0.1 + W)])
    pb.play("requested", 2, MULTIFD, 0.1, expect=[])
    pb.play("connect_done", 1, 0.2, expect=[Connect(2)])
    pb.play("connect_done", 2, 0.3, expect=[Connect(3)])
    pb.play("connect_done", 3, 0.4, expect=[])


def test_a_failed_connect_frees_the_slot() -> None:
    pb = Playbook()
    pb.play("accepted", 1, OTHER_HOST, 0.0, expect=[])
    pb.play("accepted", 2, SRC, 0.0, expect=[])
    pb.play("requested", 1, QEVM, 0.1, expect=[Connect(1)])
    pb.play("requested", 2, QEVM, 0.1, expect=[])
    pb.play("closed", 1, 0.2, expect=[])  # its session ended while it connects: still held
    pb.play("connect_done", 1, 0.3, expect=[Connect(2)])


def test_a_silent_connection_that_closes_lets_its_waiters_go() -> None:
    pb = Playbook()
    pb.play("accepted", 1, SRC, 0.0, expect=[])
    pb.play("accepted", 2, SRC, 0.1, expect=[])
    pb.play("requested", 2, MULTIFD, 0.2, expect=[WakeAt(0.2 + W)])
    pb.play("closed", 1, 0.3, expect=[Connect(2)])


def test_accept_order_is_per_port() -> None:
    pb = Playbook(ports=2)
    pb.play("accepted", 1, SRC, 0.0, expect=[], port=1)
    pb.play("accepted", 2, SRC, 0.1, expect=[], port=0)
    pb.play("requested", 2, MULTIFD, 0.2, expect=[Connect(2)], port=0)
    pb.play("connect_done", 2, 0.3, expect=[], port=0)
    pb.play("classified", 2, Channel.MAIN, 0.3, expect=[], port=0)  # the other port: no


def test_silent_channels_accepted_after_the_main_are_woken_when_it_is_classified() -> None:
    pb = Playbook()
    pb.play("accepted", 1, SRC, 0.0, expect=[])
    pb.play("accepted", 2, SRC, 0.0, expect=[])  # the preempt channel, before main sent
    pb.play("accepted", 3, OTHER_HOST, 0.0, expect=[])
    pb.play("requested", 1, QEVM, 0.1, expect=[Connect(1)])
    pb.play("connect_done", 1, 0.2, expect=[])
    pb.play("classified", 1, Channel.MAIN, 0.2, expect=[Wake(2)])
    pb.play("requested", 2, b"", 0.2, expect=[Connect(2)])


def test_on_a_tls_route_the_handshake_counts_as_the_first_bytes() -> None:
    """A TLS route: a connection in its handshake is silent; its handshake ending makes it
    a channel (woken only once a main channel from its host is open)."""
    pb = Playbook(tls=True)
    pb.play("accepted", 1, SRC, 0.0, expect=[])  # main: its handshake ends last
    pb.play("accepted", 2, SRC, 0.1, expect=[])  # multifd
    pb.play("authenticated", 2, 0.2, expect=[])
    pb.play("requested", 2, MULTIFD, 0.2, expect=[WakeAt(0.2 + W)])
    pb.play("authenticated", 1, 0.3, expect=[])
    pb.play("requested", 1, QEVM, 0.3, expect=[Connect(1)])
    pb.play("connect_done", 1, 0.4, expect=[Connect(2)])
    pb.play("classified", 1, Channel.MAIN, 0.4, expect=[])
    pb.play("accepted", 3, SRC, 0.5, expect=[])  # not woken before its handshake
    pb.play("authenticated", 3, 0.6, expect=[Wake(3)])


# -- admission (M2) -----------------------------------------------------------------------

def test_idle_connections_never_keep_a_migration_out() -> None:
    """M2: the address is full of idle connections; the migration's channels each take
    the place of the oldest idle one."""
    pb = Playbook(AdmissionLimits(max_connections=10, max_per_peer=3))
    for i in (1, 2, 3):
        pb.play("accepted", i, SRC, float(i), expect=[])
    pb.play("accepted", 4, SRC, 4.0, expect=[WakeAt(4.0 + ADMISSION_GRACE)])  # on probation
    pb.play("requested", 4, QEVM, 4.01, expect=[Evict(1), Connect(4)])
    pb.play("accepted", 5, SRC, 4.02, expect=[])  # 4.0 + grace is armed already
    pb.play("requested", 5, MULTIFD, 4.03, expect=[Evict(2)])
    pb.play("connect_done", 4, 4.04, expect=[Connect(5)])
    pb.play("closed", 1, 4.05, expect=[])  # the evicted sessions end: nothing more
    pb.play("closed", 2, 4.05, expect=[])
    assert pb.admission.counts.open == 3


def test_the_route_limit_evicts_the_oldest_idle_connection_of_any_address() -> None:
    pb = Playbook(AdmissionLimits(max_connections=2, max_per_peer=300))
    pb.play("accepted", 1, OTHER_HOST, 0.0, expect=[])
    pb.play("accepted", 2, "192.0.2.8", 0.0, expect=[])
    pb.play("accepted", 3, SRC, 1.0, expect=[WakeAt(1.0 + ADMISSION_GRACE)])
    pb.play("requested", 3, QEVM, 1.0, expect=[Evict(1), Connect(3)])


def test_a_silent_connection_over_the_limit_is_refused_after_the_grace() -> None:
    pb = Playbook(AdmissionLimits(max_connections=10, max_per_peer=1))
    pb.play("accepted", 1, SRC, 0.0, expect=[])
    pb.play("accepted", 2, SRC, 1.0, expect=[WakeAt(1.0 + ADMISSION_GRACE)])
    pb.play("tick", 1.0 + ADMISSION_GRACE, expect=[Refuse(2, Refusal.PEER_FULL)])
    pb.play("closed", 2, 3.5, expect=[])  # (the executor may still say so)
    assert pb.admission.counts.open == 1


def test_bytes_that_are_no_migrations_over_the_limit_are_refused_at_once() -> None:
    pb = Playbook(AdmissionLimits(max_connections=1, max_per_peer=300))
    pb.play("accepted", 1, SRC, 0.0, expect=[])
    pb.play("accepted", 2, SRC, 1.0, expect=[WakeAt(1.0 + ADMISSION_GRACE)])
    pb.play("requested", 2, GARBAGE, 1.1, expect=[Refuse(2, Refusal.ROUTE_FULL)])
    pb.play("accepted", 3, SRC, 1.2, expect=[])
    pb.play("requested", 3, b"Q", 1.3, expect=[Refuse(3, Refusal.ROUTE_FULL)])  # < 4 bytes


def test_a_route_full_of_channels_refuses_a_new_one() -> None:
    """Migrations compete with migrations only: recognised channels are never evicted."""
    pb = Playbook(AdmissionLimits(max_connections=1, max_per_peer=300))
    pb.play("accepted", 1, SRC, 0.0, expect=[])
    pb.play("requested", 1, MULTIFD, 0.0, expect=[Connect(1)])
    pb.play("accepted", 2, SRC, 1.0, expect=[WakeAt(1.0 + ADMISSION_GRACE)])
    pb.play("requested", 2, QEVM, 1.1, expect=[Refuse(2, Refusal.ROUTE_FULL)])


def test_a_silent_channel_of_an_open_migration_is_admitted_as_one() -> None:
    """The postcopy preempt channel is silent, but it is a channel: over the limit it is
    woken and takes an idle connection's place."""
    pb = Playbook(AdmissionLimits(max_connections=10, max_per_peer=2))
    pb.play("accepted", 1, SRC, 0.0, expect=[])
    pb.play("requested", 1, QEVM, 0.0, expect=[Connect(1)])
    pb.play("connect_done", 1, 0.1, expect=[])
    pb.play("classified", 1, Channel.MAIN, 0.1, expect=[])
    pb.play("accepted", 2, OTHER_HOST, 0.2, expect=[])
    pb.play("accepted", 3, SRC, 0.3, expect=[Wake(3)])  # within the limit
    pb.play("requested", 3, b"", 0.3, expect=[Connect(3)])
    pb.play("connect_done", 3, 0.4, expect=[])
    pb.play("accepted", 4, SRC, 0.5, expect=[Refuse(4, Refusal.PEER_FULL)])  # both channels


def test_probation_is_bounded_and_the_oldest_waiting_one_goes() -> None:
    pb = Playbook(AdmissionLimits(max_connections=1, max_per_peer=300))
    pb.play("accepted", 0, SRC, 0.0, expect=[])
    for i in range(1, PROBATION_MAX + 1):
        pb.play("accepted", i, SRC, 1.0, expect=[WakeAt(1.0 + ADMISSION_GRACE)] if i == 1
                else [])
    pb.play("accepted", 999, SRC, 1.5, expect=[Refuse(1, Refusal.ROUTE_FULL)])
    assert len(pb.admission) == PROBATION_MAX + 1


def test_an_address_outside_the_allow_list_is_refused_at_accept() -> None:
    from migproxy.daemon.admission import parse_networks

    pb = Playbook(AdmissionLimits(allow=parse_networks(["10.0.0.0/8"], "allow")))
    pb.play("accepted", 1, SRC, 0.0, expect=[Refuse(1, Refusal.NOT_ALLOWED)])
    pb.play("accepted", 2, "10.1.2.3", 0.0, expect=[])


def test_ranges_share_admission_across_ports() -> None:
    pb = Playbook(AdmissionLimits(max_connections=1, max_per_peer=300), ports=2)
    pb.play("accepted", 1, SRC, 0.0, expect=[], port=0)
    pb.play("accepted", 2, SRC, 1.0, expect=[WakeAt(1.0 + ADMISSION_GRACE)], port=1)
    pb.play("requested", 2, QEVM, 1.1, expect=[Evict(1), Connect(2)], port=1)
    pb.play("requested", 1, b"", 1.2, expect=[], port=0)  # (evicted: forgotten)
