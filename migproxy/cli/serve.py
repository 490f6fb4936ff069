"""``migproxy serve``: the proxy daemon (also ``migproxy --listen ... --target ...`` or
``migproxy --config FILE`` without a command)."""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    """Load the configuration (a :class:`~migproxy.daemon.addresses.ConfigError` is a usage
    error, exit 2), set up logging, and run the daemon until it is stopped."""
    from migproxy.daemon.load import load_config
    from migproxy.daemon.logs import configure_logging
    from migproxy.daemon.server import run_daemon

    config = load_config(args.config, args)
    configure_logging(config.log_format, config.log_level)
    return run_daemon(config)
