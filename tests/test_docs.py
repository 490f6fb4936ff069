"""The documentation holds together: every relative link of README.md and docs/*.md names a
file that exists (and, into a Markdown file, a heading that exists), and the README's
layer picture says what the import check (tests/test_layers.py) enforces."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_layers import ALLOWED, NEVER, STRICTER

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose(path: Path) -> list[str]:
    """The lines of a Markdown file outside fenced and indented code blocks."""
    lines: list[str] = []
    fenced = False
    code = False
    previous_blank = True
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        blank = not line.strip()
        # An indented line opens a code block only after a blank line (else it continues
        # a list item or a paragraph); the block goes on until a line that is not indented.
        if not blank:
            code = line.startswith("    ") and (previous_blank or code)
        if not fenced and not code:
            lines.append(line)
        previous_blank = blank
    return lines


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to
    hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(path):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer("\n".join(prose(path)))]


def test_the_documents_are_there() -> None:
    names = {p.name for p in DOCUMENTS}
    assert {"README.md", "operations.md", "design.md", "testing.md", "benchmarks.md",
            "reliability.md"} <= names


def test_slug_is_githubs() -> None:
    assert slug("The kernel relay") == "the-kernel-relay"
    assert slug("KVM: host kernels") == "kvm-host-kernels"
    assert slug("Saved VMs (libvirt save images)") == "saved-vms-libvirt-save-images"
    assert slug("`migproxy manifest capture|from-stream|show`") == \
        "migproxy-manifest-capturefrom-streamshow"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_points_at_what_exists(doc: Path) -> None:
    found = links(doc)
    bad = []
    for target in found:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        name, _, anchor = target.partition("#")
        path = (doc.parent / name).resolve() if name else doc
        if not path.exists():
            bad.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            bad.append(f"{target}: no heading with that anchor in {path.name}")
    assert not bad, f"{doc.relative_to(ROOT)}: {bad}"
    if doc.name == "README.md":
        assert len(found) > 10  # the overview links to the documents


def layer_picture() -> list[str]:
    """The fenced block under the README's "Layers" heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layers\n", 1)[1]
    return section.split("```", 2)[1].splitlines()


def test_the_readme_layer_picture_is_the_import_check() -> None:
    picture = layer_picture()
    place = {"cli": "migproxy/cli/", "daemon": "migproxy/daemon/",
             "tools": "migproxy/tools/", "arm": "migproxy/arm/", "stream": "migproxy/stream/"}
    row = {}
    for layer, name in place.items():
        rows = [i for i, line in enumerate(picture) if name in line]
        assert rows, f"{name} is not in the picture"
        row[layer] = rows[0]
    # Each layer sits above every layer it may import; layers that may not import each
    # other (daemon and tools) sit side by side.
    for layer in place:
        below = ALLOWED[layer] & set(place)
        assert all(row[layer] < row[b] for b in below), (layer, below)
    for a in place:
        for b in place:
            if a < b and b not in ALLOWED[a] and a not in ALLOWED[b]:
                assert row[a] == row[b], f"{a} and {b} import neither the other"
    # What the product never imports is drawn outside it, with the lab.
    outside = "\n".join(picture[max(row.values()) + 1:])
    assert "outside the product" in outside
    for name in (*NEVER, "migproxy/lab/"):
        assert name in outside, name
    # The modules held to a stricter rule are named with it.
    for module in STRICTER:
        assert Path(module).stem in "\n".join(picture), module
