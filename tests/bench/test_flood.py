"""bench/flood.py on a small scale: the daemon (a separate process) gives its memory back
after a connection flood and hostile streams, and the migration beside them is exact."""

from __future__ import annotations

import asyncio

from bench.flood import _run


def test_rss_comes_back_down_after_a_flood() -> None:
    out = asyncio.run(_run(600, 1, settle=0.5, blocks=100_000, description_mib=20))
    assert out["migration_rewritten_exactly"]
    assert out["idle_connections"] == 600
    # 300 admitted (max_per_peer), 300 refused at once; then 4 hostile streams (one with a
    # 20 MiB description held until its source closes) beside the migration.
    assert out["peak_mib"] < out["baseline_mib"] + 256 + 64, out
    assert out["rss_after_mib"] < out["baseline_mib"] + 16, out
