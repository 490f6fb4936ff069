"""The daemon's settings, declared once.

Each :class:`Setting` says a key's scope (``[daemon]``, a route key that ``[defaults]`` and
``[[route]]`` take, or a route's own ``listen``/``target``), its kind, default, bounds and
unit, its command-line flag and its help. Everything else is made from this table:

- the validation of the TOML values and of the flags (:meth:`Setting.check`), and
  :data:`LIMITS`;
- :class:`~migproxy.daemon.config.RouteSettings` and
  :class:`~migproxy.daemon.config.Config` take their defaults from it (a test checks that
  their fields are the table's keys);
- the daemon's command-line flags with their help and defaults (:func:`add_flags`);
- the configuration table of ``docs/operations.md`` (``scripts/make-docs.py``, checked by a
  test), and the TOML block of :mod:`migproxy.daemon.config`'s docstring; a test checks that
  ``config/migproxy.example.toml`` shows every key with its default.

Bounds (issue 17, M3): every number has a minimum and a maximum. A setting where 0 means
"never" (``idle_timeout``, ``classify_timeout``) or "at once" (``drain_timeout``) takes 0
or a value from its minimum up: 1e-300 or 1e-9 s is refused, not taken as a deadline that
closes every migration at once.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, Literal, TypeVar

from migproxy.arm.destination import ACCELS
from migproxy.daemon.addresses import MAX_RANGE_PORTS, ConfigError, parse_address
from migproxy.daemon.admission import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PER_PEER,
    Network,
    parse_networks,
)
from migproxy.daemon.handshake_budget import DEFAULT_FAILURES
from migproxy.daemon.pump import DEFAULT_THREADS as PUMP_THREADS
from migproxy.daemon.session import DEFAULT_END_QUIET
from migproxy.daemon.splice import DEFAULT_THREADS
from migproxy.daemon.tls import DEFAULT_HANDSHAKE_TIMEOUT
from migproxy.stream.policy import DEFAULT_HOLD_CAP, DEFAULT_MAX_DESCRIPTION, Policy

T = TypeVar("T")

Scope = Literal["daemon", "route", "route-address"]
"""``daemon``: a key of ``[daemon]``; ``route``: a key of ``[defaults]`` and of each
``[[route]]``; ``route-address``: ``listen``/``target``, only in a ``[[route]]``."""

Kind = Literal["text", "bool", "int", "float", "choice", "strings", "networks", "address"]

DAY = 86400


@dataclass(frozen=True)
class Setting(Generic[T]):
    key: str
    scope: Scope
    kind: Kind
    default: T
    help: str
    """The flag's help, without the default and bounds (added from the table)."""
    doc: str
    """The "meaning" column of the documentation's table; ``{range}`` is replaced by the
    bounds (else they are appended in parentheses)."""
    expect: str = ""
    """What a wrong value is told it must be ("a name or a path"); derived if empty."""
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    zero: str = ""
    """What 0 means when 0 is allowed below :attr:`minimum` ("never"); "" if it is not."""
    unit: str = ""
    """``s`` or ``bytes`` (how the bounds are shown); "" for a count."""
    repeatable: bool = False
    shown_default: str = ""
    """The default as the flag's help says it, when the value alone does not say it."""

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def section(self) -> str:
        return "daemon" if self.scope == "daemon" else "defaults"

    @property
    def toml_default(self) -> object:
        """The default as a TOML value (what the example configuration shows)."""
        d: object = self.default
        if isinstance(d, Enum):
            return d.value
        if isinstance(d, tuple):
            return list(d)
        return d

    @property
    def low(self) -> float:
        """The lowest value accepted (0 where 0 has a meaning of its own)."""
        assert self.minimum is not None
        return 0 if self.zero else self.minimum

    def check(self, v: object, where: str) -> Any:
        """``v`` (from TOML or a flag) as the setting's value; :class:`ConfigError` if it
        is not one."""
        bad = f"{where}: {self.key} must be {self.expected()}"
        if self.kind in ("int", "float"):
            return self._number(v, where)
        if self.kind == "bool":
            if not isinstance(v, bool):
                raise ConfigError(bad)
            return v
        if self.kind in ("text", "address"):
            if not isinstance(v, str):
                raise ConfigError(bad)
            return v
        if self.kind == "choice":
            if not isinstance(v, str) or v not in self.choices:
                raise ConfigError(f"{bad}, not {v!r}")
            return Policy(v) if isinstance(self.default, Policy) else v
        items = _strings(v, bad)
        if self.kind == "strings":
            return items
        try:
            return parse_networks(items, f"{where}: {self.key}")
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def expected(self) -> str:
        if self.expect:
            return self.expect
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        return "a string"

    def _number(self, v: object, where: str) -> float:
        name = f"{where}: {self.key}"
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{name} must be a number, not {v!r}")
        if not math.isfinite(v):
            raise ConfigError(f"{name} must be a finite number, not {v!r}")
        if self.kind == "int" and not isinstance(v, int):
            raise ConfigError(f"{name} must be a whole number, not {v!r}")
        assert self.minimum is not None
        assert self.maximum is not None
        if not self.low <= v <= self.maximum:
            raise ConfigError(f"{name} must be between {_num(self.low)} and "
                              f"{_num(self.maximum)}, not {v!r}")
        if 0 < v < self.minimum:
            raise ConfigError(f"{name} must be 0 ({self.zero}) or at least "
                              f"{_num(self.minimum)}{' ' + self.unit if self.unit else ''}, "
                              f"not {v!r}")
        return int(v) if self.kind == "int" else float(v)

    def bounds(self, dash: str = " \u2013 ") -> str:
        """The accepted values as the documentation (an en dash) and the flags' help say them."""
        if self.minimum is None or self.maximum is None:
            return ""
        span = f"{_human(self.minimum, self.unit)}{dash}{_human(self.maximum, self.unit)}"
        return f"0 or {span}" if self.zero else span

    def default_text(self) -> str:
        if self.shown_default:
            return self.shown_default
        d = self.toml_default
        if isinstance(d, bool):
            return "true" if d else "false"
        if isinstance(d, list):
            return "[]" if not d else ", ".join(map(str, d))
        if isinstance(d, float):
            return _num(d)
        return '""' if d == "" else str(d)


