"""Addresses of the configuration: ``host:port`` text (IPv6 hosts in brackets,
``[::1]:4444``), port ranges (:class:`Address`, :func:`parse_address`) and the algebra the
start-up checks use (:func:`listens_overlap`, :func:`target_reaches_listen`,
:func:`is_loopback`). :class:`ConfigError` is the configuration's error (exit code 2),
raised from here on up (``settings``, ``config``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from migproxy.stream.errors import UsageError


def join_host_port(host: str, port: int | str) -> str:
    """``port`` may be a range's text (``49152-49215``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_host_port(addr: Any) -> str | None:
    """A socket address (``getsockname()``/``getpeername()`` tuple) as text; None stays
    None and anything else (a Unix socket path) is shown as it is."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return join_host_port(str(addr[0]), int(addr[1]))
    return None if addr is None else str(addr)


class ConfigError(UsageError):
    """The configuration is invalid; the daemon must not start."""

    prefix = "invalid configuration: "


MAX_RANGE_PORTS = 1024
"""Ports one route may listen on. Each is a listening socket bound at start (one file
descriptor, one accept queue); libvirt's default migration range is 64 ports
(49152-49215), so 1024 leaves room for hosts with a wider range while a typo
(``1-65535``) cannot bind the whole port space or starve the descriptors the migrations
need (``LimitNOFILE`` of the systemd unit)."""


@dataclass(frozen=True)
class Address:
    """A host and ``count`` consecutive ports from ``port`` (a range when ``count`` > 1)."""

    host: str  # "" = all interfaces
    port: int
    count: int = 1

    @property
    def last(self) -> int:
        return self.port + self.count - 1

    def at(self, offset: int) -> Address:
        """The single address of the range's port ``offset`` (0 is the first)."""
        if not 0 <= offset < self.count:
            raise IndexError(f"port offset {offset} outside {self}")
        return Address(self.host, self.port + offset)

    def ports_overlap(self, other: Address) -> bool:
        return self.port <= other.last and other.port <= self.last

    def __str__(self) -> str:
        ports = str(self.port) if self.count == 1 else f"{self.port}-{self.last}"
        return join_host_port(self.host, ports)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def listens_overlap(a: Address, b: Address) -> bool:
    """Whether two listen addresses (or ranges) cannot both be bound: a port in common,
    and the same host, or one of them every interface (``""``: IPv4 and IPv6;
    ``0.0.0.0``: every IPv4 address; ``::``: every IPv6 address, as asyncio binds IPv6
    sockets IPv6-only). Host names are compared as written."""
    if not a.ports_overlap(b):
        return False
    if not a.host or not b.host:
        return True
    ia, ib = _ip(a.host), _ip(b.host)
    if ia is None or ib is None:
        return a.host.lower() == b.host.lower()
    if ia.version != ib.version:
        return False
    return ia == ib or ia.is_unspecified or ib.is_unspecified


def _reaches_self(host: str) -> bool:
    """A target host that connects to this machine whatever its interfaces: a loopback or
    unspecified address (Linux connects ``0.0.0.0`` to loopback), or ``localhost``."""
    ip = _ip(host)
    if ip is None:
        return host.lower() == "localhost"
    return ip.is_loopback or ip.is_unspecified


def target_reaches_listen(target: Address, listen: Address) -> bool:
    """Whether connecting to a port of ``target`` would be accepted by ``listen`` of the
    same daemon: a port in common, and the listen host is the target's (as written, or the
    same IP), or a wildcard and the target loopback. A target naming another address of
    this host behind a wildcard listen cannot be told from the configuration."""
    if listen.port == 0 or not target.ports_overlap(listen):
        return False
    ti, li = _ip(target.host), _ip(listen.host)
    if not listen.host or (li is not None and li.is_unspecified):
        return _reaches_self(target.host) and (
            not listen.host or ti is None or li is None or ti.version == li.version)
    if ti is None or li is None:
        return target.host.lower() == listen.host.lower()
    return ti == li


def _port(text: str, what: str, low: int) -> int:
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()):  # int() would take " 80", "+80", "4_4"
        raise ConfigError(f"{what}: port {text!r} is not a number")
    port = int(text)
    if not low <= port < 65536:
        raise ConfigError(f"{what}: port {port} is out of range {low}-65535")
    return port


def parse_address(text: str, *, what: str, need_host: bool = False,
                  allow_zero: bool = False, allow_range: bool = False) -> Address:
    """``HOST:PORT``, ``:PORT``, ``[IPv6]:PORT`` (port 0: any free port, if allowed); with
    ``allow_range`` also ``HOST:LO-HI`` and ``[IPv6]:LO-HI``, at most
    :data:`MAX_RANGE_PORTS` ports, ``LO-LO`` being one port."""
    t = text.strip()
    if t.startswith("["):
        end = t.find("]")
        if end < 0 or t[end + 1 : end + 2] != ":":
            raise ConfigError(f"{what}: {text!r} is not [IPV6]:PORT")
        host, port_s = t[1:end], t[end + 2 :]
    else:
        host, sep, port_s = t.rpartition(":")
        if not sep:
            raise ConfigError(f"{what}: {text!r} has no port (use HOST:PORT or :PORT)")
        if ":" in host:
            raise ConfigError(f"{what}: write IPv6 addresses in brackets: [{host}]:{port_s}")
    dash = port_s.find("-", 1)  # a "-" in front is a sign: a negative port, refused
    if dash > 0 and not allow_range:
        raise ConfigError(f"{what}: {text!r}: a port range is not allowed here")
    if dash > 0:
        lo, hi = _port(port_s[:dash], what, 1), _port(port_s[dash + 1 :], what, 1)
        if lo > hi:
            raise ConfigError(f"{what}: port range {port_s!r} ends before it starts")
        if hi - lo + 1 > MAX_RANGE_PORTS:
            raise ConfigError(f"{what}: port range {port_s!r} has {hi - lo + 1} ports, "
                              f"more than {MAX_RANGE_PORTS}")
    else:
        lo = hi = _port(port_s, what, 0 if allow_zero else 1)
    if need_host and not host:
        raise ConfigError(f"{what}: {text!r} needs a host")
    return Address(host, lo, hi - lo + 1)


def is_loopback(host: str) -> bool:
    """Whether a listen host is a loopback address (``""``, every interface, is not; a name
    other than ``localhost`` is not known to be)."""
    if host.lower() == "localhost":
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback
