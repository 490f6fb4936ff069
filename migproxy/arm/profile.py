"""Register profiles: the rules that turn one QEMU version's cpreg list into another's.

A profile is a TOML file::

    name = "default"
    description = "Drop the bogus AArch32 DBGDTRTX register (QEMU 8.1-10.0.2 -> 10.0.3+)"

    [[rule]]
    action = "drop"                  # drop | insert | set
    register = "BOGUS_DBGDTRTX"      # name, 0x id, S3_0_C0_C6_0 or "cp14 crn0 crm5 opc1 3 opc2 0"
    value_is = 0                     # optional condition on the current value
    otherwise = "refuse"             # refuse (default) | skip, when the condition fails
    note = "free text"

Actions:

* ``drop``: remove the register from both arrays if present.
* ``insert``: add the register with ``value`` if absent (kept in ascending order);
  a register already present keeps its value.
* ``set``: change the value of a present register to ``value``; an absent one is left absent.

``value_is`` makes a drop or set conditional. When the register's value differs,
``otherwise = "refuse"`` refuses the whole rewrite (the engine then passes the stream
through untouched or aborts, per policy) and ``"skip"`` leaves the register as it is.
Values are TOML integers or strings (``"0x8000000000000000"`` for values above 2**63-1).

A profile can also remove cpu subsections::

    [[subsection]]
    action = "remove"
    name = "cpu/wfxt-timer"
    field_is = "0xffffffffffffffff"  # optional: only if its single field holds this
    otherwise = "refuse"             # refuse (default) | skip

The subsection's bytes and its entry in the VM description go; the section, its footer and
the rest of the description stay exact.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from migproxy.arm.knowledge import Condition, SubsectionRule
from migproxy.arm.plan import Change, CpuPlan, RewriteRefused, register_name
from migproxy.arm.registers import describe, format_id, parse_register
from migproxy.stream.errors import UsageError
from migproxy.stream.tomlfile import TomlFileError, load_toml_file, parse_toml

Action = Literal["drop", "insert", "set"]
_ACTIONS = ("drop", "insert", "set")
_U64 = (1 << 64) - 1
BUILTIN_PREFIX = "builtin:"


class ProfileError(UsageError):
    """A register profile is invalid."""

    prefix = "invalid profile: "


@dataclass(frozen=True)
class Rule:
    action: Action
    register: int
    value: int | None = None
    value_is: int | None = None
    otherwise: Literal["refuse", "skip"] = "refuse"
    note: str = ""

    def describe(self) -> str:
        text = f"{self.action} {describe(self.register)} ({format_id(self.register)})"
        if self.value is not None:
            text += f" = 0x{self.value:x}"
        if self.value_is is not None:
            text += f" if value is 0x{self.value_is:x}, else {self.otherwise}"
        return text


@dataclass
class Profile:
    name: str
    rules: list[Rule]
    description: str = ""
    source: str = ""
    subsections: list[SubsectionRule] = field(default_factory=list)

    def plan(self, indexes: Sequence[int], values: Sequence[int],
             subsections: Mapping[str, bytes] | None = None) -> CpuPlan:
        """Compile the rules for one cpu section (its cpreg arrays and ``subsections``:
        name -> payload of those sent, in order) into its plan; raise
        :class:`RewriteRefused` if a rule refuses."""
        if len(indexes) != len(values):
            raise ValueError("index and value arrays differ in length")
        plan = CpuPlan(list(indexes), list(values), explained=False)
        for rule in self.rules:
            change = self._apply(rule, plan.indexes, plan.values)
            if change is not None:
                plan.changes.append(change)
        for name, payload in (subsections or {}).items():
            if any(r.name == name and r.decide(payload) for r in self.subsections):
                plan.remove_subsections.append(name)
                plan.changes.append(Change("remove", name, None, None, ""))
        return plan

    def _apply(self, rule: Rule, ids: list[int], vals: list[int]) -> Change | None:
        """Apply one rule to the arrays (in place): the change it made, or None."""
        reg = rule.register
        i = bisect.bisect_left(ids, reg)
        present = i < len(ids) and ids[i] == reg
        if rule.action == "insert":
            if present:
                return None
            assert rule.value is not None
            ids.insert(i, reg)
            vals.insert(i, rule.value)
            return Change("insert", register_name(reg), None, rule.value, rule.note)
        if not present:
            return None
        cur = vals[i]
        if rule.value_is is not None and cur != rule.value_is:
            if rule.otherwise == "refuse":
                raise RewriteRefused(
                    f"profile {self.name!r}: {describe(reg)} ({format_id(reg)}) has value "
                    f"0x{cur:x}, the rule '{rule.describe()}' needs 0x{rule.value_is:x}")
            return None  # otherwise = "skip": the register keeps its value
        if rule.action == "drop":
            del ids[i]
            del vals[i]
            return Change("drop", register_name(reg), cur, None, rule.note)
        assert rule.value is not None
        if cur == rule.value:
            return None
        vals[i] = rule.value
        return Change("set", register_name(reg), cur, rule.value, rule.note)

    def to_toml(self) -> str:
        lines = [f"name = {_toml_str(self.name)}"]
        if self.description:
            lines.append(f"description = {_toml_str(self.description)}")
        for r in self.rules:
            lines += ["", "[[rule]]", f"action = {_toml_str(r.action)}",
                      f"register = {_toml_str(describe(r.register))}  # {format_id(r.register)}"]
            if r.value is not None:
                lines.append(f"value = {_toml_int(r.value)}")
            if r.value_is is not None:
                lines.append(f"value_is = {_toml_int(r.value_is)}")
                lines.append(f"otherwise = {_toml_str(r.otherwise)}")
            if r.note:
                lines.append(f"note = {_toml_str(r.note)}")
        for sr in self.subsections:
            lines += ["", "[[subsection]]", 'action = "remove"', f"name = {_toml_str(sr.name)}"]
            if sr.field_is is not None:
                lines.append(f"field_is = {_toml_int(sr.field_is)}")
                lines.append(f"otherwise = {_toml_str(sr.otherwise)}")
        return "\n".join(lines) + "\n"


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_int(v: int) -> str:
    return f'"0x{v:x}"' if v > (1 << 63) - 1 else f"0x{v:x}"


def _value(raw: Any, where: str) -> int:
    if isinstance(raw, bool):
        raise ProfileError(f"{where}: expected an integer, found a boolean")
    if isinstance(raw, int):
        v = raw
    elif isinstance(raw, str):
        try:
            v = int(raw, 0)
        except ValueError:
            raise ProfileError(f"{where}: {raw!r} is not an integer") from None
    else:
        raise ProfileError(f"{where}: expected an integer or a string, found {raw!r}")
    if not 0 <= v <= _U64:
        raise ProfileError(f"{where}: {raw!r} is not a 64-bit unsigned value")
    return v


def _subsection_rules(raw: Any, source: str) -> list[SubsectionRule]:
    if not isinstance(raw, list):
        raise ProfileError(f"{source}: 'subsection' must be an array of tables ([[subsection]])")
    out: list[SubsectionRule] = []
    for k, t in enumerate(raw, 1):
        where = f"{source}: subsection {k}"
        if not isinstance(t, dict):
            raise ProfileError(f"{where}: must be a table")
        extra = set(t) - {"action", "name", "field_is", "otherwise", "note"}
        if extra:
            raise ProfileError(f"{where}: unknown keys {sorted(extra)}")
        if t.get("action") != "remove":
            raise ProfileError(f"{where}: action must be 'remove'")
        name = t.get("name")
        if not isinstance(name, str) or not name.startswith("cpu/"):
            raise ProfileError(f"{where}: name must be a cpu subsection (cpu/...)")
        if any(r.name == name for r in out):
            raise ProfileError(f"{where}: subsection {name} already has a rule")
        otherwise = t.get("otherwise", "refuse")
        if otherwise not in ("refuse", "skip"):
            raise ProfileError(f"{where}: otherwise must be 'refuse' or 'skip'")
        field_is = _value(t["field_is"], f"{where}: field_is") if "field_is" in t else None
        out.append(subsection_rule(name, field_is, otherwise))
    return out


def subsection_rule(name: str, field_is: int | None = None,
                    otherwise: Literal["refuse", "skip"] = "refuse") -> SubsectionRule:
    """A profile's rule that removes the cpu subsection ``name`` (only while its single
    field holds ``field_is``, if given; else it refuses or skips, per ``otherwise``)."""
    return SubsectionRule(name, field_if=None if field_is is None else
                          Condition(value_is=field_is), otherwise=otherwise)


_RULE_KEYS = frozenset({"action", "register", "value", "value_is", "otherwise", "note"})


def _rule(r: Any, where: str) -> Rule:
    """One ``[[rule]]`` table of a profile."""
    if not isinstance(r, dict):
        raise ProfileError(f"{where}: must be a table")
    extra = set(r) - _RULE_KEYS
    if extra:
        raise ProfileError(f"{where}: unknown keys {sorted(extra)}")
    action = r.get("action")
    if action not in _ACTIONS:
        raise ProfileError(f"{where}: action must be one of {', '.join(_ACTIONS)}, "
                           f"found {action!r}")
    if "register" not in r:
        raise ProfileError(f"{where}: 'register' is missing")
    try:
        reg = parse_register(str(r["register"]))
    except ValueError as e:
        raise ProfileError(f"{where}: {e}") from None
    value = _value(r["value"], f"{where}: value") if "value" in r else None
    value_is = _value(r["value_is"], f"{where}: value_is") if "value_is" in r else None
    if action in ("insert", "set") and value is None:
        raise ProfileError(f"{where}: {action} needs a 'value'")
    if action == "drop" and value is not None:
        raise ProfileError(f"{where}: drop takes no 'value' (did you mean value_is?)")
    if action == "insert" and value_is is not None:
        raise ProfileError(f"{where}: insert takes no 'value_is'")
    otherwise = r.get("otherwise", "refuse")
    if otherwise not in ("refuse", "skip"):
        raise ProfileError(f"{where}: otherwise must be 'refuse' or 'skip'")
    note = r.get("note", "")
    if not isinstance(note, str):
        raise ProfileError(f"{where}: note must be a string")
    return Rule(action, reg, value, value_is, otherwise, note)


def profile_from_dict(data: dict[str, Any], source: str) -> Profile:
    known_top = {"name", "description", "rule", "subsection"}
    extra = set(data) - known_top
    if extra:
        raise ProfileError(f"{source}: unknown keys {sorted(extra)} (expected {sorted(known_top)})")
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise ProfileError(f"{source}: 'name' must be a non-empty string")
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise ProfileError(f"{source}: 'rule' must be an array of tables ([[rule]])")
    rules: list[Rule] = []
    seen: dict[int, int] = {}
    for k, r in enumerate(raw_rules, 1):
        where = f"{source}: rule {k}"
        rule = _rule(r, where)
        if rule.register in seen:
            raise ProfileError(f"{where}: register {describe(rule.register)} already has rule "
                               f"{seen[rule.register]}")
        seen[rule.register] = k
        rules.append(rule)
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise ProfileError(f"{source}: 'description' must be a string")
    return Profile(name, rules, desc, source,
                   _subsection_rules(data.get("subsection", []), source))


def parse_profile(text: str, source: str = "<string>") -> Profile:
    try:
        data = parse_toml(text, source)
    except TomlFileError as e:
        raise ProfileError(str(e)) from None
    return profile_from_dict(data, source)


def builtin_profiles() -> list[str]:
    root = resources.files("migproxy.arm") / "profiles"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_profile(spec: str) -> Profile:
    """Load a profile from a file path, or a built-in one by name (``default``)."""
    name = spec[len(BUILTIN_PREFIX):] if spec.startswith(BUILTIN_PREFIX) else spec
    path = Path(spec)
    if not spec.startswith(BUILTIN_PREFIX) and (path.suffix == ".toml" or path.exists()):
        try:
            data = load_toml_file(spec, "profile ")
        except TomlFileError as e:
            raise ProfileError(str(e)) from None
        return profile_from_dict(data, str(path))
    res = resources.files("migproxy.arm") / "profiles" / f"{name}.toml"
    if not res.is_file():
        raise ProfileError(f"no profile file {spec!r} and no built-in profile {name!r} "
                           f"(built-in: {', '.join(builtin_profiles())})")
    return parse_profile(res.read_text(encoding="utf-8"), BUILTIN_PREFIX + name)


def default_profile() -> Profile:
    return load_profile(BUILTIN_PREFIX + "default")
