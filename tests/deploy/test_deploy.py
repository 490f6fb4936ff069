"""Deployment files: the example configuration, the systemd unit, the Dockerfile and the
Grafana dashboard.

External tools: ``systemd-analyze`` (Debian package ``systemd``) verifies the unit, and
``promtool`` (Debian package ``prometheus``) parses the dashboard's PromQL. A missing tool
skips its test, unless ``MIGPROXY_REQUIRE_TOOLS`` is set: then it fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from prometheus_client import start_http_server

import migproxy.daemon.config as config_mod
from migproxy.daemon.config import Config, RouteSettings
from migproxy.daemon.load import load_config
from migproxy.daemon.metrics import DEPRECATED, Metrics
from migproxy.stream.engine import Policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "migproxy.example.toml"
UNIT = ROOT / "deploy" / "systemd" / "migproxy.service"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DASHBOARD = ROOT / "deploy" / "grafana" / "migproxy-dashboard.json"

UNIT_EXEC = "/usr/local/bin/migproxy --config /etc/migproxy/migproxy.toml"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("MIGPROXY_REQUIRE_TOOLS"):
        pytest.fail(f"{name} is missing (Debian package {package!r}) and "
                    "MIGPROXY_REQUIRE_TOOLS is set")
    pytest.skip(f"{name} is missing: install the Debian package {package!r} "
                "(set MIGPROXY_REQUIRE_TOOLS=1 to make this a failure)")


def _default_drain_timeout() -> float:
    return next(f.default for f in dataclasses.fields(Config) if f.name == "drain_timeout")


# ---------------------------------------------------------------- example configuration


def _documented_keys() -> dict[str, set[str]]:
    """Keys per table in the TOML example of migproxy/config.py's docstring."""
    doc = config_mod.__doc__ or ""
    block = textwrap.dedent(doc.split("::", 1)[1])
    data = tomllib.loads(block)
    return {"daemon": set(data["daemon"]), "defaults": set(data["defaults"]),
            "route": set().union(*(set(r) for r in data["route"]))}


def test_example_config_loads_as_shipped():
    cfg = load_config(str(EXAMPLE), argparse.Namespace())
    assert cfg.source == str(EXAMPLE)
    assert [str(r.listen) for r in cfg.routes] == [":4444", "[::]:4445",
                                                   "192.0.2.10:49152-49215"]
    assert str(cfg.routes[2].target) == "127.0.0.1:49152-49215"
    assert cfg.routes[0].profile is not None
    assert cfg.routes[0].profile.name == "default"
    assert cfg.routes[1].profile is None
    assert cfg.routes[1].destination is not None
    assert cfg.routes[1].destination.name == "qemu-11.1.3"
    # [daemon] and [defaults] show the default values, as the file says
    assert cfg.defaults == RouteSettings()
    assert str(cfg.metrics) == config_mod.DEFAULT_METRICS
    assert (cfg.log_format, cfg.log_level) == ("auto", "info")
    assert cfg.drain_timeout == _default_drain_timeout()
    assert cfg.routes[0].settings == RouteSettings()
    second = cfg.routes[1].settings
    assert second.policy is Policy.ABORT
    assert second != RouteSettings()


def test_example_config_covers_every_key():
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    documented = _documented_keys()
    assert set(data["daemon"]) == documented["daemon"]
    assert set(data["defaults"]) == config_mod._SETTING_KEYS == documented["defaults"]
    routes = data["route"]
    assert len(routes) == 3
    # one route inherits everything, the next sets every per-route key (the third: a range)
    assert set(routes[0]) == {"listen", "target"}
    assert set(routes[1]) == {"listen", "target"} | config_mod._SETTING_KEYS
    assert documented["route"] <= set(routes[1])


