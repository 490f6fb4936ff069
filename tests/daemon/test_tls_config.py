"""Unit tests of TLS termination settings: credentials directories (:mod:`migproxy.daemon.tls`),
the TOML keys and command-line flags, and the refusal of plaintext listeners reachable from
the network once TLS is configured. Certificates are made by the test (``openssl``)."""

from __future__ import annotations

import argparse
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from migproxy.cli import build_parser
from migproxy.daemon.config import Config, ConfigError, is_loopback
from migproxy.daemon.load import load_config
from migproxy.daemon.tls import (
    DESTINATION_FILES,
    SOURCE_FILES,
    TlsConfigError,
    creds_files,
    destination_context,
    source_context,
)
from testkit.labs import tls_unavailable
from testkit.pki import Ca, PkiUnavailable, creds_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory with every file of the libvirt PKI layout."""
    try:
        ca = Ca.create(tmp_path_factory.mktemp("ca"))
    except PkiUnavailable as e:
        tls_unavailable(str(e))
    return creds_dir(ca, tmp_path_factory.mktemp("pki") / "qemu")


def _args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(list(flags))


def _load(tmp_path: Path, text: str, *flags: str) -> Config:
    p = tmp_path / "migproxy.toml"
    p.write_text(text, encoding="utf-8")
    return load_config(str(p), _args("--config", str(p), *flags))


def _copy(creds: Path, tmp_path: Path, drop: str | None = None) -> Path:
    d = tmp_path / "copy"
    shutil.copytree(creds, d)
    if drop:
        (d / drop).unlink()
    return d


# --- credentials directories ------------------------------------------------------------

def test_the_libvirt_layout_serves_both_legs(creds: Path) -> None:
    assert set(creds_files(str(creds), SOURCE_FILES, "x")) == set(SOURCE_FILES)
    assert set(creds_files(str(creds), DESTINATION_FILES, "x")) == set(DESTINATION_FILES)
    server = source_context(str(creds))
    assert server.verify_mode == ssl.CERT_REQUIRED  # QEMU's verify-peer=on
    client = destination_context(str(creds))
    assert client.check_hostname
    assert client.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(("missing", "leg"), [
    ("ca-cert.pem", "source"), ("server-cert.pem", "source"), ("server-key.pem", "source"),
    ("ca-cert.pem", "destination"), ("client-cert.pem", "destination"),
    ("client-key.pem", "destination"),
])
def test_a_missing_file_is_named(creds: Path, tmp_path: Path, missing: str, leg: str) -> None:
    d = _copy(creds, tmp_path, drop=missing)
    build = source_context if leg == "source" else destination_context
    with pytest.raises(TlsConfigError, match=rf"tls_{leg}_creds: .*{missing} is missing"):
        build(str(d))


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match="is not a directory"):
        source_context(str(tmp_path / "nowhere"))


def test_a_file_that_is_not_pem(creds: Path, tmp_path: Path) -> None:
    d = _copy(creds, tmp_path)
    (d / "server-cert.pem").write_bytes(b"\x30\x82 DER bytes")
    with pytest.raises(TlsConfigError, match=r"server-cert\.pem is not a PEM file"):
        source_context(str(d))


def test_a_key_that_is_not_the_certificates(creds: Path, tmp_path: Path) -> None:
    d = _copy(creds, tmp_path)
    shutil.copyfile(d / "client-key.pem", d / "server-key.pem")
    with pytest.raises(TlsConfigError, match="cannot be used together"):
        source_context(str(d))


def test_a_ca_that_is_not_a_certificate(creds: Path, tmp_path: Path) -> None:
    d = _copy(creds, tmp_path)
    shutil.copyfile(d / "client-key.pem", d / "ca-cert.pem")
    with pytest.raises(TlsConfigError, match=r"ca-cert\.pem: not a CA certificate"):
        destination_context(str(d))


# --- configuration ---------------------------------------------------------------------

def test_toml_keys_per_route(creds: Path, tmp_path: Path) -> None:
    cfg = _load(tmp_path, f"""
