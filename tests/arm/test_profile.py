"""Register profiles: parsing, validation and application."""

from __future__ import annotations

import pytest

from migproxy.arm.plan import CpuPlan, register_name
from migproxy.arm.profile import (
    ProfileError,
    RewriteRefused,
    builtin_profiles,
    default_profile,
    load_profile,
    parse_profile,
    profile_from_dict,
)

BOGUS = 0x40200000200E0298
A, B, C = 0x603000000013C000, 0x603000000013C005, 0x603000000013C030


def test_default_profile_is_the_seed_compat_list() -> None:
    p = default_profile()
    assert p.name == "default"
    assert [(r.action, r.register, r.value_is, r.otherwise) for r in p.rules] == [
        ("drop", BOGUS, 0, "refuse")]
    assert "default" in builtin_profiles()


def _changes(plan: CpuPlan) -> list[tuple[str, str, int | None, int | None]]:
    return [(c.action, c.what, c.old, c.new) for c in plan.changes]


def test_drop_is_conditional_and_refuses_otherwise() -> None:
    p = default_profile()
    r = p.plan([1, BOGUS, 0x6030000000139828], [5, 0, 7])
    assert r.indexes == [1, 0x6030000000139828]
    assert r.values == [5, 7]
    assert _changes(r) == [("drop", register_name(BOGUS), 0, None)]
    with pytest.raises(RewriteRefused, match="BOGUS_DBGDTRTX"):
        p.plan([BOGUS], [1])
    assert not p.plan([1, 2], [3, 4]).changes


def test_skip_leaves_the_register() -> None:
    p = parse_profile(f'[[rule]]\naction="drop"\nregister="{A:#x}"\nvalue_is=0\n'
                      'otherwise="skip"\n')
    r = p.plan([A], [9])
    assert r.indexes == [A]
    assert r.values == [9]
    assert not r.changes
    assert not r.refused


def test_insert_keeps_order_and_never_overrides() -> None:
    p = parse_profile(f'[[rule]]\naction="insert"\nregister="{B:#x}"\n'
                      'value="0xffffffffffffffff"\n')
    r = p.plan([A, C], [1, 3])
    assert r.indexes == [A, B, C]
    assert r.values == [1, 2**64 - 1, 3]
    r = p.plan([B], [5])
    assert r.values == [5]
    assert not r.changes


def test_set_changes_only_present_registers() -> None:
    p = parse_profile('[[rule]]\naction="set"\nregister="ID_DFR0"\nvalue=6\nvalue_is=5\n')
    assert p.plan([0x40200000200F0082], [5]).values == [6]
    assert p.plan([1], [5]).indexes == [1]
    with pytest.raises(RewriteRefused):
        p.plan([0x40200000200F0082], [4])


@pytest.mark.parametrize(("text", "message"), [
    ("name = 3", "'name' must be a non-empty string"),
    ("foo = 1", "unknown keys"),
    ('[[rule]]\naction="remove"\nregister="MIDR_EL1"', "action must be one of"),
    ('[[rule]]\naction="drop"', "'register' is missing"),
    ('[[rule]]\naction="drop"\nregister="NO_SUCH_REG"', "NO_SUCH_REG"),
    ('[[rule]]\naction="insert"\nregister="MIDR_EL1"', "needs a 'value'"),
    ('[[rule]]\naction="drop"\nregister="MIDR_EL1"\nvalue=1', "drop takes no 'value'"),
    ('[[rule]]\naction="set"\nregister="MIDR_EL1"\nvalue=-1', "64-bit unsigned"),
    ('[[rule]]\naction="set"\nregister="MIDR_EL1"\nvalue="zz"', "not an integer"),
    ('[[rule]]\naction="drop"\nregister="MIDR_EL1"\n[[rule]]\naction="drop"\nregister="0x603000000013c000"',
     "already has rule 1"),
    ('[[rule]]\naction="drop"\nregister="MIDR_EL1"\notherwise="maybe"', "refuse' or 'skip"),
    ("[[rule]", "invalid TOML"),
])
def test_invalid_profiles_have_clear_errors(text: str, message: str) -> None:
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace("'", "'")):
        parse_profile(text, "p.toml")


def test_to_toml_round_trips() -> None:
    p = parse_profile("""
name = "x"
description = "round trip"
[[rule]]
action = "set"
register = "ID_DFR0_EL1"
value = "0x8000000000000001"
value_is = 3
otherwise = "skip"
note = 'a "quoted" note'
[[rule]]
action = "insert"
register = "cp14 crn0 crm5 opc1 0 opc2 0"
value = 0
""")
    q = parse_profile(p.to_toml())
    assert q.rules == p.rules
    assert q.name == "x"
    assert q.description == "round trip"


