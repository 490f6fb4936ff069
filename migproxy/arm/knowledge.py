"""The safety knowledge base: which cpu-section differences may be rewritten, and why.

The data is ``knowledge.toml`` in this package (every entry with its reason and source);
this module loads and checks it. :mod:`migproxy.arm.reconcile` applies it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migproxy.arm.registers import parse_register
from migproxy.stream.errors import MigproxyError

PATH = Path(__file__).resolve().parent / "knowledge.toml"
FORMAT = 1


class KnowledgeError(MigproxyError):
    """The knowledge base file is not valid."""


@dataclass(frozen=True)
class Condition:
    """When a register may be dropped (or its value set), or a subsection field holds."""

    any: bool = False
    value_is: int | None = None
    mask: int | None = None  # with value_is: (value & mask) == value_is
    value_in: tuple[int, int] | None = None  # lowest, highest (inclusive)
    equals_low32_of: int | None = None  # a register id of the same stream
    differs_only_in: int | None = None  # set_if: a mask of bits allowed to differ

    def holds(self, v: int, others: Mapping[int, int] | None = None) -> bool:
        """Whether ``v`` meets the condition (``others``: the stream's registers)."""
        if self.any:
            return True
        if self.value_is is not None:
            return (v & self.mask if self.mask is not None else v) == self.value_is
        if self.value_in is not None:
            return self.value_in[0] <= v <= self.value_in[1]
        if self.equals_low32_of is not None:
            other = (others or {}).get(self.equals_low32_of)
            return other is not None and v == other & 0xFFFFFFFF
        return False

    def describe(self, names: dict[int, str]) -> str:
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
class RegisterRule:
    registers: tuple[int, ...]
    reason: str
    source: str
    drop_if: Condition | None = None
    insert: Insert | None = None
    set_if: Condition | None = None
    accel: str | None = None  # None: any accelerator


@dataclass(frozen=True)
class SubsectionRule:
    name: str
    reason: str
    source: str
    field_if: Condition | None = None  # the subsection's single field (big-endian) must meet it
    lacks_register: int | None = None  # ... and this ID register's field must be 0
    lacks_mask: int = 0


@dataclass(frozen=True)
class Knowledge:
    revision: str
    stable_models: frozenset[str]
    registers: tuple[RegisterRule, ...]
    id_registers_reason: str
    id_registers_source: str
    subsections: tuple[SubsectionRule, ...]

    def rule_for(self, reg: int, accel: str) -> RegisterRule | None:
        for r in self.registers:
            if reg in r.registers and (r.accel is None or r.accel == accel):
                return r
        return None

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


def _condition(t: Any, where: str) -> Condition:
    if isinstance(t, dict) and set(t) == {"mask", "value_is"}:
        return Condition(value_is=_int(t["value_is"], where), mask=_int(t["mask"], where))
    if not isinstance(t, dict) or len(t) != 1:
        raise KnowledgeError(f"{where}: a condition is one of any, value_is (optionally with "
                             "mask), value_in, equals_low32_of, differs_only_in")
    ((k, v),) = t.items()
    if k == "value_in":
        if not isinstance(v, list) or len(v) != 2:
            raise KnowledgeError(f"{where}: value_in is [lowest, highest]")
        lo, hi = _int(v[0], where), _int(v[1], where)
        if lo > hi:
            raise KnowledgeError(f"{where}: value_in [{lo}, {hi}] is empty")
        return Condition(value_in=(lo, hi))
    if k == "any" and v is True:
        return Condition(any=True)
    if k == "value_is":
        return Condition(value_is=_int(v, where))
    if k == "equals_low32_of":
        return Condition(equals_low32_of=_reg(v, where))
    if k == "differs_only_in":
        return Condition(differs_only_in=_int(v, where))
    raise KnowledgeError(f"{where}: unknown condition {k!r}")


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
    if not isinstance(t, dict):
        raise KnowledgeError(f"{w}: must be a table")
    extra = set(t) - {"name", "reason", "source", "field_if", "cpu_lacks"}
    if extra:
        raise KnowledgeError(f"{w}: unknown keys {sorted(extra)}")
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


def parse_knowledge(data: dict[str, Any], where: str = "knowledge base") -> Knowledge:
    if data.get("format") != FORMAT:
        raise KnowledgeError(f"{where}: format must be {FORMAT}")
    regs: list[RegisterRule] = []
    for n, t in enumerate(data.get("register", []), 1):
        w = f"{where}: register entry {n}"
        names = t.get("registers")
        if not isinstance(names, list) or not names:
            raise KnowledgeError(f"{w}: registers must be a non-empty list")
        accel = t.get("accel")
        if accel not in (None, "tcg", "kvm"):
            raise KnowledgeError(f"{w}: accel must be tcg or kvm")
        rule = RegisterRule(
            registers=tuple(_reg(x, w) for x in names), reason=_text(t, "reason", w),
            source=_text(t, "source", w),
            drop_if=_condition(t["drop_if"], w) if "drop_if" in t else None,
            insert=_insert(t["insert"], w) if "insert" in t else None,
            set_if=_condition(t["set_if"], w) if "set_if" in t else None, accel=accel)
        if rule.drop_if is None and rule.insert is None and rule.set_if is None:
            raise KnowledgeError(f"{w}: says neither drop_if, insert nor set_if")
        if rule.set_if is not None and rule.set_if.differs_only_in is None:
            raise KnowledgeError(f"{w}: set_if takes differs_only_in")
        extra = set(t) - {"registers", "reason", "source", "drop_if", "insert", "set_if",
                          "accel"}
        if extra:
            raise KnowledgeError(f"{w}: unknown keys {sorted(extra)}")
        regs.append(rule)
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
    return Knowledge(str(data.get("revision", "")), frozenset(models), tuple(regs),
                     _text(ids[0], "reason", f"{where}: id_registers"),
                     _text(ids[0], "source", f"{where}: id_registers"), tuple(subs))


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
