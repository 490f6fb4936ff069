#!/usr/bin/env python3
"""Write the configuration table of docs/operations.md from the settings table.

    python3 scripts/make-docs.py [--check]

The table between the ``settings table`` markers of docs/operations.md (section
"Configuration") is made from :mod:`migproxy.daemon.settings`: a key, its flag, default,
bounds and meaning are written there once. ``--check`` writes nothing and fails if the
document differs (the test suite runs the same check: ``tests/deploy/test_settings.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from migproxy.daemon.settings import docs_table  # noqa: E402

DOC = REPO / "docs" / "operations.md"
BEGIN = "<!-- settings table: made by scripts/make-docs.py from migproxy/daemon/settings.py -->\n"
END = "<!-- end of the settings table -->\n"


def with_table(text: str) -> str:
    """``text`` (the document) with the generated table between the markers."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{DOC}: the settings table markers are missing")
    return head + BEGIN + docs_table() + END + tail


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if the document's table is not the generated one")
    args = ap.parse_args()
    text = DOC.read_text(encoding="utf-8")
    new = with_table(text)
    if args.check:
        if new != text:
            print(f"{DOC}: the configuration table differs from migproxy/daemon/settings.py;"
                  " run scripts/make-docs.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        DOC.write_text(new, encoding="utf-8")
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
