"""Daemon configuration: a TOML file, overridden by command-line flags.

Everything is validated when the daemon starts (:class:`ConfigError`, exit code 2), never at
the first migration: addresses parse, no two routes listen where both cannot be bound,
profiles load, numbers are finite and in range (:data:`LIMITS`).

::

    [daemon]
    metrics = "127.0.0.1:9464"     # "" disables the metrics endpoint
    log_format = "auto"            # auto (JSON unless on a terminal) | json | console
    log_level = "info"             # debug | info | warning | error
    drain_timeout = 300            # seconds in-flight migrations may take after SIGTERM
    hold_budget = 268435456        # bytes of device state all migrations hold at most
    splice_threads = 16            # untouched channels relayed in the kernel at once; 0 = none

    [defaults]                     # for every route, unless the route says otherwise
    profile = ""                   # built-in name or file path ("": default, or destination's)
    destination = "qemu-11.1.3"    # rewrite for this destination's manifests (no profile set)
    allow_guest_visible = []       # registers a destination may change visibly (opt-in)
    accel = "auto"                 # auto | tcg | kvm: streams of the other kind are refused
    policy = "passthrough"         # passthrough | abort
    dry_run = false
    hold_cap = 67108864            # bytes of device state held back at most
    max_description = 16777216     # bytes of VM description parsed at most
    connect_timeout = 10           # seconds to connect to the target
    idle_timeout = 3600            # seconds without a byte either way; 0 = never
    classify_timeout = 30          # seconds for a connection's first 4 bytes; 0 = no deadline
    end_quiet = 0.01               # seconds of quiet that confirm the end (return path)
    high_water = 4194304           # bytes buffered towards a peer before reading pauses
    max_connections = 512          # open connections per route; more are refused at once
    max_per_peer = 300             # open connections per source address and route
    allow = []                     # source networks allowed ("10.0.0.0/8"); empty: all
    tls_source_creds = ""          # dir: ca-cert.pem server-cert.pem server-key.pem ("": plain)
    tls_destination_creds = ""     # dir: ca-cert.pem client-cert.pem client-key.pem ("": plain)
    tls_hostname = ""              # name the destination's certificate carries ("": target host)
    tls_handshake_timeout = 10     # seconds for one TLS handshake, on either leg
    allow_plaintext_source = false # plaintext on a non-loopback listen address although TLS
                                   # is configured somewhere: refused unless true

    [[route]]
    listen = ":4444"               # [HOST]:PORT, [IPv6]:PORT, or a range [HOST]:LO-HI
    target = "dst.example:4444"    # HOST:PORT, or HOST:LO-HI (as many ports as listen)
    profile = "/etc/migproxy/profiles/10.0-to-11.1.toml"   # any [defaults] key may be set
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from migproxy.arm.destination import ACCELS, Destination
from migproxy.arm.profile import Profile, ProfileError, load_profile
from migproxy.arm.registers import parse_register
from migproxy.daemon.addresses import join_host_port
from migproxy.daemon.admission import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PER_PEER,
    AdmissionLimits,
    Network,
    parse_networks,
)
from migproxy.daemon.session import DEFAULT_END_QUIET
from migproxy.daemon.splice import DEFAULT_THREADS
from migproxy.daemon.tls import DEFAULT_HANDSHAKE_TIMEOUT, RouteTls, TlsConfigError, route_tls
from migproxy.stream.errors import MigproxyError
from migproxy.stream.policy import DEFAULT_HOLD_CAP, DEFAULT_MAX_DESCRIPTION, Policy

LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_METRICS = "127.0.0.1:9464"
DEFAULT_HOLD_BUDGET = 256 << 20  # device state held by all migrations of a daemon at once


class ConfigError(MigproxyError):
    """The configuration is invalid; the daemon must not start."""


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


@dataclass(frozen=True)
class RouteSettings:
    profile: str = ""  # "": the default profile, unless a destination is set
    destination: str = ""  # a manifest set (qemu-11.1.3), file or directory; "": none
    allow_guest_visible: tuple[str, ...] = ()  # registers a destination may change visibly
    accel: str = "auto"  # auto: each stream's own list says; tcg | kvm: others refused
    policy: Policy = Policy.PASSTHROUGH
    dry_run: bool = False
    hold_cap: int = DEFAULT_HOLD_CAP
    max_description: int = DEFAULT_MAX_DESCRIPTION
    connect_timeout: float = 10.0
    idle_timeout: float = 3600.0
    classify_timeout: float = 30.0
    end_quiet: float = DEFAULT_END_QUIET
    high_water: int = 4 << 20
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_peer: int = DEFAULT_MAX_PER_PEER
    allow: tuple[Network, ...] = ()  # empty: every source address
    tls_source_creds: str = ""  # a tls-creds-x509 directory (server side); "": plaintext
    tls_destination_creds: str = ""  # a tls-creds-x509 directory (client side); "": plaintext
    tls_hostname: str = ""  # "": the target's host
    tls_handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    allow_plaintext_source: bool = False

    @property
    def admission(self) -> AdmissionLimits:
        return AdmissionLimits(self.max_connections, self.max_per_peer, self.allow)


@dataclass(frozen=True)
class Route:
    """One ``[[route]]``: ``listen.at(i)`` is relayed to ``target.at(i)`` (one port each
    unless the route is a range; both have ``count`` ports).

    A port range (``listen = "192.0.2.10:49152-49215"``, ``target =
    "127.0.0.1:49152-49215"``) stays one route with one listener per port; it is not
    expanded into a route per port. What the operator wrote as one route keeps one
    meaning: its admission limits (``max_connections``, ``max_per_peer``, ``allow``) bound
    the whole range together (a table of limits does not multiply by the range's length
    unseen), and the daemon logs it as one ``listening`` line naming the range. What
    belongs to one migration is per listening port instead, since a port of a range
    carries one migration (a libvirt destination gives each incoming migration its own
    port): the accept order, the connect slot and the open-main-channel test of
    ``classify_timeout`` are per port (:class:`~migproxy.daemon.port.PortState`).
    """

    listen: Address
    target: Address
    settings: RouteSettings
    profile: Profile | None  # loaded; None if profile = "none" or a destination is used
    destination: Destination | None = None  # loaded manifest set (when no profile is given)
    tls: RouteTls | None = None  # TLS termination on either leg; None: plaintext both ways


@dataclass
class Config:
    routes: list[Route]
    metrics: Address | None = None
    log_format: str = "auto"
    log_level: str = "info"
    drain_timeout: float = 300.0
    hold_budget: int = DEFAULT_HOLD_BUDGET
    splice_threads: int = DEFAULT_THREADS
    source: str = "<command line>"
    defaults: RouteSettings = field(default_factory=RouteSettings)


_SETTING_KEYS = {"profile", "destination", "allow_guest_visible", "accel", "policy",
                 "dry_run", "hold_cap", "max_description",
                 "connect_timeout", "idle_timeout", "classify_timeout", "end_quiet",
                 "high_water", "max_connections", "max_per_peer", "allow",
                 "tls_source_creds", "tls_destination_creds", "tls_hostname",
                 "tls_handshake_timeout", "allow_plaintext_source"}
_INTEGERS = ("hold_cap", "max_description", "high_water", "max_connections", "max_per_peer")
# (lowest, highest) accepted value of each number; the README's configuration table says why.
LIMITS: dict[str, tuple[float, float]] = {
    "hold_cap": (4096, 1 << 32),  # bytes; real non-iterable device state is KiB to a few MiB
    "max_description": (4096, 1 << 30),  # bytes; a real VM description is 10-100 KiB
    "high_water": (65536, 1 << 30),  # bytes queued towards one peer
    "connect_timeout": (0.1, 3600),  # seconds
    "idle_timeout": (0, 7 * 86400),  # seconds; 0 = never
    "classify_timeout": (0, 86400),  # seconds; 0 = no deadline
    "end_quiet": (0.001, 5),  # seconds; the switchover time added with the return path
    "drain_timeout": (0, 86400),  # seconds
    "hold_budget": (4096, 1 << 36),  # bytes held by all migrations of the daemon together
    "splice_threads": (0, 1024),  # kernel relays (threads, 2 pipes each) of the daemon
    "max_connections": (1, 65536),  # open connections per route
    "max_per_peer": (1, 65536),  # open connections per source address and route
    "tls_handshake_timeout": (0.1, 600),  # seconds
}


def _number(v: Any, key: str, where: str, *, minimum: float, maximum: float,
            integer: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(f"{where}: {key} must be a number, not {v!r}")
    if not math.isfinite(v):
        raise ConfigError(f"{where}: {key} must be a finite number, not {v!r}")
    if integer and not isinstance(v, int):
        raise ConfigError(f"{where}: {key} must be a whole number, not {v!r}")
    if not minimum <= v <= maximum:
        raise ConfigError(f"{where}: {key} must be between {minimum} and {maximum}, not {v!r}")
    return v


def _daemon_number(daemon: dict[str, Any], args: argparse.Namespace, key: str,
                   default: float, source: str, *, integer: bool = False) -> float:
    """A number of the [daemon] table, overridden by its command-line flag, in LIMITS."""
    v = daemon.get(key, default)
    if getattr(args, key, None) is not None:
        v = getattr(args, key)
    low, high = LIMITS[key]
    return float(_number(v, key, source, minimum=low, maximum=high, integer=integer))


def _settings(base: RouteSettings, table: dict[str, Any], where: str) -> RouteSettings:
    changes: dict[str, Any] = {}
    for key, v in table.items():
        if key == "profile":
            if not isinstance(v, str):
                raise ConfigError(f"{where}: profile must be a name or a path")
            changes[key] = v
        elif key == "destination":
            if not isinstance(v, str):
                raise ConfigError(f"{where}: destination must be a manifest set name or a path")
            changes[key] = v
        elif key == "allow_guest_visible":
            changes[key] = _strings(v, f"{where}: allow_guest_visible must be a list of "
                                    "registers")
        elif key == "accel":
            if v not in ACCELS:
                raise ConfigError(f"{where}: accel must be auto, tcg or kvm, not {v!r}")
            changes[key] = v
        elif key == "policy":
            if v not in tuple(Policy):
                raise ConfigError(f"{where}: policy must be passthrough or abort, not {v!r}")
            changes[key] = Policy(v)
        elif key in ("dry_run", "allow_plaintext_source"):
            if not isinstance(v, bool):
                raise ConfigError(f"{where}: {key} must be true or false")
            changes[key] = v
        elif key in ("tls_source_creds", "tls_destination_creds", "tls_hostname"):
            if not isinstance(v, str):
                raise ConfigError(f"{where}: {key} must be a string")
            changes[key] = v
        elif key == "allow":
            items = _strings(v, f"{where}: allow must be a list of addresses or networks")
            try:
                changes[key] = parse_networks(items, f"{where}: allow")
            except ValueError as e:
                raise ConfigError(str(e)) from None
        elif key in LIMITS:
            low, high = LIMITS[key]
            n = _number(v, key, where, minimum=low, maximum=high, integer=key in _INTEGERS)
            changes[key] = int(n) if key in _INTEGERS else float(n)
        else:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {sorted(_SETTING_KEYS)})")
    return replace(base, **changes)


def _strings(v: Any, message: str) -> tuple[str, ...]:
    """A string or a list of strings, as a tuple; else ConfigError(message)."""
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
        raise ConfigError(message)
    return tuple(v)


def _load_profile(spec: str, where: str, cache: dict[str, Profile | None]) -> Profile | None:
    if spec == "none":
        return None
    if spec not in cache:
        try:
            cache[spec] = load_profile(spec)
        except ProfileError as e:
            raise ConfigError(f"{where}: {e}") from None
    return cache[spec]


def _route(listen: Address, target: Address, settings: RouteSettings, where: str,
           cache: dict[str, Profile | None]) -> Route:
    """A route with its profile or destination and its TLS credentials loaded."""
    try:
        tls = route_tls(settings.tls_source_creds, settings.tls_destination_creds,
                        settings.tls_hostname, target.host, settings.tls_handshake_timeout)
    except TlsConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return replace(_engine_route(listen, target, settings, where, cache), tls=tls)


def is_loopback(host: str) -> bool:
    """Whether a listen host is a loopback address (``""``, every interface, is not; a name
    other than ``localhost`` is not known to be)."""
    if host.lower() == "localhost":
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback


def _check_plaintext(routes: list[Route], wheres: list[str]) -> None:
    """Once TLS is configured anywhere, a plaintext listener reachable from the network
    would carry the migrations unencrypted: refused, unless the route allows it."""
    if not any(r.tls is not None and r.tls.terminates for r in routes):
        return
    for r, where in zip(routes, wheres, strict=True):
        plain_source = r.tls is None or r.tls.source is None
        if plain_source and not is_loopback(r.listen.host) and \
                not r.settings.allow_plaintext_source:
            raise ConfigError(
                f"{where}: listen address {r.listen} takes plaintext from the network while "
                "TLS is configured (set tls_source_creds, listen on loopback, or "
                "allow_plaintext_source = true / --allow-plaintext-source)")


def _engine_route(listen: Address, target: Address, settings: RouteSettings, where: str,
                  cache: dict[str, Profile | None]) -> Route:
    """A route with its profile or destination loaded (an explicit profile overrides)."""
    if settings.destination and not settings.profile:
        try:
            opt_in = frozenset(parse_register(r) for r in settings.allow_guest_visible)
        except ValueError as e:
            raise ConfigError(f"{where}: allow_guest_visible: {e}") from None
        try:
            dest = Destination.load(settings.destination, accel=settings.accel, opt_in=opt_in)
        except MigproxyError as e:
            raise ConfigError(f"{where}: destination: {e}") from None
        return Route(listen, target, settings, None, dest)
    if settings.allow_guest_visible:
        raise ConfigError(f"{where}: allow_guest_visible needs a destination (and no profile)")
    return Route(listen, target, settings,
                 _load_profile(settings.profile or "default", where, cache))


def _refuse_loops(routes: list[Route], wheres: list[str]) -> None:
    """Refuse a route whose target is one of the daemon's own listen addresses: each
    connection would come back through migproxy (to itself, forever, when a range maps a
    port onto itself), never reaching a QEMU."""
    for route, where in zip(routes, wheres, strict=True):
        for other, other_where in zip(routes, wheres, strict=True):
            if target_reaches_listen(route.target, other.listen):
                port = max(route.target.port, other.listen.port)
                whose = "its own" if other is route else f"{other_where}'s"
                raise ConfigError(
                    f"{where}: target {route.target} loops back into this daemon: port "
                    f"{port} is {whose} listen address {other.listen}")


def load_config(path: str | None, args: argparse.Namespace) -> Config:
    """Build the configuration from an optional TOML file and the command-line flags."""
    data: dict[str, Any] = {}
    source = "<command line>"
    if path:
        source = path
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from None
    extra = set(data) - {"daemon", "defaults", "route"}
    if extra:
        raise ConfigError(f"{source}: unknown sections {sorted(extra)} "
                          "(known: daemon, defaults, route)")
    daemon = data.get("daemon", {})
    if not isinstance(daemon, dict):
        raise ConfigError(f"{source}: [daemon] must be a table")
    extra = set(daemon) - {"metrics", "log_format", "log_level", "drain_timeout", "hold_budget",
                           "splice_threads"}
    if extra:
        raise ConfigError(f"{source}: [daemon]: unknown keys {sorted(extra)}")

    metrics_s = daemon.get("metrics", DEFAULT_METRICS)
    if getattr(args, "metrics", None) is not None:
        metrics_s = args.metrics
    if not isinstance(metrics_s, str):
        raise ConfigError(f"{source}: metrics must be an address string or \"\"")
    metrics = parse_address(metrics_s, what="metrics", allow_zero=True) if metrics_s else None

    log_format = getattr(args, "log_format", None) or daemon.get("log_format", "auto")
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}, "
                          f"not {log_format!r}")
    log_level = getattr(args, "log_level", None) or daemon.get("log_level", "info")
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    drain_timeout = _daemon_number(daemon, args, "drain_timeout", 300, source)
    hold_budget = int(_daemon_number(daemon, args, "hold_budget", DEFAULT_HOLD_BUDGET, source,
                                     integer=True))
    splice_threads = int(_daemon_number(daemon, args, "splice_threads", DEFAULT_THREADS,
                                        source, integer=True))

    defaults_t = data.get("defaults", {})
    if not isinstance(defaults_t, dict):
        raise ConfigError(f"{source}: [defaults] must be a table")
    defaults = _settings(RouteSettings(), defaults_t, f"{source}: [defaults]")
    # Command-line flags override the file's defaults (and so every route's value).
    cli: dict[str, Any] = {}
    for key in _SETTING_KEYS:
        v = getattr(args, key, None)
        if v is not None:  # --dry-run / --no-dry-run: True / False; absent: None
            cli[key] = v
    defaults = _settings(defaults, cli, "command line")

    routes_t = data.get("route", [])
    if not isinstance(routes_t, list):
        raise ConfigError(f"{source}: route must be an array of tables ([[route]])")
    listen_a = getattr(args, "listen", None)
    target_a = getattr(args, "target", None)
    if (listen_a is None) != (target_a is None):
        raise ConfigError("--listen and --target go together")
    if listen_a is not None:
        routes_t = [{"listen": listen_a, "target": target_a}]
    if not routes_t:
        raise ConfigError("no route: give --listen and --target, or [[route]] in --config")
    cache: dict[str, Profile | None] = {}
    routes: list[Route] = []
    seen: list[tuple[Address, str]] = []
    wheres: list[str] = []
    for i, r in enumerate(routes_t, 1):
        where = f"{source}: route {i}" if listen_a is None else "command line"
        if not isinstance(r, dict):
            raise ConfigError(f"{where}: must be a table")
        if "listen" not in r or "target" not in r:
            raise ConfigError(f"{where}: needs listen and target")
        listen = parse_address(str(r["listen"]), what=f"{where}: listen", allow_zero=True,
                               allow_range=True)
        target = parse_address(str(r["target"]), what=f"{where}: target", need_host=True,
                               allow_range=True)
        if listen.count != target.count:
            raise ConfigError(f"{where}: listen {listen} has {listen.count} port(s) and "
                              f"target {target} {target.count}: a range route needs ranges "
                              "of the same length")
        if listen.port != 0:
            for other, other_where in seen:
                if listen == other:
                    raise ConfigError(f"{where}: listen address {listen} is used twice "
                                      f"(also in {other_where})")
                if listens_overlap(listen, other):
                    raise ConfigError(f"{where}: listen address {listen} overlaps {other} "
                                      f"({other_where}): both cannot be bound")
            seen.append((listen, where))
        own = {k: v for k, v in r.items() if k not in ("listen", "target")}
        settings = _settings(defaults, own, where) if listen_a is None else defaults
        if listen_a is None:
            # CLI overrides apply to routes from the file too
            settings = _settings(settings, cli, "command line")
        routes.append(_route(listen, target, settings, where, cache))
        wheres.append(where)
    _refuse_loops(routes, wheres)
    _check_plaintext(routes, wheres)
    return Config(routes, metrics, log_format, log_level, drain_timeout, hold_budget,
                  splice_threads, source, defaults)