def test_example_config_profile_path_form(tmp_path):
    """The path form shown in the example's comment works with an existing profile file."""
    text = EXAMPLE.read_text(encoding="utf-8")
    shown = '#   profile = "/etc/migproxy/profiles/10.0-to-11.1.toml"'
    assert shown in text
    profile = tmp_path / "10.0-to-11.1.toml"
    profile.write_text(textwrap.dedent("""\
        name = "10.0-to-11.1"
        description = "test: 10.0.2 to 11.1.3, cortex-a57"

        [[rule]]
        action = "drop"
        register = "BOGUS_DBGDTRTX"
        value_is = 0

        [[rule]]
        action = "drop"
        register = "ID_AA64ISAR0_EL1"

        [[rule]]
        action = "insert"
        register = "DBGDTR_EL0"
        value = 0
        """), encoding="utf-8")
    old = 'profile = ""\npolicy = "abort"'
    assert text.count(old) == 1
    conf = tmp_path / "migproxy.toml"
    conf.write_text(text.replace(old, f'profile = "{profile}"\npolicy = "abort"'),
                    encoding="utf-8")
    cfg = load_config(str(conf), argparse.Namespace())
    first, second, _range = cfg.routes
    assert first.profile is not None
    assert first.profile.name == "default"
    assert second.profile is not None
    assert second.profile.name == "10.0-to-11.1"
    assert [r.action for r in second.profile.rules] == ["drop", "drop", "insert"]


# ---------------------------------------------------------------- systemd unit


def _unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def _seconds(value: str) -> float:
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(num) * units[unit]
    return total


def test_unit_settings():
    s = _unit_settings(UNIT.read_text(encoding="utf-8"))

    def one(key: str) -> str:
        values = s.get(f"Service.{key}")
        assert values, f"{key}= is missing"
        return values[-1]

    assert one("Type") == "notify"
    assert one("ExecStart") == UNIT_EXEC
    assert one("DynamicUser") == "yes" or one("User") not in ("", "root", "0")
    assert one("CapabilityBoundingSet") == ""
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectControlGroups", "RestrictNamespaces", "LockPersonality",
                "MemoryDenyWriteExecute"):
        assert one(key) == "yes", key
    assert one("ProtectSystem") == "strict"
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert s["Service.SystemCallFilter"][0] == "@system-service"
    assert "/etc/migproxy" in one("ReadOnlyPaths").split()
    assert one("KillSignal") == "SIGTERM"
    assert one("Restart") == "on-failure"
    assert int(one("LimitNOFILE")) >= 4096
    # systemd must not SIGKILL migrations that the daemon's drain still allows
    assert _seconds(one("TimeoutStopSec")) > _default_drain_timeout()
    assert s["Install.WantedBy"] == ["multi-user.target"]


@pytest.fixture
def verifiable_unit(tmp_path) -> Path:
    """A copy of the unit whose ExecStart= names an executable that exists here."""
    exe = tmp_path / "migproxy"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(f"ExecStart={UNIT_EXEC}\n") == 1
    unit = tmp_path / "migproxy.service"
    unit.write_text(text.replace(f"ExecStart={UNIT_EXEC}",
                                 f"ExecStart={exe} --config /etc/migproxy/migproxy.toml"),
                    encoding="utf-8")
    return unit


def test_unit_passes_systemd_analyze_verify(verifiable_unit):
    tool = _tool("systemd-analyze", "systemd")
    r = subprocess.run([tool, "verify", str(verifiable_unit)], capture_output=True,
                       text=True, timeout=60)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0, out
    # verify exits 0 on unknown keys and unparsable values too; it only warns
    ours = [ln for ln in out.splitlines() if "migproxy" in ln]
    assert not ours, out


