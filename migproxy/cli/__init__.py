"""Command line: the proxy daemon (``migproxy serve``, or ``migproxy --listen :4444 --target
dst:4444`` without a command) and the offline tools (``migproxy inspect|rewrite|plan|cpregs
diff|manifest|saves|profiles``).

Exit codes are those of the error classes (:mod:`migproxy.stream.errors`): 0 success; 1 the
stream could not be framed or rewritten (the message says where and why, a libvirt save
image not accepted included); 2 bad usage, unreadable files, an invalid configuration or
profile, or a compression program that is not installed.

Modules: :mod:`~migproxy.cli.parser` (the flags and subcommands),
:mod:`~migproxy.cli.serve` (the daemon), :mod:`~migproxy.cli.streams` (the commands on
saved streams), :mod:`~migproxy.cli.manifests` (``manifest``), :mod:`~migproxy.cli.saves`
(``saves``: managed-save images).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from migproxy.cli.output import err
from migproxy.cli.parser import build_parser
from migproxy.cli.serve import cmd_serve
from migproxy.stream.errors import EXIT_OK, EXIT_STREAM, EXIT_USAGE, MigproxyError

__all__ = ["EXIT_OK", "EXIT_STREAM", "EXIT_USAGE", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        if args.listen is None and args.target is None and args.config is None:
            parser.print_usage(sys.stderr)
            err("give --listen and --target (or --config) to run the proxy, or a COMMAND")
            return EXIT_USAGE
        args.func = cmd_serve
    try:
        return int(args.func(args))
    except FileNotFoundError as e:
        err(f"{e.filename}: no such file")
        return EXIT_USAGE
    except OSError as e:
        err(f"{getattr(e, 'filename', '') or ''}: {e.strerror or e}")
        return EXIT_USAGE
    except MigproxyError as e:
        err(e.user_message())
        return e.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
