"""Unit tests of the sans-IO :class:`~migproxy.daemon.session.Session`: events in (with an
explicit ``now``), commands out. No sockets, no asyncio, no clock.

The policies pinned here are the ones tests/daemon/test_relay.py checks over loopback TCP:
classification, connect on the first byte and in accept order, half-close, outcomes,
the idle timer, backpressure.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import replace
from typing import TypeVar

import pytest

from migproxy.arm.profile import default_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.daemon.session import (
    Channel,
    Classified,
    Close,
    CloseReason,
    Command,
    ConnectQueue,
    ConnState,
    Finished,
    Forward,
    HalfClose,
    Log,
    OpenTarget,
    Outcome,
    PauseReading,
    Report,
    RequestTimer,
    ResumeReading,
    Session,
    SessionSettings,
    Side,
    Splice,
    Timer,
)
from migproxy.stream import wire
from migproxy.stream.events import Aborted, DeviceStateReleased, PassthroughEntered
from migproxy.stream.policy import Policy
from migproxy.stream.reasons import Reason
from testkit.streams import run_engine
from testkit.synthetic import SynthSpec, build

PROFILE = default_profile()
STREAM = build(SynthSpec(cpus=2, full_pages=16, zero_pages=64, multifd_flush=True))
REWRITTEN = run_engine([STREAM], arm_engine_config(PROFILE))[0]
# The first page-record word of the first RAM PART section, with unknown flags 0xff.
_PART = STREAM.index(bytes((wire.VM_SECTION_PART,)) + struct.pack(">I", 1))
BAD = STREAM[: _PART + 12] + b"\xff" + STREAM[_PART + 13 :]
MULTIFD = wire.MULTIFD_MAGIC_BYTES + struct.pack(">I", 1) + bytes(56) + STREAM[:5000]
OTHER = b"\x00\x00\x00\x00\x00\x00\x00\x08" + STREAM[5000:9000]

T = TypeVar("T")


def _settings(policy: Policy = Policy.PASSTHROUGH, *, dry_run: bool = False,
              idle: float = 0.0) -> SessionSettings:
    return SessionSettings(arm_engine_config(PROFILE, policy=policy, dry_run=dry_run,
                                             hold_cap=64 << 20), idle)


def _of(cmds: Iterable[Command], cls: type[T]) -> list[T]:
    return [c for c in cmds if isinstance(c, cls)]


def _sent(cmds: Iterable[Command], to: Side = Side.DESTINATION) -> bytes:
    return b"".join(bytes(chunk) for c in _of(cmds, Forward) if c.to is to for chunk in c.chunks)


def _finished(cmds: list[Command]) -> Finished:
    done = _of(cmds, Finished)
    assert len(done) == 1, cmds
    return done[0]


def _feed(s: Session, data: bytes, *, chunk: int = 4096, now: float = 1.0) -> list[Command]:
    out: list[Command] = []
    for i in range(0, len(data), chunk):
        out += s.on_source_data(memoryview(data[i : i + chunk]), now)
    return out


def _open(first: bytes, settings: SessionSettings | None = None,
          now: float = 0.0) -> tuple[Session, list[Command]]:
    """A session accepted at ``now`` whose first chunk ``first`` opened the target, which
    then connected: the commands of all three steps."""
    s = Session(settings or _settings(), now)
    out = s.on_accepted()
    out += s.on_source_data(memoryview(first), now)
    out += s.on_target_connected(now)
    assert s.state == ConnState.OPEN
    return s, out


def _relay(data: bytes, settings: SessionSettings | None = None, *,
           chunk: int = 4096) -> tuple[Session, list[Command]]:
    """``data`` through a connected session (first chunk before the connection), then the
    source's EOF."""
    s, out = _open(data[:chunk], settings)
    out += _feed(s, data[chunk:], chunk=chunk)
    out += s.on_eof(Side.SOURCE, 2.0)
    return s, out


# -- 1. classification --------------------------------------------------------------------

def test_qevm_is_a_main_channel_and_goes_through_the_engine() -> None:
    s, out = _relay(STREAM)
    assert _of(out, Classified) == [Classified(Channel.MAIN)]
    assert s.channel is Channel.MAIN
    assert s.engine is not None
    assert _of(out, Report), "the engine's events are reported"
    sent = _sent(out)
    assert sent != STREAM  # the profile dropped a cpreg
    assert sent == REWRITTEN


@pytest.mark.parametrize("chunk", [7, 1000, 65536])
def test_main_channel_output_does_not_depend_on_chunking(chunk: int) -> None:
    _s, out = _relay(STREAM, chunk=chunk)
    assert _sent(out) == REWRITTEN


def test_a_read_with_nothing_new_reports_nothing() -> None:
    """A Report only when the engine has events or holds another number of bytes (most
    reads of RAM have neither); the observer still sees every change of the held bytes."""
    _s, out = _relay(STREAM, chunk=7)
    reports = _of(out, Report)
    held = 0
    for r in reports:
        assert r.events or r.held_bytes != held
        held = r.held_bytes
    assert 0 < len(reports) < len(STREAM) // 7 // 10
    assert any(r.held_bytes for r in reports)  # the device state was held, then released
    assert held == 0


def test_multifd_channel_is_forwarded_untouched() -> None:
    s, out = _relay(MULTIFD, chunk=1000)
    assert _of(out, Classified) == [Classified(Channel.MULTIFD)]
    assert s.engine is None
    assert s.return_path is None
    assert _of(out, Report) == []
    assert _sent(out) == MULTIFD


def test_anything_else_is_other_and_forwarded_untouched() -> None:
    s, out = _relay(OTHER, chunk=1000)
    assert _of(out, Classified) == [Classified(Channel.OTHER)]
    assert s.engine is None
    assert _sent(out) == OTHER


def test_a_stream_that_merely_contains_qevm_later_is_not_main() -> None:
    data = b"xQEVM" + STREAM
    _s, out = _relay(data)
    assert _of(out, Classified) == [Classified(Channel.OTHER)]
    assert _sent(out) == data


@pytest.mark.parametrize(("data", "channel"), [(STREAM, Channel.MAIN),
                                                (MULTIFD, Channel.MULTIFD),
                                                (OTHER, Channel.OTHER)])
