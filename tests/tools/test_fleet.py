"""``migproxy plan --fleet`` (migproxy/tools/fleet.py) on the shipped manifest sets: the
TCG sets' verdicts, and for the KVM sets (whose rules are still being written) the
structure, and that every cell says what the reconciliation says for the same pair."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from migproxy.arm.destination import where
from migproxy.arm.knowledge import knowledge
from migproxy.arm.manifest import SHIPPED, Manifest, load_set, shipped_sets
from migproxy.arm.plan import CpuPlan
from migproxy.arm.reconcile import model_constants, reconcile
from migproxy.arm.reconcile_kvm import reconcile_kvm
from migproxy.cli import main
from migproxy.tools import fleet
from migproxy.tools.fleet import (
    AS_IS,
    GUEST_VISIBLE,
    MIGRATES,
    NOT_COMPARED,
    REFUSED,
    SAME,
    Fleet,
    Group,
    compute,
    load_specs,
)

TCG = [s for s in shipped_sets() if s.startswith("qemu-")]
KVM = [s for s in shipped_sets() if s.startswith("linux-")]
WFXT = "cpu/wfxt-timer"


@pytest.fixture(scope="module")
def tcg() -> Fleet:
    return compute(load_specs(["qemu-*"]))


@pytest.fixture(scope="module")
def kvm() -> Fleet:
    return compute(load_specs(["linux-*"]))


def _groups(f: Fleet, cpu: str) -> list[Group]:
    return [g for g in f.groups if g.cpu == cpu]


def _pairs(g: Group) -> list[tuple[Manifest, Manifest, fleet.Cell]]:
    return [(g.hosts[c.source].manifest, g.hosts[c.destination].manifest, c)
            for row in g.cells for c in row]


def test_the_specs_name_sets_globs_files_and_directories(tmp_path: Path) -> None:
    assert [s.name for s in load_specs(["qemu-*"])] == TCG
    assert [s.name for s in load_specs([str(SHIPPED)])] == shipped_sets()
    one = SHIPPED / "qemu-10.0.13" / "virt-7.2-max.json"
    assert [len(s.manifests) for s in load_specs([str(one), "qemu-7.2.22"])] == [1, 2]
    with pytest.raises(fleet.ManifestError, match="matches"):
        load_specs(["qemu-99.*"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(fleet.ManifestError, match="no manifest files"):
        load_specs([str(tmp_path / "empty")])


def test_a_manifest_named_twice_is_one_host() -> None:
    f = compute(load_specs(["qemu-10.0.13", str(SHIPPED / "qemu-10.0.13")]))
    assert [len(g.hosts) for g in f.groups] == [1, 1, 1, 1]


def test_groups_are_one_machine_cpu_and_accelerator(tcg: Fleet, kvm: Fleet) -> None:
    keys = [(g.accel, g.machine, g.cpu) for g in tcg.groups]
    assert keys == [("tcg", "virt-7.2", "cortex-a57"), ("tcg", "virt-7.2", "max"),
                    ("tcg", "virt-10.0", "cortex-a57"), ("tcg", "virt-10.0", "max")]
    assert [len(g.hosts) for g in tcg.groups] == [4, 4, 3, 3]
    assert [(g.accel, g.machine, g.cpu, len(g.hosts)) for g in kvm.groups] == \
        [("kvm", "virt-7.2", "host", len(KVM))]
    for g in tcg.groups + kvm.groups:
        assert all(h.manifest.key == (g.machine, g.cpu) for h in g.hosts)
        assert len({h.label for h in g.hosts}) == len(g.hosts)


def test_cortex_a57_migrates_everywhere_with_kb_rules(tcg: Fleet) -> None:
    """Every pair of versions migrates, none guest-visible; the 11.1.3 sources depend on
    the guest's state: their WFxT timer subsection is removed only when unarmed."""
    for g in _groups(tcg, "cortex-a57"):
        for src, dst, c in _pairs(g):
            if src is dst:
                assert c.verdict == SAME
                assert c.code == "="
                continue
            assert c.verdict == MIGRATES, (src.qemu, dst.qemu)
            assert not c.refusals, (src.qemu, dst.qemu)
            assert c.changes, (src.qemu, dst.qemu)
            assert not any(x.guest_visible for x in c.changes)
            depends = WFXT in src.subsections and WFXT not in dst.subsections
            assert bool(c.conditions) == depends, (src.qemu, dst.qemu)
            assert c.code.endswith("?") == depends
            assert [x.text for x in c.changes if x.conditional] == \
                ([f"remove subsection {WFXT}"] if depends else [])
            if depends:
                assert all("0xffffffffffffffff" in t and "it holds" not in t
                           for t in c.conditions)


