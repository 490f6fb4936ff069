"""Test certificates made with the ``openssl`` command: a CA, and server and client
certificates it signs, written as QEMU ``tls-creds-x509`` directories (the libvirt PKI
layout: ``ca-cert.pem``, ``server-cert.pem``, ``server-key.pem``, ``client-cert.pem``,
``client-key.pem``).

The certificates carry what QEMU's GnuTLS checks want: the CA has ``basicConstraints
CA:TRUE`` and ``keyCertSign``; a server certificate ``serverAuth`` and the names it is
reached by (DNS and IP subject alternative names); a client certificate ``clientAuth``.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = 2  # the certificates only live as long as a test run
KEY_BITS = 2048


class PkiUnavailable(Exception):
    """The ``openssl`` command is missing."""


def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        raise PkiUnavailable("the openssl command is not installed (Debian package openssl)")
    return path


def _run(*args: str) -> None:
    r = subprocess.run([openssl(), *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {r.stderr.strip()}")


@dataclass(frozen=True)
class Ca:
    """A certificate authority: its certificate and key files."""

    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path, name: str = "migproxy test CA") -> Ca:
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "ca-cert.pem", directory / "ca-key.pem"
        _run("req", "-x509", "-newkey", f"rsa:{KEY_BITS}", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-days", str(DAYS), "-subj", f"/CN={name}",
             "-extensions", "v3_ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return cls(cert, key)

    def issue(self, cert: Path, key: Path, *, cn: str, server: bool,
              names: tuple[str, ...] = ()) -> None:
        """A certificate for ``cn`` signed by this CA (``server``: serverAuth and the
        subject alternative ``names``, e.g. ``DNS:localhost``, ``IP:127.0.0.1``)."""
        csr = cert.with_suffix(".csr")
        ext = cert.with_suffix(".ext")
        lines = ["basicConstraints=critical,CA:FALSE",
                 "keyUsage=critical,digitalSignature,keyEncipherment",
                 f"extendedKeyUsage={'serverAuth' if server else 'clientAuth'}"]
        if names:
            lines.append("subjectAltName=" + ",".join(names))
        ext.write_text("\n".join(lines) + "\n")
        _run("req", "-new", "-newkey", f"rsa:{KEY_BITS}", "-nodes", "-keyout", str(key),
             "-out", str(csr), "-subj", f"/CN={cn}")
        _run("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
             "-CAcreateserial", "-out", str(cert), "-days", str(DAYS), "-extfile", str(ext))
        csr.unlink()
        ext.unlink()
        key.chmod(0o600)


LOOPBACK_NAMES = ("DNS:localhost", "IP:127.0.0.1")


def creds_dir(ca: Ca, directory: Path, *, server_names: tuple[str, ...] = LOOPBACK_NAMES,
              cn: str = "localhost") -> Path:
    """A directory with ``ca-cert.pem`` and a server and a client certificate from ``ca``:
    usable as QEMU ``tls-creds-x509`` ``dir=`` for either endpoint, and by migproxy as
    ``--tls-source-creds`` or ``--tls-destination-creds``."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca.cert, directory / "ca-cert.pem")
    ca.issue(directory / "server-cert.pem", directory / "server-key.pem", cn=cn, server=True,
             names=server_names)
    ca.issue(directory / "client-cert.pem", directory / "client-key.pem", cn=f"{cn} client",
             server=False)
    return directory


def client_context(creds: Path) -> ssl.SSLContext:
    """What a QEMU with ``tls-creds-x509,endpoint=client,dir=creds`` does: verify the
    server (CA, host name) and present ``client-cert.pem``."""
    ctx = ssl.create_default_context(cafile=str(creds / "ca-cert.pem"))
    ctx.load_cert_chain(str(creds / "client-cert.pem"), str(creds / "client-key.pem"))
    return ctx


def server_context(creds: Path) -> ssl.SSLContext:
    """What a QEMU with ``endpoint=server,verify-peer=on`` does: present
    ``server-cert.pem`` and require a client certificate from the CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(creds / "server-cert.pem"), str(creds / "server-key.pem"))
    ctx.load_verify_locations(str(creds / "ca-cert.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
