"""The fleet view (``migproxy plan --fleet``): which host builds migrate to which, what
changes and why, and which pairs are refused and why.

A *host* is one destination manifest (:mod:`migproxy.arm.manifest`): one QEMU build, and
under KVM one host kernel on one host CPU. Hosts are compared only when they can meet: the
same machine type, CPU model and accelerator (one *group*, one matrix), and under KVM the
same host CPU (a different host CPU is a different problem: those cells are "not
compared", not refusals).

For each ordered pair (source, destination) the source manifest stands for the stream:
its cpregs are the stream's cpu state (ids and values) and its cpu section version the
stream's, and the reconciliation of the route (:class:`migproxy.arm.destination.
Destination`, the shipped knowledge base) says what it would do. Two things a manifest
cannot say, and the view says so:

* register values that hold guest state (a timer's enable bit, ...) are those of the guest
  the source manifest was made from; a rule with a condition on them is checked again on
  each migration;
* a manifest records the names of the cpu subsections its build sends, not their payloads
  (guest state). A subsection the destination does not expect is tried with a few
  payloads (:data:`PROBES`); when the outcome depends on the payload the cell *depends on
  the guest's state*: it migrates only if the guest's state meets the rule.

:func:`compute` gives the data (:class:`Fleet`); :func:`render_text`, :func:`to_json`,
:func:`render_html` and :func:`render_svg` present it. Only :func:`load_specs` reads files.
"""

from __future__ import annotations

import fnmatch
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migproxy.arm.cpu_section import CpuLayoutError
from migproxy.arm.destination import Destination, where
from migproxy.arm.knowledge import Knowledge, knowledge
from migproxy.arm.manifest import (
    SHIPPED,
    Manifest,
    ManifestError,
    ManifestSet,
    load_set,
    shipped_sets,
)
from migproxy.arm.plan import Change, CpuPlan

# Payloads a subsection the destination does not expect is tried with: none (a field
# check fails on it), and a 64-bit field of all zeros and of all ones (e.g. an unarmed
# timer's expiry, -1). Outcomes that differ between them depend on the guest's state.
PROBES: tuple[bytes, ...] = (b"", bytes(8), b"\xff" * 8)

NOTE_GUEST_STATE = (
    "Conditions on guest state (register values such as a timer's enable bit) are taken "
    "from the source manifest's values (the state of the guest it was made from) and are "
    "checked again on each migration. A manifest has no subsection payloads: a cell marked "
    "'?' migrates only if the guest's state meets the condition shown.")

SAME, AS_IS, MIGRATES, GUEST_VISIBLE, REFUSED, NOT_COMPARED = (
    "same", "as is", "migrates", "migrates, guest-visible", "refused", "not compared")

LEGEND: tuple[tuple[str, str, str], ...] = (
    # (verdict, code, meaning)
    (SAME, "=", "same: nothing changes"),
    (AS_IS, "A", "as is: the destination loads the stream unchanged; N registers differ "
                 "(An), each kept by a rule (KVM)"),
    (MIGRATES, "M", "migrates: N changes (Mn), none guest-visible"),
    (GUEST_VISIBLE, "G", "migrates with guest-visible changes (opted in; Gn changes)"),
    (REFUSED, "R", "refused (Rn: n refusals)"),
    (NOT_COMPARED, "x", "not compared: different host CPU"),
)
CONDITIONAL_MARK = "?"
CONDITIONAL_MEANING = "(suffix) only if the guest's state meets a condition"


# -- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """One manifest of the fleet, from the set ``set_name``."""

    manifest: Manifest
    set_name: str
    label: str  # Manifest.host and the machine type; unique within its group

    @property
    def host_cpu(self) -> str:
        return self.manifest.host_cpu


