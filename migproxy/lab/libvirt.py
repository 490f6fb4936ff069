"""A private libvirt daemon for the lab: ``virsh save`` / ``virsh restore`` with the lab's QEMUs.

The host's libvirt configuration and state are not touched. ``libvirtd`` and ``virtlogd``
run in a mount namespace of their own (``unshare -m``) in which ``/etc/libvirt``,
``/run/libvirt``, ``/var/lib/libvirt``, ``/var/log/libvirt`` and ``/var/cache/libvirt`` are
directories below the lab's shared work dir, so the instance disappears with its
processes. Its ``qemu.conf`` runs QEMU as root without namespaces, cgroups or a security
driver (the lab machine has no systemd and no cgroup controllers). A chrooted lab QEMU
(10.0.13, 11.1) is used through a small wrapper script as the domain's ``<emulator>``;
libvirt's own paths are bind-mounted into the chroot inside the namespace, so QEMU finds
the files libvirt names on its command line. Needs root, ``unshare``, ``libvirtd``,
``virtlogd`` and ``virsh`` (Debian: libvirt-daemon, libvirt-daemon-driver-qemu,
libvirt-clients).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .qemu import QemuVersion

PROGRAMS = ("unshare", "libvirtd", "virtlogd", "virsh")
_MOUNTS = ("etc", "/etc/libvirt"), ("run", "/run/libvirt"), ("lib", "/var/lib/libvirt"), \
    ("log", "/var/log/libvirt"), ("cache", "/var/cache/libvirt")
_QEMU_CONF = """
# migproxy lab (migproxy/lab/libvirt.py): QEMU as root, no namespaces, cgroups or
# security driver
user = "root"
group = "root"
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
remember_owner = 0
"""
START_TIMEOUT = 20.0  # seconds for the daemon's socket to appear
VIRSH_TIMEOUT = 120.0  # seconds for one virsh command (a save or restore)


class LibvirtUnavailable(Exception):
    """libvirt cannot run here (the message says why)."""


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "libvirt's QEMU driver needs root here"
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        return (f"{', '.join(missing)} not installed (apt-get install libvirt-daemon "
                "libvirt-daemon-driver-qemu libvirt-clients)")
    if not os.path.isdir("/etc/libvirt"):
        return "/etc/libvirt is missing (libvirt-daemon not installed)"
    return None


class PrivateLibvirt:
    """``libvirtd`` in a mount namespace of its own, state below ``root``. Use as a context
    manager; :meth:`virsh` runs a command against it."""

    def __init__(self, root: Path, chroots: tuple[str, ...] = (), qemu_conf: str = "") -> None:
        """``qemu_conf``: more lines for the instance's qemu.conf (``save_image_format =
        "xz"``)."""
        reason = unavailable_reason()
        if reason is not None:
            raise LibvirtUnavailable(reason)
        self.root = root
        self.chroots = chroots
        self.qemu_conf = qemu_conf
        self.socket = root / "run" / "libvirt-sock"
        self.uri = f"qemu:///system?socket={self.socket}"

    def __enter__(self) -> PrivateLibvirt:
        for name, _ in _MOUNTS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        shutil.copytree("/etc/libvirt", self.root / "etc", dirs_exist_ok=True)
        for autostart in ("qemu/autostart", "qemu/networks/autostart", "storage/autostart"):
            # Nothing of the host's starts in this instance (a network would be created in
            # the host's network namespace, which the instance shares).
            shutil.rmtree(self.root / "etc" / autostart, ignore_errors=True)
        with open(self.root / "etc" / "qemu.conf", "a", encoding="utf-8") as f:
            f.write(_QEMU_CONF + self.qemu_conf)
        script = ["set -e"]
        for name, target in _MOUNTS:
            script += [f"mkdir -p {target}", f"mount --bind {self.root / name} {target}"]
        for chroot in self.chroots:  # libvirt's paths, as QEMU inside the chroot sees them
            for name in ("run", "lib"):
                inner = chroot + dict(_MOUNTS)[name]
                script += [f"mkdir -p {inner}", f"mount --bind {self.root / name} {inner}"]
        pid = self.root / "run"
        script += [f"virtlogd -d --pid-file {pid / 'virtlogd.pid'}",
                   f"libvirtd -d --pid-file {pid / 'libvirtd.pid'}"]
        subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        "\n".join(script)], check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.socket.exists():
            if time.monotonic() > deadline:
                self.close()
                raise LibvirtUnavailable(f"libvirtd did not start: no {self.socket}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def save_dir(self) -> Path:
        """The instance's managed-save directory (``/var/lib/libvirt/qemu/save`` inside its
        namespace)."""
        return self.root / "lib" / "qemu" / "save"

    def close(self) -> None:
        """Stop both daemons (their namespace, and its mounts, go with them)."""
        for name in ("libvirtd.pid", "virtlogd.pid"):
            path = self.root / "run" / name
            try:
                pid = int(path.read_text().strip())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["virsh", "-q", "-c", self.uri, *args], capture_output=True,
                           text=True, timeout=VIRSH_TIMEOUT)
        if check and p.returncode != 0:
            raise subprocess.CalledProcessError(p.returncode, p.args, p.stdout, p.stderr)
        return p


def emulator_wrapper(version: QemuVersion, path: Path) -> Path:
    """An executable at ``path`` that runs ``version``'s QEMU with the lab's prefix and
    environment (a chroot, a module dir), for a domain's ``<emulator>``."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in version.env.items())
    path.write_text("#!/bin/sh\n" + (f"export {env}\n" if env else "") +
                    f"exec {shlex.join(version.argv)} \"$@\"\n", encoding="utf-8")
    path.chmod(0o755)
    return path
