"""Shared fixtures: synthetic streams, captured real streams, an engine driver, and the
QEMU labs as a test sees them (skip, or fail under MIGPROXY_REQUIRE_LAB=1 /
MIGPROXY_REQUIRE_KVM_LAB=1)."""

from __future__ import annotations

import lzma
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import pytest

from migproxy.arm.events import CpuState, seen_cpus
from migproxy.arm.rewriter import arm_engine_config
from migproxy.lab import Lab, LabUnavailable, get_lab
from migproxy.lab.kvm import KvmLab, get_kvm_lab
from migproxy.stream import wire
from migproxy.stream.engine import EngineConfig, FeedResult, StreamEngine
from migproxy.stream.events import ConfigurationFramed, Event
from testkit.synthetic import SynthSpec, build

DATA = Path(__file__).parent / "data"


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


@pytest.fixture(scope="session")
def synth_small() -> bytes:
    return build(SynthSpec(cpus=2, full_pages=16, zero_pages=64, tail_blob=300,
                           multifd_flush=True,
                           page_patterns=[b"\x00\x06\x00\x00\x00\x08{\"x\": 1}QEVM\x04"]))


def cpus(engine: StreamEngine) -> list[CpuState]:
    """The ARM cpu sections the engine decoded."""
    return seen_cpus(engine.reports)


REQUIRE_ENV = "MIGPROXY_REQUIRE_LAB"
REQUIRE_KVM_ENV = "MIGPROXY_REQUIRE_KVM_LAB"


def lab_unavailable(e: LabUnavailable, what: str, env: str) -> NoReturn:
    """Skip the test, or (with ``env`` set to 1) fail it: the lab is missing."""
    if os.environ.get(env) == "1":
        raise LabUnavailable(f"{e} ({env}=1, so this is an error, not a skip)") from None
    pytest.skip(f"{what} unavailable: {e}")


def require_lab(*versions: str) -> Lab:
    """The QEMU lab with these versions, or skip the test; with ``MIGPROXY_REQUIRE_LAB=1``
    (set by scripts/test.sh as root, where the lab is always set up) a missing lab fails."""
    try:
        return get_lab().require(*versions)
    except LabUnavailable as e:
        lab_unavailable(e, "QEMU lab", REQUIRE_ENV)


def require_kvm_lab() -> KvmLab:
    """The nested KVM lab, or skip the test; with ``MIGPROXY_REQUIRE_KVM_LAB=1`` (set by
    scripts/test.sh as root) a missing lab fails."""
    try:
        return get_kvm_lab().require()
    except LabUnavailable as e:
        lab_unavailable(e, "nested KVM lab", REQUIRE_KVM_ENV)


def tool_unavailable(reason: str) -> None:
    """A program a test needs is missing (``openssl`` for the TLS certificates, libvirt
    for ``virsh save``/``restore``): skip, or fail with ``MIGPROXY_REQUIRE_TOOLS`` set
    (scripts/test.sh installs them as root)."""
    if os.environ.get("MIGPROXY_REQUIRE_TOOLS"):
        pytest.fail(f"{reason} (MIGPROXY_REQUIRE_TOOLS is set)")
    pytest.skip(reason)


tls_unavailable = tool_unavailable  # the TLS tests' name for it
