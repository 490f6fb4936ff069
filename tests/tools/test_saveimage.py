"""libvirt save images (``virsh save`` / managed save) through ``migproxy rewrite``,
``inspect`` and ``plan``: images built from the captured real streams with libvirt's
header layout and XML padding, compressed with the real programs, for every format."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from migproxy.cli import main
from migproxy.tools.saveimage import (
    HEADER_SIZE,
    MAGIC,
    MAX_DATA_LEN,
    SaveFormat,
    parse_header,
    read_save_image,
)
from testkit.saveimage import (
    FORMAT_MAGIC,
    FORMATS,
    SPARSE,
    compress,
    header,
    image_head,
    restored_stream,
    save_image,
    stream_offset,
)
from testkit.streams import real_stream

A57 = "v10.0.2-virt-10.0-cortex-a57-smp1"
DEST = "qemu-10.0.13"


@pytest.fixture(scope="module")
def bare_rewritten(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """What ``migproxy rewrite`` makes of the bare stream (the reference)."""
    d = tmp_path_factory.mktemp("bare")
    (d / "in.mig").write_bytes(real_stream(A57))
    assert main(["rewrite", str(d / "in.mig"), str(d / "out.mig"), "--destination", DEST]) == 0
    out = (d / "out.mig").read_bytes()
    assert out != real_stream(A57)
    return out


def _write(tmp_path: Path, image: bytes, name: str = "saved.img") -> Path:
    p = tmp_path / name
    p.write_bytes(image)
    return p


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_rewrite_keeps_the_image_and_rewrites_the_stream(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bare_rewritten: bytes,
        fmt: str) -> None:
    image = save_image(real_stream(A57), fmt)
    src = _write(tmp_path, image)
    out = tmp_path / "new.img"
    assert main(["rewrite", str(src), str(out), "--destination", DEST]) == 0
    text = capsys.readouterr().out
    assert f"libvirt save image, {fmt}, stream of {len(bare_rewritten)} bytes" in text
    new = out.read_bytes()
    at = stream_offset(image)
    assert new[:at] == image[:at]  # header, XML, cookie and padding byte for byte
    if fmt != "raw":
        assert new[at:].startswith(FORMAT_MAGIC[fmt])
    assert restored_stream(new, fmt) == bare_rewritten


def test_big_endian_image_without_cookie(tmp_path: Path, bare_rewritten: bytes,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A header from a big-endian host (libvirt swaps when the version reads above 2) and
    no cookie (cookieOffset 0: the XML area is the XML and the padding)."""
    image = save_image(real_stream(A57), "gzip", cookie=False, order=">")
    src = _write(tmp_path, image)
    out = tmp_path / "new.img"
    assert main(["rewrite", str(src), str(out), "--destination", DEST]) == 0
    new = out.read_bytes()
    at = stream_offset(image, ">")
    assert new[:at] == image[:at]
    assert restored_stream(new, "gzip", ">") == bare_rewritten
    h = parse_header(new)
    assert (h.byteorder, h.format, h.cookie_offset) == (">", SaveFormat.GZIP, 0)
    capsys.readouterr()


