"""The command line's parser: the proxy's flags (on ``serve``, and at the top level, where
``migproxy --listen :4444 --target dst:4444`` keeps working) and the tools' subcommands."""

from __future__ import annotations

import argparse

from migproxy import __version__
from migproxy.cli import manifests, saves, serve, streams


def _add_daemon_options(p: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """The daemon's flags. ``suppress``: a flag not given is left out of the namespace (on
    ``serve``, so that it does not hide the same flag given before the command)."""
    from migproxy.daemon.settings import add_flags

    g = p.add_argument_group("proxy daemon (flags override --config)")
    g.add_argument("--config", metavar="FILE", help="TOML configuration (see config/)",
                   default=argparse.SUPPRESS if suppress else None)
    add_flags(g, suppress=suppress)


def _add_destination_options(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    p.add_argument("--destination", required=required, metavar="SET",
                   help="the destination: a shipped manifest set (qemu-11.1.3), or a "
                        "manifest file or directory")
    p.add_argument("--allow-guest-visible", action="append", metavar="REGISTER",
                   help="opt in to a guest-visible change of this register (repeatable)")
    p.add_argument("--accel", default="auto", choices=("auto", "tcg", "kvm"),
                   help="the stream's accelerator (default auto: its register list says)")


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: not a positive number of seconds")
    return value


def _add_saves_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from migproxy.tools.saves import DEFAULT_SAVE_DIR, ORIGINAL_SUFFIX

    s = sub.add_parser("saves", help="rewrite libvirt's managed-save images in place for "
                                     "the QEMU now installed (before libvirt starts)")
    ssub = s.add_subparsers(dest="saves_command", required=True, metavar="ACTION")
    r = ssub.add_parser(
        "rewrite", help="rewrite every NAME.save in the directory for a destination",
        description="Plan each NAME.save image for the destination; rewrite the ones that "
                    f"need it in place, keeping the original as NAME.save{ORIGINAL_SUFFIX}. "
                    "An image already for the destination is left as it is; one that "
                    "cannot be rewritten is named and left as it is (exit 1).")
    r.add_argument("--dir", default=DEFAULT_SAVE_DIR,
                   help=f"libvirt's managed-save directory (default {DEFAULT_SAVE_DIR})")
    _add_destination_options(r, required=True)
    r.add_argument("--time-limit", type=_seconds, metavar="SECONDS",
                   help="stop after this long: the image in progress and the ones not "
                        "started are left as they are (exit 1)")
    r.set_defaults(func=saves.cmd_saves_rewrite)
    c = ssub.add_parser(
        "clean", help=f"remove the kept originals (NAME.save{ORIGINAL_SUFFIX}) whose "
                      "NAME.save is gone (libvirt restored the VM and deleted it)")
    c.add_argument("--dir", default=DEFAULT_SAVE_DIR,
                   help=f"libvirt's managed-save directory (default {DEFAULT_SAVE_DIR})")
    c.set_defaults(func=saves.cmd_saves_clean)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="migproxy",
        description="Live-migration proxy for QEMU ARM VMs across QEMU versions, and tools to "
                    "inspect and rewrite migration streams.",
        epilog="Run the proxy: migproxy serve --listen :4444 --target dst:4444 "
               "(or --config FILE; \"serve\" may be left out). "
               "Tools: migproxy COMMAND --help.")
    p.add_argument("--version", action="version", version=f"migproxy {__version__}")
    _add_daemon_options(p)
    sub = p.add_subparsers(dest="command", required=False, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the proxy daemon (the default without a COMMAND)",
                       description="Run the proxy daemon: migproxy serve --listen :4444 "
                                   "--target dst:4444, or migproxy serve --config FILE.")
    _add_daemon_options(s, suppress=True)
    s.set_defaults(func=serve.cmd_serve)

    s = sub.add_parser("inspect", help="list the items, RAM statistics and cpregs of a stream")
    s.add_argument("file", help="a stream saved with migrate \"exec:cat > FILE\"")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("--no-registers", action="store_true", help="omit the register listing")
    s.set_defaults(func=streams.cmd_inspect)

    s = sub.add_parser("rewrite", help="rewrite a saved stream for a destination (or with a "
                                       "profile)")
    s.add_argument("input")
    s.add_argument("output", nargs="?",
                   help="written only if the whole stream was framed and rewritten")
    s.add_argument("--in-place", action="store_true",
                   help="rewrite INPUT itself instead (only a file in the mapped-ram layout: "
                        "migrate file: with mapped-ram, a libvirt sparse save image)")
    s.add_argument("--profile",
                   help="a profile file, or a built-in profile name (default: default)")
    _add_destination_options(s)
    s.set_defaults(func=streams.cmd_rewrite)

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
    s.set_defaults(func=streams.cmd_plan, parser=s)

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
    d.set_defaults(func=streams.cmd_cpregs_diff)

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
    c.set_defaults(func=manifests.cmd_manifest_capture)
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
    f.set_defaults(func=manifests.cmd_manifest_from_stream)
    w = msub.add_parser("show", help="print a manifest, a set, or list the shipped sets")
    w.add_argument("spec", nargs="?", help="a shipped set (qemu-11.1.3), a directory or a file")
    w.add_argument("--registers", action="store_true", help="list every register")
    w.set_defaults(func=manifests.cmd_manifest_show)

    _add_saves_parser(sub)

    s = sub.add_parser("profiles", help="list the built-in profiles, or check a profile file")
    s.add_argument("--check", metavar="PROFILE", help="load and print a profile")
    s.set_defaults(func=streams.cmd_profiles)
    return p