@dataclass(frozen=True)
class CellChange:
    """One change of a cell, as the reconciliation describes it."""

    action: str  # an open set: "drop", "insert", "set", "remove", ...
    what: str
    text: str  # Change.describe()
    reason: str  # the first sentence of why (from Change.explain())
    guest_visible: bool
    conditional: bool = False  # made only if the guest's state meets a condition

    @classmethod
    def of(cls, c: Change, *, conditional: bool = False) -> CellChange:
        text, explained = c.describe(), c.explain()
        reason = explained.removeprefix(text).removeprefix(":").strip() \
            if explained.startswith(text) else explained
        return cls(str(c.action), str(c.what), text, reason, bool(c.guest_visible),
                   conditional)


@dataclass(frozen=True)
class Cell:
    """The verdict for one ordered pair (source row, destination column)."""

    source: int  # index into the group's hosts
    destination: int
    verdict: str
    changes: tuple[CellChange, ...] = ()
    refusals: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()  # what the guest's state must meet (see PROBES)

    @property
    def code(self) -> str:
        """The short code of the matrix: ``=``, ``M3``, ``G1``, ``R20``, ``x``, with
        ``?`` appended when the cell depends on the guest's state."""
        base = {SAME: "=", NOT_COMPARED: "x", AS_IS: f"A{len(self.changes)}",
                MIGRATES: f"M{len(self.changes)}",
                GUEST_VISIBLE: f"G{len(self.changes)}",
                REFUSED: f"R{len(self.refusals)}"}[self.verdict]
        return base + (CONDITIONAL_MARK if self.conditions else "")


@dataclass(frozen=True)
class Group:
    """Hosts that can meet: one machine type, CPU model and accelerator."""

    accel: str
    machine: str
    cpu: str
    hosts: tuple[Host, ...]
    cells: tuple[tuple[Cell, ...], ...]  # [source][destination]

    @property
    def title(self) -> str:
        return f"machine {self.machine}, cpu {self.cpu}, {self.accel}"


@dataclass(frozen=True)
class Fleet:
    kb_revision: str
    groups: tuple[Group, ...]
    opt_in: tuple[str, ...] = ()  # registers opted in for guest-visible changes
    notes: tuple[str, ...] = field(default=(NOTE_GUEST_STATE,))


# -- loading ----------------------------------------------------------------------------------


def _is_glob(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def load_specs(specs: Sequence[str]) -> list[ManifestSet]:
    """The manifest sets a ``--fleet`` SPEC list names, in order. A SPEC is

    * a shipped set name (``linux-6.12-neoverse-n1-qemu-10.0.13``, ``qemu-11.1.3``), or a
      glob of shipped set names (``'linux-*-neoverse-n1-*'``, ``'qemu-*'``, ``'*'``);
    * a manifest file, or a directory of manifest files (one set);
    * a directory of set directories (``migproxy/arm/manifests``): each is one set.
    """
    out: list[ManifestSet] = []
    for spec in specs:
        if _is_glob(spec) and "/" not in spec and not Path(spec).exists():
            names = fnmatch.filter(shipped_sets(), spec)
            if not names:
                raise ManifestError(f"no shipped manifest set matches {spec!r} (shipped: "
                                    f"{', '.join(shipped_sets())})")
            out += [load_set(n) for n in names]
            continue
        p = Path(spec)
        shipped = "/" not in spec and (SHIPPED / spec).is_dir()
        if p.is_dir() and not shipped and not any(p.glob("*.json")):
            subs = sorted(d for d in p.iterdir() if d.is_dir() and any(d.glob("*.json")))
            if not subs:
                raise ManifestError(f"{p}: no manifest files (*.json) nor set directories")
            out += [load_set(str(d)) for d in subs]
            continue
        out.append(load_set(spec))
    return out


# -- computing --------------------------------------------------------------------------------


def _version_key(v: str) -> tuple[tuple[int, str], ...]:
    """Natural order: 6.1 < 6.12 < 7.3; 7.2.22 < 10.0.2 < 10.0.13."""
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.+-]", v))


def _host_order(h: Host) -> tuple[Any, ...]:
    m = h.manifest
    return (m.host_cpu, _version_key(m.kernel), _version_key(m.qemu), h.set_name)