def _num(x: float) -> str:
    """A bound as written: ``3600`` and ``4096``, not ``3600.0``; ``0.1`` as it is."""
    return str(int(x)) if float(x).is_integer() else str(x)


def _human(x: float, unit: str) -> str:
    if unit == "bytes" and x >= 65536 and int(x) & (int(x) - 1) == 0:
        for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if x >= size:
                return f"{int(x) // size} {name}"
    if unit == "s" and x >= DAY and x % DAY == 0:
        days = int(x) // DAY
        return f"{days} day" + ("s" if days > 1 else "")
    return _num(x) + (" s" if unit == "s" else "")


def _strings(v: object, message: str) -> tuple[str, ...]:
    """A string or a list of strings, as a tuple; else ConfigError(message)."""
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
        raise ConfigError(message)
    return tuple(v)


# --- the table --------------------------------------------------------------------------
# Route keys in the order of RouteSettings, then [daemon]; the docs' table follows it.

LISTEN: Setting[str] = Setting(
    "listen", "route-address", "address", "", metavar="[HOST]:PORT[-PORT]",
    help="where the source QEMU connects (:4444, 0.0.0.0:4444, [::1]:4444), or a port "
         f"range (192.0.2.10:49152-49215, at most {MAX_RANGE_PORTS} ports)",
    doc="`[HOST]:PORT`, `[IPv6]:PORT`; empty host: every interface; or a port range "
        "`[HOST]:LO-HI`, `[IPv6]:LO-HI` (see below)")
TARGET: Setting[str] = Setting(
    "target", "route-address", "address", "", metavar="HOST:PORT[-PORT]",
    help="the destination QEMU's -incoming address; for a --listen range, a range of the "
         "same length (port i goes to port i)",
    doc="`HOST:PORT` of the destination's `-incoming`; for a listen range, `HOST:LO-HI` of "
        "the same length")

