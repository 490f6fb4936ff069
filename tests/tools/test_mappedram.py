"""Files in the mapped-ram layout (``migrate file:`` with mapped-ram, libvirt sparse save
images), captured from real QEMU (tests/data/mapped-ram): inspected, planned and rewritten
into a new file or in place, every byte before the tail kept and the holes kept."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from migproxy.cli import main
from migproxy.stream.mappedram import FILE_OFFSET_ALIGNMENT
from migproxy.tools import mappedram
from migproxy.tools.inspect import inspect_file
from migproxy.tools.saveimage import HEADER_SIZE, SaveFormat, parse_header
from testkit.mappedram import mapped_ram_file
from testkit.saveimage import save_image
from testkit.sparsefile import data_runs, unpack

DATA = Path(__file__).resolve().parents[1] / "data" / "mapped-ram"
FILES = sorted(p.name.removesuffix(".sparse.xz") for p in DATA.glob("*.sparse.xz"))
V10_0_2 = "v10.0.2-virt-10.0-cortex-a57-smp1"
V11_1_3 = "v11.1.3-virt-10.0-cortex-a57-smp1"
SPARSE_IMAGE = f"{V10_0_2}-libvirt-sparse"
PAIRS = [(V10_0_2, "qemu-10.0.13"), (f"{V10_0_2}-multifd", "qemu-10.0.13"),
         (V11_1_3, "qemu-10.0.2"), (f"{V11_1_3}-multifd", "qemu-10.0.2"),
         (SPARSE_IMAGE, "qemu-10.0.13")]


def _file(name: str, d: Path, as_name: str | None = None) -> Path:
    return unpack((DATA / f"{name}.sparse.xz").read_bytes(), d / (as_name or f"{name}.mr"))


def _runs(path: Path, end: int) -> list[tuple[int, bytes]]:
    """The data of ``path`` before ``end``, as (offset, bytes) runs of non-zero blocks."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return [(at, b[:max(0, end - at)]) for at, b in data_runs(fd, os.fstat(fd).st_size)
                if at < end]
    finally:
        os.close(fd)


def _tail_start(path: Path) -> int:
    rep = inspect_file(path)
    return int(rep["mapped_ram"][-1]["region_end"])


def test_the_captured_files() -> None:
    expected = [V10_0_2, f"{V10_0_2}-multifd", SPARSE_IMAGE, V11_1_3, f"{V11_1_3}-multifd"]
    assert sorted(expected) == FILES


@pytest.mark.parametrize("name", FILES)
def test_inspect_accounts_for_every_byte_and_lists_the_regions(name: str,
                                                               tmp_path: Path) -> None:
    path = _file(name, tmp_path)
    rep = inspect_file(path)
    assert rep["complete"], rep["stopped"]
    assert rep["accounted"], rep["stopped"]
    assert rep["capabilities"] == ["mapped-ram"]
    blocks = rep["mapped_ram"]
    assert [b["block"] for b in blocks][:3] == ["mach-virt.ram", "virt.flash0", "virt.flash1"]
    base = 0 if rep["save_image"] is None else rep["save_image"]["stream_offset"]
    at = base + 109 + 8  # after the header, the configuration, START and MEM_SIZE
    for b in blocks:
        assert b["header_offset"] > at
        assert b["bitmap_offset"] == b["header_offset"] + 28
        assert b["pages_offset"] % FILE_OFFSET_ALIGNMENT == 0
        at = b["region_end"]
    assert len(rep["cpus"]) == 1
    assert rep["cpus"][0]["count"] > 200
    if name == SPARSE_IMAGE:
        assert rep["save_image"]["format"] == "sparse"


