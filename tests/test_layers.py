"""The layers of the package, checked on the source: every ``import`` statement of every
module (also those inside functions and under ``TYPE_CHECKING``), parsed with ``ast``.

    cli                      migproxy.cli, migproxy.__main__
    daemon    tools
    arm
    stream

Each layer imports only the layers below it; the product never imports the lab
(``migproxy.lab``, the QEMU test harness), ``testkit``, ``bench`` or ``tests``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "migproxy"

# What each part of the package may import of migproxy (itself always).
ALLOWED: dict[str, set[str]] = {
    "stream": set(),
    "arm": {"stream"},
    "daemon": {"stream", "arm"},
    "tools": {"stream", "arm"},
    "cli": {"stream", "arm", "daemon", "tools", "version"},
    "__main__": {"cli"},
    "version": set(),  # migproxy/__init__.py, which every layer may import
    # The QEMU harness (not in the wheel): the product's layers, never the test side.
    "lab": {"stream", "arm", "daemon", "tools"},
}
NEVER = ("testkit", "bench", "tests")
# Modules of a layer held to a stricter rule than their layer.
STRICTER: dict[str, set[str]] = {
    "daemon/session.py": {"stream"},  # the sans-IO session knows no architecture
    "daemon/relay.py": {"stream"},  # nor does the I/O executor
    "daemon/side.py": {"stream"},  # nor its protocol
    "daemon/registry.py": {"stream"},  # nor its registry
    "daemon/buffers.py": set(),  # nor its receive buffers
    "daemon/tls_layer.py": {"stream"},  # nor the sans-IO TLS layer
    "daemon/tls_legs.py": {"stream"},
    "daemon/handshake_budget.py": set(),
}


def layer_of(module: str) -> str:
    """``migproxy.daemon.relay`` -> ``daemon``; ``migproxy`` -> ``version``."""
    parts = module.split(".")
    assert parts[0] == "migproxy", module
    return parts[1] if len(parts) > 1 else "version"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def violations(path: Path, root: Path = PACKAGE) -> list[str]:
    """What is wrong with the imports of ``path``, a module of the package at ``root``."""
    me = layer_of(module_name(path, root))
    rel = path.relative_to(root).as_posix()
    # migproxy/__init__.py (the version) imports nothing: every layer may read it.
    allowed = STRICTER.get(rel, ALLOWED[me]) | {me, "version"}
    bad = []
    for line, mod in imports(path, root):
        top = mod.split(".")[0]
        where = f"migproxy/{rel}:{line} imports {mod}"
        if top in NEVER:
            bad.append(f"{where}: the product never imports {top}")
        elif top == "migproxy" and layer_of(mod) not in allowed:
            bad.append(f"{where}: {me} may import only {sorted(allowed)}")
    return bad


# Known violations, each with the reason it is not fixed yet. The test below fails when
# one of them goes away, so this list is kept exact.
KNOWN: dict[str, str] = {}


def test_the_check_sees_every_module_and_resolves_relative_imports() -> None:
    names = {module_name(p) for p in modules()}
    assert {"migproxy", "migproxy.stream.engine", "migproxy.arm.rewriter",
            "migproxy.daemon.relay", "migproxy.tools.offline", "migproxy.cli",
            "migproxy.lab", "migproxy.lab.kvm"} <= names
    assert all(layer_of(n) in ALLOWED for n in names)
    assert "migproxy.lab.lab" in {m for _, m in imports(PACKAGE / "lab" / "__init__.py")}


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_each_layer_imports_only_the_layers_below_it(path: Path) -> None:
    rel = f"migproxy/{path.relative_to(PACKAGE).as_posix()}"
    found = violations(path)
    if rel in KNOWN:
        assert found, f"{rel} is clean now: remove it from KNOWN ({KNOWN[rel]})"
        pytest.xfail(f"known: {KNOWN[rel]}: {found}")
    assert found == []


@pytest.mark.parametrize(("where", "source", "n"), [
    ("stream/probe.py", "from migproxy.arm import rewriter\nimport testkit.streams\n"
                        "def f():\n    from ..lab import Lab\n", 3),
    ("arm/probe.py", "from migproxy.daemon.config import Route\n", 1),
    ("daemon/probe.py", "from migproxy.tools import offline\nimport bench.faults\n", 2),
    ("tools/probe.py", "from migproxy.daemon import server\nfrom tests import conftest\n", 2),
    ("daemon/session.py", "from migproxy.arm.rewriter import arm_engine_config\n", 1),
    ("lab/probe.py", "from testkit.labs import require_lab\nfrom .qemu import Qemu\n", 1),
    ("cli.py", "from migproxy.lab import get_lab\n", 1),
])
def test_a_violation_is_seen(tmp_path: Path, where: str, source: str, n: int) -> None:
    """The check can fail: a module that imports upwards, the lab or the test side."""
    root = tmp_path / "migproxy"
    path = root / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    assert len(violations(path, root)) == n, violations(path, root)
