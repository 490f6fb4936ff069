"""A VM saved on QEMU 10.0.2 restores on 10.0.13 after ``migproxy rewrite`` of its libvirt
save image. libvirt itself is not in the lab: the image is written as ``virsh save`` writes
it (header, domain XML, cookie, 64 KiB of padding, the stream through the format's
compressor), and restored as ``virsh restore`` does (the stream after the XML area, through
``PROG -dc``, into ``-incoming``). The guest must continue with the next tick; the stream
of the image as saved does not load (the negative control)."""

from __future__ import annotations

from pathlib import Path

import pytest

from migproxy.cli import main
from migproxy.lab import Lab
from testkit.labs import require_lab
from testkit.saveimage import FORMATS, restored_stream, save_image, stream_offset

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def lab() -> Lab:
    return require_lab("10.0.2", "10.0.13")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_saved_on_10_0_2_restores_on_10_0_13(lab: Lab, tmp_path: Path, fmt: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    s = lab.stream("10.0.2", "virt-10.0", "cortex-a57", 1)
    image = save_image(s.path.read_bytes(), fmt)
    saved = tmp_path / "tick.save"
    saved.write_bytes(image)
    new = tmp_path / "tick-10.0.13.save"
    assert main(["rewrite", str(saved), str(new), "--destination", "qemu-10.0.13"]) == 0
    assert f"libvirt save image, {fmt}" in capsys.readouterr().out
    rewritten = new.read_bytes()
    assert rewritten[:stream_offset(image)] == image[:stream_offset(image)]

    restored = tmp_path / "restored.mig"
    restored.write_bytes(restored_stream(rewritten, fmt))
    r = lab.load_stream("10.0.13", restored, "virt-10.0", "cortex-a57", 1,
                        expect_after=s.last_tick)
    assert r.ok, r.error

    control = tmp_path / "control.mig"
    control.write_bytes(restored_stream(image, fmt))
    c = lab.load_stream("10.0.13", control, "virt-10.0", "cortex-a57", 1,
                        expect_after=s.last_tick)
    assert not c.ok, "the stream as saved loads on 10.0.13: the test proves nothing"
