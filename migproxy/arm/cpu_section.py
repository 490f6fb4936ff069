"""The ARM ``cpu`` section (``vmstate_arm_cpu``) and its cpreg arrays.

Layout of the section payload (version 22, unchanged from QEMU 7.2 through 11.x as far as
verified): a fixed 568-byte prefix of core registers, then ``cpreg_vmstate_array_len`` (be32,
N), ``cpreg_vmstate_indexes`` (N x be64 register ids, strictly ascending),
``cpreg_vmstate_values`` (N x be64), then the rest of the fields and the subsections.

The section is located and delimited by the VM description (see :mod:`migproxy.stream.vmdesc`).
Before anything is rewritten, this module checks the description's spans of the three
cpreg fields against the built-in layout below: the count at payload offset 568, the arrays
right after it with the count's number of 8-byte elements, inside the section. So a
description cannot move the arrays somewhere else. (It checks offsets and sizes, not every
other field of the entry.)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from itertools import pairwise

from migproxy.arm.reasons import ArmReason
from migproxy.stream import wire
from migproxy.stream.errors import SectionRefused
from migproxy.stream.vmdesc import FieldSpan, FullSection

# The fixed prefix of vmstate_arm_cpu before the cpreg arrays (target/arm/machine.c):
# (field, element size, count), all big-endian.
ARM_CPU_PREFIX: tuple[tuple[str, int, int], ...] = (
    ("regs", 4, 16),
    ("xregs", 8, 32),
    ("pc", 8, 1),
    ("cpsr", 4, 1),  # VMSTATE_CPSR: 4 bytes on the wire
    ("spsr", 4, 1),
    ("banked_spsr", 8, 8),
    ("banked_r13", 4, 8),
    ("banked_r14", 4, 8),
    ("usr_regs", 4, 5),
    ("fiq_regs", 4, 5),
    ("elr_el", 8, 4),
    ("sp_el", 8, 4),
)
PREFIX_SIZE = sum(size * count for _name, size, count in ARM_CPU_PREFIX)  # 568
SUPPORTED_VERSIONS = frozenset({22})
F_LEN = "cpreg_vmstate_array_len"
F_IDX = "cpreg_vmstate_indexes"
F_VAL = "cpreg_vmstate_values"


class CpuLayoutError(SectionRefused):
    """The cpu section does not have the layout migproxy knows how to rewrite."""

    reason = ArmReason.CPU_LAYOUT
    context = "cpu section not understood: "


@dataclass
class CpuSection:
    """A framed ``cpu`` section of the tail with its cpreg arrays decoded."""

    section: FullSection
    count_offset: int  # relative to the held buffer
    indexes: list[int]
    values: list[int]
    subsections: dict[str, bytes] = field(default_factory=dict)  # name -> fields, as sent

    @property
    def instance_id(self) -> int:
        return self.section.instance_id

    @property
    def arrays_end(self) -> int:
        return self.count_offset + 4 + 16 * len(self.indexes)

    def encode_arrays(self, indexes: list[int], values: list[int]) -> bytes:
        """The bytes that replace ``[count_offset, arrays_end)`` for new arrays."""
        return encode_cpreg_arrays(indexes, values)


def encode_cpreg_arrays(indexes: list[int], values: list[int]) -> bytes:
    if len(indexes) != len(values):
        raise ValueError("index and value arrays differ in length")
    if any(b <= a for a, b in pairwise(indexes)):
        raise ValueError("register ids must be strictly ascending")
    n = len(indexes)
    return struct.pack(f">i{n}Q{n}Q", n, *indexes, *values)


def _span(section: FullSection, name: str) -> FieldSpan | None:
    for s in section.fields:
        if s.name == name:
            return s
    return None


def parse_cpu_section(buf: wire.Buffer, section: FullSection) -> CpuSection:
    """Decode the cpreg arrays of a framed ``cpu`` section, checking the layout."""
    if section.version_id not in SUPPORTED_VERSIONS:
        raise CpuLayoutError(f"cpu section version {section.version_id} is not supported "
                             f"(known: {sorted(SUPPORTED_VERSIONS)})")
    s_len = _span(section, F_LEN)
    if s_len is None or s_len.size != 4 or s_len.count != 1:
        raise CpuLayoutError(f"the description has no 4-byte {F_LEN} field")
    if s_len.offset - section.payload_offset != PREFIX_SIZE:
        raise CpuLayoutError(f"{F_LEN} is at payload offset "
                             f"{s_len.offset - section.payload_offset}, not {PREFIX_SIZE}")
    n = struct.unpack_from(">i", buf, s_len.offset)[0]
    if n < 0:
        raise CpuLayoutError(f"negative cpreg count {n}")
    s_idx = _span(section, F_IDX)
    s_val = _span(section, F_VAL)
    if n == 0:
        if s_idx is not None or s_val is not None:
            raise CpuLayoutError("cpreg arrays described although the count is 0")
    else:
        for s, name in ((s_idx, F_IDX), (s_val, F_VAL)):
            if s is None or s.size != 8 or s.count != n:
                raise CpuLayoutError(f"the description of {name} does not match count {n}")
        assert s_idx is not None
        assert s_val is not None
        if s_idx.offset != s_len.offset + 4 or s_val.offset != s_idx.end:
            raise CpuLayoutError("the cpreg arrays are not where the layout puts them")
    if s_len.offset + 4 + 16 * n > section.payload_end:
        raise CpuLayoutError("the cpreg arrays run past the end of the section")
    ids = list(struct.unpack_from(f">{n}Q", buf, s_len.offset + 4))
    vals = list(struct.unpack_from(f">{n}Q", buf, s_len.offset + 4 + 8 * n))
    if any(b <= a for a, b in pairwise(ids)):
        raise CpuLayoutError("the cpreg index array is not strictly ascending")
    return CpuSection(section, s_len.offset, ids, vals)
