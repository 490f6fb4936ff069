"""Streams for tests: the captured real streams of ``tests/data`` and an engine driver.

``run_engine`` feeds chunks to a fresh :class:`~migproxy.stream.engine.StreamEngine` (the
ARM plug-in configured, no profile, unless a configuration is given) the way the daemon's
session does; ``split_at`` cuts a stream at given offsets; ``with_return_path`` turns a
stream into the one QEMU sends with the return-path capability on."""

from __future__ import annotations

import lzma
import struct
from collections.abc import Iterable
from pathlib import Path

from migproxy.arm.events import CpuState, seen_cpus
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream import wire
from migproxy.stream.engine import EngineConfig, FeedResult, StreamEngine
from migproxy.stream.events import ConfigurationFramed, Event
from testkit.synthetic import SynthSpec

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"

# The shape of the ``synth_small`` fixture (tests/conftest.py): two cpus, a few pages, an
# opaque device, multifd flushes and guest pages that imitate a description and a header.
SMALL = SynthSpec(cpus=2, full_pages=16, zero_pages=64, tail_blob=300, multifd_flush=True,
                  page_patterns=[b"\x00\x06\x00\x00\x00\x08{\"x\": 1}QEVM\x04"])


def run_engine(data_chunks: Iterable[bytes], config: EngineConfig | None = None,
               eof: bool = True, quiet: bool = False) -> tuple[bytes, list[Event], StreamEngine]:
    """Feed chunks to a fresh engine; return the joined output, all events and the engine.

    ``quiet``: the driver's quiet window passes after every chunk, so a pending end of the
    device state (return path) is confirmed there, as the daemon's session does."""
    eng = StreamEngine(config or arm_engine_config(None))
    out: list[bytes] = []
    events: list[Event] = []

    def take(res: FeedResult) -> None:
        out.append(res.joined())
        events.extend(res.events)

    for c in data_chunks:
        take(eng.feed(c))
        if quiet and eng.end_pending:
            take(eng.conclude())
    if eof:
        take(eng.feed_eof())
    return b"".join(out), events, eng


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    pieces = []
    prev = 0
    for p in points:
        pieces.append(data[prev:p])
        prev = p
    pieces.append(data[prev:])
    return pieces


def with_return_path(data: bytes) -> bytes:
    """``data`` with OPEN_RETURN_PATH right after the configuration, where QEMU sends it
    when the return-path capability is on (the rest of the stream is the same)."""
    res = StreamEngine(arm_engine_config(None)).feed(data)
    conf = next(e for e in res.events if isinstance(e, ConfigurationFramed))
    at = conf.offset + conf.size
    cmd = bytes((wire.VM_COMMAND,)) + struct.pack(">HH", wire.CMD_OPEN_RETURN_PATH, 0)
    return data[:at] + cmd + data[at:]


def real_stream(name: str) -> bytes:
    return lzma.decompress((DATA / f"{name}.mig.xz").read_bytes())


REAL_STREAMS = sorted(p.name[: -len(".mig.xz")] for p in DATA.glob("*.mig.xz"))
# Streams saved under KVM (tests/data/kvm/README.md), named for real_stream: "kvm/linux-...".
KVM_STREAMS = sorted(f"kvm/{p.name[: -len('.mig.xz')]}" for p in (DATA / "kvm").glob("*.mig.xz"))
# Postcopy streams (tests/data/README.md): the device state inside MIG_CMD_PACKAGED.
POSTCOPY_STREAMS = sorted(f"postcopy/{p.name[: -len('.mig.xz')]}"
                          for p in (DATA / "postcopy").glob("*.mig.xz"))
# TCG virt with gic-version=3: the package starts with arm_gicv3 and arm_gicv3_its
POSTCOPY_GICV3_STREAMS = sorted(f"postcopy/gicv3/{p.name[: -len('.mig.xz')]}"
                                for p in (DATA / "postcopy" / "gicv3").glob("*.mig.xz"))


def cpus(engine: StreamEngine) -> list[CpuState]:
    """The ARM cpu sections the engine decoded."""
    return seen_cpus(engine.reports)
