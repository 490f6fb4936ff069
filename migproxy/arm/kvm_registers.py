"""Registers whose value KVM checks when QEMU writes it on the destination.

Under KVM the ARM ``cpu`` section's cpreg list is the host kernel's ``KVM_GET_REG_LIST``. After
loading the section, QEMU writes every register of its own list back with
``KVM_SET_ONE_REG`` (``cpu_post_load`` -> ``write_list_to_kvmstate`` in QEMU's
``target/arm/machine.c``). For most registers KVM takes any value (it is guest state), but
for the ones classified here it refuses values it does not implement, and QEMU then fails
with "Failed to put registers after init: Invalid argument" (10.0) or "Operation not
permitted" (7.2) without naming the register. A profile made for a KVM pair must therefore
carry the destination's values of these registers, not only those of the ID registers.

What Linux checks (read in ``torvalds/linux``):

* CCSIDR demultiplexer ``KVM_REG_ARM_DEMUX_CCSIDR(n)``, ``arch/arm64/kvm/sys_regs.c``
  ``demux_c15_set``: before Linux 6.3 the value must equal the host's cache geometry
  (``get_ccsidr``: "This is also invariant: you can't change it"); from 6.3, commit
  7af0c2534f4c ("KVM: arm64: Normalize cache configuration"), KVM synthesizes the geometry
  and ``set_ccsidr`` refuses RES0 bits and line sizes below the minimum that CTR_EL0 gives.
* CLIDR_EL1: one of ``invariant_sys_regs`` before 6.3 (``set_invariant_sys_reg``: "This is
  what we mean by invariant: you can't change it"); from 7af0c2534f4c ``set_clidr`` refuses
  RES0 bits and a value that claims IDC when CTR_EL0 does not.
* MIDR_EL1, REVIDR_EL1, AIDR_EL1: ``invariant_sys_regs`` (host value only) until commit
  3adaee783061 ("KVM: arm64: Allow userspace to change the implementation ID registers").
* CTR_EL0: ``invariant_sys_regs`` on older kernels; later ``set_ctr_el0`` accepts only
  fields no larger than the host's (DIC, IDC, DminLine, IminLine) and a cache topology
  consistent with CLIDR_EL1.
* The other ID registers (:func:`migproxy.arm.registers.is_id_register`): ``set_id_reg``
  refuses any value other than KVM's own on older kernels and, with writable ID
  registers, values above what the host supports.
* ``KVM_REG_ARM_PSCI_VERSION``, ``arch/arm64/kvm/hypercalls.c`` ``kvm_arm_set_fw_reg``: only
  the PSCI versions this kernel implements (0.2, 1.0, 1.1 ... with the PSCI 0.2 feature;
  ``Documentation/virt/kvm/arm/fw-pseudo-registers.rst``: "Allows any PSCI version
  implemented by KVM and compatible with v0.2 to be set"). Linux 7.3 sends 1.3, which 6.1 and
  6.12 refuse.
* ``KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1/2/3``, ``kvm_arm_set_fw_reg`` with
  ``get_kernel_wa_level``: the written level may not exceed the destination's (the
  destination may not be "less mitigated" than the source claims).
* The firmware feature bitmaps ``KVM_REG_ARM_STD_BMAP``, ``KVM_REG_ARM_STD_HYP_BMAP``,
  ``KVM_REG_ARM_VENDOR_HYP_BMAP`` and ``KVM_REG_ARM_VENDOR_HYP_BMAP_2`` (commit
  c0000e58c74e), ``kvm_arm_set_fw_reg_bmap``: no bit outside what this kernel supports
  (``-EINVAL``), and no change once a vCPU has run (``-EBUSY``).

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

from migproxy.arm.registers import (
    KVM_ARM64_DEMUX,
    KVM_ARM64_FW,
    KVM_ARM64_FW_FEAT_BMAP,
    OtherEncoding,
    decode,
    is_id_register,
    parse_register,
)

_BEFORE_6_3: Final = (
    "before Linux 6.3 only the host's value is accepted; from 6.3 (commit 7af0c2534f4c) "
    "KVM synthesizes it and checks it against CTR_EL0")
_INVARIANT: Final = "older kernels accept only the host's value (invariant_sys_regs)"

_SYSREG_REASONS: Final = {
    "CLIDR_EL1": f"cache level ID: {_BEFORE_6_3} (set_clidr)",
    "MIDR_EL1": f"implementation ID: {_INVARIANT}; writable from commit 3adaee783061",
    "REVIDR_EL1": f"implementation ID: {_INVARIANT}; writable from commit 3adaee783061",
    "AIDR_EL1": f"implementation ID: {_INVARIANT}; writable from commit 3adaee783061",
    "CTR_EL0": f"cache type: {_INVARIANT}; later set_ctr_el0 refuses fields above the host's",
}
_FW_REASONS: Final = {
    "KVM_REG_ARM_PSCI_VERSION": "only PSCI versions the kernel implements are accepted "
                                "(kvm_arm_set_fw_reg)",
    "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1": "the level may not exceed the destination "
                                           "kernel's (get_kernel_wa_level)",
    "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2": "the level may not exceed the destination "
                                           "kernel's (get_kernel_wa_level)",
    "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3": "the level may not exceed the destination "
                                           "kernel's (get_kernel_wa_level)",
}
_REASONS: Final = {parse_register(n): why for n, why in (_SYSREG_REASONS | _FW_REASONS).items()}
_CCSIDR_REASON: Final = f"cache geometry: {_BEFORE_6_3} (demux_c15_set, set_ccsidr)"
_BITMAP_REASON: Final = ("no bit the kernel does not support, and no change after a vCPU ran "
                         "(kvm_arm_set_fw_reg_bmap)")
_ID_REASON: Final = ("ID register: older kernels accept only their own value, newer ones "
                     "nothing above what the host supports (set_id_reg)")
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
    """Why KVM refuses some values of ``reg_id`` on ``KVM_SET_ONE_REG``, or ``None`` if it
    takes any value (see the module docstring for the Linux sources)."""
    why = _REASONS.get(reg_id)
    if why is not None:
        return why
    enc = decode(reg_id)
    if isinstance(enc, OtherEncoding):
        if enc.csselr is not None:
            return _CCSIDR_REASON
        if enc.family == KVM_ARM64_FW_FEAT_BMAP:
            return _BITMAP_REASON
        return None
    return _ID_REASON if is_id_register(reg_id) else None
