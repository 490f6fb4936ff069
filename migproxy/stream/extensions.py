"""migproxy's optional C extensions, found once: the compiled RAM record walk
(``migproxy.stream._ramwalk``), the RAM pump (``migproxy.daemon._rampump``) and the kernel
relay's loop (``migproxy.daemon._kernelrelay``).

Each is used when it is built and ``MIGPROXY_NO_EXTENSIONS`` is unset (or empty, or 0);
otherwise its caller falls back to Python (the walk, the relay loop) or does without
(the pump).
"""

from __future__ import annotations

import importlib
import os
from typing import Any


def disabled() -> bool:
    """Whether ``MIGPROXY_NO_EXTENSIONS`` turns every extension off."""
    return os.environ.get("MIGPROXY_NO_EXTENSIONS", "") not in ("", "0")


def compiled(module: str, name: str) -> Any | None:
    """``module.name`` of a built extension, or None (not built, or disabled)."""
    if disabled():
        return None
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None
