"""An adversarial corpus: VM descriptions a guest plants in the registers it controls.

The streams are the real captured ones (tests/data), with the return path (the
OPEN_RETURN_PATH command QEMU sends after the configuration), where the end of the device
state is recognised by content. A guest controls the values of its general registers
(``env.regs``/``env.xregs``), its FP/SIMD registers (``cpu/vfp``), its SVE registers
(``cpu/sve``, with ``-cpu max``) and its RAM. Into each, the tests write what a guest could:
a footer, EOF and a description, the largest of them a canonical description of everything
before it that frames the device state up to the fake exactly. Each stream is then fed cut
at every read boundary around the fake, with the driver's quiet window passing after every
read (the worst case: the source stalls right after the fake). Nothing a guest plants may
change what is emitted.
"""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import pytest

import migproxy.arm.rewriter as arm_rewriter
from migproxy.arm.events import CpuRewritten
from migproxy.arm.profile import load_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream import wire
from migproxy.stream.engine import EngineConfig, Mode, StreamEngine
from migproxy.stream.events import DeviceStateHeld
from migproxy.stream.vmdesc import FullSection, encode_description
from testkit.streams import real_stream, run_engine, split_at, with_return_path

STREAMS = ["v10.0.2-virt-10.0-cortex-a57-smp1", "v10.0.2-virt-10.0-max-smp2",
           "v11.1.3-virt-10.0-max-smp2", "v7.2.22-virt-7.2-cortex-a57-smp1"]
REWRITTEN = {"v10.0.2-virt-10.0-cortex-a57-smp1", "v10.0.2-virt-10.0-max-smp2"}


def _cfg() -> EngineConfig:
    return arm_engine_config(load_profile("builtin:default"))


