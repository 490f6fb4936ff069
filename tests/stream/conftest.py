"""Every test of the core runs with both RAM record walks: the compiled one
(migproxy/stream/_ramwalk.c) and the pure-Python one. They must agree byte for byte and
event for event. Without the compiled walk the "c" runs are skipped, or fail under
MIGPROXY_REQUIRE_EXTENSIONS=1 (set by scripts/test.sh, which builds it)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from migproxy.stream import ramsection

COMPILED = ramsection._compiled_walk() if ramsection.RAM_WALK is None else ramsection.RAM_WALK


@pytest.fixture(autouse=True, params=["c", "python"])
def ram_walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "c":
        if COMPILED is None:
            if os.environ.get("MIGPROXY_REQUIRE_EXTENSIONS") == "1":
                pytest.fail("the compiled RAM walk is not built (MIGPROXY_REQUIRE_EXTENSIONS=1)")
            pytest.skip("the compiled RAM walk is not built")
        monkeypatch.setattr(ramsection, "RAM_WALK", COMPILED)
    else:
        monkeypatch.setattr(ramsection, "RAM_WALK", None)
    return request.param
