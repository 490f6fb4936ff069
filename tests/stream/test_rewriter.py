"""The section-rewriter plug-in interface of the engine, with rewriters that are not ARM's:
what the engine hands them, how it applies their plans, and what a refusal does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from migproxy.stream.engine import EngineConfig, Mode, Policy
from migproxy.stream.errors import SectionRefused
from migproxy.stream.events import (
    Aborted,
    DeviceStateHeld,
    DeviceStateReleased,
    Event,
    PassthroughEntered,
)
from migproxy.stream.reasons import Reason, StopReason, stop_reasons
from migproxy.stream.rewriter import Buffer, Decoded, SectionEdit, Splice
from migproxy.stream.vmdesc import FullSection, StreamFacts
from testkit.streams import run_engine
from testkit.synthetic import SynthSpec, build

STREAM = build(SynthSpec(cpus=1, full_pages=4, zero_pages=8))
RUNNING = b"running"



class PluginReason(StopReason):
    """The reasons of the test plug-in (a plug-in declares its own)."""

    NOT_UNDERSTOOD = "plugin_not_understood"
    REFUSED = "plugin_refused"

class Seen(Event):
    """A test event: what the recording rewriter decoded."""

    __slots__ = ("device", "idstr", "offset")

    def __init__(self, idstr: str, offset: int, device: Mapping[str, Any]) -> None:
        self.idstr = idstr
        self.offset = offset
        self.device = device


class RunstateRewriter:
    """Claims ``globalstate`` and replaces its 7-byte runstate ``running`` with ``new``."""

    name = "test-runstate"

    def __init__(self, new: bytes = b"paused!", *, refuse_in: str | None = None) -> None:
        assert len(new) == len(RUNNING)
        self.new = new
        self.refuse_in = refuse_in
        self.plans: list[bool] = []

    def begin(self, facts: StreamFacts) -> None:
        self.facts = facts

    def claims(self, section: FullSection, device: Mapping[str, Any]) -> bool:
        return section.idstr == "globalstate"

    def recognises(self, section: FullSection, device: Mapping[str, Any]) -> str | None:
        return None

    def decode(self, held: Buffer, section: FullSection, offset: int) -> Decoded:
        if self.refuse_in == "decode":
            raise SectionRefused("globalstate not understood", reason=PluginReason.NOT_UNDERSTOOD)
        at = bytes(held).index(RUNNING, section.payload_offset, section.payload_end)
        return Decoded(section, [Seen(section.idstr, offset + section.offset, {})], at)

    def plan(self, decoded: Decoded, *, apply: bool) -> SectionEdit | None:
        self.plans.append(apply)
        if self.refuse_in == "plan":
            raise SectionRefused("a rule refuses", reason=PluginReason.REFUSED)
        at: int = decoded.data
        return SectionEdit(decoded.section, [Splice(at, at + len(RUNNING), self.new)])


class Recorder:
    """Claims every section and records the device entry the engine handed it."""

    name = "test-recorder"

    def __init__(self) -> None:
        self.devices: list[tuple[str, Mapping[str, Any]]] = []

    def begin(self, facts: StreamFacts) -> None:
        pass

    def claims(self, section: FullSection, device: Mapping[str, Any]) -> bool:
        self.devices.append((section.idstr, device))
        return False

    def recognises(self, section: FullSection, device: Mapping[str, Any]) -> str | None:
        return None


def test_a_plan_is_spliced_in_and_everything_else_is_kept() -> None:
    rw = RunstateRewriter()
    out, events, eng = run_engine([STREAM], EngineConfig(rewriters=(rw,)))
    assert eng.mode == Mode.DONE
    assert rw.plans == [True]
    assert len(out) == len(STREAM)
    # Only the runstate changed (the description is re-encoded the way QEMU writes it).
    at = STREAM.rindex(RUNNING, 0, STREAM.rindex(b"\x00\x06"))
    assert out[:at] == STREAM[:at]
    assert out[at : at + 7] == b"paused!"
    assert [e.idstr for e in events if isinstance(e, Seen)] == ["globalstate"]
    released = [e for e in events if isinstance(e, DeviceStateReleased)]
    assert len(released) == 1
    assert released[0].rewritten
    # The output is itself a stream the engine frames completely.
    again, _, eng2 = run_engine([out], EngineConfig())
    assert eng2.mode == Mode.DONE
    assert again == out


def test_the_engine_hands_each_section_its_own_device_entry() -> None:
    rec = Recorder()
    out, _, eng = run_engine([STREAM], EngineConfig(rewriters=(rec,)))
    assert eng.mode == Mode.DONE
    assert out == STREAM
    assert eng.layout is not None
    devices = eng.layout.description["devices"]
    assert [d for _, d in rec.devices] == devices
    assert all(idstr == d["name"] for idstr, d in rec.devices)


def test_without_rewriters_the_engine_frames_and_forwards_untouched() -> None:
    out, events, eng = run_engine([STREAM], EngineConfig())
    assert out == STREAM
    assert eng.mode == Mode.DONE
    assert eng.reports == []
    assert not any(isinstance(e, Seen) for e in events)


def test_dry_run_plans_without_applying() -> None:
    rw = RunstateRewriter()
    out, _, eng = run_engine([STREAM], EngineConfig(rewriters=(rw,), dry_run=True))
    assert out == STREAM
    assert eng.mode == Mode.DONE
    assert rw.plans == [False]


@pytest.mark.parametrize(("phase", "reason"), [("decode", PluginReason.NOT_UNDERSTOOD),
                                                ("plan", PluginReason.REFUSED)])
def test_a_refusal_leaves_the_whole_stream_untouched(phase: str, reason: StopReason) -> None:
    rw = RunstateRewriter(refuse_in=phase)
    out, events, eng = run_engine([STREAM], EngineConfig(rewriters=(rw,)))
    assert out == STREAM
    assert eng.mode == Mode.PASSTHROUGH
    assert eng.stop_reason == reason
    stop = [e for e in events if isinstance(e, PassthroughEntered)]
    assert len(stop) == 1
    assert stop[0].reason == reason
    assert rw.plans == ([] if phase == "decode" else [True])


def test_a_refusal_under_the_abort_policy_forwards_no_device_state() -> None:
    rw = RunstateRewriter(refuse_in="plan")
    out, events, eng = run_engine([STREAM], EngineConfig(rewriters=(rw,),
                                                         policy=Policy.ABORT))
    assert eng.mode == Mode.ABORTED
    hold = next(e.offset for e in events if isinstance(e, DeviceStateHeld))
    assert out == STREAM[:hold]  # the streamed part went on; no device state byte did
    assert [e.reason for e in events if isinstance(e, Aborted)] == [PluginReason.REFUSED]


def test_overlapping_splices_are_a_bug_that_stops_rewriting() -> None:
    class Twice(RunstateRewriter):
        def plan(self, decoded: Decoded, *, apply: bool) -> SectionEdit | None:
            at: int = decoded.data
            return SectionEdit(decoded.section, [Splice(at, at + 7, b"paused!"),
                                                 Splice(at + 3, at + 7, b"xxxx")])
    # A bug in a rewriter (or the engine) stops rewriting; it never crashes the caller.
    out, events, eng = run_engine([STREAM], EngineConfig(rewriters=(Twice(),)))
    assert out == STREAM
    assert eng.mode == Mode.PASSTHROUGH
    (stop,) = [e for e in events if isinstance(e, PassthroughEntered)]
    assert stop.reason == Reason.INTERNAL_ERROR
    assert "overlapping" in stop.message
    assert "AssertionError" in stop.message


@pytest.mark.parametrize("new", [b"paused!!", b"pause"])
def test_a_plan_that_does_not_frame_is_caught_before_release(new: bytes) -> None:
    """The rewritten device state is framed again with its new description before it is
    released: a splice that changes a section's size without saying so (no new field
    count) is a bug, and the original goes out untouched."""
    class Resize(RunstateRewriter):
        def plan(self, decoded: Decoded, *, apply: bool) -> SectionEdit | None:
            at: int = decoded.data
            return SectionEdit(decoded.section, [Splice(at, at + len(RUNNING), new)])

    out, events, eng = run_engine([STREAM], EngineConfig(rewriters=(Resize(),)))
    assert out == STREAM
    assert eng.mode == Mode.PASSTHROUGH
    (stop,) = [e for e in events if isinstance(e, PassthroughEntered)]
    assert stop.reason == Reason.INTERNAL_ERROR
    assert "DescriptionMismatch" in stop.message
    assert not any(isinstance(e, DeviceStateReleased) for e in events)


def test_the_engine_asks_claiming_rewriters_to_recognise_the_layout_with_the_return_path(
        ) -> None:
    class Picky(RunstateRewriter):
        def recognises(self, section: FullSection, device: Mapping[str, Any]) -> str | None:
            return "not a globalstate layout I know"

    rp = build(SynthSpec(cpus=1, full_pages=4, zero_pages=8, return_path=True))
    out, events, eng = run_engine([rp], EngineConfig(rewriters=(Picky(),)), quiet=True)
    assert out == rp
    assert eng.mode == Mode.PASSTHROUGH
    (stop,) = [e for e in events if isinstance(e, PassthroughEntered)]
    assert stop.reason == Reason.DESCRIPTION_NOT_RECOGNISED
    assert "section 'globalstate' instance 0: not a globalstate layout I know" in stop.message
    # Without the return path the end is the source's EOF: the layout is not asked.
    out, events, eng = run_engine([STREAM], EngineConfig(rewriters=(Picky(),)))
    assert eng.mode == Mode.DONE
    assert out != STREAM




def test_a_plug_in_declares_its_own_reasons() -> None:
    class WithReasons:
        reasons = tuple(PluginReason)

    got = stop_reasons(WithReasons(), object(), WithReasons())
    assert got == (*Reason, *PluginReason)
    assert not {r.value for r in PluginReason} & {r.value for r in Reason}
    assert EngineConfig(rewriters=(WithReasons(),)).stop_reasons == got  # type: ignore[arg-type]
    assert not PluginReason.REFUSED.source_ended
    assert Reason.TRUNCATED.source_ended
