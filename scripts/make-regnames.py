#!/usr/bin/env python3
"""Generate migproxy/arm/regnames.py (register names by encoding) from its source.

    python3 scripts/make-regnames.py [--check]

The source, ``migproxy/arm/regnames.toml``, says for every group of registers where its
names and encodings come from (the Arm ARM, Linux's sysreg definitions, KVM's uapi, QEMU's
``target/arm`` definitions, a TRM). This script checks it (known sources and tables, one
encoding and one name each, names unique ignoring case, aliases naming a register),
expands the numbered families and writes the module's tables as plain literals.
``--check`` writes nothing and fails if the module differs from what the source gives (the
test suite runs the same check: ``tests/arm/test_regnames.py``).
"""

from __future__ import annotations

import argparse
import ast
import itertools
import operator
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "migproxy" / "arm" / "regnames.toml"
MODULE = REPO / "migproxy" / "arm" / "regnames.py"
FORMAT = 1

# table in the source -> (module name, encoding width (0: a literal id), type, what)
TABLES: dict[str, tuple[str, int, str, str]] = {
    "aa64": ("AA64", 5, "dict[tuple[int, int, int, int, int], str]",
             "AArch64 system registers: (op0, op1, crn, crm, op2) -> name"),
    "aa32": ("AA32", 5, "dict[tuple[int, int, int, int, int], str]",
             "AArch32, 32-bit (MRC/MCR): (cp, crn, crm, opc1, opc2) -> name"),
    "aa32_64": ("AA32_64", 3, "dict[tuple[int, int, int], str]",
                "AArch32, 64-bit (MRRC/MCRR): (cp, crm, opc1) -> name"),
    "kvm": ("KVM", 0, "dict[int, str]",
            "KVM pseudo-registers (not system registers; only seen in KVM register lists)"),
}

_OPS: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}


class SourceError(Exception):
    """The source file is not valid."""


Key = tuple[int, ...] | int


@dataclass
class Group:
    comment: str  # what the registers are, and [their sources]
    entries: list[tuple[Any, str]] = field(default_factory=list)  # (key or alias, name)
    notes: dict[str, str] = field(default_factory=dict)  # name -> its own sources and note


@dataclass
class Tables:
    groups: dict[str, list[Group]] = field(default_factory=lambda: {t: [] for t in TABLES})
    aliases: list[Group] = field(default_factory=list)

    def keys(self, table: str) -> dict[Key, str]:
        return {k: n for g in self.groups[table] for k, n in g.entries}