PROFILE: Setting[str] = Setting(
    "profile", "route", "text", "", expect="a name or a path",
    shown_default="default, unless --destination is given",
    help="register profile: built-in name or file ('none' relays without rewriting); "
         "overrides --destination",
    doc="built-in profile name, profile file, or `none`; `\"\"` is the built-in `default` "
        "unless a destination is set; a profile given overrides the destination")
DESTINATION: Setting[str] = Setting(
    "destination", "route", "text", "", expect="a manifest set name or a path",
    metavar="SET", shown_default="none",
    help="rewrite for this destination: a shipped manifest set (qemu-11.1.3), or a "
         "manifest file or directory",
    doc="rewrite for this destination: a shipped manifest set (`qemu-11.1.3`), or a "
        "manifest file or directory (see [Destinations and the version matrix]"
        "(destinations.md#destinations-and-the-version-matrix))")
ALLOW_GUEST_VISIBLE: Setting[tuple[str, ...]] = Setting(
    "allow_guest_visible", "route", "strings", (), expect="a list of registers",
    metavar="REGISTER", repeatable=True, shown_default="none",
    help="with --destination: opt in to a guest-visible change of this register",
    doc="registers a destination may change although the guest can see it (named one by "
        "one; logged and counted)")
ACCEL: Setting[str] = Setting(
    "accel", "route", "choice", "auto", choices=ACCELS,
    expect="auto, tcg or kvm",
    help="the VMs' accelerator (auto: each stream's register list says; tcg or kvm: a "
         "stream of the other kind is refused)",
    doc="the VMs' accelerator: `auto` (each stream's register list says: only a KVM list "
        "has firmware registers), or `tcg` / `kvm` to refuse streams of the other kind "
        "(`no_manifest`)")
POLICY: Setting[Policy] = Setting(
    "policy", "route", "choice", Policy.PASSTHROUGH, choices=("passthrough", "abort"),
    expect="passthrough or abort",
    help="when the main channel is not understood",
    doc="`passthrough` or `abort` when not understood")
DRY_RUN: Setting[bool] = Setting(
    "dry_run", "route", "bool", False,
    help="parse and report what would be rewritten, forward bytes unchanged "
         "(--no-dry-run overrides dry_run = true in the file)",
    doc="report rewrites, forward unchanged")
HOLD_CAP: Setting[int] = Setting(
    "hold_cap", "route", "int", DEFAULT_HOLD_CAP, metavar="BYTES",
    minimum=4096, maximum=1 << 32, unit="bytes",
    help="device state held back at most",
    doc="bytes of device state held back at most ({range}); the real non-iterable device "
        "state of an ARM guest is KiB to a few MiB")
MAX_DESCRIPTION: Setting[int] = Setting(
    "max_description", "route", "int", DEFAULT_MAX_DESCRIPTION, metavar="BYTES",
    minimum=4096, maximum=1 << 30, unit="bytes",
    help="largest VM description parsed",
    doc="bytes of VM description JSON parsed at most ({range}); a larger one, or one with "
        "more than 200,000 objects and arrays, is never parsed, and the stream ends as "
        "`no_description`")
CONNECT_TIMEOUT: Setting[float] = Setting(
    "connect_timeout", "route", "float", 10.0, metavar="SECONDS",
    minimum=0.1, maximum=3600, unit="s",
    help="time to connect to the target",
    doc="seconds to connect to the target")
IDLE_TIMEOUT: Setting[float] = Setting(
    "idle_timeout", "route", "float", 3600.0, metavar="SECONDS",
    minimum=0.1, maximum=7 * DAY, zero="never", unit="s",
    help="close a pair silent this long in both directions (0: never)",
    doc="seconds without a byte either way before a pair is closed; 0 = never ({range})")