def _hosts(sets: Iterable[ManifestSet]) -> dict[tuple[str, str, str], list[Host]]:
    """The distinct manifests of ``sets``, grouped by (accel, machine, cpu), ordered by
    host CPU, kernel and QEMU version; labels made unique within a group."""
    groups: dict[tuple[str, str, str], list[Host]] = {}
    seen: set[Manifest] = set()
    for s in sets:
        for m in s.manifests:
            if m in seen:
                continue
            seen.add(m)
            groups.setdefault((m.accel, m.machine, m.cpu), []).append(
                Host(m, s.name, f"{m.host} ({m.machine})"))
    for key, hosts in groups.items():
        hosts.sort(key=_host_order)
        labels = [h.label for h in hosts]
        groups[key] = [h if labels.count(h.label) == 1 else
                       Host(h.manifest, h.set_name, f"{h.label} [{h.set_name}]")
                       for h in hosts]
    return dict(sorted(groups.items(),
                       key=lambda kv: (kv[0][0], _version_key(kv[0][1]), kv[0][2])))


def _plan(dest: Destination, src: Manifest, subsections: dict[str, bytes]) -> CpuPlan | str:
    """The route's plan for a stream with the source manifest's cpu state, or the reason
    the section cannot be rewritten at all (a different cpu section version)."""
    indexes = [i for i, _v in src.cpregs]
    values = [v for _i, v in src.cpregs]
    try:
        _m, plan = dest.plan(src.machine, indexes, values, subsections,
                             src.cpu_section_version)
    except CpuLayoutError as e:
        return str(e)
    return plan


def _extra(plan: CpuPlan | str, base: CpuPlan) -> tuple[tuple[Change, ...], tuple[str, ...]]:
    """What ``plan`` says beyond ``base``: (changes, refusals)."""
    if isinstance(plan, str):
        return (), (plan,)
    known = {c.explain() for c in base.changes}
    return (tuple(c for c in plan.changes if c.explain() not in known),
            tuple(r for r in plan.refusals if r not in base.refusals))


_HOLDS = re.compile(r" \(it holds 0x[0-9a-fA-F]*\)")


def compare(src: Manifest, dst: Manifest, dest: Destination, s: int = 0, d: int = 0) -> Cell:
    """The cell for migrating a guest of ``src`` to ``dst`` with the route ``dest`` (whose
    manifest set is ``dst``); ``s``, ``d``: the hosts' indexes in their group."""
    if src.host_cpu != dst.host_cpu:
        return Cell(s, d, NOT_COMPARED)
    # The destination expects the others too: the reconciliation leaves them alone, and
    # their payload does not matter.
    common = {n: b"" for n in src.subsections if n in dst.subsections}
    base = _plan(dest, src, common)
    if isinstance(base, str):
        return Cell(s, d, REFUSED, refusals=(base,))
    changes = [CellChange.of(c) for c in base.changes]
    refusals = list(base.refusals)
    conditions: list[str] = []
    for name in (n for n in src.subsections if n not in dst.subsections):
        outcomes = [_extra(_plan(dest, src, {**common, name: p}), base) for p in PROBES]
        if len({(tuple(c.explain() for c in ch), rf) for ch, rf in outcomes}) == 1:
            changes += [CellChange.of(c) for c in outcomes[0][0]]
            refusals += outcomes[0][1]
            continue
        # The payload decides. What it must meet: the refusals of the payloads that fail,
        # without the probe's own value.
        texts = list(dict.fromkeys(_HOLDS.sub("", r) for _ch, rf in outcomes for r in rf))
        passing = [ch for ch, rf in outcomes if not rf]
        if passing:
            changes += [CellChange.of(c, conditional=True) for c in passing[0]]
            conditions += texts
        else:
            refusals += texts
    if refusals:
        verdict = REFUSED
    elif any(c.guest_visible for c in changes):
        verdict = GUEST_VISIBLE
    elif not changes:
        verdict = SAME
    else:
        verdict = AS_IS if all(c.action == "keep" for c in changes) else MIGRATES
    return Cell(s, d, verdict, tuple(changes), tuple(refusals),
                tuple(conditions) if verdict != REFUSED else ())


