"""TLS termination of a route: the credentials directories and the ssl contexts built from
them (no sockets here; the sans-IO :mod:`migproxy.daemon.tls_layer` runs a TLS session
with them, :mod:`migproxy.daemon.tls_legs` says what each leg runs).

A route that terminates TLS is a TLS server towards the source QEMU and a TLS client
towards the destination QEMU, each leg its own TLS session per connection (QEMU runs one
per channel: main, every multifd channel, the postcopy preempt channel), so the session in
between sees and rewrites plaintext exactly as on a plaintext route.

The credentials are QEMU's own ``tls-creds-x509`` directory layout (libvirt's
``/etc/pki/qemu`` is one, usable as it is):

* source leg (``tls_source_creds``, migproxy plays QEMU's ``endpoint=server,verify-peer=on``):
  ``ca-cert.pem`` (verifies the source's client certificate), ``server-cert.pem``,
  ``server-key.pem`` (what the source verifies against its ``tls-hostname``);
* destination leg (``tls_destination_creds``, migproxy plays ``endpoint=client``):
  ``ca-cert.pem`` (verifies the destination's certificate, which must carry
  ``tls_hostname``, by default the target's host), ``client-cert.pem``, ``client-key.pem``
  (the destination verifies it: QEMU's ``verify-peer`` defaults to on).

Every file is read and every context built when the configuration is loaded, so a missing
file, a key that does not match its certificate or a CA that is not PEM stops the daemon
at start (exit 2), never at the first migration.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from migproxy.stream.errors import UsageError

SOURCE_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem")
DESTINATION_FILES = ("ca-cert.pem", "client-cert.pem", "client-key.pem")

DEFAULT_HANDSHAKE_TIMEOUT = 10.0  # seconds for one TLS handshake, on either leg
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2  # QEMU's GnuTLS default priority allows 1.2, 1.3


class TlsConfigError(UsageError):
    """A credentials directory cannot be used (the message says which file and why)."""


@dataclass(frozen=True)
class RouteTls:
    """The TLS side of a route: contexts built from its credentials directories."""

    source: ssl.SSLContext | None  # server context towards the source; None: plaintext
    destination: ssl.SSLContext | None  # client context towards the destination
    hostname: str | None  # the name the destination's certificate must carry
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT

    @property
    def terminates(self) -> bool:
        return self.source is not None or self.destination is not None


def creds_files(directory: str, names: tuple[str, ...], what: str) -> dict[str, Path]:
    """The files ``names`` of a credentials directory, each checked to be a readable
    regular file; else :class:`TlsConfigError` naming the file."""
    d = Path(directory)
    if not d.is_dir():
        raise TlsConfigError(f"{what}: {directory!r} is not a directory")
    out: dict[str, Path] = {}
    for name in names:
        p = d / name
        try:
            with p.open("rb") as f:
                head = f.read(64)
        except FileNotFoundError:
            raise TlsConfigError(f"{what}: {p} is missing (a {what} directory holds "
                                 f"{', '.join(names)})") from None
        except IsADirectoryError:
            raise TlsConfigError(f"{what}: {p} is a directory, not a PEM file") from None
        except OSError as e:
            raise TlsConfigError(f"{what}: cannot read {p}: {e.strerror or e}") from None
        if b"-----BEGIN " not in head:
            raise TlsConfigError(f"{what}: {p} is not a PEM file")
        out[name] = p
    return out


def _load(ctx: ssl.SSLContext, files: dict[str, Path], cert: str, key: str,
          what: str) -> ssl.SSLContext:
    ctx.minimum_version = MINIMUM_VERSION
    try:
        ctx.load_verify_locations(cafile=str(files["ca-cert.pem"]))
    except ssl.SSLError as e:
        raise TlsConfigError(f"{what}: {files['ca-cert.pem']}: not a CA certificate "
                             f"({e.reason or e})") from None
    try:
        ctx.load_cert_chain(str(files[cert]), str(files[key]))
    except ssl.SSLError as e:
        raise TlsConfigError(f"{what}: {files[cert]} and {files[key]} cannot be used "
                             f"together ({e.reason or e}: is the key the certificate's?)"
                             ) from None
    return ctx


def source_context(directory: str) -> ssl.SSLContext:
    """The TLS server context towards the source QEMU: presents ``server-cert.pem`` and
    requires a client certificate signed by ``ca-cert.pem`` (QEMU ``verify-peer=on``)."""
    what = "tls_source_creds"
    files = creds_files(directory, SOURCE_FILES, what)
    ctx = _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), files, "server-cert.pem",
                "server-key.pem", what)
    ctx.verify_mode = ssl.CERT_REQUIRED
    # No TLS 1.3 session tickets: a source that never reads its main channel (no return
    # path) would close with them unread, and a close with unread data is a TCP reset,
    # which drops the end of the stream still in migproxy's receive buffer.
    ctx.num_tickets = 0
    return ctx


def destination_context(directory: str) -> ssl.SSLContext:
    """The TLS client context towards the destination QEMU: verifies its certificate
    (chain to ``ca-cert.pem``, and the host name given at connect time) and presents
    ``client-cert.pem``."""
    what = "tls_destination_creds"
    files = creds_files(directory, DESTINATION_FILES, what)
    ctx = _load(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), files, "client-cert.pem",
                "client-key.pem", what)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def route_tls(source_creds: str, destination_creds: str, hostname: str, target_host: str,
              handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT) -> RouteTls | None:
    """A route's TLS side from its settings ("" = not set); None when the route is
    plaintext on both legs. ``hostname`` without destination credentials is an error."""
    if hostname and not destination_creds:
        raise TlsConfigError("tls_hostname needs tls_destination_creds (it is the name the "
                             "destination's certificate must carry)")
    if not source_creds and not destination_creds:
        return None
    return RouteTls(
        source=source_context(source_creds) if source_creds else None,
        destination=destination_context(destination_creds) if destination_creds else None,
        hostname=(hostname or target_host) if destination_creds else None,
        handshake_timeout=handshake_timeout)


def handshake_error(e: BaseException) -> str:
    """A one-line reason for a failed handshake (ssl's verify message when there is one)."""
    if isinstance(e, ssl.SSLCertVerificationError) and e.verify_message:
        return f"certificate verify failed: {e.verify_message}"
    if isinstance(e, ssl.SSLError) and e.reason:
        return str(e.reason).lower().replace("_", " ")
    return str(e) or type(e).__name__

