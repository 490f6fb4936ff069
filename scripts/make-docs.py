#!/usr/bin/env python3
"""Write the README's configuration table from the settings table.

    python3 scripts/make-docs.py [--check]

The table between the ``settings table`` markers of README.md (section "Configuration") is
made from :mod:`migproxy.daemon.settings`: a key, its flag, default, bounds and meaning are
written there once. ``--check`` writes nothing and fails if the README differs (the test
suite runs the same check: ``tests/deploy/test_settings.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from migproxy.daemon.settings import readme_table  # noqa: E402

README = REPO / "README.md"
BEGIN = "<!-- settings table: made by scripts/make-docs.py from migproxy/daemon/settings.py -->\n"
END = "<!-- end of the settings table -->\n"


def with_table(text: str) -> str:
    """``text`` (the README) with the generated table between the markers."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{README}: the settings table markers are missing")
    return head + BEGIN + readme_table() + END + tail


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if the README's table is not the generated one")
    args = ap.parse_args()
    text = README.read_text(encoding="utf-8")
    new = with_table(text)
    if args.check:
        if new != text:
            print(f"{README}: the configuration table differs from migproxy/daemon/settings.py;"
                  " run scripts/make-docs.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        README.write_text(new, encoding="utf-8")
        print(f"wrote {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
