"""Admission of accepted connections, without sockets."""

from __future__ import annotations

import pytest

from migproxy.daemon.admission import Admission, AdmissionLimits, Refusal, parse_networks


def test_every_address_is_allowed_by_default_within_the_caps() -> None:
    a = Admission(AdmissionLimits(max_connections=3, max_per_peer=2))
    assert a.admit("192.0.2.1") is None
    assert a.admit("192.0.2.1") is None
    assert a.admit("192.0.2.1") == Refusal.PEER_FULL
    assert a.admit("192.0.2.2") is None
    assert a.admit("192.0.2.3") == Refusal.ROUTE_FULL
    assert a.open == 3
    a.release("192.0.2.1")
    assert a.admit("192.0.2.3") is None  # room again
    assert a.admit("192.0.2.1") == Refusal.ROUTE_FULL


def test_a_refused_connection_takes_nothing() -> None:
    a = Admission(AdmissionLimits(max_connections=1, max_per_peer=1))
    assert a.admit("h") is None
    for _ in range(5):
        assert a.admit("h") is not None
    a.release("h")
    assert a.open == 0
    assert a.admit("h") is None


@pytest.mark.parametrize(("peer", "ok"), [
    ("10.1.2.3", True), ("10.255.0.1", True), ("11.0.0.1", False),
    ("2001:db8::5", True), ("2001:db9::5", False), ("::ffff:10.0.0.7", True),
    ("fe80::1%eth0", False), (None, False), ("not-an-ip", False),
])
def test_the_allow_list(peer: str | None, ok: bool) -> None:
    a = Admission(AdmissionLimits(allow=parse_networks(["10.0.0.0/8", "2001:db8::/32"], "x")))
    assert (a.admit(peer) is None) is ok
    if not ok:
        assert a.admit(peer) == Refusal.NOT_ALLOWED
        assert a.open == 0


def test_networks_parse_strictly() -> None:
    assert [str(n) for n in parse_networks(["192.0.2.7", "10.1.0.0/16 "], "x")] == \
        ["192.0.2.7/32", "10.1.0.0/16"]
    with pytest.raises(ValueError, match="allow: 'ten' is not an address or network"):
        parse_networks(["ten"], "allow")
