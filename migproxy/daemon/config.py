"""Daemon configuration: a TOML file, overridden by command-line flags.

Everything is validated when the daemon starts (:class:`ConfigError`, exit code 2), never at
the first migration: the file is read within bounds (1 MiB, nesting 32 deep:
:mod:`migproxy.stream.tomlfile`), addresses parse, no two routes listen where both cannot be
bound, profiles load, numbers are finite and in range. The keys, their defaults, bounds,
flags and help are declared once, in :mod:`migproxy.daemon.settings`; this module loads
them. Every key with its default (this block is made from the settings table):

::

"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from migproxy.arm.destination import Destination
from migproxy.arm.profile import Profile, ProfileError, load_profile
from migproxy.arm.registers import parse_register
from migproxy.arm.rewriter import arm_engine_config
from migproxy.daemon import settings as S
from migproxy.daemon.addresses import (
    MAX_RANGE_PORTS,
    Address,
    ConfigError,
    is_loopback,
    listens_overlap,
    parse_address,
    target_reaches_listen,
)
from migproxy.daemon.admission import AdmissionLimits, Network
from migproxy.daemon.settings import LIMITS, ROUTE_KEYS, route_changes
from migproxy.daemon.tls import RouteTls, TlsConfigError, route_tls
from migproxy.stream.engine import EngineConfig
from migproxy.stream.errors import MigproxyError
from migproxy.stream.policy import HoldBudget, Policy
from migproxy.stream.tomlfile import TomlFileError, load_toml_file

__doc__ = (__doc__ or "") + S.toml_block()

__all__ = ["LIMITS", "MAX_RANGE_PORTS", "Address", "Config", "ConfigError", "Route",
           "RouteSettings", "is_loopback", "listens_overlap", "load_config", "parse_address",
           "target_reaches_listen"]

DEFAULT_METRICS = S.METRICS.default


@dataclass(frozen=True)
class RouteSettings:
    """A route's settings; the keys, defaults and bounds are the settings table's
    (:data:`~migproxy.daemon.settings.ROUTE_SETTINGS`, in this order; a test checks it)."""

    profile: str = S.PROFILE.default  # "": the default profile, unless a destination is set
    destination: str = S.DESTINATION.default  # a manifest set, file or directory; "": none
    allow_guest_visible: tuple[str, ...] = S.ALLOW_GUEST_VISIBLE.default
    accel: str = S.ACCEL.default  # auto: each stream's own list says; tcg | kvm: others refused
    policy: Policy = S.POLICY.default
    dry_run: bool = S.DRY_RUN.default
    hold_cap: int = S.HOLD_CAP.default
    max_description: int = S.MAX_DESCRIPTION.default
    connect_timeout: float = S.CONNECT_TIMEOUT.default
    idle_timeout: float = S.IDLE_TIMEOUT.default
    classify_timeout: float = S.CLASSIFY_TIMEOUT.default
    end_quiet: float = S.END_QUIET.default
    high_water: int = S.HIGH_WATER.default
    max_connections: int = S.MAX_CONNECTIONS.default
    max_per_peer: int = S.MAX_PER_PEER.default
    allow: tuple[Network, ...] = S.ALLOW.default  # empty: every source address
    tls_source_creds: str = S.TLS_SOURCE_CREDS.default  # tls-creds-x509 dir; "": plaintext
    tls_destination_creds: str = S.TLS_DESTINATION_CREDS.default
    tls_hostname: str = S.TLS_HOSTNAME.default  # "": the target's host
    tls_handshake_timeout: float = S.TLS_HANDSHAKE_TIMEOUT.default
    allow_plaintext_source: bool = S.ALLOW_PLAINTEXT_SOURCE.default

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

    def engine_config(self, hold_budget: HoldBudget | None = None) -> EngineConfig:
        """The stream engine of this route's main channels: the ARM cpu rewriter with its
        profile or destination, and its settings (the relay builds its sessions with it
        and imports nothing of the ARM plug-in)."""
        st = self.settings
        return arm_engine_config(self.profile, self.destination, policy=st.policy,
                                 dry_run=st.dry_run, hold_cap=st.hold_cap,
                                 max_description=st.max_description, hold_budget=hold_budget)


@dataclass
class Config:
    """The daemon's configuration; ``metrics`` … ``tls_failed_handshakes`` are the settings
    table's ``[daemon]`` keys (:data:`~migproxy.daemon.settings.DAEMON_SETTINGS`)."""

    routes: list[Route]
    metrics: Address | None = None
    log_format: str = S.LOG_FORMAT.default
    log_level: str = S.LOG_LEVEL.default
    drain_timeout: float = S.DRAIN_TIMEOUT.default
    hold_budget: int = S.HOLD_BUDGET.default
    splice_threads: int = S.SPLICE_THREADS.default
    tls_failed_handshakes: int = S.TLS_FAILED_HANDSHAKES.default
    source: str = "<command line>"
    defaults: RouteSettings = field(default_factory=RouteSettings)


_SETTING_KEYS = ROUTE_KEYS  # the name tests/deploy knows


def _settings(base: RouteSettings, table: dict[str, Any], where: str) -> RouteSettings:
    return replace(base, **route_changes(table, where))


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


def load_config(path: str | None,
                args: argparse.Namespace | Mapping[str, object]) -> Config:
    """Build the configuration from an optional TOML file and the command-line flags
    (``args``: the parsed flags, or a mapping of setting keys to values; None or absent:
    not given)."""
    flags = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    data: dict[str, Any] = {}
    source = "<command line>"
    if path:
        source = path
        try:
            data = load_toml_file(path)
        except TomlFileError as e:
            raise ConfigError(str(e)) from None
    extra = set(data) - {"daemon", "defaults", "route"}
    if extra:
        raise ConfigError(f"{source}: unknown sections {sorted(extra)} "
                          "(known: daemon, defaults, route)")
    daemon = data.get("daemon", {})
    if not isinstance(daemon, dict):
        raise ConfigError(f"{source}: [daemon] must be a table")
    extra = set(daemon) - S.DAEMON_KEYS
    if extra:
        raise ConfigError(f"{source}: [daemon]: unknown keys {sorted(extra)}")
    daemon_values = S.daemon_values(daemon, flags, source)

    defaults_t = data.get("defaults", {})
    if not isinstance(defaults_t, dict):
        raise ConfigError(f"{source}: [defaults] must be a table")
    defaults = _settings(RouteSettings(), defaults_t, f"{source}: [defaults]")
    # Command-line flags override the file's defaults (and so every route's value).
    cli: dict[str, Any] = {}
    for key in ROUTE_KEYS:
        v = flags.get(key)
        if v is not None:  # --dry-run / --no-dry-run: True / False; absent: None
            cli[key] = v
    defaults = _settings(defaults, cli, "command line")

    routes_t = data.get("route", [])
    if not isinstance(routes_t, list):
        raise ConfigError(f"{source}: route must be an array of tables ([[route]])")
    listen_a = flags.get("listen")
    target_a = flags.get("target")
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
    return Config(routes, source=source, defaults=defaults, **daemon_values)
