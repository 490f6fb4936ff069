"""VMs suspended across a QEMU upgrade: ``virsh managedsave`` on QEMU 10.0.2, the upgrade,
``migproxy saves rewrite`` as its unit runs it before libvirt-guests, ``virsh start`` on
QEMU 10.0.13 restores the managed save, ``migproxy saves clean`` after it.

A private libvirt daemon (``migproxy/lab/libvirt.py``) runs the tick guest as a persistent
domain whose ``<emulator>`` is a fixed path, a wrapper script that runs the lab's 10.0.2;
the upgrade replaces that script with one that runs 10.0.13, as a package upgrade
replaces /usr/bin/qemu-system-aarch64 (the image's XML is not touched). The managed save
is libvirt's own, raw and xz (``save_image_format`` in qemu.conf). A second image in
the save directory, a ``-cpu max`` guest saved on 11.1.3, is refused for 10.0.13: it must
be named and left untouched, and not stop the first.

Negative control: the same managed save, not rewritten, fails ``virsh start`` on 10.0.13
(QEMU refuses the cpu section; libvirt keeps the image and the domain stays shut off).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from migproxy.lab import Lab
from migproxy.lab.libvirt import LibvirtUnavailable, PrivateLibvirt, emulator_wrapper
from migproxy.lab.qemu import parse_ticks
from migproxy.tools.saveimage import HEADER_SIZE, SaveFormat, parse_header
from testkit.labs import require_lab, tool_unavailable
from testkit.saveimage import save_image
from testkit.streams import real_stream

from .test_virsh_restore import DOMAIN, domain_xml, wait_ticks

pytestmark = pytest.mark.qemu

REFUSED = "v11.1.3-virt-10.0-max-smp2"  # -cpu max from 11.1.3: refused for 10.0.13
ORIG = ".migproxy-orig"


@pytest.fixture(scope="module")
def lab() -> Lab:
    return require_lab("10.0.2", "10.0.13")


@pytest.fixture(params=["raw", "xz"])
def libvirt(request: pytest.FixtureRequest,
            lab: Lab) -> Iterator[tuple[PrivateLibvirt, Path, str]]:
    """A private libvirt whose save_image_format is the parameter."""
    fmt: str = request.param
    with lab.scratch_dir("managedsave-") as d:
        chroots = tuple(v.chroot for v in (lab.version("10.0.13"),) if v.chroot)
        try:
            daemon = PrivateLibvirt(d / "libvirt", chroots,
                                    qemu_conf=f'save_image_format = "{fmt}"\n')
        except LibvirtUnavailable as e:
            tool_unavailable(f"libvirt: {e}")
        with daemon:
            yield daemon, d, fmt
            daemon.virsh("destroy", DOMAIN, check=False)
            daemon.virsh("managedsave-remove", DOMAIN, check=False)
            daemon.virsh("undefine", DOMAIN, check=False)


def _saves(save_dir: Path, *action: str) -> subprocess.CompletedProcess[str]:
    """The command as the units run it."""
    return subprocess.run([sys.executable, "-m", "migproxy", "saves", *action, "--dir",
                           str(save_dir)], capture_output=True, text=True, timeout=300)


def _files(d: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_ino, p.read_bytes()) for p in sorted(d.iterdir())}


def test_managed_save_on_10_0_2_restores_on_10_0_13_after_saves_rewrite(
        lab: Lab, libvirt: tuple[PrivateLibvirt, Path, str]) -> None:
    virsh, d, fmt = libvirt
    kernel = d / "tick.bin"
    shutil.copyfile(lab.kernel, kernel)  # where the chrooted QEMU sees it too
    serial = d / "serial.log"
    emulator = emulator_wrapper(lab.version("10.0.2"), d / "qemu-system-aarch64")
    xml = d / "domain.xml"
    xml.write_text(domain_xml(kernel, serial, str(emulator)), encoding="utf-8")
    virsh.virsh("define", str(xml))
    virsh.virsh("start", DOMAIN)
    wait_ticks(serial, 3)
    virsh.virsh("managedsave", DOMAIN)
    last = parse_ticks(serial.read_text())[-1]
    image = virsh.save_dir / f"{DOMAIN}.save"
    saved = image.read_bytes()
    header = parse_header(saved[:HEADER_SIZE])
    assert header.format == SaveFormat[fmt.upper()]
    assert header.was_running == 1
    assert virsh.virsh("domstate", DOMAIN, "--reason").stdout.strip() == "shut off (saved)"

    # The upgrade: the same emulator path now runs 10.0.13.
    emulator_wrapper(lab.version("10.0.13"), emulator)

    # Negative control: the managed save as libvirt wrote it does not restore on 10.0.13.
    control = virsh.virsh("start", DOMAIN, check=False)
    assert control.returncode != 0, "the managed save as saved restored on 10.0.13"
    assert "load of migration failed" in control.stderr, control.stderr
    qemu_log = (virsh.root / "log" / "qemu" / f"{DOMAIN}.log").read_text(errors="replace")
    assert "error while loading state for instance 0x0 of device 'cpu'" in qemu_log, \
        qemu_log[-2000:]
    assert virsh.virsh("domstate", DOMAIN, "--reason").stdout.strip() == "shut off (failed)"
    assert image.read_bytes() == saved  # libvirt keeps the image for another try

    # Beside it, an image migproxy refuses for 10.0.13 (a -cpu max guest from 11.1.3).
    other = virsh.save_dir / "other-max.save"
    other.write_bytes(save_image(real_stream(REFUSED), fmt))
    other_before = _files(virsh.save_dir)["other-max.save"]

    # What migproxy-saves.service runs at boot, before libvirt-guests.service.
    first = _saves(virsh.save_dir, "rewrite", "--destination", "qemu-10.0.13")
    assert first.returncode == 1, first.stdout + first.stderr  # one image refused
    assert f"{image}: rewritten for qemu-10.0.13: original kept as {image.name}{ORIG}" \
        in first.stdout, first.stdout
    assert f"{other}: refused, left as it is: [unsafe_rewrite]" in first.stdout
    assert f"{other}: not rewritten (refused)" in first.stderr
    files = _files(virsh.save_dir)
    assert sorted(files) == [f"{DOMAIN}.save", f"{DOMAIN}.save{ORIG}", "other-max.save"]
    assert files[f"{DOMAIN}.save{ORIG}"][1] == saved
    assert files["other-max.save"] == other_before
    # The header and the domain XML are libvirt's, byte for byte.
    assert image.read_bytes()[:header.stream_offset] == saved[:header.stream_offset]

    second = _saves(virsh.save_dir, "rewrite", "--destination", "qemu-10.0.13")
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"{image}: nothing to change for qemu-10.0.13" in second.stdout, second.stdout
    assert f"{other}: refused, left as it is" in second.stdout
    assert _files(virsh.save_dir) == files

    # Restored by libvirt (as libvirt-guests does at boot): the guest goes on.
    serial.unlink()
    virsh.virsh("start", DOMAIN)
    ticks = wait_ticks(serial, 2)
    assert ticks[0] == last + 1, (last, ticks)  # the guest went on where it stopped
    version = virsh.virsh("qemu-monitor-command", DOMAIN, '{"execute":"query-version"}')
    assert '"major":10' in version.stdout, version.stdout
    assert '"micro":13' in version.stdout, version.stdout
    assert virsh.virsh("domstate", DOMAIN, "--reason").stdout.strip() == "running (restored)"
    assert not image.exists()  # libvirt deleted the managed save after the restore

    # migproxy-saves-clean.service, after libvirt-guests: the original goes with it.
    clean = _saves(virsh.save_dir, "clean")
    assert clean.returncode == 0, clean.stderr
    assert f"{DOMAIN}.save{ORIG}: removed: {DOMAIN}.save is gone" in clean.stdout
    assert _files(virsh.save_dir) == {"other-max.save": other_before}