def test_max_is_refused_across_versions(tcg: Fleet) -> None:
    """-cpu max differs between versions except 10.0.2 <-> 10.0.13."""
    for g in _groups(tcg, "max"):
        for src, dst, c in _pairs(g):
            if src is dst:
                assert c.verdict == SAME
            elif {src.qemu, dst.qemu} == {"10.0.2", "10.0.13"}:
                assert c.verdict == MIGRATES
            else:
                assert c.verdict == REFUSED
                assert c.refusals
                assert not c.conditions
                assert c.code == f"R{len(c.refusals)}"


def test_different_host_cpus_are_not_compared(kvm: Fleet) -> None:
    (g,) = kvm.groups
    assert {h.host_cpu for h in g.hosts} == {"max", "neoverse-n1"}
    for src, dst, c in _pairs(g):
        assert (c.verdict == NOT_COMPARED) == (src.host_cpu != dst.host_cpu)
        if c.verdict == NOT_COMPARED:
            assert c.code == "x"
            assert not c.changes
            assert not c.refusals
        if src is dst:
            assert c.verdict == SAME


def _reconcile(src: Manifest, dst: Manifest, payload: bytes) -> CpuPlan:
    """The plan reconcile gives for a stream with the source manifest's state, every
    subsection of it carrying ``payload``."""
    ids, values = [i for i, _v in src.cpregs], [v for _i, v in src.cpregs]
    subsections = {n: payload for n in src.subsections}
    if dst.accel == "kvm":
        return reconcile_kvm(ids, values, subsections, dst, knowledge())
    ref = [m for n in shipped_sets() for m in load_set(n).manifests]
    return reconcile(ids, values, subsections, dst, knowledge(), accel=src.accel,
                     model_values=model_constants(ref, dst.cpu))


@pytest.mark.parametrize("which", ["tcg", "kvm"])
def test_every_cell_says_what_reconcile_says(which: str,
                                             request: pytest.FixtureRequest) -> None:
    f: Fleet = request.getfixturevalue(which)
    checked = 0
    for g in f.groups:
        for src, dst, c in _pairs(g):
            if c.verdict == NOT_COMPARED:
                continue
            unarmed = _reconcile(src, dst, b"\xff" * 8)
            assert bool(unarmed.refusals) == (c.verdict == REFUSED)
            assert sorted(x.explain() for x in unarmed.changes) == \
                sorted(f"{x.text}: {x.reason}" for x in c.changes)
            assert any(x.guest_visible for x in unarmed.changes) == \
                (c.verdict == GUEST_VISIBLE)
            if c.verdict != REFUSED:
                assert (c.verdict == SAME) == (not unarmed.changes)
                # A cell that depends on the guest's state is refused with a payload
                # that does not meet the rule.
                assert bool(c.conditions) == bool(_reconcile(src, dst, b"").refusals)
            checked += 1
    assert checked > 20


def _refused_registers(c: fleet.Cell) -> list[str]:
    return sorted({m for r in c.refusals for m in re.findall(r"\((0x[0-9A-F]{16})\)", r)})


def test_opting_in_makes_a_refused_cell_guest_visible(tcg: Fleet) -> None:
    g = next(g for g in _groups(tcg, "max") if g.machine == "virt-10.0")
    labels = [h.manifest.qemu for h in g.hosts]
    cell = g.cells[labels.index("10.0.13")][labels.index("11.1.3")]
    assert cell.verdict == REFUSED
    regs = _refused_registers(cell)
    assert len(regs) == len(cell.refusals)
    opted = compute(load_specs(["qemu-10.0.13", "qemu-11.1.3"]),
                    opt_in=frozenset(int(r, 16) for r in regs), opt_in_names=regs)
    g2 = next(g for g in _groups(opted, "max") if g.machine == "virt-10.0")
    c2 = g2.cells[0][1]
    assert c2.verdict == GUEST_VISIBLE
    assert c2.code.startswith("G")
    assert sum(x.guest_visible for x in c2.changes) == len(regs)
    assert "opted in for guest-visible changes" in fleet.render_text(opted)


def test_text_has_the_matrix_legend_and_every_cell_once(kvm: Fleet) -> None:
    text = fleet.render_text(kvm)
    assert f"knowledge base revision {kvm.kb_revision}" in text
    assert "legend: = same" in text
    assert "taken from the source manifest's values" in text
    (g,) = kvm.groups
    lines = text.splitlines()
    head = next(i for i, ln in enumerate(lines) if "source \\ destination" in ln)
    for i, row in enumerate(g.cells):
        assert lines[head + 1 + i].split()[1:] == [c.code for c in row]
    said = [p for ln in lines if re.match(r"^\d+ -> \d+", ln)
            for p in ln.split(" (")[0].split(", ")]
    expect = [f"{c.source + 1} -> {c.destination + 1}" for row in g.cells for c in row
              if c.verdict not in (SAME, NOT_COMPARED)]
    assert sorted(said) == sorted(expect)
    assert len(said) > len([ln for ln in lines if re.match(r"^\d+ -> \d+", ln)])  # grouped
    for c in (c for row in g.cells for c in row if c.verdict == REFUSED):
        assert all(r.replace(where(g.hosts[c.destination].manifest),
                             "the destination") in text for r in c.refusals)


