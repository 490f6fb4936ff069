"""The safety knowledge base: which cpu-section differences may be rewritten, and why.

The data is ``knowledge.toml`` in this package (every entry with its reason and source);
this module loads and checks it. :mod:`migproxy.arm.reconcile` applies it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from migproxy.arm.plan import RewriteRefused, register_name
from migproxy.arm.registers import (
    AA64_SYSREG_BASE,
    DEMUX_CCSIDR_BASE,
    describe,
    is_id_register,
    parse_register,
)
from migproxy.stream.errors import MigproxyError

PATH = Path(__file__).resolve().parent / "knowledge.toml"
FORMAT = 1


class KnowledgeError(MigproxyError):
    """The knowledge base file is not valid."""


@dataclass(frozen=True)
class FieldTest:
    """``(register & mask) == value`` for another register of the same stream (a register
    the stream lacks fails the test)."""

    register: int
    mask: int = 0
    value: int = 0
    absent: bool = False  # instead: the stream does not list the register at all

    def holds(self, others: Mapping[int, int]) -> bool:
        v = others.get(self.register)
        if self.absent:
            return v is None
        return v is not None and v & self.mask == self.value

    def describe(self) -> str:
        if self.absent:
            return f"the stream does not list {describe(self.register)}"
        return f"{describe(self.register)} & 0x{self.mask:x} == 0x{self.value:x}"


CSSELR_LEVEL_SHIFT = 1  # CCSIDR demux index = CSSELR_EL1: Level [3:1], InD [0]


def clidr_describes(clidr: int, csselr: int) -> bool:
    """Whether CLIDR_EL1's Ctype<n> fields describe the cache that CSSELR value
    ``csselr`` selects (Level = bits [3:1] + 1, InD = bit 0: the instruction cache).

    Ctype: 0 none, 1 instruction only, 2 data only, 3 separate, 4 unified (Arm ARM D23.2
    CLIDR_EL1). A selection of a cache that CLIDR does not describe reads an UNKNOWN
    CCSIDR (Arm ARM D23.2 CSSELR_EL1), so no guest can rely on its value."""
    level, ind = csselr >> CSSELR_LEVEL_SHIFT, csselr & 1
    if level > 6:
        return False
    ctype = (clidr >> (3 * level)) & 7
    return ctype in (1, 3) if ind else ctype in (2, 3, 4)


@dataclass(frozen=True)
class Condition:
    """When a register may be dropped (or its value set, or the destination's own value
    kept), or a subsection field holds."""

    any: bool = False
    value_is: int | None = None
    mask: int | None = None  # with value_is: (value & mask) == value_is
    value_in: tuple[int, int] | None = None  # lowest, highest (inclusive)
    equals_low32_of: int | None = None  # a register id of the same stream
    differs_only_in: int | None = None  # set_if: a mask of bits allowed to differ
    when: tuple[FieldTest, ...] = ()  # and every field test on the stream's registers
    outside_clidr: bool = False  # a CCSIDR demux index the stream's CLIDR_EL1 does not describe

    def holds(self, v: int, others: Mapping[int, int] | None = None,
              index: int | None = None) -> bool:
        """Whether ``v`` meets the condition (``others``: the stream's registers; ``index``:
        the CCSIDR demux index, for ``outside_clidr``)."""
        regs = others or {}
        if not all(t.holds(regs) for t in self.when):
            return False
        if self.outside_clidr:
            clidr = regs.get(CLIDR_EL1)
            return index is not None and clidr is not None and \
                not clidr_describes(clidr, index)
        if self.any:
            return True
        if self.value_is is not None:
            return (v & self.mask if self.mask is not None else v) == self.value_is
        if self.value_in is not None:
            return self.value_in[0] <= v <= self.value_in[1]
        if self.equals_low32_of is not None:
            other = regs.get(self.equals_low32_of)
            return other is not None and v == other & 0xFFFFFFFF
        return bool(self.when) and self.differs_only_in is None

    def describe(self, names: dict[int, str]) -> str:
        text = self._describe_value(names)
        if self.when:
            tests = " and ".join(t.describe() for t in self.when)
            text = tests if text == "never" and self.differs_only_in is None \
                else f"{text}, when {tests}"
        return text

    def _describe_value(self, names: dict[int, str]) -> str:
        if self.outside_clidr:
            return "a cache level the stream's CLIDR_EL1 does not describe"
        if self.any:
            return "any value"
        if self.value_is is not None and self.mask is not None:
            return f"value & 0x{self.mask:x} == 0x{self.value_is:x}"
        if self.value_is is not None:
            return f"value 0x{self.value_is:x}"
        if self.value_in is not None:
            return f"a value from 0x{self.value_in[0]:x} to 0x{self.value_in[1]:x}"
        if self.equals_low32_of is not None:
            return f"equal to the low 32 bits of {names.get(self.equals_low32_of, '?')}"
        if self.differs_only_in is not None:
            return f"differing only in bits 0x{self.differs_only_in:x}"
        return "never"


@dataclass(frozen=True)
class Insert:
    value: int | None = None  # a literal
    destination: bool = False  # the destination manifest's value
    low32_of: int | None = None  # the low 32 bits of another register of the stream


@dataclass(frozen=True)
class Accepts:
    """What a KVM destination accepts when QEMU writes a register's value with
    ``KVM_SET_ONE_REG`` after loading the stream (its own value always)."""

    equal: bool = False  # only its own value
    equal_before: tuple[int, int] | None = None  # before this kernel, only its own value
    fields_at_most: bool = False  # every 4-bit ID field at most its own (unsigned)
    at_most: bool = False  # a value at most its own
    subset: bool = False  # only bits it has itself
    any: bool = False  # any value (vCPU configuration, not a feature)
    fixed_mask: int = 0  # bits that must equal its own ...
    fixed_before: tuple[int, int] | None = None  # ... before this kernel (None: always)

    def accepts(self, v: int, own: int, kernel: tuple[int, int] | None) -> bool:
        if v == own or self.any:
            return True
        if self.equal or kernel is None:
            return False
        if self.equal_before is not None and kernel < self.equal_before:
            return False
        if (v ^ own) & self.fixed_mask and (self.fixed_before is None or
                                            kernel < self.fixed_before):
            return False
        if self.fields_at_most:
            return all((v >> s) & 0xF <= (own >> s) & 0xF for s in range(0, 64, 4))
        if self.at_most:
            return v <= own
        if self.subset:
            return v & ~own == 0
        return self.equal_before is not None

    def _kind(self) -> str | None:
        """What a kernel that takes more than its own value takes, or None (only that)."""
        if self.any:
            return "any value"
        if self.fields_at_most:
            return "a value whose every 4-bit field is at most its own"
        if self.at_most:
            return "a value at most its own"
        if self.subset:
            return "only bits it has itself"
        return None

    def describe_for(self, kernel: tuple[int, int] | None) -> str:
        """What a kernel of this version accepts (``describe`` for an unknown one)."""
        if kernel is None:
            return "only its own value (its kernel version is not known)"
        if self.equal or (self.equal_before is not None and kernel < self.equal_before):
            return "only its own value"
        text = self._kind() or "any value"
        if self.fixed_mask and (self.fixed_before is None or kernel < self.fixed_before):
            text += f", with bits 0x{self.fixed_mask:x} equal to its own"
        return text

    def describe(self) -> str:
        kind = self._kind()
        if self.any or kind is None:
            if self.equal_before is not None and not self.any:
                return (f"any value from Linux {self.equal_before[0]}."
                        f"{self.equal_before[1]} on, only its own before")
            return kind or "only its own value"
        since = (f" (before Linux {self.equal_before[0]}.{self.equal_before[1]} only its "
                 "own value)") if self.equal_before else ""
        if self.fixed_mask:
            until = (f" before Linux {self.fixed_before[0]}.{self.fixed_before[1]}"
                     if self.fixed_before else "")
            since += f", with bits 0x{self.fixed_mask:x} equal to its own{until}"
        return kind + since


@dataclass(frozen=True)
class RegisterRule:
    registers: tuple[int, ...]
    reason: str
    source: str
    drop_if: Condition | None = None
    insert: Insert | None = None
    set_if: Condition | None = None
    accel: str | None = None  # None: any accelerator
    keep_if: Condition | None = None  # KVM: the stream lacks it, the destination keeps its own
    refuse: bool = False  # any difference in it is refused, with this rule's reason
    groups: tuple[str, ...] = ()  # register groups the rule covers too (GROUPS)


@dataclass(frozen=True)
class SubsectionRule:
    """When a cpu subsection may be removed: a knowledge-base ``[[subsection]]`` entry (for
    a destination that does not expect it) or a profile's ``[[subsection]]`` rule."""

    name: str
    reason: str = ""
    source: str = ""
    field_if: Condition | None = None  # the subsection's single field (big-endian) must meet it
    lacks_register: int | None = None  # ... and this ID register's field must be 0
    lacks_mask: int = 0
    otherwise: Literal["refuse", "skip"] = "refuse"  # a profile's rule when field_if fails

    @property
    def field_is(self) -> int | None:
        """The value a profile's rule wants in the field (``field_is``), or None."""
        return self.field_if.value_is if self.field_if is not None else None

    def field_holds(self, payload: bytes) -> bool:
        """Whether the subsection's single field meets ``field_if`` (or there is none)."""
        return self.field_if is None or (
            len(payload) in (1, 2, 4, 8) and self.field_if.holds(int.from_bytes(payload, "big")))

    def problem(self, payload: bytes, src: Mapping[int, int]) -> str | None:
        """Why a destination may not have this subsection removed (``src``: the stream's
        registers), or None."""
        if not self.field_holds(payload):
            assert self.field_if is not None
            return (f"it may be removed only with {self.field_if.describe({})} "
                    f"(it holds 0x{payload.hex()})")
        reg = self.lacks_register
        if reg is not None and (reg not in src or src[reg] & self.lacks_mask):
            got = src.get(reg)
            return (f"it may be removed only when {register_name(reg)} has 0 in bits "
                    f"0x{self.lacks_mask:x} (the CPU lacks the feature); the stream has "
                    f"{'none' if got is None else hex(got)}")
        return None

    def decide(self, payload: bytes) -> bool:
        """Whether a profile removes a subsection with this payload (raises
        :class:`~migproxy.arm.plan.RewriteRefused` when its rule refuses)."""
        if self.field_holds(payload):
            return True
        if self.otherwise == "skip":
            return False
        raise RewriteRefused(f"subsection {self.name} holds 0x{payload.hex()}, the profile "
                             f"removes it only holding 0x{self.field_is or 0:x}")

    def describe(self) -> str:
        cond = "" if self.field_is is None else f" if its field is 0x{self.field_is:x}" \
            f" (otherwise {self.otherwise})"
        return f"remove subsection {self.name}{cond}"


