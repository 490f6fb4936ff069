"""libvirt save images built the way libvirt writes them, and their QEMU stream taken out
the way ``virsh restore`` does, with the same programs (``PROG -c``, ``xz -3 -c``;
``PROG -dc``, ``lzop -dc --ignore-warn``). Independent of migproxy's own reader: the
layout is written out here from libvirt's qemu_saveimage.h / qemu_saveimage.c."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

FORMATS = {"raw": 0, "gzip": 1, "bzip2": 2, "xz": 3, "lzop": 4, "zstd": 5}
SPARSE = 6
# What each compressor's output starts with (to check a rewrite kept the format).
FORMAT_MAGIC = {"gzip": b"\x1f\x8b", "bzip2": b"BZh", "xz": b"\xfd7zXZ\x00",
                "lzop": b"\x89LZO\x00\r\n\x1a\n", "zstd": b"\x28\xb5\x2f\xfd"}
HEADER = "16s5I14I"  # magic, version, data_len, was_running, format, cookieOffset, unused
HEADER_SIZE = 92
PADDING = 64 * 1024  # virQEMUSaveDataWrite: data_len = xml + cookie + 64 KiB

DOMAIN_XML = ("<domain type='qemu'>\n  <name>tick</name>\n  <memory unit='KiB'>65536"
              "</memory>\n  <os><type arch='aarch64' machine='virt-10.0'>hvm</type></os>\n"
              "  <cpu mode='custom'><model>cortex-a57</model></cpu>\n</domain>\n")
COOKIE_XML = "<cookie>\n  <cpu mode='custom'><model>cortex-a57</model></cpu>\n</cookie>\n"


def need_program(fmt: str) -> str:
    """The compressor of ``fmt`` (skip when it is missing, or fail under
    MIGPROXY_REQUIRE_TOOLS, as scripts/test.sh installs them as root)."""
    path = shutil.which(fmt)
    if path is None:
        if os.environ.get("MIGPROXY_REQUIRE_TOOLS"):
            pytest.fail(f"{fmt} is missing (Debian package {fmt!r}) and "
                        "MIGPROXY_REQUIRE_TOOLS is set")
        pytest.skip(f"{fmt} is missing: install the Debian package {fmt!r}")
    return path


def compress(fmt: str, data: bytes) -> bytes:
    if fmt == "raw":
        return data
    args = [need_program(fmt), "-c"] + (["-3"] if fmt == "xz" else [])
    return subprocess.run(args, input=data, stdout=subprocess.PIPE, check=True).stdout


def decompress(fmt: str, data: bytes) -> bytes:
    if fmt == "raw":
        return data
    args = [need_program(fmt), "-dc"] + (["--ignore-warn"] if fmt == "lzop" else [])
    return subprocess.run(args, input=data, stdout=subprocess.PIPE, check=True).stdout


def header(data_len: int, fmt: int, cookie_offset: int, *, magic: bytes = b"LibvirtQemudSave",
           version: int = 2, was_running: int = 1, order: str = "<") -> bytes:
    return struct.pack(order + HEADER, magic, version, data_len, was_running, fmt,
                       cookie_offset, *([0] * 14))


def image_head(fmt: str = "raw", *, cookie: bool = True, order: str = "<",
               magic: bytes = b"LibvirtQemudSave", version: int = 2,
               format_value: int | None = None) -> bytes:
    """The header and XML area as virQEMUSaveDataWrite writes them (``format_value``:
    another number in the header's format field)."""
    xml = DOMAIN_XML.encode() + b"\0"
    ck = COOKIE_XML.encode() + b"\0" if cookie else b""
    data_len = len(xml) + len(ck) + PADDING
    head = header(data_len, FORMATS[fmt] if format_value is None else format_value,
                  len(xml) if cookie else 0, magic=magic, version=version, order=order)
    return head + xml + ck + bytes(PADDING)


def save_image(stream: bytes, fmt: str = "raw", *, cookie: bool = True, order: str = "<",
               magic: bytes = b"LibvirtQemudSave", version: int = 2,
               format_value: int | None = None) -> bytes:
    """A save image of ``stream``: `image_head`, then the compressor's output."""
    return image_head(fmt, cookie=cookie, order=order, magic=magic, version=version,
                      format_value=format_value) + compress(fmt, stream)


def stream_offset(image: bytes, order: str = "<") -> int:
    return HEADER_SIZE + struct.unpack_from(order + "I", image, 20)[0]


def restored_stream(image: bytes, fmt: str, order: str = "<") -> bytes:
    """What QEMU reads when libvirt restores ``image``."""
    return decompress(fmt, image[stream_offset(image, order):])
