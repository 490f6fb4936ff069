"""Allow ``python -m migproxy``."""

from migproxy.cli import main

raise SystemExit(main())