@dataclass(frozen=True)
class WriteRule:
    """A KVM destination validates the value written to these registers."""

    registers: tuple[int, ...]
    groups: tuple[str, ...]
    accepts: Accepts
    reason: str
    source: str


CLIDR_EL1 = 0x603000000013C801


def ccsidr_index(reg: int) -> int | None:
    """The CSSELR value of a CCSIDR demux register id, or None."""
    return reg & 0xFF if reg & ~0xFF == DEMUX_CCSIDR_BASE else None


def is_pmu_register(reg: int) -> bool:
    """The PMUv3 registers KVM lists for a vCPU with a PMU: PMINTENSET/CLR_EL1 (op1 0, CRn
    9, CRm 14), PMCR_EL0 ... PMOVSSET_EL0 (op1 3, CRn 9, CRm 12..14), PMEVCNTR<n>_EL0,
    PMEVTYPER<n>_EL0 and PMCCFILTR_EL0 (op1 3, CRn 14, CRm 8..15); not PMMIR_EL1 (an ID
    register). Arm ARM D23.5."""
    if reg & ~0xFFFF != AA64_SYSREG_BASE or is_id_register(reg):
        return False
    op0, op1, crn, crm = reg >> 14 & 3, reg >> 11 & 7, reg >> 7 & 0xF, reg >> 3 & 0xF
    return op0 == 3 and ((op1 == 0 and crn == 9 and crm == 14) or
                         (op1 == 3 and crn == 9 and 12 <= crm <= 14) or
                         (op1 == 3 and crn == 14 and crm >= 8))