def test_load_profile_from_file_and_errors(tmp_path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text('[[rule]]\naction="drop"\nregister="PAR"\n')
    p = load_profile(str(f))
    assert p.name == "mine"
    assert p.rules[0].register == 0x40200000200F3A00
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(str(tmp_path / "missing.toml"))
    with pytest.raises(ProfileError, match="no built-in profile"):
        load_profile("nonexistent-profile")
    with pytest.raises(ProfileError, match="must be a table"):
        profile_from_dict({"rule": [1]}, "x")


def test_shipped_profiles_load() -> None:
    from pathlib import Path

    shipped = sorted((Path(__file__).resolve().parents[2] / "config" / "profiles").glob("*.toml"))
    assert len(shipped) >= 2
    for f in shipped:
        p = load_profile(str(f))
        assert p.name == f.stem
        assert p.rules


# -- subsection rules ---------------------------------------------------------------------------

_WFXT_PROFILE = '''
name = "11.1-to-10.0.13"
[[rule]]
action = "insert"
register = "ID_AA64ISAR0_EL1"
value = 0x11120
[[subsection]]
action = "remove"
name = "cpu/wfxt-timer"
field_is = "0xffffffffffffffff"
'''


def test_a_profile_can_remove_a_subsection_as_the_manifests_do() -> None:
    from migproxy.arm.destination import Destination
    from migproxy.arm.profile import parse_profile
    from migproxy.arm.rewriter import arm_engine_config
    from testkit.streams import real_stream, run_engine

    prof = parse_profile(_WFXT_PROFILE)
    data = real_stream("v11.1.3-virt-10.0-cortex-a57-smp1")
    by_profile = run_engine([data], arm_engine_config(prof))
    by_destination = run_engine([data], arm_engine_config(None, Destination.load("qemu-10.0.13")))
    assert by_profile[2].mode == "done"
    assert by_profile[0] == by_destination[0]
    assert b"cpu/wfxt-timer" in data
    assert b"cpu/wfxt-timer" not in by_profile[0]
    assert parse_profile(prof.to_toml()).subsections == prof.subsections


def test_a_subsection_rule_refuses_or_skips_when_its_field_differs() -> None:
    from migproxy.arm.profile import RewriteRefused, subsection_rule

    rule = subsection_rule("cpu/wfxt-timer", 0xFFFF_FFFF_FFFF_FFFF)
    assert rule.decide(b"\xff" * 8)
    with pytest.raises(RewriteRefused, match="holds 0x00000000000004d2"):
        rule.decide((1234).to_bytes(8, "big"))
    assert not subsection_rule("cpu/wfxt-timer", 0, "skip").decide(b"\x01" * 8)
    assert subsection_rule("cpu/x").decide(b"anything")
    assert "if its field is 0x0 (otherwise skip)" in \
        subsection_rule("cpu/wfxt-timer", 0, "skip").describe()


@pytest.mark.parametrize(("table", "message"), [
    ('action = "insert"\nname = "cpu/x"', "action must be 'remove'"),
    ('action = "remove"\nname = "vfp"', "name must be a cpu subsection"),
    ('action = "remove"\nname = "cpu/x"\nfield = 1', "unknown keys \\['field'\\]"),
    ('action = "remove"\nname = "cpu/x"\notherwise = "maybe"', "otherwise must be"),
    ('action = "remove"\nname = "cpu/x"\nfield_is = "zz"', "is not an integer"),
])
def test_bad_subsection_rules(table: str, message: str) -> None:
    from migproxy.arm.profile import parse_profile

    with pytest.raises(ProfileError, match=message):
        parse_profile(f'name = "p"\n[[subsection]]\n{table}\n')


def test_two_rules_for_one_subsection() -> None:
    from migproxy.arm.profile import parse_profile

    with pytest.raises(ProfileError, match="already has a rule"):
        parse_profile('name = "p"\n[[subsection]]\naction = "remove"\nname = "cpu/x"\n'
                      '[[subsection]]\naction = "remove"\nname = "cpu/x"\n')


def test_a_profile_plan_is_carried_out_and_reported_as_before() -> None:
    """A profile's plan goes through the same executor as a destination's: CpuRewritten
    reports its register changes, then a CpuReconciled (by the profile) the subsections
    removed, without reasons."""
    from migproxy.arm.events import CpuReconciled, CpuRewritten
    from migproxy.arm.rewriter import arm_engine_config
    from testkit.streams import real_stream, run_engine

    prof = parse_profile(_WFXT_PROFILE)
    _out, events, _eng = run_engine([real_stream("v11.1.3-virt-10.0-cortex-a57-smp1")],
                                    arm_engine_config(prof))
    mine = [e for e in events if isinstance(e, CpuRewritten | CpuReconciled)]
    assert [type(e) for e in mine] == [CpuRewritten, CpuReconciled]
    rewritten, reconciled = mine
    assert isinstance(rewritten, CpuRewritten)
    assert isinstance(reconciled, CpuReconciled)
    assert rewritten.count_after == rewritten.count_before + len(rewritten.inserted)
    assert reconciled.destination == "profile 11.1-to-10.0.13"
    assert reconciled.changes == ("remove subsection cpu/wfxt-timer",)
    assert reconciled.guest_visible == ()
    assert reconciled.applied