def test_html_and_svg_are_well_formed_and_name_every_host(tcg: Fleet, kvm: Fleet) -> None:
    for f in (tcg, kvm):
        labels = [h.label for g in f.groups for h in g.hosts]
        svg = ET.fromstring(fleet.render_svg(f))
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
        texts = " ".join(t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text"))
        assert all(label in texts for label in labels)
        assert f.kb_revision in texts
        cells = [c for g in f.groups for row in g.cells for c in row]
        assert len(svg.findall(".//{http://www.w3.org/2000/svg}rect")) >= len(cells)
        page = ET.fromstring(fleet.render_html(f))
        body = "".join(page.itertext())
        assert all(label in body for label in labels)
        assert f.kb_revision in body
        tds = [e for e in page.iter("td") if "cell" in e.get("class", "")]
        assert [("".join(e.itertext())) for e in tds] == [c.code for c in cells]
        assert all(e.get("title") for e in tds)


def test_json_has_every_cell(kvm: Fleet) -> None:
    data = json.loads(json.dumps(fleet.to_json(kvm)))
    (g,) = data["groups"]
    n = len(g["hosts"])
    assert len(g["cells"]) == n * n
    assert data["kb_revision"] == kvm.kb_revision
    assert {c["verdict"] for c in g["cells"]} <= {SAME, AS_IS, MIGRATES, GUEST_VISIBLE,
                                                 REFUSED, NOT_COMPARED}


# -- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["plan"],
    ["plan", "x.mig"],
    ["plan", "--destination", "qemu-10.0.2"],
    ["plan", "x.mig", "--fleet", "qemu-*"],
    ["plan", "--fleet", "qemu-*", "--destination", "qemu-10.0.2"],
    ["plan", "x.mig", "--destination", "qemu-10.0.2", "--json"],
    ["plan", "--fleet", "nosuch-*"],
    ["plan", "--fleet", "/nonexistent/dir"],
    ["plan", "--fleet", "qemu-*", "--allow-guest-visible", "NOT_A_REGISTER"],
])
def test_plan_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "migproxy: plan" in err


def test_plan_fleet_writes_text_json_html_svg(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    html_file, svg_file = tmp_path / "f.html", tmp_path / "f.svg"
    assert main(["plan", "--fleet", "qemu-7.2.22", "qemu-11.1.3", "--html", str(html_file),
                 "--svg", str(svg_file)]) == 0
    out = capsys.readouterr().out
    assert "== machine virt-7.2, cpu cortex-a57, tcg: 2 hosts ==" in out
    assert "M23?" in out
    assert f"wrote {html_file}" in out
    ET.parse(svg_file)
    ET.parse(html_file)
    assert main(["plan", "--fleet", "qemu-7.2.22", "qemu-11.1.3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # 7.2.22 has no virt-10.0 manifests: 11.1.3's are alone in their groups.
    assert [len(g["hosts"]) for g in data["groups"]] == [2, 2, 1, 1]
    assert main(["plan", "--fleet", "qemu-7.2.22", "qemu-11.1.3", "-v"]) == 0
    verbose = capsys.readouterr().out
    assert "1 -> 1 (same)" in verbose
    assert "2 -> 1 (refused" in verbose


def test_kvm_upgrades_migrate_and_a_cell_that_changes_nothing_is_as_is(kvm: Fleet) -> None:
    """Under KVM a destination keeps its own value for registers the stream lacks and
    accepts validated values it can take: a cell whose plan only keeps loads the stream
    as it is (A). Every kernel upgrade of the shipped hosts migrates (A or M); the verdicts
    agree with the kernels' order as the knowledge base says, not a typed list."""
    from migproxy.arm.knowledge import kernel_version

    seen = set()
    for g in kvm.groups:
        for src, dst, c in _pairs(g):
            if c.verdict == NOT_COMPARED:
                continue
            keep_only = bool(c.changes) and all(x.action == "keep" for x in c.changes)
            assert (c.verdict == AS_IS) == (keep_only and not c.refusals)
            if kernel_version(src.kernel) < kernel_version(dst.kernel):
                assert c.verdict in (AS_IS, MIGRATES), (src.host, dst.host, c.refusals)
                seen.add(c.verdict)
    assert seen == {AS_IS, MIGRATES}
