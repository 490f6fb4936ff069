"""Registers whose value KVM checks when QEMU writes it on the destination.

Under KVM the ARM ``cpu`` section's cpreg list is the host kernel's ``KVM_GET_REG_LIST``. After
loading the section, QEMU writes every register of its own list back with
``KVM_SET_ONE_REG`` (``cpu_post_load`` -> ``write_list_to_kvmstate`` in QEMU's
``target/arm/machine.c``). For most registers KVM takes any value (it is guest state), but
for the ones classified here it refuses values it does not implement, and QEMU then fails
with "Failed to put registers after init: Invalid argument" (10.0) or "Operation not
permitted" (7.2) without naming the register. A profile made for a KVM pair must therefore
carry the destination's values of these registers, not only those of the ID registers.

Which registers those are, what each kernel accepts and why, with the Linux sources, is
the knowledge base's ``[[kvm_write]]`` entries (``knowledge.toml``; measured on the nested
lab's kernels); :func:`checked_on_write` reads them.

Registers only the destination has: QEMU's loader (``cpu_post_load``) keeps its own value
for a register of its list that the incoming stream lacks ("anything we know about but the
incoming data doesn't specify retains its current (reset) value"), and under KVM that value
is the one the destination kernel gave QEMU at vCPU init, which it accepts by construction.
So a KVM profile needs no insert: an inserted value would come from the destination's
reference stream, another VM's state (CNTPCT_EL0 and the physical timer, for example), which
is never better than the destination's own and can be wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from migproxy.arm.knowledge import knowledge
from migproxy.arm.registers import (
    KVM_ARM64_DEMUX,
    KVM_ARM64_FW,
    KVM_ARM64_FW_FEAT_BMAP,
    OtherEncoding,
    decode,
)

_PSEUDO_FAMILIES: Final = frozenset({KVM_ARM64_DEMUX, KVM_ARM64_FW, KVM_ARM64_FW_FEAT_BMAP})


def is_kvm_pseudo_register(reg_id: int) -> bool:
    """True for KVM's pseudo-registers: CCSIDR demultiplexer, firmware, feature bitmaps.

    Only a KVM register list has them; QEMU's TCG list has system registers only.
    """
    enc = decode(reg_id)
    return isinstance(enc, OtherEncoding) and enc.family in _PSEUDO_FAMILIES


def is_kvm_list(ids: Iterable[int]) -> bool:
    """Whether a cpreg list was saved under KVM (it has KVM pseudo-registers)."""
    return any(is_kvm_pseudo_register(r) for r in ids)


def checked_on_write(reg_id: int) -> str | None:
    """Why KVM refuses some values of ``reg_id`` on ``KVM_SET_ONE_REG`` (the first sentence
    of its knowledge-base entry), or ``None`` if it takes any value."""
    w = knowledge().write_rule(reg_id)
    if w is None or w.accepts.any:
        return None
    return w.reason.split(". ")[0].rstrip(".")