def test_magic_split_one_byte_at_a_time_before_the_connection(data: bytes,
                                                              channel: Channel) -> None:
    s = Session(_settings(), 0.0)
    s.on_accepted()
    out: list[Command] = []
    for i in range(6):  # the magic and a bit more, byte by byte, while connecting
        out += s.on_source_data(memoryview(data[i : i + 1]), 0.5)
    assert _of(out, OpenTarget) == [OpenTarget()]
    assert _of(out, Classified) == []  # nothing is classified before the target is up
    out = s.on_target_connected(1.0)
    assert _of(out, Classified) == [Classified(channel)]
    out += _feed(s, data[6:])
    out += s.on_eof(Side.SOURCE, 2.0)
    expected = REWRITTEN if channel is Channel.MAIN else data
    assert _sent(out) == expected


@pytest.mark.parametrize(("data", "channel"), [(STREAM, Channel.MAIN),
                                                (MULTIFD, Channel.MULTIFD)])
def test_magic_split_one_byte_at_a_time_after_the_connection(data: bytes,
                                                             channel: Channel) -> None:
    s, out = _open(data[:1])
    assert _of(out, Classified) == []
    assert _sent(out) == b""
    for i in (1, 2):
        step = s.on_source_data(memoryview(data[i : i + 1]), 1.0)
        assert _of(step, Classified) == [], i
        assert _sent(step) == b"", i
        out += step
    step = s.on_source_data(memoryview(data[3:4]), 1.0)
    assert _of(step, Classified) == [Classified(channel)]
    out += step + _feed(s, data[4:]) + s.on_eof(Side.SOURCE, 2.0)
    assert _sent(out) == (REWRITTEN if channel is Channel.MAIN else data)


@pytest.mark.parametrize("tiny", [b"a", b"ab", b"QEV", b"\x11\x22\x33"])
def test_fewer_than_four_bytes_then_eof_are_relayed_as_they_are(tiny: bytes) -> None:
    s, out = _open(tiny[:1])
    out += _feed(s, tiny[1:], chunk=1)
    assert _of(out, Classified) == []
    assert _sent(out) == b""
    out = s.on_eof(Side.SOURCE, 1.0)
    assert _of(out, Classified) == [Classified(Channel.OTHER)]
    assert _sent(out) == tiny
    assert out.index(_of(out, Forward)[0]) < out.index(HalfClose(Side.DESTINATION))
    done = _finished(s.on_eof(Side.DESTINATION, 2.0))
    assert done.outcome is Outcome.RELAYED
    assert done.channel is Channel.OTHER


def test_fewer_than_four_bytes_sent_before_the_connection_then_eof() -> None:
    s = Session(_settings(), 0.0)
    s.on_accepted()
    s.on_source_data(memoryview(b"ab"), 0.1)
    assert s.on_eof(Side.SOURCE, 0.2) == []
    out = s.on_target_connected(0.3)
    assert _of(out, Classified) == [Classified(Channel.OTHER)]
    assert _sent(out) == b"ab"
    assert HalfClose(Side.DESTINATION) in out


# -- 2. connect on the first byte -----------------------------------------------------------

def test_accept_arms_only_the_idle_timer() -> None:
    s = Session(_settings(idle=30.0), 5.0)
    assert s.on_accepted() == [RequestTimer(Timer.IDLE, 30.0)]
    assert s.state == ConnState.INACTIVE
    assert Session(_settings(idle=0.0), 5.0).on_accepted() == []


def test_first_byte_opens_the_target_once() -> None:
    s = Session(_settings(), 0.0)
    s.on_accepted()
    assert s.on_source_data(memoryview(STREAM[:10]), 1.0) == [
        PauseReading(Side.SOURCE, "connecting"), OpenTarget()]
    assert s.state == ConnState.CONNECTING
    assert s.on_source_data(memoryview(STREAM[10:20]), 1.5) == [
        PauseReading(Side.SOURCE, "connecting")]
    assert s.state == ConnState.CONNECTING


def test_data_before_the_connection_is_copied_and_replayed_in_order() -> None:
    # One receive buffer, reused for every read (as the executor does).
    buf = bytearray(4000)
    view = memoryview(buf)
    s = Session(_settings(), 0.0)
    s.on_accepted()
    pieces = [OTHER[:1500], OTHER[1500:4000], OTHER[4000:]]
    for p in pieces:
        buf[: len(p)] = p
        s.on_source_data(view[: len(p)], 0.5)
    buf[:] = b"\xee" * len(buf)  # the buffer is overwritten by the next read
    out = s.on_target_connected(1.0)
    assert _sent(out) == OTHER
    assert out[-1] == ResumeReading(Side.SOURCE, "connecting")
    assert _of(out, ResumeReading) == [ResumeReading(Side.SOURCE, "connecting")]
    assert max(out.index(f) for f in _of(out, Forward)) < len(out) - 1


def test_main_channel_data_before_the_connection_is_replayed_through_the_engine() -> None:
    s = Session(_settings(), 0.0)
    s.on_accepted()
    buf = bytearray(len(STREAM))
    buf[:] = STREAM
    s.on_source_data(memoryview(buf)[:20000], 0.5)
    s.on_source_data(memoryview(buf)[20000:], 0.6)
    buf[:] = bytes(len(buf))
    out = s.on_target_connected(1.0)
    out += s.on_eof(Side.SOURCE, 2.0)
    assert _sent(out) == REWRITTEN


def test_source_eof_while_connecting_is_handled_after_the_replay() -> None:
    s = Session(_settings(), 0.0)
    s.on_accepted()
    s.on_source_data(memoryview(STREAM[:30000]), 0.5)
    s.on_source_data(memoryview(STREAM[30000:]), 0.6)
    assert s.on_eof(Side.SOURCE, 0.7) == []  # not passed on before the target is up
    out = s.on_target_connected(1.0)
    assert _sent(out) == REWRITTEN
    half = out.index(HalfClose(Side.DESTINATION))
    assert max(out.index(f) for f in _of(out, Forward)) < half
    assert _of(out, Finished) == []  # the destination may still answer
    assert _of(out, OpenTarget) == []
    done = _finished(s.on_eof(Side.DESTINATION, 3.0))
    assert done.outcome is Outcome.COMPLETED
    assert done.reason is None
    assert not done.abort