def compute(sets: Iterable[ManifestSet], *, kb: Knowledge | None = None,
            opt_in: frozenset[int] = frozenset(), opt_in_names: Sequence[str] = (),
            reference: Sequence[Manifest] | None = None) -> Fleet:
    """The fleet of the manifests of ``sets``: one :class:`Group` per machine type, CPU
    model and accelerator, with every ordered pair compared. ``reference``: every manifest
    known, for the CPU models' constants (default: the shipped ones and those of ``sets``),
    as :meth:`Destination.load` does."""
    sets = list(sets)
    kb = kb or knowledge()
    if reference is None:
        reference = [m for n in shipped_sets() for m in load_set(n).manifests]
    ref = tuple(reference) + tuple(m for s in sets for m in s.manifests)
    groups = []
    for (accel, machine, cpu), hosts in _hosts(sets).items():
        routes = [Destination(ManifestSet(h.set_name, (h.manifest,)), kb, accel, opt_in, ref)
                  for h in hosts]
        cells = tuple(tuple(compare(a.manifest, b.manifest, routes[j], i, j)
                            for j, b in enumerate(hosts))
                      for i, a in enumerate(hosts))
        groups.append(Group(accel, machine, cpu, tuple(hosts), cells))
    return Fleet(kb.revision, tuple(groups), tuple(opt_in_names))


# -- presenting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Story:
    """What a cell says, with the destination's name taken out, so that cells that say
    the same are shown once."""

    verdict: str
    code: str
    changes: tuple[tuple[str, tuple[str, ...]], ...]  # (reason, change texts), in order
    conditions: tuple[str, ...]
    refusals: tuple[str, ...]

    def lines(self) -> list[str]:
        """The story as indented text lines."""
        out: list[str] = []
        for reason, texts in self.changes:
            out += [f"  {t}" for t in texts] + [f"    why: {reason}"]
        out += [f"  only if the guest's state allows: {c}" for c in self.conditions]
        out += [f"  refused: {r}" for r in self.refusals]
        return out

    @property
    def summary(self) -> str:
        parts = [self.verdict]
        if self.changes:
            n = sum(len(t) for _r, t in self.changes)
            parts.append(f"{n} change{'s' * (n != 1)}")
        if self.refusals:
            parts.append(f"{len(self.refusals)} refusal{'s' * (len(self.refusals) != 1)}")
        if self.conditions:
            parts.append("depends on the guest's state")
        return ", ".join(parts)


def story(group: Group, cell: Cell, *, everything: bool = False) -> Story:
    """The cell's :class:`Story` (changes grouped by their reason). A refused cell's story
    is its refusals: nothing is changed (``everything``: the changes too)."""
    name = where(group.hosts[cell.destination].manifest)  # how the refusals name it

    def plain(text: str) -> str:
        return text.replace(name, "the destination")

    by_reason: dict[str, list[str]] = {}
    for c in cell.changes if everything or cell.verdict != REFUSED else ():
        by_reason.setdefault(c.reason, []).append(
            c.text + (" (only if the guest's state allows)" if c.conditional else ""))
    return Story(cell.verdict, cell.code, tuple((r, tuple(t)) for r, t in by_reason.items()),
                 tuple(plain(c) for c in cell.conditions),
                 tuple(plain(r) for r in cell.refusals))


def stories(group: Group, *, every: bool = False) -> list[tuple[list[Cell], Story]]:
    """The cells with something to say (not ``same``, not ``not compared``), grouped by
    identical story, in the order of their first cell; ``every``: one entry per cell,
    ``same`` cells included."""
    out: dict[Story | int, tuple[list[Cell], Story]] = {}
    for row in group.cells:
        for cell in row:
            if cell.verdict == NOT_COMPARED or (cell.verdict == SAME and not every):
                continue
            st = story(group, cell, everything=every)
            key: Story | int = len(out) if every else st
            out.setdefault(key, ([], st))[0].append(cell)
    return list(out.values())


def _pair(cell: Cell) -> str:
    return f"{cell.source + 1} -> {cell.destination + 1}"


