"""Loading the daemon's configuration: a TOML file, overridden by command-line flags.

:func:`load_config` reads in phases, each of which refuses with a :class:`ConfigError`
(exit code 2) that says where:

1. the file, within bounds (1 MiB, nesting 32 deep: :mod:`migproxy.stream.tomlfile`), and
   its sections (``daemon``, ``defaults``, ``route``);
2. ``[daemon]``, then ``[defaults]`` with the flags over it (a flag overrides the file's
   value for every route);
3. each route: its addresses, its own settings, its profile or destination, its TLS
   credentials;
4. the routes together: no two listen where both cannot be bound, none loops back into the
   daemon, and no plaintext listener is reachable from the network once TLS is configured.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from migproxy.arm.destination import Destination
from migproxy.arm.profile import Profile, ProfileError, load_profile
from migproxy.arm.registers import parse_register
from migproxy.daemon import addresses
from migproxy.daemon import settings as S
from migproxy.daemon.addresses import Address, ConfigError
from migproxy.daemon.config import Config, Route, RouteSettings
from migproxy.daemon.settings import ROUTE_KEYS, route_changes
from migproxy.daemon.tls import TlsConfigError, route_tls
from migproxy.stream.errors import MigproxyError
from migproxy.stream.tomlfile import TomlFileError, load_toml_file

__all__ = ["load_config"]

SECTIONS = frozenset({"daemon", "defaults", "route"})


def load_config(path: str | None,
                args: argparse.Namespace | Mapping[str, object]) -> Config:
    """Build the configuration from an optional TOML file and the command-line flags
    (``args``: the parsed flags, or a mapping of setting keys to values; None or absent:
    not given)."""
    flags = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    data, source = _read(path)
    daemon_values = S.daemon_values(_table(data, "daemon", source), flags, source)
    defaults, cli = _defaults(data, flags, source)
    routes = _RouteLoader(defaults, cli)
    for table, where in _route_tables(data, flags, source):
        routes.add(table, where)
    routes.check()
    return Config(routes.routes, source=source, defaults=defaults, **daemon_values)


def _read(path: str | None) -> tuple[dict[str, Any], str]:
    """The file's tables (none without a file) and the name to say where."""
    if not path:
        return {}, "<command line>"
    try:
        data = load_toml_file(path)
    except TomlFileError as e:
        raise ConfigError(str(e)) from None
    extra = set(data) - SECTIONS
    if extra:
        raise ConfigError(f"{path}: unknown sections {sorted(extra)} "
                          f"(known: {', '.join(sorted(SECTIONS))})")
    return data, path