def in_group(reg: int, group: str) -> bool:
    if group == "id_registers":
        return is_id_register(reg)
    if group == "ccsidr_demux":
        return ccsidr_index(reg) is not None
    if group == "pmu":
        return is_pmu_register(reg)
    raise KnowledgeError(f"unknown register group {group!r}")


GROUPS = ("id_registers", "ccsidr_demux", "pmu")


@dataclass(frozen=True)
class Knowledge:
    revision: str
    stable_models: frozenset[str]
    registers: tuple[RegisterRule, ...]
    id_registers_reason: str
    id_registers_source: str
    subsections: tuple[SubsectionRule, ...]

    writes: tuple[WriteRule, ...] = ()

    def rule_for(self, reg: int, accel: str) -> RegisterRule | None:
        """The entry for ``reg``: one that names it, else one of a group it is in."""
        mine = [r for r in self.registers if r.accel is None or r.accel == accel]
        return next((r for r in mine if reg in r.registers), None) or \
            next((r for r in mine if any(in_group(reg, g) for g in r.groups)), None)

    def write_rule(self, reg: int) -> WriteRule | None:
        """How a KVM destination checks a written value of ``reg`` (None: it takes any
        value, the register is guest state): the entry that names it, else its group's."""
        return next((w for w in self.writes if reg in w.registers), None) or \
            next((w for w in self.writes if any(in_group(reg, g) for g in w.groups)), None)

    def subsection(self, name: str) -> SubsectionRule | None:
        for s in self.subsections:
            if s.name == name:
                return s
        return None


