"""Live TLS migrations through the daemon between real QEMUs (the lab).

Both QEMUs carry ``tls-creds-x509`` objects (the source ``endpoint=client``, the
destination ``endpoint=server,verify-peer=on``) and migrate with ``tls-creds`` set; the
daemon terminates TLS on both legs (``--tls-source-creds``, ``--tls-destination-creds``),
rewrites the 10.0.2 cpu section for 10.0.13 and the guest must continue on the destination.
The certificates are made by the test (``openssl``) in a directory the chrooted QEMUs see.
Negative cases: a source with a client certificate from another CA is refused (its
migration fails, the guest runs on), and a TLS migration through a route without TLS is
relayed untouched and counted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from migproxy.lab import Lab, free_port
from testkit.faults import BLOB_ADDR, MEMORY
from testkit.labs import require_lab, tls_unavailable
from testkit.pki import Ca, PkiUnavailable, creds_dir
from tests.e2e.test_e2e_daemon import (
    DBGDTRTX,
    Delta,
    Migrated,
    Proxy,
    assert_counting,
    complete,
    start_postcopy,
    wait_main_closed,
)

pytestmark = pytest.mark.qemu

HOSTNAME = "localhost"  # what every certificate names, and the source's tls-hostname


@dataclass(frozen=True)
class Pki:
    creds: Path  # ca-cert, server-*, client-* from the trusted CA (the libvirt layout)
    rogue: Path  # a client certificate from another CA (which the source trusts too)


@pytest.fixture(scope="module")
def lab() -> Lab:
    return require_lab("10.0.2", "10.0.13")


@pytest.fixture(scope="module")
def pki(lab: Lab) -> Iterator[Pki]:
    with lab.scratch_dir("tls-") as d:  # visible to the chrooted QEMUs
        try:
            ca = Ca.create(d / "ca")
            rogue_ca = Ca.create(d / "rogue-ca", name="rogue CA")
        except PkiUnavailable as e:
            tls_unavailable(str(e))
        rogue = creds_dir(rogue_ca, d / "rogue")
        # Both CAs: QEMU checks its own certificate against the file at start, and the
        # daemon's certificate comes from the trusted one.
        (rogue / "ca-cert.pem").write_bytes(rogue_ca.cert.read_bytes() + ca.cert.read_bytes())
        yield Pki(creds_dir(ca, d / "qemu"), rogue)


def tls_object(creds: Path, endpoint: str) -> list[str]:
    verify = ",verify-peer=on" if endpoint == "server" else ""
    return ["-object", f"tls-creds-x509,id=tls0,dir={creds},endpoint={endpoint}{verify}"]


TLS_PARAMS = {"tls-creds": "tls0", "tls-hostname": HOSTNAME}


def migrate_tls(lab: Lab, src_version: str, dst_version: str, proxy: Proxy, *,
                src_creds: Path, dst_creds: Path,
                capabilities: Mapping[str, bool] | None = None,
                parameters: Mapping[str, Any] | None = None) -> Migrated:
    params = {**TLS_PARAMS, **(parameters or {})}
    dst_params = {k: v for k, v in params.items() if k != "tls-hostname"}
    with (
        lab.destination(dst_version, proxy.target_uri, capabilities=capabilities,
                        parameters=dst_params, machine="virt-10.0",
                        extra_args=tls_object(dst_creds, "server")) as dst,
        lab.source(src_version, machine="virt-10.0",
                   extra_args=tls_object(src_creds, "client")) as src,
    ):
        src.migrate(proxy.uri, capabilities, params)
        return complete(src, dst, proxy.context)


@pytest.fixture(scope="module")
def tls_proxy(lab: Lab, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    p = Proxy(tmp_path_factory.mktemp("migproxy-tls"), free_port(),
              "--tls-source-creds", str(pki.creds), "--tls-destination-creds", str(pki.creds),
              "--tls-hostname", HOSTNAME, "--log-level", "debug").start()
    try:
        yield p
    finally:
        rc = p.stop()
    assert rc == 0, f"migproxy did not exit 0 on SIGTERM ({rc})\n{p.context()}"


CASES = {
    "precopy": ({}, {}),
    "return-path": ({"return-path": True}, {}),
    "multifd-return-path": ({"multifd": True, "return-path": True}, {"multifd-channels": 2}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_10_0_2_to_10_0_13_over_tls_rewritten(lab: Lab, pki: Pki, tls_proxy: Proxy,
                                             case: str) -> None:
    caps, params = CASES[case]
    delta = Delta.start(tls_proxy)
    migrate_tls(lab, "10.0.2", "10.0.13", tls_proxy, src_creds=pki.creds, dst_creds=pki.creds,
                capabilities=caps, parameters=params)
    delta.wait("migproxy_migrations_total", 1, outcome="completed")
    assert delta("migproxy_cpregs_dropped_total", register=DBGDTRTX) == 1
    assert delta("migproxy_connections_classified_total", channel="main") == 1
    assert delta("migproxy_connections_classified_total", channel="tls") == 0
    assert delta("migproxy_connections_refused_total", reason="tls_handshake") == 0
    multifd = 2 if caps.get("multifd") else 0
    assert delta("migproxy_connections_classified_total", channel="multifd") == multifd
    if multifd:
        assert delta("migproxy_bytes_total", direction="to_destination", channel="multifd") > 0
        delta.wait("migproxy_connections_active", 0, channel="multifd")
        # Both legs of each multifd channel ended cleanly (the destination, which requires
        # a clean TLS end while it reads a multifd channel, loaded).
        relayed = [e for e in delta.events("closed") if e.get("channel") == "multifd"]
        assert [e["outcome"] for e in relayed] == ["relayed", "relayed"], relayed
    if caps.get("return-path"):
        assert delta("migproxy_bytes_total", direction="to_source", channel="main") > 0
    closed = wait_main_closed(tls_proxy, delta.log_mark)
    assert [e["outcome"] for e in closed] == ["completed"], closed


def test_a_client_certificate_from_another_ca_is_refused(lab: Lab, pki: Pki,
                                                        tls_proxy: Proxy) -> None:
    delta = Delta.start(tls_proxy)
    with (
        lab.destination("10.0.13", tls_proxy.target_uri, parameters={"tls-creds": "tls0"},
                        machine="virt-10.0", extra_args=tls_object(pki.creds, "server")) as dst,
        lab.source("10.0.2", machine="virt-10.0",
                   extra_args=tls_object(pki.rogue, "client")) as src,
    ):
        src.migrate(tls_proxy.uri, None, TLS_PARAMS)
        info = src.wait_migration(60)
        assert info.get("status") == "failed", info
        assert src.status() == "running"
        n = src.last_counter()
        assert n is not None
        assert_counting(src, n)
        delta.wait("migproxy_connections_refused_total", 1, reason="tls_handshake")
        assert dst.query_migrate().get("status") in (None, "setup"), dst.query_migrate()
    assert delta("migproxy_connections_classified_total", channel="main") == 0
    assert delta("migproxy_connect_errors_total") == 0
    failed = delta.events("tls_handshake_failed")
    assert len(failed) == 1, failed
    assert failed[0]["error"], failed


def test_tls_through_a_route_without_tls_is_relayed_untouched(
        lab: Lab, pki: Pki, tmp_path: Path) -> None:
    """The source's TLS session reaches the destination through the daemon as it is: no
    rewrite (10.0.2 -> 10.0.2 needs none to load), a warning and a count."""
    p = Proxy(tmp_path, free_port()).start()
    try:
        delta = Delta.start(p)
        migrate_tls(lab, "10.0.2", "10.0.2", p, src_creds=pki.creds, dst_creds=pki.creds)
        delta.wait("migproxy_untouched_total", 1, reason="tls_not_terminated")
        assert delta("migproxy_connections_classified_total", channel="tls") == 1
        assert delta("migproxy_cpu_sections_rewritten_total", mode="applied") == 0
        warned = delta.events("tls")
        assert len(warned) == 1, warned
        assert warned[0]["reason"] == "tls_not_terminated", warned
    finally:
        assert p.stop() == 0, p.context()


def test_postcopy_preempt_over_tls(lab: Lab, pki: Pki, tls_proxy: Proxy, blob: Path) -> None:
    """The postcopy preempt channel has its own TLS session on each leg too. Same version
    (postcopy's package is framed and released on the terminated main channel); the
    guest's RAM holds random data and the bandwidth is capped, so the migration is still
    in precopy when postcopy is started."""
    caps = {"postcopy-ram": True, "postcopy-preempt": True, "return-path": True}
    params = {**TLS_PARAMS, "max-bandwidth": 64 << 20}
    delta = Delta.start(tls_proxy)
    loader = f"loader,file={blob},addr={BLOB_ADDR:#x},force-raw=on"
    with (
        lab.destination("10.0.2", tls_proxy.target_uri, capabilities=caps,
                        parameters={"tls-creds": "tls0"}, machine="virt-10.0", memory=MEMORY,
                        extra_args=tls_object(pki.creds, "server")) as dst,
        lab.source("10.0.2", machine="virt-10.0", memory=MEMORY,
                   extra_args=[*tls_object(pki.creds, "client"), "-device", loader]) as src,
    ):
        src.migrate(tls_proxy.uri, caps, params)
        start_postcopy(src)
        complete(src, dst, tls_proxy.context)
    released = delta.events("tail_released")  # the package, framed by known layouts
    assert len(released) == 1, tls_proxy.context()
    assert not delta.events("passthrough"), tls_proxy.context()
    assert delta("migproxy_connections_classified_total", channel="main") == 1
    assert delta("migproxy_connections_classified_total", channel="tls") == 0
    # The preempt channel reached the destination although it may never send a byte (no
    # page was urgent): the destination waits for it before it serves page faults.
    connected = delta.events("connected")
    assert len(connected) == 2, tls_proxy.context()
    assert delta("migproxy_connections_refused_total", reason="tls_handshake") == 0


def test_postcopy_10_0_2_to_10_0_13_over_tls_rewritten(lab: Lab, pki: Pki,
                                                      tls_proxy: Proxy) -> None:
    """Across versions with postcopy over TLS terminated on both legs: the package on the
    decrypted main channel is framed, its cpu section rewritten (DBGDTRTX dropped) and its
    length adjusted; the guest goes on on 10.0.13. The bandwidth is capped, so the
    migration is still in precopy when postcopy is started."""
    caps = {"postcopy-ram": True, "return-path": True}
    params = {**TLS_PARAMS, "max-bandwidth": 64 << 10}
    delta = Delta.start(tls_proxy)
    with (
        lab.destination("10.0.13", tls_proxy.target_uri, capabilities=caps,
                        parameters={"tls-creds": "tls0"}, machine="virt-10.0", memory="32M",
                        extra_args=tls_object(pki.creds, "server")) as dst,
        lab.source("10.0.2", machine="virt-10.0", memory="32M",
                   extra_args=tls_object(pki.creds, "client")) as src,
    ):
        src.migrate(tls_proxy.uri, caps, params)
        start_postcopy(src)
        complete(src, dst, tls_proxy.context)
    released = delta.events("tail_released")
    assert len(released) == 1, tls_proxy.context()
    assert released[0]["rewritten"], tls_proxy.context()
    assert not delta.events("passthrough"), tls_proxy.context()
    assert delta("migproxy_cpregs_dropped_total", register=DBGDTRTX) == 1
    assert delta("migproxy_connections_classified_total", channel="main") == 1
    assert delta("migproxy_connections_classified_total", channel="tls") == 0