def _table(data: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    t = data.get(name, {})
    if not isinstance(t, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    if name == "daemon":
        extra = set(t) - S.DAEMON_KEYS
        if extra:
            raise ConfigError(f"{source}: [daemon]: unknown keys {sorted(extra)}")
    return t


def _defaults(data: dict[str, Any], flags: dict[str, Any],
              source: str) -> tuple[RouteSettings, dict[str, Any]]:
    """``[defaults]`` with the flags over it, and the flags given (they also override
    every route's own value)."""
    defaults = _settings(RouteSettings(), _table(data, "defaults", source),
                         f"{source}: [defaults]")
    # --dry-run / --no-dry-run: True / False; absent: None
    cli = {key: flags[key] for key in ROUTE_KEYS if flags.get(key) is not None}
    return _settings(defaults, cli, "command line"), cli


def _route_tables(data: dict[str, Any], flags: dict[str, Any],
                  source: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Each route's table and where it was written: ``[[route]]`` entries, or the one
    route of ``--listen`` and ``--target`` (which replaces them)."""
    tables = data.get("route", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{source}: route must be an array of tables ([[route]])")
    listen, target = flags.get("listen"), flags.get("target")
    if (listen is None) != (target is None):
        raise ConfigError("--listen and --target go together")
    if listen is not None:
        yield {"listen": listen, "target": target, _FROM_FLAGS: True}, "command line"
        return
    if not tables:
        raise ConfigError("no route: give --listen and --target, or [[route]] in --config")
    for i, t in enumerate(tables, 1):
        where = f"{source}: route {i}"
        if not isinstance(t, dict):
            raise ConfigError(f"{where}: must be a table")
        yield t, where


_FROM_FLAGS = "\0flags"  # marks the route of --listen/--target (no TOML key can be this)


@dataclass
class _RouteLoader:
    """The routes loaded so far, and the checks between them."""

    defaults: RouteSettings
    cli: dict[str, Any]

    def __post_init__(self) -> None:
        self.routes: list[Route] = []
        self.wheres: list[str] = []
        self.listens: list[tuple[Address, str]] = []
        self.profiles: dict[str, Profile | None] = {}

    def add(self, table: dict[str, Any], where: str) -> None:
        if "listen" not in table or "target" not in table:
            raise ConfigError(f"{where}: needs listen and target")
        listen = addresses.parse_address(str(table["listen"]), what=f"{where}: listen",
                               allow_zero=True, allow_range=True)
        target = addresses.parse_address(str(table["target"]), what=f"{where}: target",
                               need_host=True, allow_range=True)
        if listen.count != target.count:
            raise ConfigError(f"{where}: listen {listen} has {listen.count} port(s) and "
                              f"target {target} {target.count}: a range route needs ranges "
                              "of the same length")
        self._check_listen(listen, where)
        if table.get(_FROM_FLAGS):
            settings = self.defaults
        else:
            own = {k: v for k, v in table.items() if k not in ("listen", "target")}
            # the flags override the routes' own values too
            settings = _settings(_settings(self.defaults, own, where), self.cli,
                                 "command line")
        self.routes.append(self._route(listen, target, settings, where))
        self.wheres.append(where)

    def _check_listen(self, listen: Address, where: str) -> None:
        if listen.port == 0:
            return
        for other, other_where in self.listens:
            if listen == other:
                raise ConfigError(f"{where}: listen address {listen} is used twice "
                                  f"(also in {other_where})")
            if addresses.listens_overlap(listen, other):
                raise ConfigError(f"{where}: listen address {listen} overlaps {other} "
                                  f"({other_where}): both cannot be bound")
        self.listens.append((listen, where))

    def _route(self, listen: Address, target: Address, settings: RouteSettings,
               where: str) -> Route:
        """A route with its profile or destination and its TLS credentials loaded."""
        try:
            tls = route_tls(settings.tls_source_creds, settings.tls_destination_creds,
                            settings.tls_hostname, target.host,
                            settings.tls_handshake_timeout)
        except TlsConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        return replace(self._engine_route(listen, target, settings, where), tls=tls)

    def _engine_route(self, listen: Address, target: Address, settings: RouteSettings,
                      where: str) -> Route:
        """A route with its profile or destination loaded (an explicit profile
        overrides)."""
        if settings.destination and not settings.profile:
            try:
                opt_in = frozenset(parse_register(r) for r in settings.allow_guest_visible)
            except ValueError as e:
                raise ConfigError(f"{where}: allow_guest_visible: {e}") from None
            try:
                dest = Destination.load(settings.destination, accel=settings.accel,
                                        opt_in=opt_in)
            except MigproxyError as e:
                raise ConfigError(f"{where}: destination: {e}") from None
            return Route(listen, target, settings, None, dest)
        if settings.allow_guest_visible:
            raise ConfigError(
                f"{where}: allow_guest_visible needs a destination (and no profile)")
        return Route(listen, target, settings,
                     self._profile(settings.profile or "default", where))

    def _profile(self, spec: str, where: str) -> Profile | None:
        if spec == "none":
            return None
        if spec not in self.profiles:
            try:
                self.profiles[spec] = load_profile(spec)
            except ProfileError as e:
                raise ConfigError(f"{where}: {e}") from None
        return self.profiles[spec]

    def check(self) -> None:
        """The checks between routes."""
        self._refuse_loops()
        self._check_plaintext()

    def _refuse_loops(self) -> None:
        """Refuse a route whose target is one of the daemon's own listen addresses: each
        connection would come back through migproxy (to itself, forever, when a range
        maps a port onto itself), never reaching a QEMU."""
        named = list(zip(self.routes, self.wheres, strict=True))
        for route, where in named:
            for other, other_where in named:
                if addresses.target_reaches_listen(route.target, other.listen):
                    port = max(route.target.port, other.listen.port)
                    whose = "its own" if other is route else f"{other_where}'s"
                    raise ConfigError(
                        f"{where}: target {route.target} loops back into this daemon: port "
                        f"{port} is {whose} listen address {other.listen}")

    def _check_plaintext(self) -> None:
        """Once TLS is configured anywhere, a plaintext listener reachable from the
        network would carry the migrations unencrypted: refused, unless the route allows
        it."""
        if not any(r.tls is not None and r.tls.terminates for r in self.routes):
            return
        for r, where in zip(self.routes, self.wheres, strict=True):
            plain_source = r.tls is None or r.tls.source is None
            if plain_source and not addresses.is_loopback(r.listen.host) and \
                    not r.settings.allow_plaintext_source:
                raise ConfigError(
                    f"{where}: listen address {r.listen} takes plaintext from the network "
                    "while TLS is configured (set tls_source_creds, listen on loopback, or "
                    "allow_plaintext_source = true / --allow-plaintext-source)")


def _settings(base: RouteSettings, table: dict[str, Any], where: str) -> RouteSettings:
    return replace(base, **route_changes(table, where))