def test_inspect_reports_the_image_and_accounts_for_the_stream(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stream = real_stream(A57)
    image = save_image(stream, "xz")
    src = _write(tmp_path, image)
    assert main(["inspect", str(src), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    img = rep["save_image"]
    assert img["format"] == "xz"
    assert img["domain"] == "tick"
    assert img["was_running"]
    assert img["stream_offset"] == stream_offset(image)
    assert img["data_len"] == stream_offset(image) - HEADER_SIZE
    assert rep["accounted"]
    assert rep["size"] == len(stream)
    assert rep["gaps"] == []
    plain = tmp_path / "plain.mig"
    plain.write_bytes(stream)
    assert main(["inspect", str(plain), "--json"]) == 0
    bare = json.loads(capsys.readouterr().out)
    assert bare["save_image"] is None
    assert bare["items"] == rep["items"]
    assert main(["inspect", str(src), "--no-registers"]) == 0
    assert "libvirt save image, domain tick, format xz" in capsys.readouterr().out


def test_plan_on_an_image_says_what_it_says_for_the_stream(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stream = real_stream(A57)
    plain = tmp_path / "plain.mig"
    plain.write_bytes(stream)
    assert main(["plan", str(plain), "--destination", DEST]) == 0
    expected = capsys.readouterr().out
    src = _write(tmp_path, save_image(stream, "bzip2"))
    assert main(["plan", str(src), "--destination", DEST]) == 0
    assert capsys.readouterr().out == expected
    assert "insert DBGDTRTXint" in expected


def test_a_refused_rewrite_writes_nothing(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(tmp_path, save_image(real_stream("v11.1.3-virt-10.0-max-smp2"), "zstd"))
    out = tmp_path / "new.img"
    assert main(["rewrite", str(src), str(out), "--destination", "qemu-10.0.2"]) == 1
    assert "unsafe_rewrite" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [src]  # no output, no temporary file left


def _refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], image: bytes) -> str:
    src = _write(tmp_path, image)
    out = tmp_path / "new.img"
    assert main(["rewrite", str(src), str(out), "--destination", DEST]) == 1
    assert sorted(tmp_path.iterdir()) == [src]
    assert main(["inspect", str(src)]) == 1
    assert main(["plan", str(src), "--destination", DEST]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3, err
    assert err[0] == err[1] == err[2], err
    return err[0]


@pytest.mark.parametrize(("case", "message"), [
    ("partial", "incomplete (magic LibvirtQemudPart): libvirt is still writing it"),
    ("version 3", "version 3 is not supported (only 2)"),
    ("version 1", "version 1 is not supported (only 2)"),
    ("format 7", "format 7 is unknown"),
    ("sparse", "sparse format whose stream is not in the mapped-ram layout"),
    ("magic", "not a libvirt save image: magic b'LibvirtQemudXxxx'"),
    ("short header", "truncated: 60 bytes, the header has 92"),
    ("short XML area", "truncated: the XML area has 1000 of its"),
    ("data length 0", "data length 0 (no domain XML)"),
    ("data length over the cap", f"data length {MAX_DATA_LEN + 1} is over {MAX_DATA_LEN}"),
    ("cookie past the XML area", "cookie offset 70000 is past the data length 200"),
])
def test_images_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
                        message: str) -> None:
    stream = real_stream(A57)
    image = {
        "partial": lambda: save_image(stream, magic=b"LibvirtQemudPart"),
        "version 3": lambda: save_image(stream, version=3),
        "version 1": lambda: save_image(stream, version=1),
        "format 7": lambda: save_image(stream, format_value=7),
        "sparse": lambda: save_image(stream, format_value=SPARSE),
        "magic": lambda: save_image(stream, magic=b"LibvirtQemudXxxx"),
        "short header": lambda: save_image(stream)[:60],
        "short XML area": lambda: save_image(stream)[:HEADER_SIZE + 1000],
        "data length 0": lambda: header(0, 0, 0) + stream,
        "data length over the cap": lambda: header(MAX_DATA_LEN + 1, 0, 0) + stream,
        "cookie past the XML area": lambda: header(200, 0, 70000) + bytes(200) + stream,
    }[case]()
    assert message in _refused(tmp_path, capsys, image)


def test_a_truncated_compressed_stream_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for fmt in ("gzip", "zstd"):
        image = save_image(real_stream(A57), fmt)
        d = tmp_path / fmt
        d.mkdir()
        at = stream_offset(image)
        err = _refused(d, capsys, image[:at + (len(image) - at) // 2])
        assert err.startswith(f"migproxy: {d / 'saved.img'}:")
        assert fmt in err


def test_a_missing_program_is_a_usage_error(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    src = _write(tmp_path, save_image(real_stream(A57), "zstd"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["rewrite", str(src), str(tmp_path / "new.img"), "--destination", DEST]) == 2
    assert "needs the program 'zstd', which is not installed" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [src]


def test_header_round_trip() -> None:
    """`parse_header` and `pack` give back the bytes libvirt wrote, in both orders."""
    for order in "<>":
        image = save_image(b"QEVM", "raw", order=order)
        h = parse_header(image)
        assert h.pack() == image[:HEADER_SIZE]
        assert image.startswith(MAGIC)
        assert h.stream_offset == stream_offset(image, order)


def test_concatenated_gzip_members_are_one_stream(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The compressed stream is the whole rest of the file, as ``gzip -dc`` reads it: two
    concatenated members are one stream."""
    stream = real_stream(A57)
    half = len(stream) // 2
    src = _write(tmp_path, image_head("gzip") + compress("gzip", stream[:half])
                 + compress("gzip", stream[half:]))
    assert main(["inspect", str(src), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["accounted"]
    assert rep["size"] == len(stream)


COMPRESSED = [f for f in FORMATS if f != "raw"]


@pytest.mark.parametrize("fmt", COMPRESSED)
@pytest.mark.parametrize("junk", [b"JUNKJUNKJUNKJUNK", bytes(8)], ids=["text", "zeros"])
def test_trailing_data_is_refused_for_every_format(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, junk: bytes) -> None:
    """L2: bytes after the compressed body are refused alike for every format (libvirt's
    ``PROGRAM -dc`` refuses them for gzip, xz and zstd, and passes over them for bzip2 and
    lzop), with a message that says so; nothing is written."""
    if fmt == "xz" and junk == bytes(8):
        pytest.skip("8 null bytes are xz stream padding (see the test below)")
    if fmt == "lzop" and junk == bytes(8):
        pytest.xfail("lzop -dc ends at null bytes without a word (status 0): not seen "
                     "without parsing lzop's own format")
    err = _refused(tmp_path, capsys, save_image(real_stream(A57), fmt) + junk)
    assert err.startswith(f"migproxy: {tmp_path / 'saved.img'}:"), err
    assert f"after the end of the {fmt} stream (trailing data" in err, err
    if fmt in ("gzip", "bzip2", "xz"):
        assert f"{len(junk)} bytes after" in err, err


@pytest.mark.parametrize("fmt", COMPRESSED)
def test_concatenated_streams_are_one_stream(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             fmt: str) -> None:
    """What each format defines after a stream is not trailing data: another member,
    stream or frame (lzop: one file holds one stream, so not for it)."""
    if fmt == "lzop":
        pytest.skip("lzop -dc reads one stream per file")
    stream = real_stream(A57)
    half = len(stream) // 2
    src = _write(tmp_path, image_head(fmt) + compress(fmt, stream[:half])
                 + compress(fmt, stream[half:]))
    assert main(["inspect", str(src), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["accounted"]
    assert rep["size"] == len(stream)


@pytest.mark.parametrize(("pad", "ok"), [(4, True), (8, True), (3, False)])
def test_xz_stream_padding(tmp_path: Path, capsys: pytest.CaptureFixture[str], pad: int,
                           ok: bool) -> None:
    """xz's stream padding (null bytes, a multiple of 4, as ``xz -dc`` accepts) is part of
    the format; any other count is trailing data."""
    image = save_image(real_stream(A57), "xz") + bytes(pad)
    if ok:
        assert main(["inspect", str(_write(tmp_path, image))]) == 0
    else:
        assert "trailing data" in _refused(tmp_path, capsys, image)


def test_cpregs_diff_reads_images_as_their_streams(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = real_stream(A57), real_stream("v11.1.3-virt-10.0-cortex-a57-smp1")
    plain = [tmp_path / "a.mig", tmp_path / "b.mig"]
    plain[0].write_bytes(src)
    plain[1].write_bytes(dst)
    assert main(["cpregs", "diff", *map(str, plain)]) == 0
    expected = capsys.readouterr().out
    images = [_write(tmp_path, save_image(src, "gzip"), "a.img"),
              _write(tmp_path, save_image(dst, "raw"), "b.img")]
    assert main(["cpregs", "diff", *map(str, images)]) == 0
    out = capsys.readouterr().out.replace(".img", ".mig")
    assert out == expected
    assert "ID_AA64ISAR0_EL1" in expected


def test_an_xml_with_entities_is_not_parsed() -> None:
    """The domain name is read from the image's XML, which can come from anywhere: an XML
    with a document type (entity expansion) is not parsed, a plain one is."""
    plain = "<domain><name>tick</name></domain>\0"
    bomb = ('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            "<domain><name>&b;</name></domain>\0")
    for xml, name in ((plain, "tick"), (bomb, None)):
        data = xml.encode()
        image = header(len(data), FORMATS["raw"], 0) + data + b"QEVM"
        assert read_save_image(io.BytesIO(image)).domain == name
