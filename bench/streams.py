"""Large synthetic migration streams, streamed (never held in memory).

A stream is built once, small, by :func:`migproxy.synthetic.generate` (header,
configuration, a ``ram`` START with the block list, PART sections of full pages, zero
pages and multifd flushes, SWITCHOVER_START, the END section, a device tail with ARM
``cpu`` sections, EOF, the JSON description) and then split with the engine's own events
into three pieces:

* ``prefix``: everything before the first PART section,
* ``unit``: all PART sections (page records),
* ``suffix``: SWITCHOVER_START, END and the device tail.

``prefix + unit * R + suffix`` is again a valid stream (the same pages are sent again, as
QEMU does for pages dirtied between passes), of any size, produced from three buffers.

The expected output of the engine for a configuration is computed on the small stream: RAM
passes unchanged, so the output of the big stream is the big input up to the tail, then the
small stream's output tail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from migproxy.arm.profile import default_profile
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream.engine import EngineConfig, Mode, StreamEngine
from migproxy.stream.events import DeviceStateHeld, SectionFramed
from testkit.synthetic import SynthSpec, build

PAGE = 4096


@dataclass(frozen=True)
class Shape:
    """What one repeat unit of the stream contains, and the device tail."""

    full_pages: int = 1536  # 4 KiB pages with data per unit
    zero_pages: int = 512  # zero-page records per unit
    part_sections: int = 2  # PART sections per unit
    multifd_flush: bool = True  # a MULTIFD_FLUSH record in every section
    cpus: int = 2
    tail_blob: int = 32 * 1024  # an opaque device of this size in the tail
    seed: int = 1
    zero_ratio: float | None = None  # None: runs (1 full : 3 zero while both last); p: each
    # page independently zero with probability p (fragmented guest memory)

    def spec(self) -> SynthSpec:
        pages = self.full_pages + self.zero_pages
        ram = max(64 << 20, 1 << (max(pages, 1) * PAGE - 1).bit_length())
        return SynthSpec(ram_bytes=ram, part_sections=self.part_sections,
                         full_pages=self.full_pages, zero_pages=self.zero_pages,
                         multifd_flush=self.multifd_flush, cpus=self.cpus,
                         tail_blob=self.tail_blob, seed=self.seed, zero_ratio=self.zero_ratio)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Shape:
        return cls(**d)


def engine_config(mode: str) -> EngineConfig:
    """The engine configuration of a migproxy mode: rewrite, dry_run or none."""
    if mode == "rewrite":
        return arm_engine_config(default_profile())
    if mode == "dry_run":
        return arm_engine_config(default_profile(), dry_run=True)
    if mode == "none":
        return arm_engine_config(None)
    raise ValueError(f"unknown mode {mode!r}")


class Plan:
    """The three pieces of a repeatable stream, and where its device tail starts."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        data = build(shape.spec())
        eng = StreamEngine(arm_engine_config(None))
        res = eng.feed(data)
        res.events.extend(eng.feed_eof().events)
        if eng.mode != Mode.DONE:
            raise RuntimeError(f"synthetic stream not understood: {eng.stop_reason}")
        parts = [e for e in res.events
                 if isinstance(e, SectionFramed) and e.type == "PART"]
        hold = [e.offset for e in res.events if isinstance(e, DeviceStateHeld)]
        if not parts or not hold:
            raise RuntimeError("synthetic stream without PART sections or device tail")
        a = parts[0].offset
        b = parts[-1].offset + parts[-1].size
        self.data = data
        self.prefix = data[:a]
        self.unit = data[a:b]
        self.suffix = data[b:]
        self.tail_start_in_suffix = hold[0] - b
        # Counts per unit, for records/s figures.
        self.unit_records = shape.full_pages + shape.zero_pages

    def repeats_for(self, size: int) -> int:
        """How many units make a stream of at least ``size`` bytes (at least 1)."""
        fixed = len(self.prefix) + len(self.suffix)
        return max(1, -(-(size - fixed) // len(self.unit)))

    def total(self, repeats: int) -> int:
        return len(self.prefix) + repeats * len(self.unit) + len(self.suffix)

    def tail_offset(self, repeats: int) -> int:
        """Absolute offset of the first held (FULL) byte in a stream of ``repeats`` units."""
        return len(self.prefix) + repeats * len(self.unit) + self.tail_start_in_suffix

    def pieces(self, repeats: int) -> Iterator[bytes]:
        """The stream as a sequence of buffers (the unit object is yielded repeatedly)."""
        yield self.prefix
        for _ in range(repeats):
            yield self.unit
        yield self.suffix

    def expected(self, mode: str | None) -> Expected:
        """What a relay in ``mode`` delivers (None: the input unchanged)."""
        if mode is None:
            out = self.data
        else:
            eng = StreamEngine(engine_config(mode))
            res = eng.feed(self.data)
            res.data.extend(eng.feed_eof().data)
            out = res.joined()
            if eng.mode != Mode.DONE:
                raise RuntimeError(f"engine did not complete in mode {mode}: {eng.stop_reason}")
        cut = len(self.prefix) + len(self.unit) + self.tail_start_in_suffix
        if out[:cut] != self.data[:cut]:
            raise RuntimeError("the engine changed bytes before the device tail")
        end = out[cut:]
        return Expected(delta=len(out) - len(self.data), end_len=len(end),
                        end_sha256=hashlib.sha256(end).hexdigest())


@dataclass(frozen=True)
class Expected:
    delta: int  # output length minus input length
    end_len: int  # the sink checks the last end_len bytes ...
    end_sha256: str  # ... against this digest