# -- 3. a bare probe ------------------------------------------------------------------------

def test_a_probe_never_opens_the_target() -> None:
    s = Session(_settings(idle=30.0), 10.0)
    out = s.on_accepted()
    out += s.on_eof(Side.SOURCE, 10.25)
    assert _of(out, OpenTarget) == []
    assert out[-2:] == [Close(abort=False), Finished(Outcome.EMPTY, CloseReason.NO_DATA, False,
                                                     None, 0.25, None, None)]
    assert s.closed
    assert s.outcome is Outcome.EMPTY
    assert s.on_lost(Side.SOURCE, None, 10.5) == []


# -- 4. half-close ----------------------------------------------------------------------------

def test_half_close_is_passed_on_and_both_eofs_finish_the_session() -> None:
    s, out = _open(STREAM[:4096])
    out += _feed(s, STREAM[4096:])
    out = s.on_eof(Side.SOURCE, 2.0)
    assert HalfClose(Side.DESTINATION) in out
    assert _of(out, Close) == []
    assert _of(out, Finished) == []
    assert not s.closed
    # The return path still flows after the source's EOF.
    pong = struct.pack(">HHI", 2, 4, 1)
    assert s.on_destination_data(memoryview(pong), 2.5) == [Forward(Side.SOURCE,
                                                                    [memoryview(pong)])]
    out = s.on_eof(Side.DESTINATION, 3.0)
    assert HalfClose(Side.SOURCE) in out
    assert Close(abort=False) in out
    done = _finished(out)
    assert done.outcome is Outcome.COMPLETED
    assert done.reason is None
    assert done.abort is False
    assert s.closed


def test_destination_eof_first_keeps_the_source_direction_open() -> None:
    s, _ = _open(OTHER[:100])
    out = s.on_eof(Side.DESTINATION, 1.0)
    assert out[-1] == HalfClose(Side.SOURCE)
    assert _of(out, Finished) == []
    out = _feed(s, OTHER[100:])
    assert _sent(out) == OTHER[100:]
    out = s.on_eof(Side.SOURCE, 2.0)
    assert HalfClose(Side.DESTINATION) in out
    done = _finished(out)
    assert done.outcome is Outcome.RELAYED
    assert done.reason is None
    assert not done.abort


# -- 5. outcomes ------------------------------------------------------------------------------

def test_outcome_completed() -> None:
    s, out = _relay(STREAM)
    assert any(isinstance(e, DeviceStateReleased) and e.rewritten
               for r in _of(out, Report) for e in r.events)
    out = s.on_eof(Side.DESTINATION, 3.0)
    assert _finished(out).outcome is Outcome.COMPLETED
    assert s.outcome is Outcome.COMPLETED


@pytest.mark.parametrize(("status", "level", "outcome"), [
    (0, "info", Outcome.COMPLETED), (1, "warning", Outcome.DESTINATION_FAILED)])
def test_the_destinations_shut_status_sets_the_outcome(status: int, level: str,
                                                       outcome: Outcome) -> None:
    s, _ = _open(STREAM[:4096])
    _feed(s, STREAM[4096:])
    # PONG 1, then SHUT with the load's status; split inside the PONG and the SHUT.
    rp = struct.pack(">HHI", 2, 4, 1) + struct.pack(">HHI", 1, 4, status)
    out: list[Command] = []
    for piece in (rp[:5], rp[5:11], rp[11:]):
        step = s.on_destination_data(memoryview(piece), 2.0)
        assert step[0] == Forward(Side.SOURCE, [memoryview(piece)])  # relayed at once
        out += step
    assert _sent(out, Side.SOURCE) == rp
    assert _of(out, Log) == [Log(level, "destination_shut", {"status": status})]
    s.on_eof(Side.SOURCE, 3.0)
    assert _finished(s.on_eof(Side.DESTINATION, 4.0)).outcome is outcome


def test_a_second_shut_is_not_logged_again() -> None:
    s, _ = _open(STREAM)
    shut = struct.pack(">HHI", 1, 4, 1)
    assert len(_of(s.on_destination_data(memoryview(shut), 1.0), Log)) == 1
    assert _of(s.on_destination_data(memoryview(shut), 1.1), Log) == []


def test_shut_on_a_multifd_channel_is_only_relayed() -> None:
    s, _ = _open(MULTIFD)
    shut = struct.pack(">HHI", 1, 4, 1)
    assert s.on_destination_data(memoryview(shut), 1.0) == [Forward(Side.SOURCE,
                                                                    [memoryview(shut)])]


