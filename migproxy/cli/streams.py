"""The commands on saved streams: ``inspect``, ``rewrite``, ``plan`` (and ``plan
--fleet``), ``cpregs diff`` and ``profiles``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from migproxy.arm.destination import Destination
from migproxy.arm.events import CpuReconciled, CpuRewritten
from migproxy.arm.registers import describe
from migproxy.cli.output import err
from migproxy.stream.errors import EXIT_OK, EXIT_STREAM, EXIT_USAGE, MigproxyError


def cmd_inspect(args: argparse.Namespace) -> int:
    from migproxy.tools.inspect import format_report, inspect_file

    rep = inspect_file(args.file)
    if args.json:
        json.dump(rep, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_report(rep, registers=not args.no_registers))
    if not rep["accounted"]:
        if rep["stopped"]:
            err(f"{args.file}: {rep['stopped']['message']}")
        return EXIT_STREAM
    return EXIT_OK


def destination_of(args: argparse.Namespace) -> Destination | None:
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


def cmd_rewrite(args: argparse.Namespace) -> int:
    from migproxy.arm.profile import load_profile
    from migproxy.tools.offline import rewrite_file

    destination = destination_of(args)
    if destination is not None and args.profile:
        err("give --profile or --destination, not both")
        return EXIT_USAGE
    profile = None if destination is not None else load_profile(
        args.profile or "builtin:default")
    if (args.output is None) == (not args.in_place):
        err("give OUTPUT, or --in-place without it")
        return EXIT_USAGE
    if args.output is not None and Path(args.output).resolve() == Path(args.input).resolve():
        err("the output must be another file than the input (or --in-place)")
        return EXIT_USAGE
    run = rewrite_file(args.input, args.output, profile, destination=destination)
    _print_plans(run.events)
    if not run.complete:
        stop = run.stop
        why = f"{stop.message} [{stop.reason}]" if stop else "the stream is incomplete"
        written = "left as it was" if args.in_place else f"{args.output} not written"
        err(f"{args.input}: not rewritten, {written}: {why}")
        return EXIT_STREAM
    changed = any(isinstance(e, CpuRewritten | CpuReconciled) for e in run.events)
    by = f"profile {profile.name}" if profile is not None else \
        f"destination {destination.name if destination else ''}"
    image = run.save_image
    what = "" if image is None else \
        f"libvirt save image, {image.header.format.label}, stream of "
    if run.mapped_ram:
        what += "mapped-ram, "
    if run.in_place:
        done = "rewrote" if run.changed else "left"
        print(f"{done} {args.input} in place ({what}{run.out_size} bytes, {by}"
              + ("" if changed else ", nothing changed") + ")")
        return EXIT_OK
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


def cmd_plan(args: argparse.Namespace) -> int:
    from migproxy.tools.offline import run_file

    problem = _plan_usage(args)
    if problem is not None:
        args.parser.print_usage(sys.stderr)
        err(f"plan: {problem}")
        return EXIT_USAGE
    if args.fleet is not None:
        return _plan_fleet(args)
    destination = destination_of(args)
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


def _plan_fleet(args: argparse.Namespace) -> int:
    from migproxy.arm.manifest import ManifestError
    from migproxy.arm.registers import parse_register
    from migproxy.tools import fleet

    try:
        opt_in = frozenset(parse_register(r) for r in args.allow_guest_visible or [])
        sets = fleet.load_specs(args.fleet)
    except (ValueError, ManifestError) as e:
        err(f"plan --fleet: {e}")
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


def cmd_cpregs_diff(args: argparse.Namespace) -> int:
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
            err(f"warning: {w}")
    return EXIT_OK


def cmd_profiles(args: argparse.Namespace) -> int:
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