def legend_line() -> str:
    return ("legend: " + "; ".join(f"{code} {meaning}" for _v, code, meaning in LEGEND)
            + f"; {CONDITIONAL_MARK} {CONDITIONAL_MEANING}")


def render_text(fleet: Fleet, *, verbose: bool = False) -> str:
    """The terminal view: per group the hosts, the matrix (rows: source, columns:
    destination), the legend, then what each cell changes and why (cells that say the same
    together; ``verbose``: each cell on its own)."""
    out = [f"fleet view, knowledge base revision {fleet.kb_revision}"
           + (f"; opted in for guest-visible changes: {', '.join(fleet.opt_in)}"
              if fleet.opt_in else "")]
    out += [f"note: {n}" for n in fleet.notes]
    for g in fleet.groups:
        n = len(g.hosts)
        out += ["", f"== {g.title}: {n} host{'s' * (n != 1)} ==", ""]
        width = len(str(n))
        out += [f"  {i:>{width}}  {h.label}  [{h.set_name}]" for i, h in enumerate(g.hosts, 1)]
        w = max(4, *(len(c.code) + 1 for row in g.cells for c in row))
        head = "source \\ destination"
        out += ["", f"  {head:<{len(head)}}" + "".join(f"{j:>{w}}" for j in range(1, n + 1))]
        out += [f"  {i:<{len(head)}}" + "".join(f"{c.code:>{w}}" for c in row)
                for i, row in enumerate(g.cells, 1)]
        out += ["", legend_line()]
        for cells, st in stories(g, every=verbose):
            out += ["", f"{', '.join(_pair(c) for c in cells)} ({st.summary}):", *st.lines()]
    return "\n".join(out)


def to_json(fleet: Fleet) -> dict[str, Any]:
    """A machine-readable fleet: hosts, and every cell with its changes and refusals."""
    def host(h: Host, i: int) -> dict[str, Any]:
        m = h.manifest
        return {"index": i, "label": h.label, "set": h.set_name, "qemu": m.qemu,
                "machine": m.machine, "cpu": m.cpu, "accel": m.accel, "kernel": m.kernel,
                "host_cpu": m.host_cpu}

    def cell(c: Cell) -> dict[str, Any]:
        return {"source": c.source + 1, "destination": c.destination + 1,
                "verdict": c.verdict, "code": c.code,
                "changes": [{"action": x.action, "what": x.what, "change": x.text,
                             "reason": x.reason, "guest_visible": x.guest_visible,
                             "conditional": x.conditional} for x in c.changes],
                "refusals": list(c.refusals), "conditions": list(c.conditions)}

    return {"kb_revision": fleet.kb_revision, "opt_in": list(fleet.opt_in),
            "notes": list(fleet.notes),
            "legend": {v: meaning for v, _code, meaning in LEGEND},
            "groups": [{"accel": g.accel, "machine": g.machine, "cpu": g.cpu,
                        "hosts": [host(h, i) for i, h in enumerate(g.hosts, 1)],
                        "cells": [cell(c) for row in g.cells for c in row]}
                       for g in fleet.groups]}


# -- HTML and SVG -----------------------------------------------------------------------------

COLOURS: dict[str, str] = {SAME: "#d9d9d9", AS_IS: "#a6cee3", MIGRATES: "#7fc97f",
                           GUEST_VISIBLE: "#fdc05a",
                           REFUSED: "#e8747c", NOT_COMPARED: "#ffffff"}
CONDITIONAL_COLOUR = "#c6e9c0"  # a cell that migrates only if the guest's state allows


def _fill(cell: Cell) -> str:
    return CONDITIONAL_COLOUR if cell.conditions else COLOURS[cell.verdict]


def _tooltip(group: Group, cell: Cell, limit: int = 12) -> str:
    """What hovering over a cell shows: the pair, the verdict, the first lines of why."""
    src, dst = group.hosts[cell.source], group.hosts[cell.destination]
    head = [f"{src.label} -> {dst.label}", story(group, cell).summary]
    if cell.verdict == NOT_COMPARED:
        head.append(f"different host CPU ({src.host_cpu} -> {dst.host_cpu})")
    lines = [ln.strip() for ln in story(group, cell).lines() if not ln.startswith("    why")]
    more = [f"... and {len(lines) - limit} more (below)"] if len(lines) > limit else []
    return "\n".join(head + lines[:limit] + more)


