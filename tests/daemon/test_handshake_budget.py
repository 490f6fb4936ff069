"""The TLS handshake budget of source addresses: a token bucket per address, with the
time given by the test."""

from __future__ import annotations

import pytest

from migproxy.daemon import handshake_budget
from migproxy.daemon.handshake_budget import HandshakeBudget


def test_failures_take_tokens_and_time_gives_them_back() -> None:
    b = HandshakeBudget(3, per_second=0.5)
    for _ in range(3):
        assert b.allows("10.0.0.1", 100.0)
        b.failed("10.0.0.1", 100.0)
    assert not b.allows("10.0.0.1", 100.0)
    assert b.allows("10.0.0.2", 100.0)  # another address has its own bucket
    assert not b.allows("10.0.0.1", 101.9)  # 0.95 tokens
    assert b.allows("10.0.0.1", 102.0)  # one more after 2 s
    b.failed("10.0.0.1", 102.0)
    assert not b.allows("10.0.0.1", 102.0)
    assert b.tokens("10.0.0.1", 1000.0) == 3.0  # never more than the burst


def test_a_success_costs_nothing_and_zero_is_no_limit() -> None:
    b = HandshakeBudget(1)
    assert b.allows(None, 0.0)
    assert len(b) == 0
    b.failed(None, 0.0)
    assert not b.allows(None, 0.5)
    unlimited = HandshakeBudget(0)
    for _ in range(100):
        unlimited.failed("10.0.0.1", 0.0)
    assert unlimited.allows("10.0.0.1", 0.0)
    assert len(unlimited) == 0


def test_addresses_with_a_full_bucket_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handshake_budget, "KEEP_PEERS", 10)
    b = HandshakeBudget(2, per_second=1.0)
    for i in range(10):
        b.failed(f"10.0.0.{i}", 0.0)
    assert len(b) == 10
    b.failed("10.0.1.1", 0.0)  # over KEEP_PEERS: the full ones go (none yet)
    assert len(b) == 11
    b.failed("10.0.1.2", 5.0)  # now every earlier one is full again
    assert len(b) == 1
    assert b.tokens("10.0.1.2", 5.0) == 1.0