class Stream:
    """A real stream with the return path, and where its guest-controlled bytes are."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.data = with_return_path(real_stream(name))
        eng = StreamEngine(arm_engine_config(None))
        res = eng.feed(self.data)
        eng.conclude()
        assert eng.mode == Mode.DONE, name
        self.hold = next(e.offset for e in res.events if isinstance(e, DeviceStateHeld))
        layout = eng.layout
        assert layout is not None
        self.description: dict[str, Any] = layout.description
        self.items = [i for i in layout.items if isinstance(i, FullSection)]
        self.cpu = next(i for i in self.items if i.idstr == "cpu")
        self.cpu_index = self.cpu.device_index
        base = self.hold
        self.payload = base + self.cpu.payload_offset
        self.cpu_end = base + self.cpu.payload_end

    def subsection_data(self, name: str) -> int | None:
        """Where the fields of the cpu subsection ``name`` start (None: not sent)."""
        marker = bytes((wire.VM_SUBSECTION, len(name))) + name.encode()
        at = self.data.find(marker, self.payload, self.cpu_end)
        return None if at < 0 else at + len(marker) + 4

    def page_data(self) -> int:
        """Where the data of a full page lies, not far before the device state: a record
        header with the PAGE and CONTINUE flags and a page-aligned offset, whose 4096 bytes
        are followed by another record header (zero page, page, or end of section)."""
        d = self.data
        cont = wire.RAM_PAGE | wire.RAM_CONTINUE
        for i in range(self.hold - 8 - 4096 - 8, 0, -1):
            j = i + 8 + 4096
            if d[i + 7] == cont and d[i + 6] & 0x0F == 0 and \
                    d[j + 7] in (cont, wire.RAM_ZERO | wire.RAM_CONTINUE, wire.RAM_EOS) and \
                    d[j + 6] & 0x0F == 0:
                return i + 8
        raise AssertionError("no full page in the stream")

    def footer(self) -> bytes:
        return bytes((wire.VM_SECTION_FOOTER,)) + struct.pack(">I", self.cpu.section_id)

    def minimal_description(self, fake_at: int, *, canonical: bool) -> bytes:
        """A description that frames the device state up to a footer planted at
        ``fake_at``: every device before the cpu, then the cpu, each described as one
        buffer field covering its payload. ``canonical``: serialised as QEMU does, with the
        stream's configuration and page size and QEMU's keys (so only the cpu layout check
        tells it apart); otherwise as compact as JSON gets."""
        devices = []
        for dev, item in zip(self.description["devices"], self.items, strict=False):
            end = self.hold + item.payload_end if item is not self.cpu else fake_at
            devices.append({"name": dev["name"], "instance_id": dev["instance_id"],
                            "vmsd_name": dev["vmsd_name"], "version": dev["version"],
                            "fields": [{"name": "x", "type": "buffer",
                                        "size": end - self.hold - item.payload_offset}]})
            if item is self.cpu:
                break
        if not canonical:
            for d in devices:
                del d["vmsd_name"]
                d["fields"] = [{"size": d["fields"][0]["size"]}]
            return json.dumps({"devices": devices}, separators=(",", ":")).encode()
        desc: dict[str, Any] = {k: v for k, v in self.description.items() if k != "devices"}
        desc["devices"] = devices
        return encode_description(desc)


def planted(data: bytes, at: int, fake: bytes, room: int) -> bytes:
    assert len(fake) <= room, f"the fake ({len(fake)} bytes) does not fit ({room})"
    return data[:at] + fake + data[at + len(fake):]


def record(body: bytes) -> bytes:
    return bytes((wire.VM_EOF, wire.VM_VMDESCRIPTION)) + struct.pack(">I", len(body)) + body


def fakes(s: Stream) -> list[tuple[str, str, bytes, int]]:
    """(where, what, stream with the fake, offset right after the fake): in every place a
    guest can write one, the strongest fake that fits there."""
    out = []

    def plant(where: str, at: int, room: int) -> None:
        for what, body in (("canonical", s.minimal_description(at, canonical=True)),
                           ("compact", s.minimal_description(at, canonical=False)),
                           ("small", b'{"page_size": 4096, "devices": []}')):
            fake = s.footer() + record(body)
            if len(fake) <= room:
                out.append((where, what, planted(s.data, at, fake, room), at + len(fake)))
                return
        raise AssertionError(f"no fake fits in {where}")

    plant("xregs", s.payload + 64, 256)  # env.xregs: 32 x 8 bytes
    vfp = s.subsection_data("cpu/vfp")
    assert vfp is not None
    plant("vfp", vfp, 512)  # the 32 Q registers
    sve = s.subsection_data("cpu/sve")
    if sve is not None:
        plant("sve", sve + 112, 31 * 112 + 17 * 32)  # Z1..Z31 high parts, P0..P15, FFR
    # RAM: a whole description in a page sent shortly before the device state.
    at = s.page_data()
    fake = s.footer() + record(encode_description(s.description))
    fake = fake[:4096]
    out.append(("ram", "copy", planted(s.data, at, fake, 4096), at + len(fake)))
    return out


@pytest.fixture(scope="module", params=STREAMS)
def stream(request: pytest.FixtureRequest) -> Stream:
    return Stream(request.param)


def cuts(s: Stream, fake_end: int, seed: int) -> list[list[int]]:
    rnd = random.Random(seed)
    tail = range(s.hold, len(s.data))
    every = list(range(s.hold, len(s.data), 1024))
    return [[fake_end], [fake_end - 1, fake_end, fake_end + 1], every,
            [*sorted(rnd.sample(tail, 12)), fake_end]]


def test_planted_descriptions_change_nothing(stream: Stream) -> None:
    for where, what, data, fake_end in fakes(stream):
        expected, events, eng = run_engine([data], _cfg(), eof=False, quiet=True)
        assert eng.mode == Mode.DONE, where
        assert eng.stop_reason is None, where
        rewritten = [e for e in events if isinstance(e, CpuRewritten)]
        assert bool(rewritten) == (stream.name in REWRITTEN), where
        for i, points in enumerate(cuts(stream, fake_end, fake_end)):
            out, _events, eng = run_engine(split_at(data, points), _cfg(), eof=False,
                                           quiet=True)
            assert eng.mode == Mode.DONE, (where, what, i)
            assert eng.stop_reason is None, (where, what, i)
            assert out == expected, (where, what, i)


def test_the_fakes_would_frame(stream: Stream, monkeypatch: pytest.MonkeyPatch) -> None:
    """The corpus is a threat: every fake but the small ones frames the device state before
    it, and without the checks on a framing description it would be taken for the end
    (and released, truncated, after the quiet window)."""
    kinds = {(where, what) for where, what, _d, _e in fakes(stream)}
    assert ("vfp", "compact") in kinds
    if stream.subsection_data("cpu/sve") is not None:
        assert ("sve", "canonical") in kinds  # only the cpu layout check can stop this one
    monkeypatch.setattr(StreamEngine, "_unlike_the_end", lambda self, raw, desc, lay: None)
    for where, what, data, fake_end in fakes(stream):
        if what in ("compact", "canonical"):
            eng = StreamEngine(_cfg())
            eng.feed(data[:fake_end])
            assert eng.end_pending, (where, what)


def test_what_stops_each_fake(stream: Stream) -> None:
    """With the checks, each framing fake is seen, and named, before the real end."""
    for where, what, data, fake_end in fakes(stream):
        eng = StreamEngine(_cfg())
        eng.feed(data[:fake_end])
        assert not eng.end_pending, (where, what)
        if what == "canonical":
            assert eng.unframed is not None
            assert eng.unframed[0] == "description_not_recognised"
            assert "cpu entry's fields are not vmstate_arm_cpu's" in eng.unframed[1]
        elif what == "compact":
            assert eng.unframed is not None
            assert eng.unframed[0] == "description_not_recognised"
            assert "not byte for byte as QEMU writes it" in eng.unframed[1]


def test_without_the_layout_check_the_canonical_fake_steers_the_migration(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Taken for the end, the canonical SVE fake makes the rewrite fail on its own cpu
    entry: the migration goes out untouched (as the issue saw with cortex-a57)."""
    s = Stream("v10.0.2-virt-10.0-max-smp2")
    _w, _k, data, fake_end = next(f for f in fakes(s) if f[0] == "sve")
    expected = run_engine([data], _cfg(), eof=False, quiet=True)[0]
    monkeypatch.setattr(arm_rewriter, "unknown_cpu_layout", lambda entry: None)
    out, _events, eng = run_engine([data[:fake_end], data[fake_end:]], _cfg(), eof=False,
                                   quiet=True)
    assert out != expected
    assert eng.stop_reason == "cpu_layout"
