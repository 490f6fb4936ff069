"""What every command prints on standard error."""

from __future__ import annotations

import sys


def err(msg: str) -> None:
    print(f"migproxy: {msg}", file=sys.stderr)