def _e(text: str) -> str:
    return html.escape(text, quote=True)


_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table.matrix { border-collapse: collapse; margin: 0.5em 0 1em 0; }
table.matrix td, table.matrix th { border: 1px solid #999; padding: 0.25em 0.5em; }
table.matrix td.cell { text-align: center; font-family: monospace; min-width: 3em; }
table.matrix td.cell a { color: #000; text-decoration: none; display: block; }
table.matrix td.conditional { outline: 2px dashed #2a7a2a; outline-offset: -3px; }
table.matrix th.row { text-align: left; font-weight: normal; white-space: nowrap; }
.legend span.swatch { display: inline-block; width: 1.4em; height: 1em;
  border: 1px solid #999; vertical-align: middle; margin: 0 0.3em 0 1em; }
.story { margin: 0.6em 0 0.6em 1em; }
.story h4 { margin: 0.2em 0; font-size: 1em; }
.story pre { margin: 0 0 0 1em; white-space: pre-wrap; font-size: 0.9em; }
.note { font-size: 0.9em; color: #555; max-width: 60em; }
"""


def _legend_html() -> str:
    items = [f'<span class="swatch" style="background:{COLOURS[v]}"></span>'
             f"<b>{_e(code)}</b> {_e(meaning)}" for v, code, meaning in LEGEND]
    items.append(f'<span class="swatch" style="background:{CONDITIONAL_COLOUR};'
                 f'outline:2px dashed #2a7a2a"></span><b>{CONDITIONAL_MARK}</b> '
                 f"{_e(CONDITIONAL_MEANING)}")
    return '<p class="legend">' + " ".join(items) + "</p>"


def _group_html(gi: int, g: Group) -> list[str]:
    groups = stories(g)
    anchor = {(c.source, c.destination): f"g{gi}s{k}" for k, (cells, _st) in enumerate(groups)
              for c in cells}
    n = len(g.hosts)
    out = [f"<h2>{_e(g.title)}: {n} host{'s' * (n != 1)}</h2>",
           '<table class="matrix"><tr><th>source \\ destination</th>'
           + "".join(f'<th title="{_e(h.label)}">{j}</th>' for j, h in enumerate(g.hosts, 1))
           + "</tr>"]
    for i, (h, row) in enumerate(zip(g.hosts, g.cells, strict=True), 1):
        tds = []
        for c in row:
            code = _e(c.code)
            link = anchor.get((c.source, c.destination))
            inner = f'<a href="#{link}">{code}</a>' if link else code
            tds.append(f'<td class="cell{" conditional" if c.conditions else ""}" '
                       f'style="background:{_fill(c)}" title="{_e(_tooltip(g, c))}">'
                       f"{inner}</td>")
        out.append(f'<tr><th class="row" title="set {_e(h.set_name)}">{i}. {_e(h.label)}'
                   f'</th>{"".join(tds)}</tr>')
    out.append("</table>")
    for k, (cells, st) in enumerate(groups):
        pairs = ", ".join(_pair(c) for c in cells)
        out.append(f'<div class="story" id="g{gi}s{k}"><h4>{_e(pairs)} '
                   f"({_e(st.summary)})</h4><pre>{_e(chr(10).join(st.lines()))}</pre></div>")
    return out


def render_html(fleet: Fleet) -> str:
    """A self-contained HTML page: per group a colour-coded matrix (hover a cell for its
    details, click it to jump to them below), the legend and the knowledge base revision."""
    opt = (f"<p>Opted in for guest-visible changes: {_e(', '.join(fleet.opt_in))}</p>"
           if fleet.opt_in else "")
    body = [f"<h1>migproxy fleet view</h1><p>Knowledge base revision "
            f"<b>{_e(fleet.kb_revision)}</b>. Rows: source host; columns: destination "
            f"host.</p>{opt}", _legend_html(),
            *(f'<p class="note">{_e(n)}</p>' for n in fleet.notes)]
    for gi, g in enumerate(fleet.groups):
        body += _group_html(gi, g)
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
            f"<title>migproxy fleet view</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# SVG geometry (px): monospace text, so a label's width is its length times CHAR.
CHAR, CELL_W, CELL_H, PAD, LINE = 7.3, 46, 24, 16, 18


def render_svg(fleet: Fleet) -> str:
    """The matrices as one SVG image: per group a row per source host (with its label), a
    column per destination host (numbered as the rows), cells coloured and coded as in the
    legend below; each cell's <title> holds its details (shown on hover)."""
    label_w = max([len(f"{len(g.hosts)}. {h.label}") for g in fleet.groups for h in g.hosts]
                  + [20]) * CHAR + PAD
    cols = max([len(g.hosts) for g in fleet.groups] + [1])
    legend = [(COLOURS[v], f"{code}  {meaning}") for v, code, meaning in LEGEND]
    legend.append((CONDITIONAL_COLOUR, f"{CONDITIONAL_MARK}  {CONDITIONAL_MEANING}"))
    note_lines = _wrap(" ".join(fleet.notes), 110)
    width = max(PAD * 2 + label_w + cols * CELL_W,
                PAD * 2 + max(len(t) for _c, t in legend) * CHAR + 30,
                PAD * 2 + 110 * CHAR)
    out: list[str] = []
    y: float = PAD + LINE
    out.append(_text(PAD, y, f"migproxy fleet view: knowledge base revision "
                              f"{fleet.kb_revision}; rows: source, columns: destination",
                     bold=True))
    if fleet.opt_in:
        y += LINE
        out.append(_text(PAD, y, f"opted in for guest-visible changes: "
                                 f"{', '.join(fleet.opt_in)}"))
    for g in fleet.groups:
        y += LINE * 2
        out.append(_text(PAD, y, f"{g.title}: {len(g.hosts)} hosts", bold=True))
        y += LINE
        x0 = PAD + label_w
        out += [_text(x0 + j * CELL_W + CELL_W / 2, y, str(j + 1), anchor="middle")
                for j in range(len(g.hosts))]
        y += 6
        for i, (h, row) in enumerate(zip(g.hosts, g.cells, strict=True), 1):
            out.append(_text(PAD, y + CELL_H * 0.7, f"{i}. {h.label}"))
            for j, c in enumerate(row):
                x = x0 + j * CELL_W
                dash = ' stroke-dasharray="4 2" stroke="#2a7a2a" stroke-width="2"' \
                    if c.conditions else ' stroke="#888"'
                out.append(f'<g><title>{_e(_tooltip(g, c))}</title>'
                           f'<rect x="{x:.0f}" y="{y:.0f}" width="{CELL_W}" '
                           f'height="{CELL_H}" fill="{_fill(c)}"{dash}/>'
                           + _text(x + CELL_W / 2, y + CELL_H * 0.7, c.code, anchor="middle")
                           + "</g>")
            y += CELL_H
    y += LINE
    for colour, text in legend:
        y += LINE
        out.append(f'<rect x="{PAD}" y="{y - 12:.0f}" width="22" height="14" fill="{colour}" '
                   f'stroke="#888"/>' + _text(PAD + 30, y, text))
    y += LINE / 2
    for line in note_lines:
        y += LINE
        out.append(_text(PAD, y, line, size=11))
    height = y + PAD
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
            'font-family="DejaVu Sans Mono, monospace" font-size="12">\n'
            f'<rect width="100%" height="100%" fill="#ffffff"/>\n'
            + "\n".join(out) + "\n</svg>\n")


def _text(x: float, y: float, text: str, *, anchor: str = "start", bold: bool = False,
          size: int = 12) -> str:
    weight = ' font-weight="bold"' if bold else ""
    font = f' font-size="{size}"' if size != 12 else ""
    return (f'<text x="{x:.0f}" y="{y:.0f}" text-anchor="{anchor}"{weight}{font}>'
            f"{_e(text)}</text>")


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines
