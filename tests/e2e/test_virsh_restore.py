"""``virsh save`` on QEMU 10.0.2, ``migproxy rewrite``, ``virsh restore`` on QEMU 10.0.13.

A private libvirt daemon (``migproxy/lab/libvirt.py``: its own mount namespace, state in
the lab's work dir) runs the tick guest on the lab's 10.0.2 and saves it: a save image
written by libvirt itself. ``migproxy rewrite --destination qemu-10.0.13`` rewrites it, and
libvirt restores the rewritten image with the lab's 10.0.13 as the domain's emulator (the
image's own XML, only ``<emulator>`` changed, through ``virsh restore --xml``). The guest
must go on from the tick after the last one it printed on 10.0.2, on 10.0.13 (its
``query-version``). Negative control: the image as saved does not restore on 10.0.13.
Both image formats libvirt writes itself: ``raw`` (a stream) and ``sparse`` (QEMU's
mapped-ram file, ``--image-format sparse``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from migproxy.lab import Lab
from migproxy.lab.libvirt import LibvirtUnavailable, PrivateLibvirt, emulator_wrapper
from migproxy.lab.qemu import parse_ticks
from migproxy.tools.saveimage import HEADER_SIZE, parse_header
from testkit.labs import require_lab, tool_unavailable

pytestmark = pytest.mark.qemu

DOMAIN = "migproxy-tick"
TICK_TIMEOUT = 30.0


def domain_xml(kernel: Path, serial: Path, emulator: str) -> str:
    return f"""<domain type='qemu'>
  <name>{DOMAIN}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='aarch64' machine='virt-10.0'>hvm</type>
    <kernel>{kernel}</kernel>
  </os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>cortex-a57</model></cpu>
  <devices>
    <emulator>{emulator}</emulator>
    <serial type='file'><source path='{serial}'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def wait_ticks(serial: Path, at_least: int) -> list[int]:
    deadline = time.monotonic() + TICK_TIMEOUT
    while True:
        ticks = parse_ticks(serial.read_text(errors="replace")) if serial.exists() else []
        if len(ticks) >= at_least:
            return ticks
        assert time.monotonic() < deadline, f"{serial}: {ticks}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def lab() -> Lab:
    return require_lab("10.0.2", "10.0.13")


@pytest.fixture
def libvirt(lab: Lab) -> Iterator[tuple[PrivateLibvirt, Path]]:
    with lab.scratch_dir("libvirt-") as d:
        chroots = tuple(v.chroot for v in (lab.version("10.0.13"),) if v.chroot)
        try:
            daemon = PrivateLibvirt(d / "libvirt", chroots)
        except LibvirtUnavailable as e:
            tool_unavailable(f"libvirt: {e}")
        with daemon:
            yield daemon, d
            daemon.virsh("destroy", DOMAIN, check=False)


@pytest.mark.parametrize("image_format", ["raw", "sparse"])
def test_virsh_save_on_10_0_2_restores_on_10_0_13_after_rewrite(
        lab: Lab, libvirt: tuple[PrivateLibvirt, Path], image_format: str) -> None:
    virsh, d = libvirt
    kernel = d / "tick.bin"
    shutil.copyfile(lab.kernel, kernel)  # where the chrooted QEMU sees it too
    serial = d / "serial.log"
    src_bin = lab.version("10.0.2")
    assert src_bin.chroot is None  # the host's QEMU: libvirt runs it as it is
    xml = d / "domain.xml"
    xml.write_text(domain_xml(kernel, serial, src_bin.argv[0]), encoding="utf-8")
    virsh.virsh("create", str(xml))
    wait_ticks(serial, 3)
    saved = d / "saved.img"
    virsh.virsh("save", DOMAIN, str(saved), "--image-format", image_format)
    last = parse_ticks(serial.read_text())[-1]

    rewritten = d / "rewritten.img"
    cli = subprocess.run([sys.executable, "-m", "migproxy", "rewrite", str(saved),
                          str(rewritten), "--destination", "qemu-10.0.13"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert f"libvirt save image, {image_format}" in cli.stdout, cli.stdout
    assert ("mapped-ram" in cli.stdout) == (image_format == "sparse"), cli.stdout
    # The header and the domain XML are libvirt's, byte for byte.
    n = parse_header(saved.read_bytes()[:HEADER_SIZE]).stream_offset
    assert rewritten.read_bytes()[:n] == saved.read_bytes()[:n]

    wrapper = emulator_wrapper(lab.version("10.0.13"), d / "qemu-10.0.13")
    image_xml = virsh.virsh("save-image-dumpxml", str(rewritten)).stdout
    assert f"<emulator>{src_bin.argv[0]}</emulator>" in image_xml
    restore_xml = d / "restore.xml"
    restore_xml.write_text(image_xml.replace(f"<emulator>{src_bin.argv[0]}</emulator>",
                                             f"<emulator>{wrapper}</emulator>"),
                           encoding="utf-8")

    refused = virsh.virsh("restore", str(saved), "--xml", str(restore_xml), check=False)
    assert refused.returncode != 0, "the image as saved must not load on 10.0.13"
    assert "load of migration failed" in refused.stderr, refused.stderr

    serial.unlink(missing_ok=True)
    virsh.virsh("restore", str(rewritten), "--xml", str(restore_xml))
    ticks = wait_ticks(serial, 2)
    assert ticks[0] == last + 1, (last, ticks)  # the guest went on where it stopped
    version = virsh.virsh("qemu-monitor-command", DOMAIN, '{"execute":"query-version"}')
    assert '"major":10' in version.stdout, version.stdout
    assert '"micro":13' in version.stdout, version.stdout
