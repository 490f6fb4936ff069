"""The ARM cpu rewriter as a plug-in: what it claims, what it reports, what it plans."""

from __future__ import annotations

from typing import Any

import pytest

from migproxy.arm.cpu_section import F_IDX, F_VAL, CpuLayoutError
from migproxy.arm.events import CpuRewritten, CpuSeen
from migproxy.arm.profile import default_profile, parse_profile
from migproxy.arm.rewriter import ArmCpuRewriter, arm_engine_config
from migproxy.stream.engine import Mode
from migproxy.stream.events import DeviceStateHeld
from migproxy.stream.vmdesc import FullSection
from testkit.streams import run_engine
from testkit.synthetic import DEFAULT_CPREGS, SynthSpec, build

BOGUS = 0x40200000200E0298


@pytest.mark.parametrize(("idstr", "vmsd_name", "expected"), [
    ("cpu", "cpu", True),
    ("cpu", "cpu_common", False),
    ("cpu", None, False),
    ("cpu_common", "cpu", False),
    ("CPU", "cpu", False),
])
def test_claims_needs_the_idstr_and_the_vmsd_name(idstr: str, vmsd_name: str | None,
                                                  expected: bool) -> None:
    dev: dict[str, Any] = {"name": idstr, "instance_id": 0, "version": 22}
    if vmsd_name is not None:
        dev["vmsd_name"] = vmsd_name
    sec = FullSection(0, 10, 20, 25, 3, idstr, 0, 22, 1)
    assert ArmCpuRewriter().claims(sec, dev) is expected


def test_without_a_profile_it_reports_every_cpu_and_plans_nothing() -> None:
    stream = build(SynthSpec(cpus=2))
    out, events, eng = run_engine([stream], arm_engine_config(None))
    assert out == stream
    assert eng.mode == Mode.DONE
    seen = [e.cpu for e in events if isinstance(e, CpuSeen)]
    assert [c.instance_id for c in seen] == [0, 1]
    assert all(c.indexes == tuple(r for r, _ in DEFAULT_CPREGS) for c in seen)
    assert not any(isinstance(e, CpuRewritten) for e in events)


def _held_cpu(stream: bytes) -> tuple[bytes, FullSection]:
    """The held device state of ``stream`` and its cpu section (offsets relative to it)."""
    _, events, eng = run_engine([stream], arm_engine_config(None))
    assert eng.layout is not None
    hold = next(e.offset for e in events if isinstance(e, DeviceStateHeld))
    (sec,) = [s for s in eng.layout.items if isinstance(s, FullSection) and s.idstr == "cpu"]
    return stream[hold:], sec


def test_a_plan_is_one_splice_over_the_arrays_and_the_new_counts() -> None:
    held, sec = _held_cpu(build(SynthSpec(cpus=1)))
    rw = ArmCpuRewriter(default_profile())
    decoded = rw.decode(held, sec, 1000)
    (seen,) = decoded.events
    assert isinstance(seen, CpuSeen)
    assert seen.cpu.section_offset == 1000 + sec.offset
    edit = rw.plan(decoded, apply=True)
    assert edit is not None
    assert len(edit.splices) == 1
    n = len(DEFAULT_CPREGS) - 1
    assert edit.field_counts == {F_IDX: n, F_VAL: n}
    (ev,) = edit.events
    assert isinstance(ev, CpuRewritten)
    assert ev.dropped == ((BOGUS, 0),)
    assert ev.applied
    splice = edit.splices[0]
    assert splice.end - splice.start - len(splice.data) == 16  # one id and one value fewer
    # A profile that changes nothing plans nothing.
    same = parse_profile(f'name = "x"\n[[rule]]\naction = "set"\nregister = "0x{BOGUS:x}"\n'
                         "value = 0\n")
    assert ArmCpuRewriter(same).plan(decoded, apply=True) is None


def test_emptying_the_list_is_refused_when_applied_and_reported_in_a_dry_run() -> None:
    rules = "".join(f'[[rule]]\naction = "drop"\nregister = "0x{r:x}"\n'
                    for r, _ in DEFAULT_CPREGS)
    prof = parse_profile('name = "all"\n' + rules)
    held, sec = _held_cpu(build(SynthSpec(cpus=1)))
    decoded = ArmCpuRewriter(prof).decode(held, sec, 0)
    with pytest.raises(CpuLayoutError, match="empty"):
        ArmCpuRewriter(prof).plan(decoded, apply=True)
    edit = ArmCpuRewriter(prof).plan(decoded, apply=False)
    assert edit is not None
    (ev,) = edit.events
    assert isinstance(ev, CpuRewritten)
    assert not ev.applied
    assert ev.count_after == 0