CLASSIFY_TIMEOUT: Setting[float] = Setting(
    "classify_timeout", "route", "float", 30.0, metavar="SECONDS",
    minimum=0.1, maximum=DAY, zero="no deadline", unit="s",
    help="close a connection that has not sent 4 bytes by then, unless a migration from "
         "its address is open (0: never)",
    doc="seconds a connection has to send its first 4 bytes; one still silent is closed "
        "(`classify_timeout`), unless a main channel from the same address is open on the "
        "same listening port of the route (QEMU's postcopy preempt channel is silent until "
        "postcopy starts); 0 = no deadline ({range})")
END_QUIET: Setting[float] = Setting(
    "end_quiet", "route", "float", DEFAULT_END_QUIET, metavar="SECONDS",
    minimum=0.001, maximum=5, unit="s",
    help="with the return path, quiet that confirms the end of the device state (at least)",
    doc="with the return path: seconds without a byte after a VM description that frames "
        "the device state before it is taken for the end and released, at least ({range}; "
        "a device state that arrived in several reads stretches it to twice their "
        "longest pause, up to 0.1 s); the switchover time this adds is measured under "
        "[Reliability](reliability.md)")
HIGH_WATER: Setting[int] = Setting(
    "high_water", "route", "int", 4 << 20, metavar="BYTES",
    minimum=65536, maximum=1 << 30, unit="bytes",
    help="bytes queued towards a peer before reading from the other pauses",
    doc="bytes queued towards a peer before reading from the other side pauses")
MAX_CONNECTIONS: Setting[int] = Setting(
    "max_connections", "route", "int", DEFAULT_MAX_CONNECTIONS, metavar="N",
    minimum=1, maximum=65536,
    help="open connections per route; one more waits 2 s for a migration's first bytes",
    doc="open connections per route (a range route: all its ports together; {range}); one "
        "over it waits at most 2 s for its first bytes: a migration's channel takes the "
        "place of the oldest connection that has sent none (evicted), anything else is "
        "refused (see Admission)")
MAX_PER_PEER: Setting[int] = Setting(
    "max_per_peer", "route", "int", DEFAULT_MAX_PER_PEER, metavar="N",
    minimum=1, maximum=65536,
    help="open connections per source address and route",
    doc="open connections per source address on a route (a range route: all its ports "
        "together; {range}); one migration needs 1 + its multifd channels; over it, as "
        "for max_connections")
ALLOW: Setting[tuple[Network, ...]] = Setting(
    "allow", "route", "networks", (), expect="a list of addresses or networks",
    metavar="CIDR", repeatable=True, shown_default="all",
    help="source network allowed to connect",
    doc="source networks allowed to connect (`\"10.0.0.0/8\"`, `\"2001:db8::/32\"`, one "
        "address); empty: every address")
TLS_SOURCE_CREDS: Setting[str] = Setting(
    "tls_source_creds", "route", "text", "", metavar="DIR", shown_default="plaintext",
    help="terminate TLS from the source: a tls-creds-x509 directory with ca-cert.pem, "
         "server-cert.pem, server-key.pem (/etc/pki/qemu)",
    doc="terminate TLS from the source: a directory with `ca-cert.pem`, `server-cert.pem`, "
        "`server-key.pem` (see \"TLS\"); `\"\"`: plaintext")
TLS_DESTINATION_CREDS: Setting[str] = Setting(
    "tls_destination_creds", "route", "text", "", metavar="DIR", shown_default="plaintext",
    help="TLS towards the destination: a directory with ca-cert.pem, client-cert.pem, "
         "client-key.pem (/etc/pki/qemu)",
    doc="TLS towards the destination: a directory with `ca-cert.pem`, `client-cert.pem`, "
        "`client-key.pem`; `\"\"`: plaintext")
TLS_HOSTNAME: Setting[str] = Setting(
    "tls_hostname", "route", "text", "", metavar="NAME", shown_default="the --target host",
    help="the name the destination's certificate must carry",
    doc="the name the destination's certificate must carry; `\"\"`: the target's host")