def _eval(expr: int | str, env: dict[str, int], where: str) -> int:
    """An encoding field: an integer, or an expression (+ - * // %) of the variables."""
    if isinstance(expr, int) and not isinstance(expr, bool):
        return expr
    if not isinstance(expr, str):
        raise SourceError(f"{where}: an encoding field is an integer or an expression")

    def walk(node: ast.expr) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name) and node.id in env:
            return env[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        raise SourceError(f"{where}: {expr!r} is not an expression of {sorted(env)}")

    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise SourceError(f"{where}: {expr!r} is not an expression") from None
    return walk(tree.body)


def _sources(entry: dict[str, Any], known: dict[str, str], where: str) -> list[str]:
    src = entry.get("source")
    if not isinstance(src, list) or not src or any(s not in known for s in src):
        raise SourceError(f"{where}: source must list keys of [sources] ({', '.join(known)})")
    return src


def _comment(entry: dict[str, Any], sources: list[str], where: str) -> str:
    group = entry.get("group")
    if not isinstance(group, str) or not group:
        raise SourceError(f"{where}: every entry needs a group (what its registers are)")
    return f"{group} [{', '.join(sources)}]"


def _key(table: str, value: Any, where: str) -> Key:
    width = TABLES[table][1]
    if width == 0:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SourceError(f"{where}: a KVM register is its 64-bit id")
        return value
    if not isinstance(value, list) or len(value) != width or \
            not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise SourceError(f"{where}: an encoding is a list of {width} integers")
    return tuple(value)


def _named(table: str, entry: dict[str, Any], known: dict[str, str], where: str) -> Group:
    extra = set(entry) - {"group", "source", "names"}
    if extra:
        raise SourceError(f"{where}: unknown keys {sorted(extra)}")
    group = Group(_comment(entry, _sources(entry, known, where), where))
    for name, value in entry.get("names", {}).items():
        if isinstance(value, dict):
            if set(value) - {"encoding", "source", "note"} or "encoding" not in value:
                raise SourceError(f"{where}: {name} is an encoding or a table of encoding, "
                                  "source and note")
            own = _sources(value, known, f"{where}: {name}")
            group.notes[name] = f"{name} [{', '.join(own)}]: {value.get('note', '')}"
            value = value["encoding"]
        group.entries.append((_key(table, value, f"{where}: {name}"), name))
    if not group.entries:
        raise SourceError(f"{where}: no names")
    return group


def _expand(family: dict[str, Any], tables: Tables, comment: str,
            where: str) -> Iterator[tuple[str, Group]]:
    """(table, group) of each table a family fills, in the source's order."""
    extra = set(family) - {"group", "source", "range", "only_unallocated", *TABLES}
    if extra:
        raise SourceError(f"{where}: unknown keys {sorted(extra)}")
    ranges = family.get("range")
    if not isinstance(ranges, dict) or not ranges or not all(
            isinstance(r, list) and len(r) == 2 and r[0] <= r[1] for r in ranges.values()):
        raise SourceError(f"{where}: range is a table of variable = [first, last]")
    names = list(ranges)
    only_free = family.get("only_unallocated", False) is True
    for table in (t for t in TABLES if t in family):
        group = Group("family: " + comment)
        taken = tables.keys(table)
        for values in itertools.product(*(range(lo, hi + 1) for lo, hi in ranges.values())):
            env = dict(zip(names, values, strict=True))
            for template, encoding in family[table].items():
                at = f"{where}: {template}"
                if not isinstance(encoding, list) or len(encoding) != TABLES[table][1]:
                    raise SourceError(f"{at}: an encoding is a list of {TABLES[table][1]} fields")
                key = tuple(_eval(e, env, at) for e in encoding)
                if only_free and key in taken:
                    continue
                group.entries.append((key, template.format(**env)))
        yield table, group


def load(path: Path = SOURCE) -> Tables:
    """The tables the source file gives, checked."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise SourceError(f"{path.name}: format must be {FORMAT}")
    known = data.get("sources", {})
    out = Tables()
    for table in TABLES:
        for k, entry in enumerate(data.get(table, []), 1):
            out.groups[table].append(_named(table, entry, known, f"{table} entry {k}"))
    for k, family in enumerate(data.get("family", []), 1):
        where = f"family entry {k}"
        comment = _comment(family, _sources(family, known, where), where)
        for table, group in _expand(family, out, comment, where):
            out.groups[table].append(group)
    for k, entry in enumerate(data.get("aliases", []), 1):
        where = f"aliases entry {k}"
        out.aliases.append(Group(_comment(entry, _sources(entry, known, where), where),
                                 list(entry.get("names", {}).items())))
    _check(out)
    return out


def _check(t: Tables) -> None:
    names: dict[str, str] = {}
    for table in TABLES:
        seen: dict[Key, str] = {}
        for g in t.groups[table]:
            for key, name in g.entries:
                if key in seen:
                    raise SourceError(f"{table}: {name} and {seen[key]} at {key}")
                seen[key] = name
                if name.upper() in names:
                    raise SourceError(f"{name} is used twice (ignoring case)")
                names[name.upper()] = name
    for g in t.aliases:
        for alias, target in g.entries:
            if target.upper() not in names or alias.upper() in names:
                raise SourceError(f"alias {alias}: {target} must be a name, {alias} not one")


def render(t: Tables, source_text: str) -> str:
    data = tomllib.loads(source_text)
    sources = "\n".join(f"``{k}``\n" + textwrap.fill(v, 92, initial_indent="    ",
                                                      subsequent_indent="    ")
                        for k, v in data["sources"].items())
    tables = "\n".join(f"``{mod}``\n    {what}." for mod, _w, _t, what in TABLES.values())
    out = [
        '"""Architectural names of ARM system registers, keyed by encoding.',
        "",
        "Generated by ``scripts/make-regnames.py`` from ``migproxy/arm/regnames.toml``, which",
        "says where each group of names comes from: do not edit this file; edit the source and",
        "run the script. :mod:`migproxy.arm.registers` turns the tables into a lookup by",
        "64-bit register id.",
        "",
        "Tables",
        "------",
        tables,
        "``ALIASES``",
        "    extra spellings accepted when parsing a name (never printed).",
        "",
        "Naming rules",
        "------------",
        data["naming"].strip(),
        "",
        "Sources (each group below names its own)",
        "-----------------------------------------",
        sources,
        '"""',
        "",
        "# Generated by scripts/make-regnames.py from migproxy/arm/regnames.toml: do not edit.",
        "",
    ]
    for table, (mod, width, typ, _what) in TABLES.items():
        out += ["", f"{mod}: {typ} = {{"]
        for g in t.groups[table]:
            out += _comment_lines(g.comment)
            for key, name in g.entries:
                if name in g.notes:
                    out += _comment_lines(g.notes[name])
                k = f"0x{key:016x}" if width == 0 else repr(key)
                out.append(f'    {k}: "{name}",')
        out.append("}")
    out += ["", "ALIASES: dict[str, str] = {"]
    for g in t.aliases:
        out += _comment_lines(g.comment)
        out += [f'    "{alias}": "{target}",' for alias, target in g.entries]
    out.append("}")
    return "\n".join(out) + "\n"


def _comment_lines(text: str) -> list[str]:
    return textwrap.wrap(text, 96, initial_indent="    # ", subsequent_indent="    #   ")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; fail if the module differs from its source")
    args = ap.parse_args()
    try:
        text = render(load(), SOURCE.read_text(encoding="utf-8"))
    except (SourceError, tomllib.TOMLDecodeError) as e:
        print(f"{SOURCE.relative_to(REPO)}: {e}", file=sys.stderr)
        return 1
    if args.check:
        if MODULE.read_text(encoding="utf-8") != text:
            print(f"{MODULE.relative_to(REPO)} differs from {SOURCE.relative_to(REPO)}: run "
                  "scripts/make-regnames.py", file=sys.stderr)
            return 1
        return 0
    MODULE.write_text(text, encoding="utf-8")
    print(f"wrote {MODULE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
