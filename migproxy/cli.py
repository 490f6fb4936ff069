"""Command line: the daemon (``migproxy --listen :4444 --target dst:4444``) and the
offline tools (``migproxy inspect|rewrite|plan|cpregs diff|manifest|profiles``).

Exit codes: 0 success; 1 the stream could not be framed or rewritten (the message says
where and why, a libvirt save image not accepted included); 2 bad usage, unreadable files,
an invalid profile or a compression program that is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from migproxy import __version__
from migproxy.arm.destination import Destination
from migproxy.arm.events import CpuReconciled, CpuRewritten
from migproxy.arm.manifest import Manifest
from migproxy.arm.profile import ProfileError
from migproxy.arm.registers import describe
from migproxy.stream.errors import MigproxyError
from migproxy.tools.compression import MissingProgram

EXIT_OK = 0
EXIT_STREAM = 1
EXIT_USAGE = 2


def _err(msg: str) -> None:
    print(f"migproxy: {msg}", file=sys.stderr)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from migproxy.tools.inspect import format_report, inspect_file

    rep = inspect_file(args.file)
    if args.json:
        json.dump(rep, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_report(rep, registers=not args.no_registers))
    if not rep["accounted"]:
        if rep["stopped"]:
            _err(f"{args.file}: {rep['stopped']['message']}")
        return EXIT_STREAM
    return EXIT_OK


def _destination(args: argparse.Namespace) -> Destination | None:
    from migproxy.arm.destination import Destination
    from migproxy.arm.registers import parse_register

    if not getattr(args, "destination", None):
        return None
    try:
        opt_in = frozenset(parse_register(r) for r in args.allow_guest_visible or [])
    except ValueError as e:
        raise MigproxyError(f"--allow-guest-visible: {e}") from None
    return Destination.load(args.destination, accel=args.accel, opt_in=opt_in)


def _print_plans(events: Sequence[object]) -> None:
    for e in events:
        if isinstance(e, CpuReconciled):
            print(f"cpu {e.instance_id} for {e.destination}:"
                  + ("" if e.changes else " nothing to change"))
            for line in e.changes:
                print(f"  {line}")
        elif isinstance(e, CpuRewritten):
            parts = [f"drop {describe(r)}=0x{v:x}" for r, v in e.dropped]
            parts += [f"insert {describe(r)}=0x{v:x}" for r, v in e.inserted]
            parts += [f"set {describe(r)} 0x{o:x}->0x{n:x}" for r, o, n in e.set]
            print(f"cpu {e.instance_id}: {e.count_before} -> {e.count_after} cpregs: "
                  + ", ".join(parts))


def _cmd_rewrite(args: argparse.Namespace) -> int:
    from migproxy.arm.profile import load_profile
    from migproxy.tools.offline import rewrite_file

    destination = _destination(args)
    if destination is not None and args.profile:
        _err("give --profile or --destination, not both")
        return EXIT_USAGE
    profile = None if destination is not None else load_profile(
        args.profile or "builtin:default")
    if Path(args.output).resolve() == Path(args.input).resolve():
        _err("the output must be another file than the input")
        return EXIT_USAGE
    run = rewrite_file(args.input, args.output, profile, destination=destination)
    _print_plans(run.events)
    if not run.complete:
        stop = run.stop
        why = f"{stop.message} [{stop.reason}]" if stop else "the stream is incomplete"
        _err(f"{args.input}: not rewritten, {args.output} not written: {why}")
        return EXIT_STREAM
    changed = any(isinstance(e, CpuRewritten | CpuReconciled) for e in run.events)
    by = f"profile {profile.name}" if profile is not None else \
        f"destination {destination.name if destination else ''}"
    image = run.save_image
    what = "" if image is None else \
        f"libvirt save image, {image.header.format.label}, stream of "
    print(f"wrote {args.output} ({what}{run.out_size} bytes, {by}"
          + ("" if changed else ", nothing changed") + ")")
    return EXIT_OK


def _plan_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with a ``plan`` command line: a STREAM with --destination, or --fleet
    with its own options, not a mix of the two."""
    fleet_only = [o for o, v in (("--html", args.html), ("--svg", args.svg),
                                 ("--json", args.json), ("--verbose", args.verbose)) if v]
    if args.fleet is not None:
        if args.stream is not None or args.destination:
            return "give --fleet SPEC ... alone, or a STREAM with --destination, not both"
        return None
    if args.stream is None or not args.destination:
        return "give a STREAM and --destination SET, or --fleet SPEC ..."
    if fleet_only:
        return f"{', '.join(fleet_only)}: only with --fleet"
    return None