[defaults]
tls_handshake_timeout = 2.5
[[route]]
listen = "127.0.0.1:4444"
target = "dst.example:4444"
tls_source_creds = "{creds}"
tls_destination_creds = "{creds}"
[[route]]
listen = "127.0.0.1:4445"
target = "dst.example:4445"
tls_destination_creds = "{creds}"
tls_hostname = "qemu-dst.example"
[[route]]
listen = "127.0.0.1:4446"
target = "dst.example:4446"
""")
    a, b, c = cfg.routes
    assert a.tls is not None
    assert a.tls.source is not None
    assert a.tls.destination is not None
    assert a.tls.hostname == "dst.example"  # default: the target's host
    assert a.tls.handshake_timeout == 2.5
    assert b.tls is not None
    assert b.tls.source is None
    assert b.tls.hostname == "qemu-dst.example"
    assert c.tls is None


def test_command_line_flags(creds: Path) -> None:
    cfg = load_config(None, _args("--listen", "127.0.0.1:4444", "--target", "10.1.2.3:4444",
                                  "--tls-source-creds", str(creds),
                                  "--tls-destination-creds", str(creds),
                                  "--tls-hostname", "dst.example",
                                  "--tls-handshake-timeout", "3", "--metrics", ""))
    tls = cfg.routes[0].tls
    assert tls is not None
    assert tls.source is not None
    assert tls.destination is not None
    assert tls.hostname == "dst.example"
    assert tls.handshake_timeout == 3


def test_tls_hostname_needs_destination_creds() -> None:
    with pytest.raises(ConfigError, match="tls_hostname needs tls_destination_creds"):
        load_config(None, _args("--listen", "127.0.0.1:1", "--target", "h:1",
                                "--tls-hostname", "h"))


@pytest.mark.parametrize(("line", "match"), [
    ('tls_source_creds = 1', "tls_source_creds must be a string"),
    ('tls_hostname = ["a"]', "tls_hostname must be a string"),
    ('allow_plaintext_source = "yes"', "allow_plaintext_source must be true or false"),
    ('tls_handshake_timeout = 0', "tls_handshake_timeout must be between"),
    ('tls_handshake_timeout = 1e9', "tls_handshake_timeout must be between"),
])
def test_bad_tls_keys(tmp_path: Path, line: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _load(tmp_path, f'[[route]]\nlisten = "127.0.0.1:1"\ntarget = "h:1"\n{line}\n')


def test_a_missing_creds_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"route 1: tls_source_creds: .* is not a directory"):
        _load(tmp_path, f'[[route]]\nlisten = "127.0.0.1:1"\ntarget = "h:1"\n'
                        f'tls_source_creds = "{tmp_path}/none"\n')


# --- plaintext next to TLS ---------------------------------------------------------------

@pytest.mark.parametrize("listen", [":4444", "0.0.0.0:4444", "[::]:4444", "192.0.2.1:4444",
                                    "host.example:4444"])
def test_plaintext_from_the_network_is_refused_once_tls_is_configured(
        creds: Path, tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError, match="takes plaintext from the network while TLS"):
        _load(tmp_path, f'[[route]]\nlisten = "{listen}"\ntarget = "h:1"\n'
                        f'tls_destination_creds = "{creds}"\n')


def test_plaintext_route_beside_a_tls_route_is_refused(creds: Path, tmp_path: Path) -> None:
    text = (f'[[route]]\nlisten = "127.0.0.1:1"\ntarget = "h:1"\n'
            f'tls_destination_creds = "{creds}"\n'
            '[[route]]\nlisten = ":2"\ntarget = "h:2"\n')
    with pytest.raises(ConfigError, match="route 2: listen address :2"):
        _load(tmp_path, text)
    cfg = _load(tmp_path, text + "allow_plaintext_source = true\n")
    assert cfg.routes[1].tls is None


@pytest.mark.parametrize("listen", ["127.0.0.1:4444", "[::1]:4444", "localhost:4444",
                                    "127.0.0.2:4444"])
def test_plaintext_on_loopback_is_fine(creds: Path, tmp_path: Path, listen: str) -> None:
    cfg = _load(tmp_path, f'[[route]]\nlisten = "{listen}"\ntarget = "h:1"\n'
                          f'tls_destination_creds = "{creds}"\n')
    assert cfg.routes[0].tls is not None


def test_tls_on_the_source_leg_may_listen_anywhere(creds: Path, tmp_path: Path) -> None:
    cfg = _load(tmp_path, f'[[route]]\nlisten = ":4444"\ntarget = "127.0.0.1:1"\n'
                          f'tls_source_creds = "{creds}"\n')
    assert cfg.routes[0].tls is not None
    assert cfg.routes[0].tls.destination is None


def test_allow_plaintext_source_flag(creds: Path) -> None:
    flags = ("--listen", ":4444", "--target", "h:1", "--tls-destination-creds", str(creds))
    with pytest.raises(ConfigError, match="allow-plaintext-source"):
        load_config(None, _args(*flags))
    assert load_config(None, _args(*flags, "--allow-plaintext-source")).routes[0].tls


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("LOCALHOST")
    assert not is_loopback("")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("10.0.0.1")


def test_the_daemon_exits_2_with_the_reason(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "migproxy", "--listen", "127.0.0.1:0",
                        "--target", "127.0.0.1:1", "--tls-source-creds", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert r.returncode == 2, r.stderr
    assert f"tls_source_creds: {tmp_path}/ca-cert.pem is missing" in r.stderr