TLS_HANDSHAKE_TIMEOUT: Setting[float] = Setting(
    "tls_handshake_timeout", "route", "float", DEFAULT_HANDSHAKE_TIMEOUT, metavar="SECONDS",
    minimum=0.1, maximum=600, unit="s",
    help="time for one TLS handshake, on either leg",
    doc="seconds for one TLS handshake, on either leg")
ALLOW_PLAINTEXT_SOURCE: Setting[bool] = Setting(
    "allow_plaintext_source", "route", "bool", False,
    help="accept plaintext on a non-loopback --listen although TLS is configured",
    doc="accept plaintext on a non-loopback listen address although TLS is configured in "
        "the configuration")

METRICS: Setting[str] = Setting(
    "metrics", "daemon", "address", "127.0.0.1:9464", expect='an address string or ""',
    metavar="HOST:PORT", help='Prometheus endpoint ("" disables it)',
    doc="Prometheus endpoint; `\"\"` disables it")
LOG_FORMAT: Setting[str] = Setting(
    "log_format", "daemon", "choice", "auto", choices=("auto", "json", "console"),
    help="auto: JSON unless on a terminal",
    doc="`json` unless on a terminal; `json`, `console`")
LOG_LEVEL: Setting[str] = Setting(
    "log_level", "daemon", "choice", "info", choices=("debug", "info", "warning", "error"),
    help="the least severe events logged",
    doc="`debug`, `info`, `warning`, `error`")
HOLD_BUDGET: Setting[int] = Setting(
    "hold_budget", "daemon", "int", 256 << 20, metavar="BYTES",
    minimum=4096, maximum=1 << 36, unit="bytes",
    help="device state all migrations may hold at once",
    doc="bytes of device state all migrations of the daemon hold back at once ({range}); a "
        "migration that would go over it is relayed untouched (`hold_budget_exhausted`)")
DRAIN_TIMEOUT: Setting[float] = Setting(
    "drain_timeout", "daemon", "float", 300.0, metavar="SECONDS",
    minimum=0.1, maximum=DAY, zero="close them at once", unit="s",
    help="how long in-flight migrations may run after SIGTERM (0: close them at once)",
    doc="seconds in-flight migrations may take after SIGTERM; 0 = close them at once "
        "({range})")
SPLICE_THREADS: Setting[int] = Setting(
    "splice_threads", "daemon", "int", DEFAULT_THREADS, metavar="N",
    minimum=0, maximum=1024,
    help="untouched channels (multifd, postcopy preempt, passthrough) relayed in the kernel "
         "with splice(2) at once, one thread each (0: none)",
    doc="connections relayed in the kernel at once, one thread each ({range}; 0: none; see "
        "[The kernel relay](design.md#the-kernel-relay)); more wait on the event loop path")
RAM_PUMP: Setting[str] = Setting(
    "ram_pump", "daemon", "choice", "copy", choices=("splice", "copy", "off"),
    help="how a main channel's RAM records move while the engine only walks them: "
         "splice(2) with a tee(2) copy to walk, read/write, or off (the event loop)",
    doc="how a plaintext main channel's RAM records move while the engine forwards them "
        "unchanged: `splice` (socket to pipe to socket, a `tee(2)` copy for the walk), "
        "`copy` (`read(2)`/`write(2)`), both in a worker thread without the GIL, or `off` "
        "(the event loop); see [The RAM pump](design.md#the-ram-pump)")
RAM_PUMP_THREADS: Setting[int] = Setting(
    "ram_pump_threads", "daemon", "int", PUMP_THREADS, metavar="N",
    minimum=0, maximum=1024,
    help="main channels with a RAM pump at once, a worker thread each (0: none)",
    doc="main channels with a RAM pump at once, one worker thread each, kept until the "
        "channel closes ({range}; 0: none); more use the event-loop path meanwhile")
