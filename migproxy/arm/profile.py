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
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from migproxy.arm.registers import describe, format_id, parse_register
from migproxy.stream.errors import SectionRefused, UsageError
from migproxy.stream.reasons import Reason
from migproxy.stream.tomlfile import TomlFileError, load_toml_file, parse_toml

Action = Literal["drop", "insert", "set"]
_ACTIONS = ("drop", "insert", "set")
_U64 = (1 << 64) - 1
BUILTIN_PREFIX = "builtin:"


class ProfileError(UsageError):
    """A register profile is invalid."""

    prefix = "invalid profile: "


class RewriteRefused(SectionRefused):
    """A profile rule's condition does not hold, so the cpu section must not be rewritten.

    ``detail`` says which kind of condition (``condition_failed``).
    """

    reason = Reason.PROFILE_REFUSED

    def __init__(self, detail: str, message: str) -> None:
        self.detail = detail
        super().__init__(message)


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
class RewriteResult:
    indexes: list[int]
    values: list[int]
    dropped: list[tuple[int, int]] = field(default_factory=list)
    inserted: list[tuple[int, int]] = field(default_factory=list)
    set: list[tuple[int, int, int]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.dropped or self.inserted or self.set)


@dataclass(frozen=True)
class SubsectionRule:
    """Remove a cpu subsection (``field_is``: only while its single field holds this)."""

    name: str
    field_is: int | None = None
    otherwise: Literal["refuse", "skip"] = "refuse"

    def describe(self) -> str:
        cond = "" if self.field_is is None else f" if its field is 0x{self.field_is:x}" \
            f" (otherwise {self.otherwise})"
        return f"remove subsection {self.name}{cond}"

    def decide(self, payload: bytes) -> bool:
        """Whether to remove a subsection with this payload (raises when it refuses)."""
        if self.field_is is None:
            return True
        holds = len(payload) in (1, 2, 4, 8) and int.from_bytes(payload, "big") == self.field_is
        if holds:
            return True
        if self.otherwise == "skip":
            return False
        raise RewriteRefused("condition_failed",
                             f"subsection {self.name} holds 0x{payload.hex()}, the profile "
                             f"removes it only holding 0x{self.field_is:x}")


@dataclass
class Profile:
    name: str
    rules: list[Rule]
    description: str = ""
    source: str = ""
    subsections: list[SubsectionRule] = field(default_factory=list)

    def apply(self, indexes: list[int], values: list[int]) -> RewriteResult:
        """Apply the rules to one cpu's arrays; raise :class:`RewriteRefused` if a rule refuses."""
        if len(indexes) != len(values):
            raise ValueError("index and value arrays differ in length")
        ids = list(indexes)
        vals = list(values)
        res = RewriteResult(ids, vals)
        for rule in self.rules:
            i = bisect.bisect_left(ids, rule.register)
            present = i < len(ids) and ids[i] == rule.register
            if rule.action == "insert":
                if not present:
                    assert rule.value is not None
                    ids.insert(i, rule.register)
                    vals.insert(i, rule.value)
                    res.inserted.append((rule.register, rule.value))
                continue
            if not present:
                continue
            cur = vals[i]
            if rule.value_is is not None and cur != rule.value_is:
                if rule.otherwise == "refuse":
                    raise RewriteRefused(
                        "condition_failed",
                        f"profile {self.name!r}: {describe(rule.register)} "
                        f"({format_id(rule.register)}) has value 0x{cur:x}, the rule "
                        f"'{rule.describe()}' needs 0x{rule.value_is:x}")
                res.skipped.append((rule.register, f"value 0x{cur:x}"))
                continue
            if rule.action == "drop":
                del ids[i]
                del vals[i]
                res.dropped.append((rule.register, cur))
            else:
                assert rule.value is not None
                if cur != rule.value:
                    vals[i] = rule.value
                    res.set.append((rule.register, cur, rule.value))
        return res

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
        out.append(SubsectionRule(name, field_is, otherwise))
    return out


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
