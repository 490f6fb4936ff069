"""The daemon's configuration as loaded: :class:`Config`, its :class:`Route` s and their
:class:`RouteSettings`.

:func:`migproxy.daemon.load.load_config` builds it from a TOML file and command-line flags,
and validates everything when the daemon starts (:class:`ConfigError`, exit code 2), never
at the first migration. The keys, their defaults, bounds, flags and help are declared once,
in :mod:`migproxy.daemon.settings`. Every key with its default (this block is made from the
settings table):

::

"""

from __future__ import annotations

from dataclasses import dataclass, field

from migproxy.arm.destination import Destination
from migproxy.arm.profile import Profile
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
from migproxy.daemon.settings import LIMITS, ROUTE_KEYS
from migproxy.daemon.tls import RouteTls
from migproxy.stream.engine import EngineConfig
from migproxy.stream.policy import HoldBudget, Policy

__doc__ = (__doc__ or "") + S.toml_block()

__all__ = ["LIMITS", "MAX_RANGE_PORTS", "Address", "Config", "ConfigError", "Route",
           "RouteSettings", "is_loopback", "listens_overlap", "parse_address",
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
    ram_pump: str = S.RAM_PUMP.default
    ram_pump_threads: int = S.RAM_PUMP_THREADS.default
    tls_failed_handshakes: int = S.TLS_FAILED_HANDSHAKES.default
    source: str = "<command line>"
    defaults: RouteSettings = field(default_factory=RouteSettings)


_SETTING_KEYS = ROUTE_KEYS  # the name tests/deploy knows
