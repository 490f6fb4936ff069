"""Tests for migproxy.arm.knowledge: the shipped knowledge base and the checks of
parse_knowledge (every malformed input is a KnowledgeError saying what is wrong)."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

import migproxy.arm.knowledge as kmod
from migproxy.arm.knowledge import (
    PATH,
    Condition,
    Insert,
    Knowledge,
    KnowledgeError,
    RegisterRule,
    SubsectionRule,
    knowledge,
    parse_knowledge,
)
from migproxy.arm.registers import name_of, parse_register
from migproxy.stream.errors import MigproxyError

RMR_EL1 = parse_register("RMR_EL1")
PAR = parse_register("PAR")
PAR_64 = parse_register("PAR_64")
TCR2_EL1 = parse_register("TCR2_EL1")
ISAR2 = parse_register("ID_AA64ISAR2_EL1")


def _raw() -> dict[str, Any]:
    """The shipped knowledge.toml as TOML data, unchecked."""
    return tomllib.loads(PATH.read_text(encoding="utf-8"))


def entry(**over: Any) -> dict[str, Any]:
    """A valid [[register]] entry; ``over`` replaces keys (None removes one)."""
    e: dict[str, Any] = {"registers": ["RMR_EL1"], "reason": "r", "source": "s",
                         "drop_if": {"value_is": 1}}
    e.update(over)
    return {k: v for k, v in e.items() if v is not None}


def minimal(**over: Any) -> dict[str, Any]:
    """A minimal valid knowledge base; ``over`` replaces keys (None removes one)."""
    d: dict[str, Any] = {"format": 1, "revision": "x", "stable_models": ["cortex-a57"],
                         "register": [entry()],
                         "id_registers": [{"reason": "r", "source": "s"}],
                         "subsection": []}
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def rejected(data: dict[str, Any], message: str) -> None:
    with pytest.raises(KnowledgeError, match=re.escape(message)):
        parse_knowledge(data)


# -- the shipped knowledge base ----------------------------------------------------------------


def test_the_shipped_knowledge_base_loads() -> None:
    kb = knowledge()
    assert isinstance(kb, Knowledge)
    assert kb.revision == _raw()["revision"]
    assert kb.revision
    assert len(kb.registers) == len(_raw()["register"])
    assert [s.name for s in kb.subsections] == ["cpu/wfxt-timer"]
    assert "cortex-a57" in kb.stable_models
    assert "max" not in kb.stable_models
    assert knowledge() is kb  # loaded once


def test_every_shipped_entry_has_a_reason_and_a_source() -> None:
    kb = knowledge()
    texts = [(r.reason, r.source) for r in kb.registers]
    texts += [(s.reason, s.source) for s in kb.subsections]
    texts.append((kb.id_registers_reason, kb.id_registers_source))
    for reason, source in texts:
        assert reason.strip()
        assert source.strip()
        # whitespace of the TOML's multi-line strings is folded into single spaces
        assert "\n" not in reason
        assert "\n" not in source
        assert "  " not in reason


def test_every_shipped_register_name_resolves() -> None:
    kb = knowledge()
    for raw, rule in zip(_raw()["register"], kb.registers, strict=True):
        names = raw.get("registers", [])
        assert rule.registers == tuple(parse_register(n) for n in names)
        assert rule.groups == tuple(raw.get("groups", []))
        for name, reg in zip(names, rule.registers, strict=True):
            assert name_of(reg) == name
    wfxt = kb.subsection("cpu/wfxt-timer")
    assert wfxt is not None
    assert wfxt.lacks_register == ISAR2


def test_shipped_rules_say_what_the_toml_says() -> None:
    kb = knowledge()
    par = kb.rule_for(PAR, "tcg")
    assert par is not None
    assert par.drop_if == Condition(equals_low32_of=PAR_64)
    assert par.insert == Insert(low32_of=PAR_64)
    dfr0 = kb.rule_for(parse_register("ID_DFR0_EL1"), "tcg")
    assert dfr0 is not None
    assert dfr0.set_if == Condition(differs_only_in=0x000F0000)
    assert dfr0 is kb.rule_for(parse_register("ID_DFR0"), "tcg")
    rmr = kb.rule_for(RMR_EL1, "tcg")
    assert rmr is not None
    assert rmr.drop_if == Condition(value_is=1)
    assert rmr.insert == Insert(destination=True)
    bogus = kb.rule_for(parse_register("BOGUS_DBGDTRTX"), "tcg")
    assert bogus is not None
    assert bogus.drop_if == Condition(value_is=0)
    assert bogus.insert == Insert(value=0)


@pytest.mark.parametrize("name", ["TCR2_EL1", "PIRE0_EL1", "PIR_EL1",
                                  "KVM_REG_ARM_VENDOR_HYP_BMAP_2"])
def test_kvm_only_rules_apply_only_under_kvm(name: str) -> None:
    kb = knowledge()
    reg = parse_register(name)
    rule = kb.rule_for(reg, "kvm")
    assert rule is not None
    assert rule.accel == "kvm"
    assert kb.rule_for(reg, "tcg") is None


def test_tcr2_under_kvm_may_be_dropped_or_kept_only_without_the_feature() -> None:
    rule = knowledge().rule_for(TCR2_EL1, "kvm")
    assert rule is not None
    assert rule.drop_if is not None
    assert rule.keep_if is not None
    mmfr3 = parse_register("ID_AA64MMFR3_EL1")
    for cond in (rule.drop_if, rule.keep_if):
        assert cond.holds(0x1DE7EC7EDBADC0DE, {mmfr3: 0x1000000000000000})
        assert not cond.holds(0, {mmfr3: 0x1})
        assert not cond.holds(0, {})  # a stream without ID_AA64MMFR3_EL1 says nothing


def test_rules_without_accel_apply_under_both() -> None:
    kb = knowledge()
    reg = parse_register("DBGDTR_EL0")
    rule = kb.rule_for(reg, "tcg")
    assert rule is not None
    assert rule.accel is None
    assert kb.rule_for(reg, "kvm") is rule


def test_a_register_no_rule_names_has_none() -> None:
    kb = knowledge()
    assert kb.rule_for(parse_register("SCTLR_EL1"), "tcg") is None
    assert kb.rule_for(parse_register("SCTLR_EL1"), "kvm") is None


def test_subsection_finds_the_wfxt_timer() -> None:
    s = knowledge().subsection("cpu/wfxt-timer")
    assert isinstance(s, SubsectionRule)
    assert s.field_if == Condition(value_is=0xFFFF_FFFF_FFFF_FFFF)
    assert s.lacks_register == ISAR2
    assert s.lacks_mask == 0xF
    assert "FEAT_WFxT" in s.reason
    assert knowledge().subsection("cpu/vfp") is None
    assert knowledge().subsection("cpu/made-up") is None


def test_an_unreadable_knowledge_file_is_a_knowledge_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "knowledge.toml"
    bad.write_text("format = = 1\n", encoding="utf-8")
    monkeypatch.setattr(kmod, "_CACHE", None)
    monkeypatch.setattr(kmod, "PATH", bad)
    with pytest.raises(KnowledgeError, match=re.escape(str(bad))):
        knowledge()
    monkeypatch.setattr(kmod, "PATH", tmp_path / "missing.toml")
    with pytest.raises(KnowledgeError, match=re.escape("missing.toml")):
        knowledge()


def test_the_shipped_file_parses_the_same_through_parse_knowledge() -> None:
    assert parse_knowledge(_raw(), "knowledge.toml") == knowledge()


# -- parse_knowledge: valid input ------------------------------------------------------------


def test_a_minimal_knowledge_base_parses() -> None:
    kb = parse_knowledge(minimal())
    assert kb.revision == "x"
    assert kb.stable_models == frozenset({"cortex-a57"})
    assert kb.registers == (RegisterRule(registers=(RMR_EL1,), reason="r", source="s",
                                         drop_if=Condition(value_is=1)),)
    assert kb.id_registers_reason == "r"
    assert kb.id_registers_source == "s"
    assert kb.subsections == ()


def test_conditions_and_inserts_of_every_kind_parse() -> None:
    kb = parse_knowledge(minimal(register=[
        entry(registers=["TCR2_EL1"], drop_if={"any": True}, insert={"value": "destination"},
              accel="kvm"),
        entry(registers=["PAR"], drop_if={"equals_low32_of": "PAR_64"},
              insert={"low32_of": "PAR_64"}),
        entry(registers=["ID_DFR0_EL1"], drop_if=None, set_if={"differs_only_in": 0xF0000}),
        entry(registers=[RMR_EL1], insert={"value": 1}),
    ]))
    tcr2, par, dfr0, rmr = kb.registers
    assert tcr2.drop_if == Condition(any=True)
    assert tcr2.insert == Insert(destination=True)
    assert tcr2.accel == "kvm"
    assert par.drop_if == Condition(equals_low32_of=PAR_64)
    assert par.insert == Insert(low32_of=PAR_64)
    assert dfr0.drop_if is None
    assert dfr0.set_if == Condition(differs_only_in=0xF0000)
    assert rmr.registers == (RMR_EL1,)  # a register given as an id
    assert rmr.insert == Insert(value=1)


def test_reason_and_source_whitespace_is_folded() -> None:
    kb = parse_knowledge(minimal(register=[entry(reason="  one\n two  \n", source="a\tb")]))
    assert kb.registers[0].reason == "one two"
    assert kb.registers[0].source == "a b"


def test_a_subsection_entry_parses() -> None:
    kb = parse_knowledge(minimal(subsection=[{
        "name": "cpu/wfxt-timer", "reason": "r", "source": "s",
        "field_if": {"value_is": 0xFFFF_FFFF_FFFF_FFFF},
        "cpu_lacks": {"register": "ID_AA64ISAR2_EL1", "field_mask": 0xF}}]))
    assert kb.subsections == (SubsectionRule("cpu/wfxt-timer", "r", "s",
                                             field_if=Condition(
                                                 value_is=0xFFFF_FFFF_FFFF_FFFF),
                                             lacks_register=ISAR2, lacks_mask=0xF),)
    assert kb.subsection("cpu/wfxt-timer") is kb.subsections[0]


def test_one_register_under_two_accelerators_is_allowed() -> None:
    kb = parse_knowledge(minimal(register=[
        entry(registers=["TCR2_EL1"], accel="kvm", drop_if={"any": True}),
        entry(registers=["TCR2_EL1"], accel="tcg", drop_if={"value_is": 0}),
    ]))
    kvm, tcg = kb.registers
    assert kb.rule_for(TCR2_EL1, "kvm") is kvm
    assert kb.rule_for(TCR2_EL1, "tcg") is tcg


def test_kvm_rule_of_a_parsed_base_is_ignored_under_tcg() -> None:
    kb = parse_knowledge(minimal(register=[
        entry(registers=["TCR2_EL1"], accel="kvm", drop_if={"any": True})]))
    assert kb.rule_for(TCR2_EL1, "kvm") is kb.registers[0]
    assert kb.rule_for(TCR2_EL1, "tcg") is None


# -- parse_knowledge: invalid input ----------------------------------------------------------


@pytest.mark.parametrize("fmt", [2, 0, "1", None])
def test_a_wrong_format_number_is_rejected(fmt: Any) -> None:
    rejected(minimal(format=fmt), "knowledge base: format must be 1")


def test_the_error_names_where() -> None:
    with pytest.raises(KnowledgeError, match=r"^mine\.toml: format must be 1$"):
        parse_knowledge(minimal(format=2), "mine.toml")
    assert issubclass(KnowledgeError, MigproxyError)


@pytest.mark.parametrize("key", ["reason", "source"])
def test_an_entry_without_reason_or_source_is_rejected(key: str) -> None:
    rejected(minimal(register=[entry(**{key: None})]),
             f"knowledge base: register entry 1: every entry needs a {key}")
    rejected(minimal(register=[entry(**{key: " \n "})]), f"every entry needs a {key}")
    rejected(minimal(register=[entry(**{key: 7})]), f"every entry needs a {key}")


def test_the_error_names_the_entry_number() -> None:
    rejected(minimal(register=[entry(), entry(registers=["PAR"], source=None)]),
             "register entry 2: every entry needs a source")


def test_an_entry_that_says_nothing_is_rejected() -> None:
    rejected(minimal(register=[entry(drop_if=None)]),
             "register entry 1: says one or more of drop_if, insert, set_if, keep_if, "
             "or refuse = true alone")


@pytest.mark.parametrize("cond", [{"value_is": 0}, {"any": True},
                                  {"equals_low32_of": "PAR_64"}])
def test_set_if_without_differs_only_in_is_rejected(cond: dict[str, Any]) -> None:
    rejected(minimal(register=[entry(drop_if=None, set_if=cond)]),
             "register entry 1: set_if takes differs_only_in")


def test_an_unknown_condition_key_is_rejected() -> None:
    rejected(minimal(register=[entry(drop_if={"value_was": 0})]),
             "register entry 1: unknown condition 'value_was'")


@pytest.mark.parametrize("cond", [{}, {"value_is": 0, "any": True}, 0, "any"])
def test_a_condition_must_have_exactly_one_key(cond: Any) -> None:
    rejected(minimal(register=[entry(drop_if=cond)]),
             "a condition is one of any, value_is (optionally with mask), value_in, "
             "equals_low32_of, differs_only_in")


@pytest.mark.parametrize("value", ["0", True, 1.0])
def test_a_condition_value_must_be_an_integer(value: Any) -> None:
    rejected(minimal(register=[entry(drop_if={"value_is": value})]),
             f"register entry 1: expected an integer, not {value!r}")


def test_an_unknown_insert_kind_is_rejected() -> None:
    rejected(minimal(register=[entry(insert={"copy_of": "PAR_64"})]),
             "register entry 1: unknown insert 'copy_of'")
    rejected(minimal(register=[entry(insert={"value": "seven"})]),
             "expected an integer, not 'seven'")
    rejected(minimal(register=[entry(insert={"value": 0, "low32_of": "PAR_64"})]),
             "insert is value = N|\"destination\", or low32_of")


def test_unknown_keys_in_an_entry_are_rejected() -> None:
    rejected(minimal(register=[entry(comment="x", drop="y")]),
             "register entry 1: unknown keys ['comment', 'drop']")


@pytest.mark.parametrize("accel", ["hvf", "KVM", "", 1])
def test_an_accel_other_than_tcg_or_kvm_is_rejected(accel: Any) -> None:
    rejected(minimal(register=[entry(accel=accel)]),
             "register entry 1: accel must be tcg or kvm")


@pytest.mark.parametrize("accel", [None, "kvm", "tcg"])
def test_a_register_in_two_entries_is_rejected(accel: str | None) -> None:
    rejected(minimal(register=[
        entry(registers=["PAR", "RMR_EL1"], accel=accel),
        entry(registers=["RMR"], accel=accel),
        entry(registers=["RMR_EL1"], accel=accel, drop_if={"value_is": 0}),
    ]), f"knowledge base: register 0x{RMR_EL1:x} in entries 1 and 3")


@pytest.mark.parametrize("accels", [(None, "kvm"), ("kvm", None), (None, "tcg")])
def test_an_any_accel_entry_may_not_share_a_register_with_an_accel_entry(
        accels: tuple[str | None, str | None]) -> None:
    """The first matching entry would win, so the other could never apply."""
    first, second = accels
    rejected(minimal(register=[entry(registers=["RMR_EL1"], accel=first),
                               entry(registers=["RMR_EL1"], accel=second)]),
             f"knowledge base: register 0x{RMR_EL1:x} in entries 1 and 2")


@pytest.mark.parametrize("ids", [[], [{"reason": "r", "source": "s"}] * 2, None])
def test_not_exactly_one_id_registers_entry_is_rejected(ids: list[Any] | None) -> None:
    rejected(minimal(id_registers=ids), "knowledge base: one [[id_registers]] entry expected")


@pytest.mark.parametrize("key", ["reason", "source"])
def test_the_id_registers_entry_needs_reason_and_source(key: str) -> None:
    ids = {"reason": "r", "source": "s"}
    del ids[key]
    rejected(minimal(id_registers=[ids]),
             f"knowledge base: id_registers: every entry needs a {key}")


def test_a_register_name_that_does_not_exist_is_rejected() -> None:
    rejected(minimal(register=[entry(registers=["NOPE_EL1"])]),
             "knowledge base: register entry 1: unknown register 'NOPE_EL1'")
    rejected(minimal(register=[entry(drop_if={"equals_low32_of": "PAR_65"})]),
             "register entry 1: unknown register 'PAR_65'")
    rejected(minimal(register=[entry(insert={"low32_of": "NOPE"})]),
             "unknown register 'NOPE'")


@pytest.mark.parametrize("spec", [True, 1.5, None, ["PAR"]])
def test_a_register_must_be_a_name_or_an_id(spec: Any) -> None:
    rejected(minimal(register=[entry(registers=[spec])]),
             f"register entry 1: a register is a name or an id, not {spec!r}")


@pytest.mark.parametrize("names", [[], "RMR_EL1", None])
def test_registers_must_be_a_non_empty_list(names: Any) -> None:
    rejected(minimal(register=[entry(registers=names)]),
             "register entry 1: registers must be a non-empty list")


@pytest.mark.parametrize("models", ["cortex-a57", [1], {"cortex-a57": True}])
def test_stable_models_must_be_a_list_of_names(models: Any) -> None:
    rejected(minimal(stable_models=models),
             "knowledge base: stable_models must be a list of model names")


@pytest.mark.parametrize("key", ["reason", "source"])
def test_a_subsection_entry_needs_reason_and_source(key: str) -> None:
    sub: dict[str, Any] = {"name": "cpu/x", "reason": "r", "source": "s",
                           "field_if": {"value_is": 0}}
    del sub[key]
    rejected(minimal(subsection=[sub]),
             f"knowledge base: subsection entry 1: every entry needs a {key}")


def test_a_bad_subsection_register_is_rejected() -> None:
    rejected(minimal(subsection=[{"name": "cpu/x", "reason": "r", "source": "s",
                                  "cpu_lacks": {"register": "NOPE", "field_mask": 1}}]),
             "subsection entry 1: unknown register 'NOPE'")
    rejected(minimal(subsection=[{"name": "cpu/x", "reason": "r", "source": "s",
                                  "field_if": {"value_is": "-1"}}]),
             "subsection entry 1: expected an integer, not '-1'")


_SUB = {"name": "cpu/x", "reason": "r", "source": "s", "field_if": {"value_is": 0}}


@pytest.mark.parametrize("sub", [
    pytest.param({**_SUB, "cpu_lacks": {"register": "ID_AA64ISAR2_EL1"}}, id="no-field-mask"),
    pytest.param({**_SUB, "cpu_lacks": "ID_AA64ISAR2_EL1"}, id="cpu-lacks-not-a-table"),
    pytest.param({k: v for k, v in _SUB.items() if k != "name"}, id="no-name"),
    pytest.param({"name": "cpu/x", "reason": "r", "source": "s", "field_iff": {"any": True}},
                 id="misspelt-key"),
    pytest.param({**_SUB, "field_if": {"equals_low32_of": "PAR_64"}}, id="register-condition"),
    pytest.param({"name": "cpu/x", "reason": "r", "source": "s"}, id="no-condition"),
    pytest.param({**_SUB, "name": "vfp"}, id="not-a-cpu-subsection"),
])
def test_a_malformed_subsection_entry_is_a_knowledge_error(sub: dict[str, Any]) -> None:
    data = minimal(subsection=[copy.deepcopy(sub)])
    with pytest.raises(KnowledgeError, match="subsection entry 1"):
        parse_knowledge(data)


# -- Condition.describe ------------------------------------------------------------------------


def test_condition_descriptions() -> None:
    names = {PAR_64: "PAR_64"}
    assert Condition(any=True).describe(names) == "any value"
    assert Condition(value_is=0).describe(names) == "value 0x0"
    assert Condition(value_is=0x1F).describe(names) == "value 0x1f"
    assert Condition(equals_low32_of=PAR_64).describe(names) == \
        "equal to the low 32 bits of PAR_64"
    assert Condition(equals_low32_of=PAR_64).describe({}) == "equal to the low 32 bits of ?"
    assert Condition(differs_only_in=0xF0000).describe(names) == \
        "differing only in bits 0xf0000"
    assert Condition().describe(names) == "never"


# -- value predicates: masks and ranges --------------------------------------------------------


@pytest.mark.parametrize(("cond", "value", "holds"), [
    ({"value_is": 0x2, "mask": 0xF}, 0x1232, True),
    ({"value_is": 0x2, "mask": 0xF}, 0x1233, False),
    ({"value_in": [1, 3]}, 1, True),
    ({"value_in": [1, 3]}, 3, True),
    ({"value_in": [1, 3]}, 4, False),
    ({"value_in": [1, 3]}, 0, False),
    ({"any": True}, 12345, True),
])
def test_masks_and_ranges(cond: dict[str, Any], value: int, holds: bool) -> None:
    kb = parse_knowledge(minimal(register=[entry(drop_if=cond)]))
    c = kb.registers[0].drop_if
    assert c is not None
    assert c.holds(value) is holds


@pytest.mark.parametrize(("cond", "message"), [
    ({"value_in": [3, 1]}, "value_in [3, 1] is empty"),
    ({"value_in": [1]}, "value_in is [lowest, highest]"),
    ({"value_in": 1}, "value_in is [lowest, highest]"),
    ({"mask": 1}, "unknown condition 'mask'"),
])
def test_bad_masks_and_ranges(cond: dict[str, Any], message: str) -> None:
    rejected(minimal(register=[entry(drop_if=cond)]), message)


def test_mask_and_range_descriptions() -> None:
    assert Condition(value_is=2, mask=0xF).describe({}) == "value & 0xf == 0x2"
    assert Condition(value_in=(1, 0x10)).describe({}) == "a value from 0x1 to 0x10"


# -- the KVM kinds of entries ------------------------------------------------------------------


def kvm_entry(**over: Any) -> dict[str, Any]:
    return entry(**{"accel": "kvm", **over})


def test_keep_if_refuse_and_groups_parse() -> None:
    kb = parse_knowledge(minimal(register=[
        kvm_entry(registers=None, groups=["ccsidr_demux"], drop_if=None,
                  keep_if={"outside_clidr": True}),
        kvm_entry(registers=None, groups=["pmu"], drop_if=None, refuse=True),
        kvm_entry(drop_if={"when": [{"register": "HCR_EL2", "absent": True}]}),
    ]))
    demux, pmu, rmr = kb.registers
    assert demux.keep_if == Condition(outside_clidr=True)
    assert demux.groups == ("ccsidr_demux",)
    assert pmu.refuse
    assert kb.rule_for(parse_register("PMCR_EL0"), "kvm") is pmu
    assert kb.rule_for(parse_register("PMCR_EL0"), "tcg") is None
    assert rmr.drop_if is not None
    assert rmr.drop_if.holds(5, {})
    assert not rmr.drop_if.holds(5, {parse_register("HCR_EL2"): 0})


@pytest.mark.parametrize(("over", "message"), [
    ({"keep_if": {"any": True}, "accel": None}, 'keep_if and refuse are for accel = "kvm"'),
    ({"refuse": True}, "or refuse = true alone"),
    ({"refuse": "yes", "drop_if": None}, "refuse is true or false"),
    ({"groups": ["caches"]}, "unknown group 'caches'"),
    ({"drop_if": {"when": []}}, "when is a non-empty list of field tests"),
    ({"drop_if": {"when": [{"register": "HCR_EL2"}]}}, "a field test is a table"),
])
def test_bad_kvm_entries_are_named(over: dict[str, Any], message: str) -> None:
    rejected(minimal(register=[kvm_entry(**over)]), message)


@pytest.mark.parametrize(("accepts", "message"), [
    ({}, "accepts is a table"),
    ({"equal": True, "equal_before": "6.3"}, "accepts is equal or any alone"),
    ({"at_most": True, "subset": True}, "accepts is equal or any alone"),
    ({"equal_before": "six"}, "a kernel version is a string"),
    ({"fields_at_most": True, "fixed": {"before": "7.3"}}, "fixed is a table of mask"),
    ({"larger": True}, "unknown accepts keys ['larger']"),
])
def test_bad_kvm_write_entries_are_named(accepts: dict[str, Any], message: str) -> None:
    rejected(minimal(kvm_write=[{"registers": ["CLIDR_EL1"], "accepts": accepts,
                                 "reason": "r", "source": "s"}]), message)


def test_accepts_per_kernel_version() -> None:
    kb = parse_knowledge(minimal(kvm_write=[
        {"registers": ["ID_AA64MMFR1_EL1"], "reason": "r", "source": "s",
         "accepts": {"equal_before": "6.7", "fields_at_most": True,
                     "fixed": {"mask": 0xF0, "before": "7.3"}}}]))
    w = kb.write_rule(parse_register("ID_AA64MMFR1_EL1"))
    assert w is not None
    assert kb.write_rule(parse_register("ID_AA64MMFR0_EL1")) is None
    a = w.accepts
    assert a.accepts(0x11, 0x11, (6, 1))
    assert not a.accepts(0x10, 0x11, (6, 1))
    assert a.accepts(0x10, 0x11, (6, 12))
    assert not a.accepts(0x12, 0x11, (6, 12))
    assert not a.accepts(0x01, 0x11, (6, 12))
    assert a.accepts(0x01, 0x11, (7, 3))
    assert not a.accepts(0x10, 0x11, None)  # an unknown kernel: only its own value
    assert "before Linux 6.7" in a.describe()
    assert "0xf0" in a.describe()
    assert a.describe_for((6, 1)) == "only its own value"
    assert a.describe_for((6, 12)) == ("a value whose every 4-bit field is at most its own, "
                                       "with bits 0xf0 equal to its own")
    assert a.describe_for((7, 3)) == "a value whose every 4-bit field is at most its own"
