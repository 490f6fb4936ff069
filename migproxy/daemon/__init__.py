"""The live daemon: routes, listeners, sessions, relays, TLS, metrics.

Layer contract (checked by ``tests/test_layers.py``): this package imports
:mod:`migproxy.stream`, :mod:`migproxy.arm` and itself; never :mod:`migproxy.tools`,
:mod:`migproxy.cli` or the lab. :mod:`migproxy.daemon.session` is sans-IO and imports
only :mod:`migproxy.stream`; the relay (the I/O executor) imports no ARM module either:
the route builds its engine configuration (``Route.engine_config``).

Public API:

- :mod:`migproxy.daemon.server`: ``run_daemon``;
- :mod:`migproxy.daemon.config`: ``Config``, ``Route``, ``RouteSettings``;
- :mod:`migproxy.daemon.load`: ``load_config`` (a TOML file and flags, validated);
- :mod:`migproxy.daemon.settings`: the settings table (``Setting``), every key declared once;
- :mod:`migproxy.daemon.addresses`: ``ConfigError`` and ``host:port`` text;
- :mod:`migproxy.daemon.session`: ``Session``, its events and commands (sans-IO);
- :mod:`migproxy.daemon.port`: ``PortState``, what spans the connections of a port (sans-IO);
- :mod:`migproxy.daemon.logs`: ``configure_logging``;
- :mod:`migproxy.daemon.metrics`: ``Metrics``.

The rest is the daemon's internals: the executor (``relay``: a pair; ``side``: its
protocol; ``registry``: the live pairs and the command queue; ``buffers``), the sans-IO
TLS layer and legs (``tls_layer``, ``tls_legs``, ``handshake_budget``), ``splice``,
``admission``, ``observe``, ...
"""