def test_unit_security_exposure(verifiable_unit):
    tool = _tool("systemd-analyze", "systemd")
    r = subprocess.run([tool, "security", "--offline=true", "--threshold=20", "--no-pager",
                        str(verifiable_unit)], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert r.returncode == 0, f"exposure {m.group(1)} is above 2.0\n{r.stdout}"
    assert float(m.group(1)) <= 2.0


# ---------------------------------------------------------------- Dockerfile


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        current = ""
    return out


def _stages(text: str) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions(text):
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _docker_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins, args in stage:
        if ins == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", args):
                env[k] = v
    return env


def test_dockerfile_static():
    text = DOCKERFILE.read_text(encoding="utf-8")
    ins = _instructions(text)
    args = dict(a.split("=", 1) for i, a in ins if i == "ARG" and "=" in a)
    stages = _stages(text)
    assert len(stages) >= 2, "multi-stage build expected"
    for stage in stages:
        base = stage[0][1].split()[0]
        base = args.get(base.strip("${}"), base) if base.startswith("$") else base
        assert base == "python:3.11-slim"
    build, final = stages[0], stages[-1]
    assert any(i == "RUN" and "pip wheel" in a for i, a in build)
    assert any(i == "RUN" and "pip install" in a and "/wheels" in a for i, a in final)

    users = [a for i, a in final if i == "USER"]
    assert users, "the final stage needs a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert int(user) == 10001
    assert any(i == "RUN" and "useradd" in a and "--uid 10001" in a for i, a in final)

    last = {i: a for i, a in final}
    assert json.loads(last["ENTRYPOINT"]) == ["migproxy"]
    assert json.loads(last["CMD"]) == ["--config", "/etc/migproxy/migproxy.toml"]
    assert {"4444", "9464"} <= set(last["EXPOSE"].split())
    hc = last["HEALTHCHECK"]
    assert " CMD " in f" {hc} "
    assert not hc.upper().startswith("NONE")
    assert "urllib" in hc
    assert "curl" not in hc
    assert "wget" not in hc
    assert "--metrics 0.0.0.0:9464" in text  # documented
    for i, a in final:
        if i == "COPY" and "--from" not in a:
            for src in a.split()[:-1]:
                assert (ROOT / src).exists(), src


def _healthcheck_argv() -> tuple[list[str], dict[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    final = _stages(text)[-1]
    hc = next(a for i, a in final if i == "HEALTHCHECK")
    argv = json.loads(hc.split(" CMD ", 1)[1])
    assert argv[0] == "python3"
    return [sys.executable, *argv[1:]], _docker_env(final)


def test_dockerfile_healthcheck_queries_metrics():
    argv, image_env = _healthcheck_argv()
    assert image_env["MIGPROXY_HEALTHCHECK_URL"] == "http://127.0.0.1:9464/metrics"
    server, thread = start_http_server(0, addr="127.0.0.1", registry=Metrics().registry)
    port = server.server_port
    env = dict(os.environ, MIGPROXY_HEALTHCHECK_URL=f"http://127.0.0.1:{port}/metrics")
    try:
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rules: the last matching pattern wins; a pattern matching a parent
    directory matches everything under it; ``!`` re-includes."""

    def to_regex(pat: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                out += ".*"
                i += 2
            elif pat[i] == "*":
                out += "[^/]*"
                i += 1
            elif pat[i] == "?":
                out += "[^/]"
                i += 1
            elif pat[i] == "[":
                end = pat.index("]", i)
                out += pat[i:end + 1]
                i = end + 1
            else:
                out += re.escape(pat[i])
                i += 1
        return re.compile(out)

    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for raw in patterns:
        neg = raw.startswith("!")
        rx = to_regex(raw[1:] if neg else raw)
        if any(rx.fullmatch(p) for p in prefixes):
            excluded = not neg
    return excluded


def test_dockerignore():
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    needed = ["pyproject.toml", "setup.py", "README.md", "migproxy/__init__.py",
              "migproxy/cli/__init__.py", "migproxy/arm/profiles/default.toml",
              "migproxy/arm/knowledge.toml",
              "migproxy/arm/manifests/qemu-11.1.3/virt-10.0-max.json",
              "migproxy/stream/_ramwalk.c", "migproxy/stream/ramwalk.h",
              "migproxy/daemon/_rampump.c", "migproxy/daemon/_kernelrelay.c",
              "config/migproxy.example.toml"]
    for p in needed:
        assert (ROOT / p).exists(), p
        assert not _dockerignore_excludes(p, patterns), f"{p} must be in the build context"
    for p in [".git/HEAD", "tests/test_cli.py", "tests/data/x.mig.xz", ".lab-streams/x.mig",
              ".pytest_cache/v", ".ruff_cache/x", ".hypothesis/x", "migproxy/__pycache__/a.pyc",
              "migproxy/x.pyc", "migproxy.egg-info/PKG-INFO", "bench/engine_micro.py",
              "build/lib/x", "dist/x.whl", ".venv/bin/python", "scripts/test.sh",
              "migproxy/stream/_ramwalk.cpython-311-x86_64-linux-gnu.so",
              "migproxy/daemon/_rampump.cpython-311-x86_64-linux-gnu.so",
              "migproxy/daemon/_kernelrelay.cpython-311-x86_64-linux-gnu.so"]:
        assert _dockerignore_excludes(p, patterns), f"{p} must stay out of the build context"


# ---------------------------------------------------------------- Grafana dashboard


def _exposed_sample_names() -> set[str]:
    """Every sample name the daemon's registry can expose, labelled metrics included
    (a labelled metric has no samples until a label set is used)."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
    names: set[str] = set()
    seen: set[str] = set()
    for fam in Metrics().registry.collect():
        names |= {fam.name + s for s in suffixes[fam.type]}
        seen |= {s.name for s in fam.samples}
    assert seen <= names, seen - names  # the derivation agrees with real samples
    return names


def _dashboard_exprs(dash: dict) -> list[str]:
    exprs: list[str] = []

    def walk(panels: list[dict]) -> None:
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if "expr" in t)
            walk(p.get("panels", []))

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if var.get("type") == "query" and q:
            exprs.append(q)
    return exprs


METRIC = re.compile(r"\b(?:migproxy|process)_[a-z0-9_]+")


def test_dashboard_metric_names_exist():
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    names = _exposed_sample_names()
    exprs = _dashboard_exprs(dash)
    assert len(exprs) >= 20
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used, "no migproxy metric in the dashboard"
    assert used <= names, f"not exposed by migproxy/metrics.py: {sorted(used - names)}"


def test_dashboard_shows_every_metric():
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    text = "\n".join(_dashboard_exprs(dash))
    # Every migproxy family but the deprecated names (the dashboard uses their
    # replacements), and the process collector's memory, descriptors and CPU.
    shown = [fam.name for fam in Metrics().registry.collect()
             if fam.name.startswith("migproxy_") and fam.name not in DEPRECATED]
    shown += ["process_resident_memory_bytes", "process_open_fds", "process_max_fds",
              "process_cpu_seconds"]
    missing = [name for name in shown
               if not re.search(rf"\b{re.escape(name)}(_total|_bucket)?\b", text)]
    assert not missing, f"add a panel for {missing} to {DASHBOARD.relative_to(ROOT)}"


def test_dashboard_queries_are_sound():
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for e in _dashboard_exprs(dash):
        for m in re.finditer(r"\b(?:migproxy|process)_[a-z0-9_]+(_total|_bucket)\b", e):
            # counters and buckets only make sense through rate()/increase()
            before = e[:m.start()]
            assert re.search(r"\b(rate|increase)\(\s*$", before), e
        if "histogram_quantile" in e:
            assert re.search(r"by \(le\b", e), e
        for m in re.finditer(r"\b(rate|increase)\(\s*((?:migproxy|process)_[a-z0-9_]+)", e):
            assert m.group(2).endswith(("_total", "_bucket")), e
        if "migproxy_" in e and not e.startswith("label_values"):
            assert 'instance=~"$instance"' in e, e


def test_dashboard_structure():
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["schemaVersion"] == 39
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    ids = []
    boxes = []
    for p in dash["panels"]:
        ids.append(p["id"])
        g = p["gridPos"]
        assert g["x"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for other in boxes:
            overlap = (g["x"] < other["x"] + other["w"] and other["x"] < g["x"] + g["w"]
                       and g["y"] < other["y"] + other["h"] and other["y"] < g["y"] + g["h"])
            assert not overlap, p["title"]
        boxes.append(g)
        if p["type"] == "row":
            continue
        assert p["datasource"] == ds, p["title"]
        assert p["targets"], p["title"]
        assert all(t["datasource"] == ds for t in p["targets"]), p["title"]
    assert len(ids) == len(set(ids))


def test_dashboard_promql_parses(tmp_path):
    """promtool parses every query (Grafana's variables replaced by plain values)."""
    tool = _tool("promtool", "prometheus")
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, e in enumerate(_dashboard_exprs(dash)):
        if e.startswith("label_values("):
            continue  # Grafana's own function
        e = (e.replace("$__rate_interval", "5m").replace("$__range", "1h")
             .replace("$instance", ".*"))
        lines += [f"      - record: dashboard:expr{i}", f"        expr: {json.dumps(e)}"]
    rules = tmp_path / "rules.yml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = subprocess.run([tool, "check", "rules", str(rules)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


LAB = ROOT / "migproxy" / "lab"  # the QEMU test harness: in the checkout, not in the wheel


def test_the_lab_is_not_in_the_wheel() -> None:
    """The packages pip install . ships: the product's, never migproxy.lab (its data files
    neither, even when an older build's egg-info lists them)."""
    from setuptools.discovery import PEP420PackageFinder

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    find = conf["setuptools"]["packages"]["find"]
    shipped = set(PEP420PackageFinder.find(str(ROOT), include=find["include"],
                                           exclude=find["exclude"]))
    assert {"migproxy", "migproxy.stream", "migproxy.arm", "migproxy.daemon",
            "migproxy.tools"} <= shipped
    assert not {p for p in shipped if p == "migproxy.lab" or p.startswith("migproxy.lab.")}
    assert {"lab/*", "lab/*/*"} <= set(conf["setuptools"]["exclude-package-data"]["migproxy"])


def test_every_data_file_of_the_package_is_in_the_wheel() -> None:
    """pip install . (the Dockerfile, a plain install) ships only the package data named in
    pyproject.toml: every non-Python file under migproxy/ must match one of its patterns
    (C sources are built by setup.py instead)."""
    import fnmatch

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    data = conf["tool"]["setuptools"]["package-data"]
    missing = []
    for f in (ROOT / "migproxy").rglob("*"):
        if not f.is_file() or f.suffix in (".py", ".pyc", ".so", ".c") or \
                "__pycache__" in f.parts or LAB in f.parents:
            continue
        rel = f.relative_to(ROOT)
        ok = False
        for pkg, patterns in data.items():
            base = ROOT.joinpath(*pkg.split("."))
            if base in f.parents:
                inner = str(f.relative_to(base))
                ok = ok or any(fnmatch.fnmatch(inner, p) for p in patterns)
        if not ok:
            missing.append(str(rel))
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


# ---------------------------------------------------------------- the manifest capture units

CAPTURE_UNIT = ROOT / "deploy" / "systemd" / "migproxy-manifest.service"
CAPTURE_PATH = ROOT / "deploy" / "systemd" / "migproxy-manifest.path"


def test_capture_unit_runs_a_capture_the_cli_accepts(tmp_path):
    """The unit's command line parses with the real CLI, writes a directory set, and the
    directory is what the daemon's route reads (StateDirectory, readable by others)."""
    from migproxy.cli import build_parser

    s = _unit_settings(CAPTURE_UNIT.read_text(encoding="utf-8"))
    (exec_start,) = s["Service.ExecStart"]
    argv = exec_start.split()
    assert argv[0] == UNIT_EXEC.split()[0]
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.manifest_command, args.accel, args.cpu) == (
        "manifest", "capture", "kvm", "host")
    assert len(args.machine) >= 2
    assert args.output == "/var/lib/migproxy/destination"
    assert s["Service.StateDirectory"] == ["migproxy"]
    assert s["Service.DeviceAllow"] == ["/dev/kvm rw"]
    assert s["Unit.Before"] == ["migproxy.service"]
    p = _unit_settings(CAPTURE_PATH.read_text(encoding="utf-8"))
    assert p["Path.Unit"] == ["migproxy-manifest.service"]
    assert p["Path.PathChanged"] == [argv[argv.index("--qemu") + 1]]


def _with_stub_exec(unit: Path, tmp_path: Path) -> Path:
    """A copy of ``unit`` in ``tmp_path`` whose ExecStart= runs a stub that exists here."""
    exe = tmp_path / "migproxy"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text(encoding="utf-8").replace(
        "ExecStart=" + UNIT_EXEC.split()[0], f"ExecStart={exe}"), encoding="utf-8")
    return copy


def test_capture_units_pass_systemd_analyze_verify(tmp_path):
    tool = _tool("systemd-analyze", "systemd")
    unit = _with_stub_exec(CAPTURE_UNIT, tmp_path)
    path = tmp_path / CAPTURE_PATH.name
    path.write_text(CAPTURE_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    r = subprocess.run([tool, "verify", str(unit), str(path)], capture_output=True,
                       text=True, timeout=60)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0, out
    assert not [ln for ln in out.splitlines() if "migproxy-manifest" in ln], out


def test_unit_memory_max_is_the_daemons_bound_at_the_default_settings():
    """MemoryMax= follows hold_budget, max_connections and high_water (issue 17): the
    value in the unit is what settings.memory_bound gives for the defaults."""
    from migproxy.daemon.settings import default_memory_bound

    s = _unit_settings(UNIT.read_text(encoding="utf-8"))
    (value,) = s["Service.MemoryMax"]
    assert value.endswith("M")
    assert int(value[:-1]) << 20 == default_memory_bound()


# ---------------------------------------------------------------- the managed-save units

SAVES_UNIT = ROOT / "deploy" / "systemd" / "migproxy-saves.service"
SAVES_CLEAN_UNIT = ROOT / "deploy" / "systemd" / "migproxy-saves-clean.service"


def test_saves_units_run_commands_the_cli_accepts_in_libvirts_order():
    """The rewrite runs after this boot's manifest capture and before libvirt restores
    anything (libvirtd's autostart, libvirt-guests); the clean runs after them. Neither
    requires libvirt (a failure does not keep libvirt from starting)."""
    from migproxy.cli import build_parser
    from migproxy.tools.saves import DEFAULT_SAVE_DIR

    s = _unit_settings(SAVES_UNIT.read_text(encoding="utf-8"))
    c = _unit_settings(SAVES_CLEAN_UNIT.read_text(encoding="utf-8"))
    parsed = []
    for unit in (s, c):
        (exec_start,) = unit["Service.ExecStart"]
        argv = exec_start.split()
        assert argv[0] == UNIT_EXEC.split()[0]
        parsed.append(build_parser().parse_args(argv[1:]))
        assert unit["Service.Type"] == ["oneshot"]
        assert unit["Service.ReadWritePaths"] == [DEFAULT_SAVE_DIR]
        assert unit["Unit.ConditionDirectoryNotEmpty"] == [DEFAULT_SAVE_DIR]
        assert not any(k.startswith(("Unit.Requires", "Unit.BindsTo", "Unit.Requisite"))
                       for k in unit)
    rewrite, clean = parsed
    assert (rewrite.command, rewrite.saves_command, rewrite.dir) == (
        "saves", "rewrite", DEFAULT_SAVE_DIR)
    assert rewrite.destination == "/var/lib/migproxy/destination"
    assert rewrite.time_limit < _seconds(s["Service.TimeoutStartSec"][0])
    assert (clean.command, clean.saves_command, clean.dir) == ("saves", "clean",
                                                                DEFAULT_SAVE_DIR)
    libvirt = {"libvirtd.service", "virtqemud.service", "libvirt-guests.service"}
    assert set(s["Unit.Before"][0].split()) == libvirt
    assert "migproxy-manifest.service" in s["Unit.After"][0].split()
    assert set(s["Install.WantedBy"][0].split()) == {"multi-user.target",
                                                    "libvirt-guests.service"}
    assert libvirt | {"migproxy-saves.service"} <= set(c["Unit.After"][0].split())


@pytest.mark.parametrize("unit", [SAVES_UNIT, SAVES_CLEAN_UNIT], ids=lambda u: u.stem)
def test_saves_units_pass_systemd_analyze(tmp_path, unit):
    tool = _tool("systemd-analyze", "systemd")
    copy = _with_stub_exec(unit, tmp_path)
    r = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True,
                       timeout=60)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0, out
    assert not [ln for ln in out.splitlines() if "migproxy-saves" in ln], out
    r = subprocess.run([tool, "security", "--offline=true", "--threshold=20", "--no-pager",
                        str(copy)], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout
