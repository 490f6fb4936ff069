"""``migproxy saves rewrite`` and ``saves clean`` on a managed-save directory: images
built from the captured real streams (libvirt's header layout and XML padding), as
libvirt-guests leaves them at shutdown. The real virsh run is tests/e2e/test_managedsave.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from migproxy.cli import main
from migproxy.tools import saves
from migproxy.tools.saveimage import HEADER_SIZE
from testkit.saveimage import restored_stream, save_image, stream_offset
from testkit.streams import real_stream

OLD = "v10.0.2-virt-10.0-cortex-a57-smp1"  # needs a rewrite for 10.0.13
CURRENT = "v10.0.13-virt-10.0-cortex-a57-smp1"  # already for 10.0.13
REFUSED = "v11.1.3-virt-10.0-max-smp2"  # -cpu max, 11.1.3 to 10.0.13: refused
DEST = "qemu-10.0.13"
ORIG = ".save.migproxy-orig"


def _image(d: Path, name: str, stream: str, fmt: str = "raw") -> Path:
    p = d / f"{name}.save"
    p.write_bytes(save_image(real_stream(stream), fmt))
    p.chmod(0o600)
    os.utime(p, ns=(1_700_000_000_000_000_000, 1_700_000_000_123_456_789))
    return p


def _rewrite(d: Path, *extra: str) -> int:
    return main(["saves", "rewrite", "--dir", str(d), "--destination", DEST, *extra])


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def rewritten_stream(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """What ``migproxy rewrite`` makes of OLD for DEST (the reference)."""
    d = tmp_path_factory.mktemp("ref")
    (d / "in.mig").write_bytes(real_stream(OLD))
    assert main(["rewrite", str(d / "in.mig"), str(d / "out.mig"), "--destination", DEST]) == 0
    return (d / "out.mig").read_bytes()


@pytest.mark.parametrize("fmt", ["raw", "xz"])
def test_rewrites_in_place_keeps_the_original_and_is_idempotent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], rewritten_stream: bytes,
        fmt: str) -> None:
    old = _image(tmp_path, "vm1", OLD, fmt)
    saved = old.read_bytes()
    before = old.stat()
    assert _rewrite(tmp_path) == 0
    out = capsys.readouterr().out
    assert f"{old}: rewritten for {DEST}: original kept as vm1{ORIG}" in out, out
    assert "drop BOGUS_DBGDTRTX" in out
    new = old.read_bytes()
    assert restored_stream(new, fmt) == rewritten_stream
    assert new[:stream_offset(saved)] == saved[:stream_offset(saved)]
    assert (tmp_path / f"vm1{ORIG}").read_bytes() == saved
    assert sorted(_files(tmp_path)) == ["vm1.save", f"vm1{ORIG}"]
    after = old.stat()
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_gid, after.st_mtime_ns) == (
        0o600, before.st_uid, before.st_gid, before.st_mtime_ns)
    assert after.st_ino != before.st_ino
    assert (tmp_path / f"vm1{ORIG}").stat().st_ino == before.st_ino  # a link, not a copy

    files = _files(tmp_path)
    assert _rewrite(tmp_path) == 0  # the second run: nothing to change
    assert f"{old}: nothing to change" in capsys.readouterr().out
    assert _files(tmp_path) == files


def test_nothing_to_change_leaves_the_image_alone(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    img = _image(tmp_path, "vm1", CURRENT)
    st = img.stat()
    assert _rewrite(tmp_path) == 0
    assert f"{img}: nothing to change for {DEST}" in capsys.readouterr().out
    assert img.stat().st_ino == st.st_ino
    assert sorted(_files(tmp_path)) == ["vm1.save"]


def test_a_refused_image_is_named_and_untouched_the_others_go_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _image(tmp_path, "a-max", REFUSED)
    good = _image(tmp_path, "b-a57", OLD)
    bad_bytes, bad_st = bad.read_bytes(), bad.stat()
    assert _rewrite(tmp_path) == 1
    cap = capsys.readouterr()
    assert f"{bad}: refused, left as it is: [unsafe_rewrite]" in cap.out, cap.out
    assert f"{good}: rewritten" in cap.out
    assert f"{bad}: not rewritten (refused)" in cap.err
    assert "2 managed-save images, 1 rewritten, 1 refused" in cap.out
    assert bad.read_bytes() == bad_bytes
    assert (bad.stat().st_ino, bad.stat().st_mtime_ns) == (bad_st.st_ino, bad_st.st_mtime_ns)
    assert not (tmp_path / f"a-max{ORIG}").exists()
    assert sorted(_files(tmp_path)) == ["a-max.save", "b-a57.save", f"b-a57{ORIG}"]


def test_images_libvirt_never_finished_and_other_files_are_refused_untouched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    partial = tmp_path / "part.save"
    partial.write_bytes(save_image(real_stream(OLD), magic=b"LibvirtQemudPart"))
    other = tmp_path / "other.save"
    other.write_bytes(b"not an image")
    (tmp_path / "link.save").symlink_to(other)
    (tmp_path / "notes.txt").write_bytes(b"left alone")
    files = _files(tmp_path)
    assert _rewrite(tmp_path) == 1
    out = capsys.readouterr().out
    assert f"{partial}: refused, left as it is: libvirt save image incomplete" in out
    assert f"{other}: refused, left as it is: not a libvirt save image" in out
    assert f"{tmp_path / 'link.save'}: skipped: not a regular file" in out
    assert _files(tmp_path) == files


def test_the_rewrite_of_a_rewrite_starts_from_the_original(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Booted back into the old QEMU (or kernel): the kept original fits as it is and is
    put back; for a third build the rewrite is made again from the original."""
    img = _image(tmp_path, "vm1", OLD)
    saved = img.read_bytes()
    assert _rewrite(tmp_path) == 0
    assert main(["saves", "rewrite", "--dir", str(tmp_path), "--destination",
                 "qemu-10.0.2"]) == 0
    assert f"{img}: original put back for qemu-10.0.2" in capsys.readouterr().out
    assert _files(tmp_path) == {"vm1.save": saved}

    assert _rewrite(tmp_path) == 0
    rewritten = img.read_bytes()
    assert main(["saves", "rewrite", "--dir", str(tmp_path), "--destination",
                 "qemu-11.1.3"]) == 0
    out = capsys.readouterr().out
    assert f"{img}: rewritten for qemu-11.1.3: again from vm1{ORIG}" in out, out
    assert (tmp_path / f"vm1{ORIG}").read_bytes() == saved
    assert img.read_bytes() not in (saved, rewritten)