TLS_FAILED_HANDSHAKES: Setting[int] = Setting(
    "tls_failed_handshakes", "daemon", "int", DEFAULT_FAILURES, metavar="N",
    minimum=0, maximum=65536,
    help="failed TLS handshakes one source address may have at once, then one a second; "
         "over it refused (0: no limit)",
    doc="failed TLS handshakes a source address may have in a burst, over every route; it "
        "regains one a second, and a connection from it with none left is refused before "
        "its handshake (`tls_handshake_budget`); a handshake costs the event loop ~2.5 ms "
        "of CPU ({range}; 0: no limit)")

ADDRESS_SETTINGS: tuple[Setting[Any], ...] = (LISTEN, TARGET)
ROUTE_SETTINGS: tuple[Setting[Any], ...] = (
    PROFILE, DESTINATION, ALLOW_GUEST_VISIBLE, ACCEL, POLICY, DRY_RUN, HOLD_CAP,
    MAX_DESCRIPTION, CONNECT_TIMEOUT, IDLE_TIMEOUT, CLASSIFY_TIMEOUT, END_QUIET, HIGH_WATER,
    MAX_CONNECTIONS, MAX_PER_PEER, ALLOW, TLS_SOURCE_CREDS, TLS_DESTINATION_CREDS,
    TLS_HOSTNAME, TLS_HANDSHAKE_TIMEOUT, ALLOW_PLAINTEXT_SOURCE)
DAEMON_SETTINGS: tuple[Setting[Any], ...] = (
    METRICS, LOG_FORMAT, LOG_LEVEL, HOLD_BUDGET, DRAIN_TIMEOUT, SPLICE_THREADS, RAM_PUMP,
    RAM_PUMP_THREADS, TLS_FAILED_HANDSHAKES)
SETTINGS: dict[str, Setting[Any]] = {
    s.key: s for s in (*ADDRESS_SETTINGS, *ROUTE_SETTINGS, *DAEMON_SETTINGS)}
ROUTE_KEYS = frozenset(s.key for s in ROUTE_SETTINGS)
DAEMON_KEYS = frozenset(s.key for s in DAEMON_SETTINGS)

LIMITS: dict[str, tuple[float, float]] = {
    s.key: (s.low, s.maximum) for s in SETTINGS.values() if s.maximum is not None}
"""(lowest, highest) accepted value of each number; where 0 has a meaning of its own, the
values between 0 and the setting's minimum are refused too (:attr:`Setting.minimum`)."""


def route_changes(table: dict[str, Any], where: str) -> dict[str, Any]:
    """The route settings of a ``[defaults]`` or ``[[route]]`` table (or of the flags),
    checked: keyword arguments for ``dataclasses.replace`` of a RouteSettings."""
    changes: dict[str, Any] = {}
    for key, v in table.items():
        if key not in ROUTE_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {sorted(ROUTE_KEYS)})")
        changes[key] = SETTINGS[key].check(v, where)
    return changes


def daemon_values(table: dict[str, Any], overrides: dict[str, Any],
                  where: str) -> dict[str, Any]:
    """Every ``[daemon]`` setting: the flag's value if given, else the table's, else the
    default; checked. ``metrics`` becomes an Address or None (``""``)."""
    values: dict[str, Any] = {}
    for s in DAEMON_SETTINGS:
        v = overrides.get(s.key)
        values[s.key] = s.check(table.get(s.key, s.default) if v is None else v, where)
    m = values["metrics"]
    values["metrics"] = parse_address(m, what="metrics", allow_zero=True) if m else None
    return values


def add_flags(group: argparse._ArgumentGroup, *, suppress: bool = False) -> None:
    """One flag per setting (``--idle-timeout``), with its help, default and bounds. A flag
    not given is None, so that it overrides nothing (``suppress``: it is left out)."""
    for s in SETTINGS.values():
        extra = []
        if s.kind != "bool" and s.scope != "route-address":
            extra.append(f"default: {s.default_text()}")
        if s.bounds():
            extra.append(s.bounds(" to "))
        text = s.help + (f" ({'; '.join(extra)})" if extra else "")
        if s.repeatable:
            text += " (repeatable)"
        kw: dict[str, Any] = {"help": text.replace("%", "%%"),
                              "default": argparse.SUPPRESS if suppress else None}
        if s.kind == "bool":
            kw.update(action=argparse.BooleanOptionalAction)
        elif s.kind == "choice":
            kw.update(choices=s.choices)
        else:
            kw["metavar"] = s.metavar
            if s.kind in ("int", "float"):
                kw["type"] = int if s.kind == "int" else float
            if s.repeatable:
                kw["action"] = "append"
        group.add_argument(s.flag, **kw)