@pytest.mark.parametrize(("name", "dest"), PAIRS)
def test_rewrite_keeps_every_byte_before_the_tail_and_the_holes(
        name: str, dest: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _file(name, tmp_path)
    out = tmp_path / "new.mr"
    assert main(["rewrite", str(src), str(out), "--destination", dest]) == 0
    said = capsys.readouterr().out
    assert "mapped-ram" in said, said
    assert "insert" in said, said
    tail = _tail_start(src)
    assert _tail_start(out) == tail
    assert _runs(out, tail) == _runs(src, tail)  # the header, block list, bitmaps, pages
    assert out.stat().st_size != src.stat().st_size  # the cpu section grew or shrank
    assert out.stat().st_blocks * 512 < 1 << 20  # not inflated: the regions are holes
    with src.open("rb") as a, out.open("rb") as b:
        a.seek(tail)
        b.seek(tail)
        assert a.read(29) == b.read(29)  # the tail starts the same (ram END, timer)
    assert main(["plan", str(out), "--destination", dest]) == 0
    assert "nothing to change" in capsys.readouterr().out
    if name == SPARSE_IMAGE:
        head = src.read_bytes()[:HEADER_SIZE]
        n = parse_header(head).stream_offset
        assert out.read_bytes()[:n] == src.read_bytes()[:n]
        assert parse_header(head).format == SaveFormat.SPARSE


@pytest.mark.parametrize(("name", "dest"), PAIRS[::2])
def test_in_place_gives_the_file_a_copy_gets(name: str, dest: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    src = _file(name, tmp_path)
    copy = tmp_path / "copy.mr"
    assert main(["rewrite", str(src), str(copy), "--destination", dest]) == 0
    assert main(["rewrite", str(src), "--in-place", "--destination", dest]) == 0
    assert f"rewrote {src} in place" in capsys.readouterr().out
    assert src.stat().st_size == copy.stat().st_size
    assert src.read_bytes() == copy.read_bytes()
    assert src.stat().st_blocks * 512 < 1 << 20
    mtime = src.stat().st_mtime_ns
    assert main(["rewrite", str(src), "--in-place", "--destination", dest]) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert src.stat().st_mtime_ns == mtime  # nothing written


def test_a_refused_rewrite_writes_nothing_and_leaves_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _file(V10_0_2, tmp_path)
    with src.open("r+b") as f:  # the second block's header: page size 64 KiB
        blocks = inspect_file(src)["mapped_ram"]
        f.seek(blocks[1]["header_offset"] + 4)
        f.write((65536).to_bytes(8, "big"))
    before = src.read_bytes()
    out = tmp_path / "new.mr"
    assert main(["rewrite", str(src), str(out), "--destination", "qemu-10.0.13"]) == 1
    assert main(["rewrite", str(src), "--in-place", "--destination", "qemu-10.0.13"]) == 1
    err = capsys.readouterr().err
    assert ("the target page size 4096 in the mapped-ram header of RAM block 'virt.flash0'"
            in err), err
    assert "left as it was" in err, err
    assert sorted(tmp_path.iterdir()) == [src]
    assert src.read_bytes() == before


def test_a_file_cut_in_a_region_is_refused(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    src = _file(V10_0_2, tmp_path)
    os.truncate(src, 100 << 20)  # in virt.flash0's pages
    assert main(["inspect", str(src), "--no-registers"]) == 1
    assert main(["rewrite", str(src), "--in-place"]) == 1
    assert "the stream ended before EOF" in capsys.readouterr().err


def test_in_place_is_only_for_the_mapped_ram_layout(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "seq.mig"
    src.write_bytes(bytes(mapped_ram_file(capabilities=()).data[:8]))
    assert main(["rewrite", str(src), "--in-place"]) == 2
    assert "only a file in the mapped-ram layout" in capsys.readouterr().err
    assert main(["rewrite", str(src)]) == 2  # neither OUTPUT nor --in-place


def test_mapped_ram_in_a_compressed_image_is_refused(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "gz.save"
    src.write_bytes(save_image(bytes(mapped_ram_file().data), "gzip"))
    assert main(["inspect", str(src), "--no-registers"]) == 1
    assert "mapped-ram capability (file migration) is not supported on a channel" in \
        capsys.readouterr().err


def test_in_place_refuses_a_file_that_changed(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x" * 100)
    with p.open("r+b") as f, pytest.raises(mappedram.InPlaceError, match="changed"):
        mappedram.rewrite_in_place(f.fileno(), 50, b"y", 99)
    assert p.read_bytes() == b"x" * 100


def _sparse_source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    fd = os.open(src, os.O_RDWR | os.O_CREAT)
    os.pwrite(fd, b"a" * 5000, 0)
    os.pwrite(fd, b"b" * 3, 3 << 20)
    os.ftruncate(fd, 5 << 20)
    os.close(fd)
    return src


@pytest.mark.parametrize("without", ["nothing", "SEEK_DATA", "copy_file_range"])
def test_copy_sparse_keeps_the_holes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     without: str) -> None:
    src = _sparse_source(tmp_path)
    if without == "SEEK_DATA":
        real = os.lseek

        def lseek(fd: int, pos: int, how: int) -> int:
            if how in (os.SEEK_DATA, os.SEEK_HOLE):
                raise OSError(errno.EINVAL, "no")
            return real(fd, pos, how)
        monkeypatch.setattr(os, "lseek", lseek)
    elif without == "copy_file_range":
        def no_copy(*_: object) -> int:
            raise OSError(errno.EXDEV, "no")
        monkeypatch.setattr(os, "copy_file_range", no_copy)
    dst = tmp_path / "dst"
    with src.open("rb") as a, dst.open("w+b") as b:
        mappedram.write_rewritten(a.fileno(), b.fileno(), 4 << 20, b"tail")
    data = dst.read_bytes()
    assert len(data) == (4 << 20) + 4
    assert data[-4:] == b"tail"
    assert data[:4 << 20] == src.read_bytes()[:4 << 20]
    assert dst.stat().st_blocks * 512 <= 256 << 10