def test_a_new_save_replaces_a_stale_original(tmp_path: Path) -> None:
    """An original left from an earlier round (its image restored, then the VM saved
    again) is not the new image's: it is replaced by the new original."""
    stale = tmp_path / f"vm1{ORIG}"
    stale.write_bytes(save_image(real_stream(CURRENT)))
    img = _image(tmp_path, "vm1", OLD)
    os.utime(img)  # saved after the stale original
    saved = img.read_bytes()
    assert _rewrite(tmp_path) == 0
    assert stale.read_bytes() == saved


def test_clean_removes_the_originals_of_restored_images_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("restored", "pending"):
        _image(tmp_path, name, OLD)
    assert _rewrite(tmp_path) == 0
    (tmp_path / "restored.save").unlink()  # what libvirt does after a restore
    capsys.readouterr()
    assert main(["saves", "clean", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"restored{ORIG}: removed: restored.save is gone" in out
    assert f"pending{ORIG}: kept: pending.save is not restored yet" in out
    assert sorted(_files(tmp_path)) == ["pending.save", f"pending{ORIG}"]


def test_what_an_interrupted_run_left_is_removed(tmp_path: Path) -> None:
    img = _image(tmp_path, "vm1", OLD)
    (tmp_path / "vm1.save.migproxy-new").write_bytes(b"half")
    (tmp_path / ".vm1.save.migproxy-new.x1y2").write_bytes(b"half")
    for name in ("vm1.save.migproxy-newer", ".vm1.save.migproxy-new", "notes.migproxy-new"):
        (tmp_path / name).write_bytes(b"not ours")
    assert _rewrite(tmp_path) == 0
    assert sorted(_files(tmp_path)) == sorted([
        "vm1.save", f"vm1{ORIG}", "vm1.save.migproxy-newer", ".vm1.save.migproxy-new",
        "notes.migproxy-new"])
    assert img.read_bytes()[:HEADER_SIZE] == (tmp_path / f"vm1{ORIG}").read_bytes()[:HEADER_SIZE]


def test_out_of_time_leaves_every_image_as_it_was(tmp_path: Path, monkeypatch:
                                                  pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _image(tmp_path, "vm1", OLD)
    _image(tmp_path, "vm2", OLD)
    files = _files(tmp_path)
    monkeypatch.setattr(saves.Clock, "passed", property(lambda self: self.deadline is not None))
    assert _rewrite(tmp_path, "--time-limit", "1000") == 1
    out = capsys.readouterr().out
    assert out.count(": skipped: the time limit passed") == 2, out
    assert _files(tmp_path) == files


def test_a_second_run_at_the_same_time_is_refused(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _image(tmp_path, "vm1", OLD)
    with saves.locked(tmp_path):
        assert _rewrite(tmp_path) == 2
        assert main(["saves", "clean", "--dir", str(tmp_path)]) == 2
    assert "another migproxy saves run holds it" in capsys.readouterr().err


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["saves", "rewrite", "--dir", str(tmp_path / "no"), "--destination",
                 DEST]) == 2
    assert "no such directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["saves", "rewrite", "--dir", str(tmp_path)])  # --destination is required
    assert main(["saves", "rewrite", "--dir", str(tmp_path), "--destination",
                 str(tmp_path / "nothing")]) != 0  # as for rewrite: a ManifestError
    assert "no manifest set" in capsys.readouterr().err
    assert main(["saves", "rewrite", "--dir", str(tmp_path), "--destination", DEST]) == 0
    assert f"{tmp_path}: 0 managed-save images" in capsys.readouterr().out


def test_sigterm_in_a_rewrite_leaves_the_image_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """systemd stopping the unit in the middle of a rewrite (the signal comes while the
    rewrite writes its output)."""
    import signal

    img = _image(tmp_path, "vm1", OLD)
    files = _files(tmp_path)
    real = saves.rewrite_file

    def interrupted(*args: object, **kw: object) -> object:
        check = kw["check"]

        def then_stop() -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            assert callable(check)
            check()

        return real(*args, **{**kw, "check": then_stop})  # type: ignore[arg-type]

    monkeypatch.setattr(saves, "rewrite_file", interrupted)
    before = signal.getsignal(signal.SIGTERM)
    assert _rewrite(tmp_path) == 1
    assert signal.getsignal(signal.SIGTERM) == before
    assert f"{tmp_path}: stopped (SIGTERM); the image in progress is as it was" \
        in capsys.readouterr().err
    assert _files(tmp_path) == files
    assert img.exists()