def toml_value(v: object) -> str:
    """A default as TOML text (the defaults are plain: no quoting beyond ``"``)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return _num(v) if isinstance(v, float) else str(v)


def toml_block() -> str:
    """Every ``[daemon]`` and ``[defaults]`` key with its default and its help, and a
    ``[[route]]``: the TOML block of :mod:`migproxy.daemon.config`'s docstring."""
    lines: list[str] = []
    for title, table in (("[daemon]", DAEMON_SETTINGS),
                         ("[defaults]                     # for every route, unless the "
                          "route says otherwise", ROUTE_SETTINGS)):
        lines += ["", title] if lines else [title]
        for s in table:
            bounds = f" ({s.bounds(' to ')})" if s.bounds() else ""
            lines.append(f"{s.key} = {toml_value(s.toml_default)}".ljust(30)
                         + f" # {s.help}{bounds}")
    lines += ["", "[[route]]",
              'listen = ":4444"'.ljust(30) + f" # {LISTEN.help}",
              'target = "dst.example:4444"'.ljust(30) + f" # {TARGET.help}",
              'profile = "/etc/migproxy/profiles/10.0-to-11.1.toml"   # any [defaults] key '
              "may be set"]
    return "".join(f"    {line}\n" if line else "\n" for line in lines)


def docs_table() -> str:
    """The configuration table of ``docs/operations.md`` (``scripts/make-docs.py`` writes it)."""
    rows = ["| key | flag | default | meaning |", "|---|---|---|---|"]
    for s in (*ADDRESS_SETTINGS, *ROUTE_SETTINGS, *DAEMON_SETTINGS):
        key = {"route-address": "[[route]] ", "daemon": "[daemon] "}.get(s.scope, "") + s.key
        flag = f"`{s.flag}`"
        if s.kind == "bool":
            flag += f", `--no-{s.flag[2:]}`"
        if s.repeatable:
            flag += " (repeatable)"
        if s.scope == "route-address":
            default = "\u2014"
        else:
            d = s.toml_default
            default = s.default_text() if isinstance(d, bool | int | float) \
                else f"`{toml_value(d) if d in ('', []) else d}`"
        doc = s.doc
        if s.bounds():
            doc = doc.replace("{range}", s.bounds()) if "{range}" in doc \
                else f"{doc} ({s.bounds()})"
        rows.append(f"| `{key}` | {flag} | {default} | {doc} |")
    return "\n".join(rows) + "\n"


# -- the memory bound of a deployment --------------------------------------------------------

BASE_MEMORY = 128 << 20  # the interpreter, the modules, the listeners and the metrics
READ_BUFFER_MAX = 1 << 20  # the largest read buffer of one direction of a pair


def memory_bound(hold_budget: int, max_connections: int, high_water: int,
                 routes: int = 1) -> int:
    """Bytes the daemon can hold at most, for systemd's MemoryMax=: the base, the
    device state all migrations hold back together (``hold_budget``), and per open
    connection both directions' queues (``high_water``) with their read buffers."""
    per_connection = 2 * (high_water + READ_BUFFER_MAX)
    return BASE_MEMORY + hold_budget + routes * max_connections * per_connection


def default_memory_bound() -> int:
    """:func:`memory_bound` for one route with every setting at its default (the
    systemd unit's MemoryMax=)."""
    return memory_bound(SETTINGS["hold_budget"].default, SETTINGS["max_connections"].default,
                        SETTINGS["high_water"].default)