@pytest.mark.parametrize("cut", [len(STREAM) // 2, len(STREAM) - 7])
def test_outcome_incomplete_when_the_source_stops_mid_stream(cut: int) -> None:
    s, out = _relay(STREAM[:cut])
    events = [e for r in _of(out, Report) for e in r.events]
    entered = [e for e in events if isinstance(e, PassthroughEntered)]
    assert [e.reason for e in entered] in ([Reason.TRUNCATED], [Reason.NO_DESCRIPTION])
    assert _sent(out) == STREAM[:cut]  # nothing invented, nothing rewritten half-way
    assert HalfClose(Side.DESTINATION) in out
    assert _finished(s.on_eof(Side.DESTINATION, 3.0)).outcome is Outcome.INCOMPLETE


def test_outcome_passthrough_for_a_bad_byte_in_the_ram_part() -> None:
    s, out = _relay(BAD, _settings(Policy.PASSTHROUGH), chunk=64)
    assert _sent(out) == BAD  # the rest is relayed untouched
    entered = [e for r in _of(out, Report) for e in r.events
               if isinstance(e, PassthroughEntered)]
    assert [e.reason for e in entered] == [Reason.FORMAT_ERROR]
    assert _of(out, Finished) == []
    done = _finished(s.on_eof(Side.DESTINATION, 3.0))
    assert done.outcome is Outcome.PASSTHROUGH
    assert done.reason is None
    assert not done.abort


def test_outcome_aborted_with_the_abort_policy() -> None:
    s, out = _open(BAD[:64], _settings(Policy.ABORT))
    for i in range(64, len(BAD), 64):
        step = s.on_source_data(memoryview(BAD[i : i + 64]), 1.0)
        out += step
        if _of(step, Finished):
            break
    else:
        pytest.fail("the abort policy did not stop the session")
    sent = _sent(out)
    assert BAD.startswith(sent)
    assert len(sent) < _PART + 13
    aborted = [e for r in _of(out, Report) for e in r.events if isinstance(e, Aborted)]
    assert [e.reason for e in aborted] == [Reason.FORMAT_ERROR]
    assert out[-2] == Close(abort=True)
    done = _finished(out)
    assert done.outcome is Outcome.ABORTED
    assert done.reason is CloseReason.POLICY_ABORT
    assert done.abort is True
    assert s.closed
    assert s.on_source_data(memoryview(BAD[i + 64 :]), 1.5) == []


def test_abort_policy_on_a_truncated_stream_aborts_at_eof() -> None:
    s, _ = _open(STREAM[:4096], _settings(Policy.ABORT))
    _feed(s, STREAM[4096 : len(STREAM) // 2])
    out = s.on_eof(Side.SOURCE, 2.0)
    assert HalfClose(Side.DESTINATION) not in out  # not passed on: the pair is reset
    assert Close(abort=True) in out
    done = _finished(out)
    assert done.outcome is Outcome.ABORTED
    assert done.reason is CloseReason.POLICY_ABORT


def test_outcome_relayed_for_a_multifd_channel_closed_cleanly() -> None:
    s, _ = _relay(MULTIFD)
    out = s.on_eof(Side.DESTINATION, 3.0)
    assert Close(abort=False) in out
    done = _finished(out)
    assert done == Finished(Outcome.RELAYED, None, False, Channel.MULTIFD, 3.0, None, None)


@pytest.mark.parametrize(("side", "reason"), [(Side.SOURCE, CloseReason.SOURCE_ERROR),
                                               (Side.DESTINATION, CloseReason.DESTINATION_ERROR)])
def test_outcome_failed_when_a_main_channel_is_lost_with_an_error(side: Side,
                                                                  reason: CloseReason) -> None:
    s, _ = _open(STREAM[:4096])
    _feed(s, STREAM[4096 : len(STREAM) // 2])
    out = s.on_lost(side, "Connection reset by peer", 2.0)
    assert out[0] == Log("warning", "connection_lost",
                         {"side": str(side), "error": "Connection reset by peer"})
    assert Close(abort=True) in out
    done = _finished(out)
    assert done.outcome is Outcome.FAILED
    assert done.reason is reason
    assert done.abort is True


def test_multifd_lost_with_an_error_is_failed() -> None:
    s, _ = _open(MULTIFD[:1000])
    done = _finished(s.on_lost(Side.DESTINATION, "Broken pipe", 1.0))
    assert done.outcome is Outcome.FAILED
    assert done.reason is CloseReason.DESTINATION_ERROR


def test_lost_without_error_after_both_eofs_has_no_reason() -> None:
    s, _ = _relay(STREAM)
    done = _finished(s.on_eof(Side.DESTINATION, 3.0))
    assert done.reason is None
    assert done.outcome is Outcome.COMPLETED
    # The transports' connection_lost(None) that follows changes nothing.
    assert s.on_lost(Side.SOURCE, None, 3.1) == []
    assert s.on_lost(Side.DESTINATION, None, 3.1) == []
    assert s.outcome is Outcome.COMPLETED


def test_lost_without_error_before_eof_says_which_side_closed() -> None:
    s, _ = _open(STREAM[:4096])
    out = s.on_lost(Side.SOURCE, None, 2.0)
    assert Close(abort=False) in out
    done = _finished(out)
    assert done.reason is CloseReason.SOURCE_CLOSED
    assert done.abort is False
    assert done.outcome is Outcome.FAILED  # a main channel that ended mid-stream

    s, _ = _relay(STREAM)  # the source is done; the destination goes away without an EOF
    done = _finished(s.on_lost(Side.DESTINATION, None, 3.0))
    assert done.reason is CloseReason.DESTINATION_CLOSED
    assert done.abort is False
    assert done.outcome is Outcome.COMPLETED


# -- 6. the idle timer --------------------------------------------------------------------------

def test_idle_timer_rearms_until_the_deadline_then_closes() -> None:
    s = Session(_settings(idle=10.0), 100.0)
    assert s.on_accepted() == [RequestTimer(Timer.IDLE, 10.0)]
    assert s.on_timer(Timer.IDLE, 104.0) == [RequestTimer(Timer.IDLE, 6.0)]
    s.on_source_data(memoryview(STREAM[:100]), 105.0)  # activity moves the deadline
    s.on_target_connected(105.5)
    assert s.on_timer(Timer.IDLE, 110.0) == [RequestTimer(Timer.IDLE, 5.0)]
    s.on_destination_data(memoryview(struct.pack(">HHI", 2, 4, 1)), 112.0)  # either way
    assert s.on_timer(Timer.IDLE, 121.5) == [RequestTimer(Timer.IDLE, 0.5)]
    out = s.on_timer(Timer.IDLE, 122.0)
    assert out[0] == Log("warning", "idle_timeout", {"seconds": 10.0})
    assert Close(abort=True) in out
    done = _finished(out)
    assert done.reason is CloseReason.IDLE_TIMEOUT
    assert done.abort is True
    assert done.seconds == 22.0
    assert s.closed
    assert s.on_timer(Timer.IDLE, 200.0) == []


def test_idle_timer_while_connecting() -> None:
    s = Session(_settings(idle=2.0), 0.0)
    s.on_accepted()
    s.on_source_data(memoryview(STREAM[:10]), 1.0)
    assert s.on_timer(Timer.IDLE, 2.0) == [RequestTimer(Timer.IDLE, 1.0)]
    done = _finished(s.on_timer(Timer.IDLE, 3.5))
    assert done.reason is CloseReason.IDLE_TIMEOUT
    # The connection completes too late: it is reset at once.
    assert s.on_target_connected(4.0) == [Close(abort=True)]


def test_idle_timeout_zero_never_asks_for_a_timer() -> None:
    s = Session(_settings(idle=0.0), 0.0)
    out = s.on_accepted()
    out += s.on_source_data(memoryview(STREAM[:4096]), 1.0)
    out += s.on_target_connected(1.0)
    out += _feed(s, STREAM[4096:], now=1e6)
    assert s.on_timer(Timer.IDLE, 1e9) == []
    out += s.on_eof(Side.SOURCE, 1e9)
    out += s.on_eof(Side.DESTINATION, 1e9)
    assert _of(out, RequestTimer) == []
    assert _finished(out).outcome is Outcome.COMPLETED


# -- 7. connect failure, shutdown, and the closed state ----------------------------------------

def test_target_failed_closes_the_source() -> None:
    s = Session(_settings(), 0.0)
    s.on_accepted()
    s.on_source_data(memoryview(STREAM[:100]), 1.0)
    out = s.on_target_failed("Connection refused", 4.0)
    assert out[0] == Log("error", "connect_failed", {"error": "Connection refused"})
    assert Close(abort=True) in out
    done = _finished(out)
    assert done.reason is CloseReason.CONNECT_FAILED
    assert done.abort is True
    assert done.seconds == 4.0
    assert done.outcome == Outcome.FAILED  # bytes were lost: not a probe
    assert s.closed


def test_shutdown_aborts_the_pair() -> None:
    s, _ = _open(STREAM[:4096])
    out = s.on_shutdown(30.0)
    assert out[0] == Close(abort=True)
    done = _finished(out)
    assert done.reason is CloseReason.SHUTDOWN
    assert done.abort is True
    assert done.outcome is Outcome.FAILED


def test_every_event_after_finished_is_ignored() -> None:
    s, _ = _open(STREAM[:4096], _settings(idle=5.0))
    _finished(s.on_shutdown(3.0))
    data = memoryview(STREAM[4096:8192])
    assert s.on_source_data(data, 4.0) == []
    assert s.on_destination_data(data, 4.0) == []
    assert s.on_eof(Side.SOURCE, 4.0) == []
    assert s.on_eof(Side.DESTINATION, 4.0) == []
    assert s.on_lost(Side.SOURCE, None, 4.0) == []
    assert s.on_lost(Side.DESTINATION, "reset", 4.0) == []
    assert s.on_timer(Timer.IDLE, 100.0) == []
    assert s.on_target_failed("late", 4.0) == []
    assert s.on_shutdown(4.0) == []
    assert s.connect_now() == []
    assert s.on_target_connected(4.0) == [Close(abort=True)]
    assert s.outcome is Outcome.FAILED


def test_backpressure_after_finished_is_ignored() -> None:
    """Expected behaviour (ConnState.CLOSED: "every later event is ignored"); the executor
    may still see pause_writing/resume_writing while the transports flush on close."""
    s, _ = _open(STREAM[:4096])
    _finished(s.on_shutdown(3.0))
    assert s.on_backpressure(Side.DESTINATION, True) == []
    assert s.on_backpressure(Side.DESTINATION, False) == []


def test_closing_while_connecting_resets_the_late_target_connection() -> None:
    s = Session(_settings(), 0.0)
    s.on_accepted()
    s.on_source_data(memoryview(STREAM[:100]), 1.0)
    done = _finished(s.on_lost(Side.SOURCE, "Connection reset by peer", 1.5))
    assert done.reason is CloseReason.SOURCE_ERROR
    assert s.on_target_connected(2.0) == [Close(abort=True)]


# -- 8. backpressure --------------------------------------------------------------------------

def test_backpressure_pauses_and_resumes_the_other_side() -> None:
    s, _ = _open(STREAM[:4096])
    assert s.on_backpressure(Side.DESTINATION, True) == [
        PauseReading(Side.SOURCE, "backpressure")]
    assert s.on_backpressure(Side.DESTINATION, False) == [
        ResumeReading(Side.SOURCE, "backpressure")]
    assert s.on_backpressure(Side.SOURCE, True) == [
        PauseReading(Side.DESTINATION, "backpressure")]
    assert s.on_backpressure(Side.SOURCE, False) == [
        ResumeReading(Side.DESTINATION, "backpressure")]


# -- 9. accept order ----------------------------------------------------------------------------

def test_connect_queue_keeps_accept_order() -> None:
    q = ConnectQueue()
    a, b, c, d = (Session(_settings(), 0.0) for _ in range(4))
    for s in (a, b, c, d):
        q.accepted(s)
    assert len(q) == 4
    assert q.connecting(c) == [a, b]
    assert len(q) == 1  # only d, accepted after c, still waits
    assert q.connecting(a) == []  # already pulled in
    assert q.connecting(d) == []
    assert len(q) == 0


def test_connect_queue_first_session_has_nobody_before_it() -> None:
    q = ConnectQueue()
    a, b = Session(_settings(), 0.0), Session(_settings(), 0.0)
    q.accepted(a)
    q.accepted(b)
    assert q.connecting(a) == []
    assert q.connecting(b) == []
    assert len(q) == 0


def test_connect_queue_remove() -> None:
    q = ConnectQueue()
    a, b, c = (Session(_settings(), 0.0) for _ in range(3))
    for s in (a, b, c):
        q.accepted(s)
    q.remove(b)  # e.g. a probe that finished while waiting
    assert len(q) == 2
    assert q.connecting(c) == [a]
    q.remove(b)  # not waiting: nothing happens
    q.remove(a)
    assert len(q) == 0


def test_connect_now_opens_the_target_of_a_silent_session() -> None:
    s = Session(_settings(), 0.0)
    s.on_accepted()
    assert s.connect_now() == [PauseReading(Side.SOURCE, "connecting"), OpenTarget()]
    assert s.state == ConnState.CONNECTING
    assert s.connect_now() == []
    # Its first byte, later, opens nothing more.
    assert s.on_source_data(memoryview(STREAM[:4096]), 1.0) == [
        PauseReading(Side.SOURCE, "connecting")]
    out = s.on_target_connected(2.0)
    out += _feed(s, STREAM[4096:])
    out += s.on_eof(Side.SOURCE, 3.0)
    assert _sent(out) == REWRITTEN
    assert _of(out, OpenTarget) == []


def test_connect_now_on_a_connecting_or_open_session_does_nothing() -> None:
    s = Session(_settings(), 0.0)
    s.on_accepted()
    s.on_source_data(memoryview(b"Q"), 1.0)
    assert s.state == ConnState.CONNECTING
    assert s.connect_now() == []
    s.on_target_connected(1.0)
    assert s.connect_now() == []


# -- 10. what Finished carries ------------------------------------------------------------------

def test_finished_carries_duration_and_engine_byte_counts() -> None:
    s, _ = _open(STREAM[:4096], now=10.0)
    _feed(s, STREAM[4096:], now=11.0)
    s.on_eof(Side.SOURCE, 12.0)
    done = _finished(s.on_eof(Side.DESTINATION, 12.5))
    assert done == Finished(Outcome.COMPLETED, None, False, Channel.MAIN, 2.5,
                            len(STREAM), len(REWRITTEN))


def test_finished_of_other_channels_has_no_byte_counts() -> None:
    for data, channel in ((MULTIFD, Channel.MULTIFD), (OTHER, Channel.OTHER)):
        s, _ = _open(data, now=1.0)
        done = _finished(s.on_lost(Side.SOURCE, "reset", 4.0))
        assert done.channel is channel
        assert done.seconds == 3.0
        assert done.bytes_in is None
        assert done.bytes_out is None


def test_finished_of_a_policy_abort_during_the_replay_uses_the_current_time() -> None:
    """Expected behaviour: ``seconds`` is the time of the event that ended the session,
    also when the abort happens while replaying what arrived before the connection."""
    s = Session(_settings(Policy.ABORT), 0.0)
    s.on_accepted()
    s.on_source_data(memoryview(BAD), 1.0)
    out = s.on_target_connected(5.0)
    done = _finished(out)
    assert done.outcome is Outcome.ABORTED
    assert done.seconds == 5.0


def test_a_tls_channel_is_classified_tls_warned_about_and_relayed_untouched() -> None:
    hello = bytes((0x16, 0x03, 0x01, 0x02, 0x00)) + bytes(range(200))
    s = Session(_settings(), 0.0)
    s.on_accepted()
    s.on_source_data(memoryview(hello[:2]), 1.0)
    cmds = s.on_target_connected(1.0) + s.on_source_data(memoryview(hello[2:]), 1.0)
    assert _of(cmds, Classified) == [Classified(Channel.TLS)]
    assert [c.event for c in _of(cmds, Log) if c.level == "warning"] == ["tls"]
    assert _sent(cmds) == hello
    assert s.engine is None
    done = _finished(s.on_eof(Side.SOURCE, 2.0) + s.on_eof(Side.DESTINATION, 2.0))
    assert done.outcome == Outcome.RELAYED
    assert done.channel == Channel.TLS


def test_only_a_tls_handshake_record_header_is_tls() -> None:
    for head in (b"\x16\x02\x00\x00", b"\x17\x03\x03\x00", b"\x15\x03\x03\x00"):
        s = Session(_settings(), 0.0)
        s.on_source_data(memoryview(head), 0.0)
        assert _of(s.on_target_connected(0.0), Classified) == [Classified(Channel.OTHER)]


def test_accept_order_only_pulls_in_the_same_host_within_the_window() -> None:
    from migproxy.daemon.session import ACCEPT_ORDER_WINDOW

    q = ConnectQueue()
    probe = Session(_settings(), 0.0, "192.0.2.9")  # a scanner, accepted first
    old = Session(_settings(), 10.0, "192.0.2.1")  # the same host, but long before
    main = Session(_settings(), 20.0, "192.0.2.1")
    multifd = Session(_settings(), 20.0 + ACCEPT_ORDER_WINDOW / 2, "192.0.2.1")
    for s in (probe, old, main, multifd):
        q.accepted(s)
    # The multifd channel's first byte comes first: it pulls in the main channel only.
    assert q.connecting(multifd) == [main]
    assert len(q) == 2  # the probe and the old connection still wait, untouched
    assert q.connecting(main) == []
    # Each of the others connects only for its own first byte.
    assert q.connecting(old) == []
    assert q.connecting(probe) == []
    assert len(q) == 0


def _done_main(settings: SessionSettings | None = None) -> Session:
    s = Session(settings or _settings(), 0.0)
    s.on_accepted()
    s.on_source_data(memoryview(STREAM), 1.0)
    s.on_target_connected(1.0)
    s.on_eof(Side.SOURCE, 2.0)
    assert s.engine is not None
    assert s.engine.mode.value == "done"
    return s


def test_a_destination_reset_after_the_whole_stream_is_not_a_completed_migration() -> None:
    s = _done_main()
    done = _finished(s.on_lost(Side.DESTINATION, "Connection reset by peer", 3.0))
    assert done.outcome == Outcome.FAILED
    assert done.reason == CloseReason.DESTINATION_ERROR


def test_a_destination_reset_after_a_successful_shut_is_completed() -> None:
    s = _done_main()
    s.on_destination_data(memoryview(struct.pack(">HHI", 1, 4, 0)), 2.5)  # SHUT, status 0
    done = _finished(s.on_lost(Side.DESTINATION, "Connection reset by peer", 3.0))
    assert done.outcome == Outcome.COMPLETED


def test_a_clean_close_by_the_destination_after_the_stream_is_completed() -> None:
    s = _done_main()
    done = _finished(s.on_eof(Side.DESTINATION, 3.0))
    assert done.outcome == Outcome.COMPLETED
    assert not done.abort


def test_a_session_that_ends_mid_hold_gives_the_budget_back() -> None:
    from migproxy.stream.policy import HoldBudget

    budget = HoldBudget(1 << 30)
    s = Session(SessionSettings(arm_engine_config(PROFILE, hold_budget=budget), 0.0), 0.0)
    s.on_source_data(memoryview(STREAM), 1.0)
    s.on_target_connected(1.0)
    assert budget.used > 0  # the device state is held (no return path: until EOF)
    _finished(s.on_lost(Side.SOURCE, "reset", 2.0))
    assert budget.used == 0


def test_an_unframed_end_with_the_return_path_is_concluded_on_a_timer() -> None:
    import json

    from migproxy.daemon.session import END_CONFIRM_DELAY

    rp = build(SynthSpec(cpus=2, full_pages=16, zero_pages=64, return_path=True))
    at = rp.index(b"\x00\x06", rp.index(b"globalstate"))
    while rp[at + 6 : at + 7] != b"{":
        at = rp.index(b"\x00\x06", at + 1)
    body = json.loads(rp[at + 6 :])
    body["devices"][0]["fields"][0]["size"] = 9  # the description no longer frames
    raw = json.dumps(body).encode()
    bad = rp[: at + 2] + struct.pack(">I", len(raw)) + raw
    s = Session(_settings(), 0.0)
    s.on_source_data(memoryview(bad), 1.0)
    cmds = s.on_target_connected(1.0)
    assert RequestTimer(Timer.DEVICE_STATE_END, END_CONFIRM_DELAY) in cmds
    held = _sent(cmds)
    assert len(held) < len(bad)  # the device state waits
    out = s.on_timer(Timer.DEVICE_STATE_END, 2.0)
    assert held + _sent(out) == bad  # all of it, untouched
    stops = [e for c in _of(out, Report) for e in c.events if isinstance(e, PassthroughEntered)]
    assert [e.reason for e in stops] == [Reason.DEVICE_STATE_NOT_FRAMED]
    assert s.on_timer(Timer.DEVICE_STATE_END, 3.0) == []  # already decided
    done = _finished(s.on_eof(Side.SOURCE, 4.0) + s.on_eof(Side.DESTINATION, 4.0))
    assert done.outcome == Outcome.PASSTHROUGH


# -- the quiet window that confirms the end (return path) ------------------------------------

RP = build(SynthSpec(cpus=2, full_pages=16, zero_pages=64, return_path=True))


def test_with_the_return_path_the_end_is_released_after_the_quiet_window() -> None:
    from migproxy.daemon.session import DEFAULT_END_QUIET

    s = Session(_settings(), 0.0)
    s.on_source_data(memoryview(RP), 1.0)
    cmds = s.on_target_connected(1.0)
    assert RequestTimer(Timer.DEVICE_STATE_END, DEFAULT_END_QUIET) in cmds
    held = _sent(cmds)
    assert len(held) < len(RP)
    assert s.engine is not None
    assert s.engine.end_pending
    out = s.on_timer(Timer.DEVICE_STATE_END, 1.05)
    released = [e for c in _of(out, Report) for e in c.events
                if isinstance(e, DeviceStateReleased)]
    assert len(released) == 1
    assert released[0].rewritten
    assert held + _sent(out) == run_engine([RP], arm_engine_config(PROFILE), quiet=True)[0]
    assert s.on_timer(Timer.DEVICE_STATE_END, 2.0) == []  # released once


def test_a_byte_within_the_quiet_window_withdraws_the_end() -> None:
    s = Session(_settings(), 0.0)
    s.on_source_data(memoryview(RP), 1.0)
    s.on_target_connected(1.0)
    more = s.on_source_data(memoryview(b"\x00"), 1.01)  # more device state after all
    assert _sent(more) == b""
    assert s.engine is not None
    assert not s.engine.end_pending
    assert not any(isinstance(c, RequestTimer) and c.timer == Timer.DEVICE_STATE_END
                   for c in more)
    # The timer armed for the withdrawn end fires: nothing is released.
    assert _sent(s.on_timer(Timer.DEVICE_STATE_END, 1.05)) == b""


def test_end_quiet_is_the_settings_value() -> None:
    settings = SessionSettings(arm_engine_config(PROFILE), 0.0, end_quiet=0.3)
    s = Session(settings, 0.0)
    s.on_source_data(memoryview(RP), 1.0)
    assert RequestTimer(Timer.DEVICE_STATE_END, 0.3) in s.on_target_connected(1.0)


# -- the classification deadline ----------------------------------------------------------------

def _classifying(timeout: float = 10.0) -> SessionSettings:
    return SessionSettings(arm_engine_config(PROFILE), 0.0, classify_timeout=timeout)


def test_accept_arms_the_classify_timer_when_set() -> None:
    s = Session(_classifying(7.0), 0.0)
    assert s.on_accepted() == [RequestTimer(Timer.CLASSIFY, 7.0)]


@pytest.mark.parametrize("sent", [b"", b"QE", b"\x16\x03\x01"])
def test_a_connection_silent_at_the_deadline_is_closed(sent: bytes) -> None:
    s = Session(_classifying(), 0.0)
    s.on_accepted()
    out: list[Command] = []
    if sent:
        out += s.on_source_data(memoryview(sent), 1.0)
        out += s.on_target_connected(1.0)
    out = s.on_classify_deadline(10.0, main_open=False)
    done = _finished(out)
    assert done.reason == CloseReason.CLASSIFY_TIMEOUT
    logs = [c for c in out if isinstance(c, Log) and c.event == "classify_timeout"]
    assert logs
    assert logs[0].fields["bytes"] == len(sent)
    assert _sent(out) == b""  # nothing of it reaches the target


def test_a_silent_connection_beside_an_open_main_channel_is_kept() -> None:
    """QEMU's postcopy preempt channel sends nothing until postcopy starts."""
    s = Session(_classifying(), 0.0)
    s.on_accepted()
    assert s.on_classify_deadline(10.0, main_open=True) == []
    assert not s.closed


def test_a_classified_connection_ignores_the_deadline() -> None:
    s = Session(_classifying(), 0.0)
    s.on_accepted()
    s.on_source_data(memoryview(MULTIFD), 1.0)
    s.on_target_connected(1.0)
    assert s.on_classify_deadline(10.0, main_open=False) == []
    assert s.on_timer(Timer.CLASSIFY, 10.0) == []


# -- the kernel relay (Splice) ----------------------------------------------------------------

def _splicing(idle: float = 0.0) -> SessionSettings:
    return replace(_settings(idle=idle), splice=True)


@pytest.mark.parametrize("first", [MULTIFD, OTHER, b"\x16\x03\x01\x02\x00" + bytes(100)])
def test_untouched_channels_are_offered_to_the_kernel_once(first: bytes) -> None:
    s, out = _open(first, _splicing(idle=60))
    assert _of(out, Splice) == [Splice(60)]
    assert _sent(out) == first  # what arrived before is forwarded first
    assert _of(_feed(s, b"more"), Splice) == []  # offered once


def test_no_offer_without_the_setting_or_for_a_main_channel_being_parsed() -> None:
    _, out = _open(MULTIFD)
    assert _of(out, Splice) == []
    s, out = _open(STREAM[:4096], _splicing())
    out += _feed(s, STREAM[4096:-10])
    assert _of(out, Splice) == []


def test_a_main_channel_is_offered_once_the_engine_relays_the_rest_untouched() -> None:
    s, out = _open(BAD[:64], _splicing())
    before = len(_of(out, Splice))
    out = _feed(s, BAD[64:], chunk=64)
    assert before == 0
    assert len(_of(out, Splice)) == 1
    assert s.engine is not None
    assert s.engine.mode.value == "passthrough"


def test_no_offer_after_an_eof() -> None:
    s = Session(_splicing(), 0.0)
    s.on_accepted()
    s.on_source_data(memoryview(MULTIFD), 0.0)
    s.on_eof(Side.SOURCE, 0.0)  # before the target connected
    assert _of(s.on_target_connected(0.0), Splice) == []


def test_spliced_the_idle_timer_is_the_kernel_relays() -> None:
    s, _ = _open(MULTIFD, _splicing(idle=5))
    s.on_spliced(1.0)
    assert s.on_timer(Timer.IDLE, 100.0) == []
    assert not s.closed


def test_splice_end_closed_is_a_clean_end_with_the_byte_counts() -> None:
    s, _ = _open(BAD[:64], _splicing())
    _feed(s, BAD[64:], chunk=64)
    s.on_spliced(1.0)
    s.on_splice_progress(1000, 10)
    out = s.on_splice_end("closed", None, None, 24, 0, 2.0)
    done = _finished(out)
    assert done.outcome is Outcome.PASSTHROUGH
    assert done.reason is None
    assert not done.abort
    assert done.bytes_in == len(BAD) + 1024
    assert done.bytes_out == len(BAD) + 1024
    assert _of(out, Close) == [Close(abort=False)]


@pytest.mark.parametrize(("how", "side", "reason"), [
    ("error", Side.SOURCE, CloseReason.SOURCE_ERROR),
    ("error", Side.DESTINATION, CloseReason.DESTINATION_ERROR),
    ("idle", None, CloseReason.IDLE_TIMEOUT),
])
def test_splice_end_by_a_failure_aborts(how: str, side: Side | None,
                                       reason: CloseReason) -> None:
    s, _ = _open(MULTIFD, _splicing(idle=5))
    s.on_spliced(1.0)
    done = _finished(s.on_splice_end(how, side, "reset" if side else None, 0, 0, 9.0))
    assert done.outcome is Outcome.FAILED
    assert done.reason is reason
    assert done.abort


def test_shutdown_while_spliced_closes_and_a_late_end_is_ignored() -> None:
    s, _ = _open(MULTIFD, _splicing())
    s.on_spliced(1.0)
    out = s.on_shutdown(2.0)
    assert _of(out, Close) == [Close(abort=True)]
    assert s.on_splice_end("stopped", None, None, 5, 0, 3.0) == []


# -- silent channels of an open migration -----------------------------------------------------

def test_a_silent_channel_of_an_open_migration_is_connected_once() -> None:
    s = Session(_settings(), 0.0, peer_host="192.0.2.1")
    s.on_accepted()
    out = s.on_migration_open()
    assert _of(out, OpenTarget) == [OpenTarget()]
    assert [c.event for c in _of(out, Log)] == ["connect_silent"]
    assert s.on_migration_open() == []  # already connecting
    s.on_target_connected(1.0)
    done = _finished(s.on_eof(Side.SOURCE, 2.0) + s.on_eof(Side.DESTINATION, 2.0))
    assert done.outcome is Outcome.RELAYED
    assert done.channel is None


def test_a_probe_never_connected_stays_empty() -> None:
    s = Session(_settings(), 0.0, peer_host="192.0.2.1")
    s.on_accepted()
    assert _finished(s.on_eof(Side.SOURCE, 1.0)).outcome is Outcome.EMPTY


def test_connect_queue_after_lists_later_sessions_of_the_same_host() -> None:
    q = ConnectQueue()
    early = Session(_settings(), 0.0, peer_host="a")
    main = Session(_settings(), 1.0, peer_host="a")
    later = Session(_settings(), 1.5, peer_host="a")
    other = Session(_settings(), 1.5, peer_host="b")
    for x in (early, main, later, other):
        q.accepted(x)
    assert q.after(main) == [later]


def test_a_device_state_that_came_in_pieces_stretches_the_quiet_window() -> None:
    """Pauses between the reads of the held device state lengthen the window (twice the
    longest), so that a source whose burst arrives slowly is given time to finish it."""
    from migproxy.daemon.quiet import PAUSE_FACTOR

    s = Session(_settings(), 0.0)
    s.on_source_data(memoryview(RP[:64]), 1.0)
    s.on_target_connected(1.0)
    held_from = RP.index(b"\x00\x06", RP.index(b"globalstate")) - 2000
    s.on_source_data(memoryview(RP[64:held_from]), 1.0)
    s.on_source_data(memoryview(RP[held_from : held_from + 1000]), 1.001)
    s.on_source_data(memoryview(RP[held_from + 1000 : -10]), 1.004)  # a 3 ms pause
    cmds = s.on_source_data(memoryview(RP[-10:]), 1.0045)
    timers = [c for c in _of(cmds, RequestTimer) if c.timer == Timer.DEVICE_STATE_END]
    assert [t.delay for t in timers] == [pytest.approx(PAUSE_FACTOR * 0.003)]
    logs = [c for c in _of(cmds, Log) if c.event == "device_state_end_pending"]
    assert logs
    assert logs[0].fields["held_reads"] == 3
    out = s.on_timer(Timer.DEVICE_STATE_END, 1.02)
    assert [e for c in _of(out, Report) for e in c.events
            if isinstance(e, DeviceStateReleased)]