def _cmd_plan(args: argparse.Namespace) -> int:
    from migproxy.tools.offline import run_file

    problem = _plan_usage(args)
    if problem is not None:
        args.parser.print_usage(sys.stderr)
        _err(f"plan: {problem}")
        return EXIT_USAGE
    if args.fleet is not None:
        return _cmd_plan_fleet(args)
    destination = _destination(args)
    assert destination is not None
    run = run_file(args.stream, destination=destination, dry_run=True)
    _print_plans([e for e in run.events if isinstance(e, CpuReconciled)])
    if not any(isinstance(e, CpuReconciled) for e in run.events) and run.complete:
        print(f"nothing to change for {destination.name}")
    if not run.complete:
        stop = run.stop
        if stop is None:
            print("refused: the stream is incomplete")
        else:
            head, _, rest = stop.message.partition(": ")
            print(f"refused [{stop.reason}]: {head}:")
            for line in rest.split("; "):
                print(f"  {line}")
        return EXIT_STREAM
    return EXIT_OK


def _cmd_plan_fleet(args: argparse.Namespace) -> int:
    from migproxy.arm.manifest import ManifestError
    from migproxy.arm.registers import parse_register
    from migproxy.tools import fleet

    try:
        opt_in = frozenset(parse_register(r) for r in args.allow_guest_visible or [])
        sets = fleet.load_specs(args.fleet)
    except (ValueError, ManifestError) as e:
        _err(f"plan --fleet: {e}")
        return EXIT_USAGE
    view = fleet.compute(sets, opt_in=opt_in, opt_in_names=args.allow_guest_visible or ())
    if args.json:
        json.dump(fleet.to_json(view), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(fleet.render_text(view, verbose=args.verbose))
    for path, render in ((args.html, fleet.render_html), (args.svg, fleet.render_svg)):
        if path:
            Path(path).write_text(render(view), encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK


def _cmd_cpregs_diff(args: argparse.Namespace) -> int:
    from migproxy.tools.cpregs_diff import diff_streams, format_diff, profile_from_diff

    diff = diff_streams(args.source, args.dest)
    out_is_stdout = args.emit_profile == "-"
    text = format_diff(diff, verbose=args.verbose)
    if args.emit_profile:
        prof = profile_from_diff(diff, args.name or Path(args.dest).stem)
        toml = prof.to_toml()
        if out_is_stdout:
            sys.stdout.write(toml)
        else:
            Path(args.emit_profile).write_text(toml, encoding="utf-8")
            print(text)
            print(f"profile with {len(prof.rules)} rules written to {args.emit_profile}")
    else:
        print(text)
    for w in diff.warnings:
        if out_is_stdout:
            _err(f"warning: {w}")
    return EXIT_OK


def _cmd_profiles(args: argparse.Namespace) -> int:
    from migproxy.arm.profile import builtin_profiles, load_profile

    if args.check:
        prof = load_profile(args.check)
        print(f"{prof.source}: profile {prof.name!r}, {len(prof.rules)} rules")
        for r in prof.rules:
            print(f"  {r.describe()}")
        return EXIT_OK
    for name in builtin_profiles():
        prof = load_profile("builtin:" + name)
        print(f"{name}: {prof.description}")
    return EXIT_OK


def _cmd_manifest_capture(args: argparse.Namespace) -> int:
    import shlex

    from migproxy.tools.manifest import capture

    machines = args.machine or ["virt-10.0"]
    out = Path(args.output)
    if len(machines) > 1 and out.suffix == ".json":
        _err("with several --machine, -o is a directory (MACHINE-CPU.json in it)")
        return EXIT_USAGE
    for machine in machines:
        m = capture(shlex.split(args.qemu), machine=machine, cpu=args.cpu, smp=args.smp,
                    accel=args.accel, host_cpu=args.host_cpu or "")
        _wrote_manifest(m, str(out if len(machines) == 1 and out.suffix == ".json"
                               else out / f"{m.machine}-{m.cpu}.json"))
    return EXIT_OK


def _wrote_manifest(m: Manifest, output: str) -> int:
    from migproxy.tools.manifest import write_manifest

    write_manifest(m, output)
    print(f"{output}: {m.host}, {m.machine}, {m.cpu}: {len(m.cpregs)} cpregs, "
          f"subsections {', '.join(m.subsections) or '(none)'}")
    return EXIT_OK


def _cmd_manifest_from_stream(args: argparse.Namespace) -> int:
    from migproxy.tools.manifest import manifest_from_stream

    m = manifest_from_stream(args.stream, cpu=args.cpu, qemu=args.qemu_version,
                             accel=args.accel, kernel=args.kernel or "",
                             host_cpu=args.host_cpu or "")
    return _wrote_manifest(m, args.output)


def _cmd_manifest_show(args: argparse.Namespace) -> int:
    from migproxy.arm.manifest import describe_manifest, load_set, shipped_sets

    if not args.spec:
        for name in shipped_sets():
            ms = load_set(name)
            print(f"{name}: " + ", ".join(f"{mach} {cpu}" for mach, cpu in ms.keys))
        return EXIT_OK
    for m in load_set(args.spec).manifests:
        text = describe_manifest(m)
        print(text if args.registers else "\n".join(text.splitlines()[:3]))
    return EXIT_OK


def _cmd_daemon(args: argparse.Namespace) -> int:
    from migproxy.daemon.config import ConfigError
    from migproxy.daemon.load import load_config
    from migproxy.daemon.logs import configure_logging
    from migproxy.daemon.server import run_daemon

    try:
        config = load_config(args.config, args)
    except ConfigError as e:
        _err(f"invalid configuration: {e}")
        return EXIT_USAGE
    configure_logging(config.log_format, config.log_level)
    return run_daemon(config)


def _add_daemon_options(p: argparse.ArgumentParser) -> None:
    from migproxy.daemon.settings import add_flags

    g = p.add_argument_group("proxy daemon (flags override --config)")
    g.add_argument("--config", metavar="FILE", help="TOML configuration (see config/)")
    add_flags(g)


def _add_destination_options(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    p.add_argument("--destination", required=required, metavar="SET",
                   help="the destination: a shipped manifest set (qemu-11.1.3), or a "
                        "manifest file or directory")
    p.add_argument("--allow-guest-visible", action="append", metavar="REGISTER",
                   help="opt in to a guest-visible change of this register (repeatable)")
    p.add_argument("--accel", default="auto", choices=("auto", "tcg", "kvm"),
                   help="the stream's accelerator (default auto: its register list says)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="migproxy",
        description="Live-migration proxy for QEMU ARM VMs across QEMU versions, and tools to "
                    "inspect and rewrite migration streams.",
        epilog="Run the proxy: migproxy --listen :4444 --target dst:4444 "
               "(or --config FILE). Tools: migproxy COMMAND --help.")
    p.add_argument("--version", action="version", version=f"migproxy {__version__}")
    _add_daemon_options(p)
    sub = p.add_subparsers(dest="command", required=False, metavar="COMMAND")

    s = sub.add_parser("inspect", help="list the items, RAM statistics and cpregs of a stream")
    s.add_argument("file", help="a stream saved with migrate \"exec:cat > FILE\"")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("--no-registers", action="store_true", help="omit the register listing")
    s.set_defaults(func=_cmd_inspect)

    s = sub.add_parser("rewrite", help="rewrite a saved stream for a destination (or with a "
                                       "profile)")
    s.add_argument("input")
    s.add_argument("output", help="written only if the whole stream was framed and rewritten")
    s.add_argument("--profile",
                   help="a profile file, or a built-in profile name (default: default)")
    _add_destination_options(s)
    s.set_defaults(func=_cmd_rewrite)

    s = sub.add_parser(
        "plan", help="say what rewriting a saved stream for a destination would change, and "
                     "why (writes nothing); or, with --fleet, which hosts migrate to which",
        usage="migproxy plan STREAM --destination SET [--allow-guest-visible REG ...]\n"
              "       migproxy plan --fleet SPEC [SPEC ...] [--html FILE] [--svg FILE] "
              "[--json] [--allow-guest-visible REG ...] [--verbose]")
    s.add_argument("stream", nargs="?", help="a saved stream (with --destination)")
    _add_destination_options(s)
    g = s.add_argument_group("the fleet view (instead of STREAM and --destination)")
    g.add_argument("--fleet", nargs="+", metavar="SPEC",
                   help="compare every pair of these hosts (one manifest each): a shipped "
                        "set (linux-6.12-neoverse-n1-qemu-10.0.13), a glob of shipped set "
                        "names ('linux-*-neoverse-n1-*', '*'), a manifest file or directory, "
                        "or a directory of set directories (migproxy/arm/manifests)")
    g.add_argument("--html", metavar="FILE", help="also write the view as an HTML page")
    g.add_argument("--svg", metavar="FILE", help="also write the matrices as an SVG image")
    g.add_argument("--json", action="store_true", help="print the view as JSON")
    g.add_argument("--verbose", "-v", action="store_true",
                   help="details per cell (not grouped), changes of refused cells included")
    s.set_defaults(func=_cmd_plan, parser=s)

    s = sub.add_parser("cpregs", help="register list tools")
    ssub = s.add_subparsers(dest="cpregs_command", required=True, metavar="ACTION")
    d = ssub.add_parser("diff", help="compare the cpregs of two reference streams")
    d.add_argument("source", help="reference stream saved by the source QEMU version")
    d.add_argument("dest", help="reference stream saved by the destination QEMU version")
    d.add_argument("--emit-profile", metavar="FILE",
                   help="write the profile that makes the destination accept the source "
                        "(- for standard output)")
    d.add_argument("--name", help="name of the emitted profile")
    d.add_argument("--verbose", "-v", action="store_true",
                   help="also list state registers whose values differ")
    d.set_defaults(func=_cmd_cpregs_diff)

    s = sub.add_parser("manifest", help="make or show destination manifests")
    msub = s.add_subparsers(dest="manifest_command", required=True, metavar="ACTION")
    c = msub.add_parser("capture", help="start a QEMU binary paused (no guest) and write the "
                                        "manifest of what it accepts")
    c.add_argument("--qemu", required=True, metavar="COMMAND",
                   help='the binary, or a command that runs it ("chroot ROOT /usr/bin/qemu-'
                        'system-aarch64")')
    c.add_argument("--machine", action="append", metavar="TYPE",
                   help="machine type (default virt-10.0); repeat it for a set: -o is then "
                        "a directory of MACHINE-CPU.json files")
    c.add_argument("--cpu", default="cortex-a57")
    c.add_argument("--smp", type=int, default=1)
    c.add_argument("--accel", default="tcg", choices=("tcg", "kvm"),
                   help="kvm: run on the host it describes (with --cpu host); the manifest "
                        "records this kernel's release and the CPU's MIDR")
    c.add_argument("--host-cpu", metavar="NAME",
                   help="KVM: a name for this host's CPU (default midr-0x<MIDR_EL1>)")
    c.add_argument("-o", "--output", required=True, metavar="FILE|DIR",
                   help="a .json file, or a directory (a manifest set) to write into")
    c.set_defaults(func=_cmd_manifest_capture)
    f = msub.add_parser("from-stream", help="the manifest of the build that saved a stream")
    f.add_argument("stream")
    f.add_argument("--cpu", required=True, help="the -cpu model the stream was saved with")
    f.add_argument("--qemu-version", required=True, help="the QEMU version that saved it")
    f.add_argument("--accel", default="tcg", choices=("tcg", "kvm"))
    f.add_argument("--kernel", metavar="RELEASE",
                   help="KVM: the kernel release (uname -r) of the host that saved it")
    f.add_argument("--host-cpu", metavar="NAME",
                   help="KVM: a name for that host's CPU (default midr-0x<MIDR_EL1> of the "
                        "stream)")
    f.add_argument("-o", "--output", required=True, metavar="FILE")
    f.set_defaults(func=_cmd_manifest_from_stream)
    w = msub.add_parser("show", help="print a manifest, a set, or list the shipped sets")
    w.add_argument("spec", nargs="?", help="a shipped set (qemu-11.1.3), a directory or a file")
    w.add_argument("--registers", action="store_true", help="list every register")
    w.set_defaults(func=_cmd_manifest_show)

    s = sub.add_parser("profiles", help="list the built-in profiles, or check a profile file")
    s.add_argument("--check", metavar="PROFILE", help="load and print a profile")
    s.set_defaults(func=_cmd_profiles)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        if args.listen is None and args.target is None and args.config is None:
            parser.print_usage(sys.stderr)
            _err("give --listen and --target (or --config) to run the proxy, or a COMMAND")
            return EXIT_USAGE
        args.func = _cmd_daemon
    try:
        return int(args.func(args))
    except ProfileError as e:
        _err(f"invalid profile: {e}")
        return EXIT_USAGE
    except FileNotFoundError as e:
        _err(f"{e.filename}: no such file")
        return EXIT_USAGE
    except OSError as e:
        _err(f"{getattr(e, 'filename', '') or ''}: {e.strerror or e}")
        return EXIT_USAGE
    except MissingProgram as e:
        _err(str(e))
        return EXIT_USAGE
    except MigproxyError as e:
        _err(str(e))
        return EXIT_STREAM


if __name__ == "__main__":
    raise SystemExit(main())