def _reg(spec: Any, where: str) -> int:
    if isinstance(spec, int) and not isinstance(spec, bool):
        return spec
    if isinstance(spec, str):
        try:
            return parse_register(spec)
        except ValueError as e:
            raise KnowledgeError(f"{where}: {e}") from None
    raise KnowledgeError(f"{where}: a register is a name or an id, not {spec!r}")


def _int(v: Any, where: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise KnowledgeError(f"{where}: expected an integer, not {v!r}")


def _field_test(t: Any, where: str) -> FieldTest:
    if isinstance(t, dict) and set(t) == {"register", "absent"} and t["absent"] is True:
        return FieldTest(_reg(t["register"], where), absent=True)
    if not isinstance(t, dict) or set(t) != {"register", "mask", "value_is"}:
        raise KnowledgeError(f"{where}: a field test is a table of register, mask, value_is "
                             "(or register and absent = true)")
    return FieldTest(_reg(t["register"], where), _int(t["mask"], where),
                     _int(t["value_is"], where))


def _condition(t: Any, where: str) -> Condition:
    kinds = ("a condition is one of any, value_is (optionally with mask), value_in, "
             "equals_low32_of, differs_only_in, outside_clidr, with or without when")
    if not isinstance(t, dict):
        raise KnowledgeError(f"{where}: {kinds}")
    t = dict(t)
    when: tuple[FieldTest, ...] = ()
    if "when" in t:
        tests = t.pop("when")
        if not isinstance(tests, list) or not tests:
            raise KnowledgeError(f"{where}: when is a non-empty list of field tests")
        when = tuple(_field_test(x, where) for x in tests)
        if not t:
            return Condition(when=when)
    if set(t) == {"mask", "value_is"}:
        return Condition(value_is=_int(t["value_is"], where), mask=_int(t["mask"], where),
                         when=when)
    if len(t) != 1:
        raise KnowledgeError(f"{where}: {kinds}")
    ((k, v),) = t.items()
    if k == "value_in":
        if not isinstance(v, list) or len(v) != 2:
            raise KnowledgeError(f"{where}: value_in is [lowest, highest]")
        lo, hi = _int(v[0], where), _int(v[1], where)
        if lo > hi:
            raise KnowledgeError(f"{where}: value_in [{lo}, {hi}] is empty")
        return Condition(value_in=(lo, hi), when=when)
    if k == "any" and v is True:
        return Condition(any=True, when=when)
    if k == "outside_clidr" and v is True:
        return Condition(outside_clidr=True, when=when)
    if k == "value_is":
        return Condition(value_is=_int(v, where), when=when)
    if k == "equals_low32_of":
        return Condition(equals_low32_of=_reg(v, where), when=when)
    if k == "differs_only_in":
        return Condition(differs_only_in=_int(v, where), when=when)
    raise KnowledgeError(f"{where}: unknown condition {k!r}")


def _kernel(v: Any, where: str) -> tuple[int, int]:
    parsed = kernel_version(v) if isinstance(v, str) else None
    if parsed is None:
        raise KnowledgeError(f"{where}: a kernel version is a string such as \"6.3\"")
    return parsed


def kernel_version(release: str) -> tuple[int, int] | None:
    """``6.12.118+deb13-arm64`` -> (6, 12); None if it does not start with N.N."""
    head = release.split("-")[0].split("+")[0].split(".")
    try:
        return int(head[0]), int(head[1])
    except (IndexError, ValueError):
        return None


def _accepts(t: Any, where: str) -> Accepts:
    if not isinstance(t, dict) or not t:
        raise KnowledgeError(f"{where}: accepts is a table")
    extra = set(t) - {"equal", "equal_before", "fields_at_most", "at_most", "subset", "any",
                      "fixed"}
    if extra:
        raise KnowledgeError(f"{where}: unknown accepts keys {sorted(extra)}")
    kinds = [k for k in ("equal", "fields_at_most", "at_most", "subset", "any")
             if t.get(k) is True]
    alone = kinds in (["equal"], ["any"])
    if len(kinds) > 1 or (alone and ("equal_before" in t or "fixed" in t)) or \
            (not kinds and "equal_before" not in t):
        raise KnowledgeError(f"{where}: accepts is equal or any alone, or equal_before and/or "
                             "one of fields_at_most, at_most, subset (with fixed)")
    fixed = t.get("fixed", {})
    if not isinstance(fixed, dict) or (fixed and "mask" not in fixed) or \
            set(fixed) - {"mask", "before"}:
        raise KnowledgeError(f"{where}: fixed is a table of mask and, optionally, before")
    return Accepts(equal="equal" in kinds,
                   equal_before=_kernel(t["equal_before"], where) if "equal_before" in t
                   else None,
                   fields_at_most="fields_at_most" in kinds, at_most="at_most" in kinds,
                   subset="subset" in kinds, any="any" in kinds,
                   fixed_mask=_int(fixed["mask"], where) if fixed else 0,
                   fixed_before=_kernel(fixed["before"], where) if "before" in fixed else None)


def _registers(t: dict[str, Any], where: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    names = t.get("registers", [])
    groups = t.get("groups", [])
    if not isinstance(names, list) or not isinstance(groups, list) or not (names or groups):
        raise KnowledgeError(f"{where}: registers must be a non-empty list (or groups "
                             "given)")
    for g in groups:
        if g not in GROUPS:
            raise KnowledgeError(f"{where}: unknown group {g!r} (known: {', '.join(GROUPS)})")
    return tuple(_reg(x, where) for x in names), tuple(groups)


def _table(t: Any, keys: frozenset[str], where: str) -> dict[str, Any]:
    """``t`` as an entry's table of only ``keys``, or the error that says why not."""
    if not isinstance(t, dict):
        raise KnowledgeError(f"{where}: must be a table")
    extra = set(t) - keys
    if extra:
        raise KnowledgeError(f"{where}: unknown keys {sorted(extra)}")
    return t


def _write(t: Any, where: str) -> WriteRule:
    t = _table(t, frozenset({"registers", "groups", "accepts", "reason", "source"}), where)
    regs, groups = _registers(t, where)
    return WriteRule(regs, groups, _accepts(t.get("accepts"), where),
                     _text(t, "reason", where), _text(t, "source", where))


def _insert(t: Any, where: str) -> Insert:
    if not isinstance(t, dict) or len(t) != 1:
        raise KnowledgeError(f"{where}: insert is value = N|\"destination\", or low32_of")
    ((k, v),) = t.items()
    if k == "value" and v == "destination":
        return Insert(destination=True)
    if k == "value":
        return Insert(value=_int(v, where))
    if k == "low32_of":
        return Insert(low32_of=_reg(v, where))
    raise KnowledgeError(f"{where}: unknown insert {k!r}")


def _text(t: dict[str, Any], key: str, where: str) -> str:
    v = t.get(key)
    if not isinstance(v, str) or not v.strip():
        raise KnowledgeError(f"{where}: every entry needs a {key}")
    return " ".join(v.split())


def _subsection(t: Any, w: str) -> SubsectionRule:
    t = _table(t, frozenset({"name", "reason", "source", "field_if", "cpu_lacks"}), w)
    name = t.get("name")
    if not isinstance(name, str) or not name.startswith("cpu/"):
        raise KnowledgeError(f"{w}: name must be a cpu subsection name (cpu/...)")
    lacks = t.get("cpu_lacks")
    if lacks is not None and (not isinstance(lacks, dict) or
                              set(lacks) != {"register", "field_mask"}):
        raise KnowledgeError(f"{w}: cpu_lacks is a table of register and field_mask")
    if "field_if" not in t and lacks is None:
        raise KnowledgeError(f"{w}: a subsection rule needs field_if or cpu_lacks "
                             "(else it would remove the subsection whatever it holds)")
    field_if = _condition(t["field_if"], w) if "field_if" in t else None
    if field_if is not None and (field_if.equals_low32_of is not None or
                                 field_if.differs_only_in is not None):
        raise KnowledgeError(f"{w}: field_if takes value_is, mask, value_in or any")
    return SubsectionRule(
        name=name, reason=_text(t, "reason", w), source=_text(t, "source", w),
        field_if=field_if,
        lacks_register=_reg(lacks["register"], w) if lacks else None,
        lacks_mask=_int(lacks["field_mask"], w) if lacks else 0)


_REGISTER_KEYS = frozenset({"registers", "groups", "reason", "source", "drop_if", "insert",
                            "set_if", "accel", "keep_if", "refuse"})


def _register_entry(t: Any, w: str) -> RegisterRule:
    if not isinstance(t, dict):
        raise KnowledgeError(f"{w}: must be a table")
    names, groups = _registers(t, w)
    accel = t.get("accel")
    if accel not in (None, "tcg", "kvm"):
        raise KnowledgeError(f"{w}: accel must be tcg or kvm")
    refuse = t.get("refuse", False)
    if not isinstance(refuse, bool):
        raise KnowledgeError(f"{w}: refuse is true or false")

    def cond(key: str) -> Condition | None:
        return _condition(t[key], w) if key in t else None

    rule = RegisterRule(
        registers=names, reason=_text(t, "reason", w), source=_text(t, "source", w),
        drop_if=cond("drop_if"), insert=_insert(t["insert"], w) if "insert" in t else None,
        set_if=cond("set_if"), accel=accel, keep_if=cond("keep_if"), refuse=refuse,
        groups=groups)
    actions = (rule.drop_if, rule.insert, rule.set_if, rule.keep_if)
    if refuse == any(a is not None for a in actions):
        raise KnowledgeError(f"{w}: says one or more of drop_if, insert, set_if, keep_if, "
                             "or refuse = true alone")
    if (rule.keep_if is not None or refuse) and accel != "kvm":
        raise KnowledgeError(f"{w}: keep_if and refuse are for accel = \"kvm\"")
    if rule.set_if is not None and rule.set_if.differs_only_in is None:
        raise KnowledgeError(f"{w}: set_if takes differs_only_in")
    extra = set(t) - _REGISTER_KEYS
    if extra:
        raise KnowledgeError(f"{w}: unknown keys {sorted(extra)}")
    return rule


def parse_knowledge(data: dict[str, Any], where: str = "knowledge base") -> Knowledge:
    if data.get("format") != FORMAT:
        raise KnowledgeError(f"{where}: format must be {FORMAT}")
    regs = [_register_entry(t, f"{where}: register entry {n}")
            for n, t in enumerate(data.get("register", []), 1)]
    # One entry per register and accelerator; an entry for any accelerator covers both, so
    # it may not share a register with an accelerator's own entry (the first would win).
    seen: dict[int, list[tuple[str | None, int]]] = {}
    for n, r in enumerate(regs, 1):
        for reg in r.registers:
            for accel, m in seen.get(reg, []):
                if accel is None or r.accel is None or accel == r.accel:
                    raise KnowledgeError(f"{where}: register 0x{reg:x} in entries {m} and {n}")
            seen.setdefault(reg, []).append((r.accel, n))
    ids = data.get("id_registers", [])
    if len(ids) != 1:
        raise KnowledgeError(f"{where}: one [[id_registers]] entry expected")
    subs: list[SubsectionRule] = []
    for n, t in enumerate(data.get("subsection", []), 1):
        subs.append(_subsection(t, f"{where}: subsection entry {n}"))
    models = data.get("stable_models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise KnowledgeError(f"{where}: stable_models must be a list of model names")
    writes = tuple(_write(t, f"{where}: kvm_write entry {n}")
                   for n, t in enumerate(data.get("kvm_write", []), 1))
    return Knowledge(str(data.get("revision", "")), frozenset(models), tuple(regs),
                     _text(ids[0], "reason", f"{where}: id_registers"),
                     _text(ids[0], "source", f"{where}: id_registers"), tuple(subs), writes)


_CACHE: Knowledge | None = None


def knowledge() -> Knowledge:
    """The shipped knowledge base (loaded once)."""
    global _CACHE
    if _CACHE is None:
        try:
            data = tomllib.loads(PATH.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise KnowledgeError(f"{PATH}: {e}") from None
        _CACHE = parse_knowledge(data, str(PATH.name))
    return _CACHE
