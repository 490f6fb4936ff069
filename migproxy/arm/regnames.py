"""Architectural names of ARM system registers, keyed by encoding.

This module is plain data; :mod:`migproxy.arm.registers` turns it into a lookup by 64-bit
register id.  It covers every register QEMU (TCG, ``virt`` machine, ``-cpu cortex-a57`` and
``-cpu max``, QEMU 10.0 and 11.1) puts into the ``cpu`` cpreg list, plus the EL2/EL3
registers, the KVM pseudo-registers and the other registers of the same families, so that
most ids met in practice print as names.

Tables
------
``AA64``
    ``(op0, op1, crn, crm, op2) -> name`` for AArch64 system registers.
``AA32``
    ``(cp, crn, crm, opc1, opc2) -> name`` for 32-bit (MRC/MCR) AArch32 coprocessor
    registers, non-secure instance (QEMU only migrates the non-secure copy of registers that
    are not banked; a secure bank is shown as ``NAME (S)`` by :mod:`migproxy.arm.registers`).
``AA32_64``
    ``(cp, crm, opc1) -> name`` for 64-bit (MRRC/MCRR) AArch32 coprocessor registers.
``KVM``
    literal 64-bit id -> name for KVM's firmware pseudo-registers.
``ALIASES``
    extra spellings accepted when parsing a name (never printed).

Naming rules
------------
* Names are the Arm ARM register names, with the Arm ARM's capitalisation
  (``APIAKeyLo_EL1``, ``DBGDTRTXint``, ``CurrentEL``); lookups are case-insensitive, so
  names must be unique ignoring case.
* AArch64 registers carry their ``_ELx`` suffix; AArch32 registers have none.
* Where one encoding has two architectural names, the table holds one and the other is an
  alias: writes win for the debug data-transfer registers (``DBGDTRTX_EL0`` /
  ``DBGDTRTXint``, read views ``DBGDTRRX_EL0`` / ``DBGDTRRXint`` are aliases), and the
  long-descriptor names win for the memory attribute registers (``MAIR0``/``MAIR1``,
  aliases ``PRRR``/``NMRR``).
* A 64-bit AArch32 view whose architectural name is also used by a 32-bit view of another
  encoding gets the suffix ``_64`` (``PAR`` vs ``PAR_64``, ``TTBR0`` vs ``TTBR0_64``,
  ``DBGDRAR`` vs ``DBGDRAR_64``, ``PMCCNTR`` vs ``PMCCNTR_64``).  64-bit-only registers keep
  the plain name (``CNTVCT``, ``VTTBR``).
* QEMU migrates a few registers at encodings where the architecture has no such register
  (QEMU bugs kept for migration compatibility).  They get the ``BOGUS_`` prefix before the
  name QEMU meant: ``BOGUS_DBGDTRTX`` (cp14 opc1=3 c0 c5 0, the AArch32 view of QEMU's old
  ``DBGDTR_EL0``; migrated by QEMU 8.1-10.0.2 and again by 10.1+) and ``BOGUS_DBGDEVID``,
  ``BOGUS_DBGDEVID1``, ``BOGUS_DBGDEVID2`` (QEMU defines them at cp14 c7 c0 opc2 2/1/0
  instead of c7 c2/c1/c0 opc2 7).
* Unallocated encodings in the ID register spaces, which QEMU migrates as read-as-zero
  constants, are named ``RES_<opc1>_C0_C<crm>_<opc2>`` for AArch32 cp15 (QEMU's own
  spelling, e.g. ``RES_0_C0_C3_0``) and ``RES_3_0_C0_C<crm>_<op2>`` for AArch64
  (op0=3, op1=0, crn=0, crm 1..7).  They are renamed when the architecture allocates them.
* Implementation-defined Cortex-A57 registers use the names of the Cortex-A57 TRM (so the
  AArch32 ``CBAR`` is p15, 1, c15, c3, 0, where QEMU's AArch64 CPUs define it).
* Families (``DBGBVR<n>_EL1``, ``PMEVCNTR<n>_EL0``, ``ICC_AP0R<n>_EL1``...) are generated
  by the loops at the end of this module.

Sources of the encodings: the Arm Architecture Reference Manual system register index,
Linux ``arch/arm64/tools/sysreg`` / ``arch/arm64/include/asm/sysreg.h`` and KVM's
``arch/arm64/include/uapi/asm/kvm.h``, QEMU's ``target/arm`` register definitions, and
register lists of real QEMU migration streams.
"""

from __future__ import annotations

from typing import Any

# --------------------------------------------------------------------------------------
# AArch64: (op0, op1, crn, crm, op2) -> name
# --------------------------------------------------------------------------------------
AA64: dict[tuple[int, int, int, int, int], str] = {
    # op0 = 2: debug (families DBGB/W{V,C}R<n>_EL1 are generated below)
    (2, 0, 0, 0, 2): "OSDTRRX_EL1",
    (2, 0, 0, 2, 0): "MDCCINT_EL1",
    (2, 0, 0, 2, 2): "MDSCR_EL1",
    (2, 0, 0, 3, 2): "OSDTRTX_EL1",
    (2, 0, 0, 4, 2): "MDSELR_EL1",
    (2, 0, 0, 5, 2): "MDSTEPOP_EL1",
    (2, 0, 0, 6, 2): "OSECCR_EL1",
    (2, 0, 1, 0, 0): "MDRAR_EL1",
    (2, 0, 1, 0, 4): "OSLAR_EL1",
    (2, 0, 1, 1, 4): "OSLSR_EL1",
    (2, 0, 1, 3, 4): "OSDLR_EL1",
    (2, 0, 1, 4, 4): "DBGPRCR_EL1",
    (2, 0, 7, 8, 6): "DBGCLAIMSET_EL1",
    (2, 0, 7, 9, 6): "DBGCLAIMCLR_EL1",
    (2, 0, 7, 14, 6): "DBGAUTHSTATUS_EL1",
    (2, 1, 9, 0, 0): "BRBCR_EL1",
    (2, 1, 9, 0, 1): "BRBFCR_EL1",
    (2, 1, 9, 0, 2): "BRBTS_EL1",
    (2, 1, 9, 1, 0): "BRBINFINJ_EL1",
    (2, 1, 9, 1, 1): "BRBSRCINJ_EL1",
    (2, 1, 9, 1, 2): "BRBTGTINJ_EL1",
    (2, 1, 9, 2, 0): "BRBIDR0_EL1",
    (2, 3, 0, 1, 0): "MDCCSR_EL0",
    (2, 3, 0, 4, 0): "DBGDTR_EL0",
    (2, 3, 0, 5, 0): "DBGDTRTX_EL0",
    (2, 4, 0, 7, 0): "DBGVCR32_EL2",
    (2, 4, 9, 0, 0): "BRBCR_EL2",
    # op0 = 3, crn = 0: identification
    (3, 0, 0, 0, 0): "MIDR_EL1",
    (3, 0, 0, 0, 5): "MPIDR_EL1",
    (3, 0, 0, 0, 6): "REVIDR_EL1",
    (3, 0, 0, 1, 0): "ID_PFR0_EL1",
    (3, 0, 0, 1, 1): "ID_PFR1_EL1",
    (3, 0, 0, 1, 2): "ID_DFR0_EL1",
    (3, 0, 0, 1, 3): "ID_AFR0_EL1",
    (3, 0, 0, 1, 4): "ID_MMFR0_EL1",
    (3, 0, 0, 1, 5): "ID_MMFR1_EL1",
    (3, 0, 0, 1, 6): "ID_MMFR2_EL1",
    (3, 0, 0, 1, 7): "ID_MMFR3_EL1",
    (3, 0, 0, 2, 0): "ID_ISAR0_EL1",
    (3, 0, 0, 2, 1): "ID_ISAR1_EL1",
    (3, 0, 0, 2, 2): "ID_ISAR2_EL1",
    (3, 0, 0, 2, 3): "ID_ISAR3_EL1",
    (3, 0, 0, 2, 4): "ID_ISAR4_EL1",
    (3, 0, 0, 2, 5): "ID_ISAR5_EL1",
    (3, 0, 0, 2, 6): "ID_MMFR4_EL1",
    (3, 0, 0, 2, 7): "ID_ISAR6_EL1",
    (3, 0, 0, 3, 0): "MVFR0_EL1",
    (3, 0, 0, 3, 1): "MVFR1_EL1",
    (3, 0, 0, 3, 2): "MVFR2_EL1",
    (3, 0, 0, 3, 4): "ID_PFR2_EL1",
    (3, 0, 0, 3, 5): "ID_DFR1_EL1",
    (3, 0, 0, 3, 6): "ID_MMFR5_EL1",
    (3, 0, 0, 4, 0): "ID_AA64PFR0_EL1",
    (3, 0, 0, 4, 1): "ID_AA64PFR1_EL1",
    (3, 0, 0, 4, 2): "ID_AA64PFR2_EL1",
    (3, 0, 0, 4, 4): "ID_AA64ZFR0_EL1",
    (3, 0, 0, 4, 5): "ID_AA64SMFR0_EL1",
    (3, 0, 0, 4, 7): "ID_AA64FPFR0_EL1",
    (3, 0, 0, 5, 0): "ID_AA64DFR0_EL1",
    (3, 0, 0, 5, 1): "ID_AA64DFR1_EL1",
    (3, 0, 0, 5, 2): "ID_AA64DFR2_EL1",
    (3, 0, 0, 5, 4): "ID_AA64AFR0_EL1",
    (3, 0, 0, 5, 5): "ID_AA64AFR1_EL1",
    (3, 0, 0, 6, 0): "ID_AA64ISAR0_EL1",
    (3, 0, 0, 6, 1): "ID_AA64ISAR1_EL1",
    (3, 0, 0, 6, 2): "ID_AA64ISAR2_EL1",
    (3, 0, 0, 6, 3): "ID_AA64ISAR3_EL1",
    (3, 0, 0, 7, 0): "ID_AA64MMFR0_EL1",
    (3, 0, 0, 7, 1): "ID_AA64MMFR1_EL1",
    (3, 0, 0, 7, 2): "ID_AA64MMFR2_EL1",
    (3, 0, 0, 7, 3): "ID_AA64MMFR3_EL1",
    (3, 0, 0, 7, 4): "ID_AA64MMFR4_EL1",
    (3, 1, 0, 0, 0): "CCSIDR_EL1",
    (3, 1, 0, 0, 1): "CLIDR_EL1",
    (3, 1, 0, 0, 2): "CCSIDR2_EL1",
    (3, 1, 0, 0, 4): "GMID_EL1",
    (3, 1, 0, 0, 6): "SMIDR_EL1",
    (3, 1, 0, 0, 7): "AIDR_EL1",
    (3, 2, 0, 0, 0): "CSSELR_EL1",
    (3, 3, 0, 0, 1): "CTR_EL0",
    (3, 3, 0, 0, 7): "DCZID_EL0",
    (3, 4, 0, 0, 0): "VPIDR_EL2",
    (3, 4, 0, 0, 5): "VMPIDR_EL2",
    # crn = 1: system control
    (3, 0, 1, 0, 0): "SCTLR_EL1",
    (3, 0, 1, 0, 1): "ACTLR_EL1",
    (3, 0, 1, 0, 2): "CPACR_EL1",
    (3, 0, 1, 0, 3): "SCTLR2_EL1",
    (3, 0, 1, 0, 5): "RGSR_EL1",
    (3, 0, 1, 0, 6): "GCR_EL1",
    (3, 0, 1, 2, 0): "ZCR_EL1",
    (3, 0, 1, 2, 1): "TRFCR_EL1",
    (3, 0, 1, 2, 3): "TRCITECR_EL1",
    (3, 0, 1, 2, 4): "SMPRI_EL1",
    (3, 0, 1, 2, 6): "SMCR_EL1",
    (3, 4, 1, 0, 0): "SCTLR_EL2",
    (3, 4, 1, 0, 1): "ACTLR_EL2",
    (3, 4, 1, 0, 3): "SCTLR2_EL2",
    (3, 4, 1, 1, 0): "HCR_EL2",
    (3, 4, 1, 1, 1): "MDCR_EL2",
    (3, 4, 1, 1, 2): "CPTR_EL2",
    (3, 4, 1, 1, 3): "HSTR_EL2",
    (3, 4, 1, 1, 4): "HFGRTR_EL2",
    (3, 4, 1, 1, 5): "HFGWTR_EL2",
    (3, 4, 1, 1, 6): "HFGITR_EL2",
    (3, 4, 1, 1, 7): "HACR_EL2",
    (3, 4, 1, 2, 0): "ZCR_EL2",
    (3, 4, 1, 2, 1): "TRFCR_EL2",
    (3, 4, 1, 2, 2): "HCRX_EL2",
    (3, 4, 1, 2, 5): "SMPRIMAP_EL2",
    (3, 4, 1, 2, 6): "SMCR_EL2",
    (3, 4, 1, 3, 1): "SDER32_EL2",
    (3, 6, 1, 0, 0): "SCTLR_EL3",
    (3, 6, 1, 0, 1): "ACTLR_EL3",
    (3, 6, 1, 0, 3): "SCTLR2_EL3",
    (3, 6, 1, 1, 0): "SCR_EL3",
    (3, 6, 1, 1, 1): "SDER32_EL3",
    (3, 6, 1, 1, 2): "CPTR_EL3",
    (3, 6, 1, 2, 0): "ZCR_EL3",
    (3, 6, 1, 2, 6): "SMCR_EL3",
    (3, 6, 1, 3, 1): "MDCR_EL3",
    # crn = 2: translation table base/control, pointer authentication keys, GCS
    (3, 0, 2, 0, 0): "TTBR0_EL1",
    (3, 0, 2, 0, 1): "TTBR1_EL1",
    (3, 0, 2, 0, 2): "TCR_EL1",
    (3, 0, 2, 0, 3): "TCR2_EL1",
    (3, 0, 2, 1, 0): "APIAKeyLo_EL1",
    (3, 0, 2, 1, 1): "APIAKeyHi_EL1",
    (3, 0, 2, 1, 2): "APIBKeyLo_EL1",
    (3, 0, 2, 1, 3): "APIBKeyHi_EL1",
    (3, 0, 2, 2, 0): "APDAKeyLo_EL1",
    (3, 0, 2, 2, 1): "APDAKeyHi_EL1",
    (3, 0, 2, 2, 2): "APDBKeyLo_EL1",
    (3, 0, 2, 2, 3): "APDBKeyHi_EL1",
    (3, 0, 2, 3, 0): "APGAKeyLo_EL1",
    (3, 0, 2, 3, 1): "APGAKeyHi_EL1",
    (3, 0, 2, 5, 0): "GCSCR_EL1",
    (3, 0, 2, 5, 1): "GCSPR_EL1",
    (3, 0, 2, 5, 2): "GCSCRE0_EL1",
    (3, 3, 2, 4, 0): "RNDR",
    (3, 3, 2, 4, 1): "RNDRRS",
    (3, 3, 2, 5, 1): "GCSPR_EL0",
    (3, 4, 2, 0, 0): "TTBR0_EL2",
    (3, 4, 2, 0, 1): "TTBR1_EL2",
    (3, 4, 2, 0, 2): "TCR_EL2",
    (3, 4, 2, 0, 3): "TCR2_EL2",
    (3, 4, 2, 1, 0): "VTTBR_EL2",
    (3, 4, 2, 1, 2): "VTCR_EL2",
    (3, 4, 2, 2, 0): "VNCR_EL2",
    (3, 4, 2, 5, 0): "GCSCR_EL2",
    (3, 4, 2, 5, 1): "GCSPR_EL2",
    (3, 4, 2, 6, 0): "VSTTBR_EL2",
    (3, 4, 2, 6, 2): "VSTCR_EL2",
    (3, 6, 2, 0, 0): "TTBR0_EL3",
    (3, 6, 2, 0, 2): "TCR_EL3",
    (3, 6, 2, 1, 4): "GPTBR_EL3",
    (3, 6, 2, 1, 6): "GPCCR_EL3",
    (3, 6, 2, 5, 0): "GCSCR_EL3",
    (3, 6, 2, 5, 1): "GCSPR_EL3",
    # crn = 3: domains, fine-grained traps
    (3, 4, 3, 0, 0): "DACR32_EL2",
    (3, 4, 3, 1, 0): "HDFGRTR2_EL2",
    (3, 4, 3, 1, 1): "HDFGWTR2_EL2",
    (3, 4, 3, 1, 2): "HFGRTR2_EL2",
    (3, 4, 3, 1, 3): "HFGWTR2_EL2",
    (3, 4, 3, 1, 4): "HDFGRTR_EL2",
    (3, 4, 3, 1, 5): "HDFGWTR_EL2",
    (3, 4, 3, 1, 6): "HAFGRTR_EL2",
    (3, 4, 3, 1, 7): "HFGITR2_EL2",
    # crn = 4: special-purpose registers
    (3, 0, 4, 0, 0): "SPSR_EL1",
    (3, 0, 4, 0, 1): "ELR_EL1",
    (3, 0, 4, 1, 0): "SP_EL0",
    (3, 0, 4, 2, 0): "SPSel",
    (3, 0, 4, 2, 2): "CurrentEL",
    (3, 0, 4, 2, 3): "PAN",
    (3, 0, 4, 2, 4): "UAO",
    (3, 0, 4, 3, 0): "ALLINT",
    (3, 0, 4, 3, 1): "PM",
    (3, 0, 4, 6, 0): "ICC_PMR_EL1",
    (3, 3, 4, 2, 0): "NZCV",
    (3, 3, 4, 2, 1): "DAIF",
    (3, 3, 4, 2, 2): "SVCR",
    (3, 3, 4, 2, 5): "DIT",
    (3, 3, 4, 2, 6): "SSBS",
    (3, 3, 4, 2, 7): "TCO",
    (3, 3, 4, 4, 0): "FPCR",
    (3, 3, 4, 4, 1): "FPSR",
    (3, 3, 4, 4, 2): "FPMR",
    (3, 3, 4, 5, 0): "DSPSR_EL0",
    (3, 3, 4, 5, 1): "DLR_EL0",
    (3, 4, 4, 0, 0): "SPSR_EL2",
    (3, 4, 4, 0, 1): "ELR_EL2",
    (3, 4, 4, 1, 0): "SP_EL1",
    (3, 4, 4, 3, 0): "SPSR_irq",
    (3, 4, 4, 3, 1): "SPSR_abt",
    (3, 4, 4, 3, 2): "SPSR_und",
    (3, 4, 4, 3, 3): "SPSR_fiq",
    (3, 6, 4, 0, 0): "SPSR_EL3",
    (3, 6, 4, 0, 1): "ELR_EL3",
    (3, 6, 4, 1, 0): "SP_EL2",
    # crn = 5: fault status, RAS error records, MTE fault status
    (3, 0, 5, 1, 0): "AFSR0_EL1",
    (3, 0, 5, 1, 1): "AFSR1_EL1",
    (3, 0, 5, 2, 0): "ESR_EL1",
    (3, 0, 5, 3, 0): "ERRIDR_EL1",
    (3, 0, 5, 3, 1): "ERRSELR_EL1",
    (3, 0, 5, 4, 0): "ERXFR_EL1",
    (3, 0, 5, 4, 1): "ERXCTLR_EL1",
    (3, 0, 5, 4, 2): "ERXSTATUS_EL1",
    (3, 0, 5, 4, 3): "ERXADDR_EL1",
    (3, 0, 5, 4, 4): "ERXPFGF_EL1",
    (3, 0, 5, 4, 5): "ERXPFGCTL_EL1",
    (3, 0, 5, 4, 6): "ERXPFGCDN_EL1",
    (3, 0, 5, 5, 0): "ERXMISC0_EL1",
    (3, 0, 5, 5, 1): "ERXMISC1_EL1",
    (3, 0, 5, 5, 2): "ERXMISC2_EL1",
    (3, 0, 5, 5, 3): "ERXMISC3_EL1",
    (3, 0, 5, 6, 0): "TFSR_EL1",
    (3, 0, 5, 6, 1): "TFSRE0_EL1",
    (3, 4, 5, 0, 1): "IFSR32_EL2",
    (3, 4, 5, 1, 0): "AFSR0_EL2",
    (3, 4, 5, 1, 1): "AFSR1_EL2",
    (3, 4, 5, 2, 0): "ESR_EL2",
    (3, 4, 5, 2, 3): "VSESR_EL2",
    (3, 4, 5, 3, 0): "FPEXC32_EL2",
    (3, 4, 5, 6, 0): "TFSR_EL2",
    (3, 6, 5, 1, 0): "AFSR0_EL3",
    (3, 6, 5, 1, 1): "AFSR1_EL3",
    (3, 6, 5, 2, 0): "ESR_EL3",
    (3, 6, 5, 2, 3): "VSESR_EL3",
    (3, 6, 5, 6, 0): "TFSR_EL3",
    # crn = 6: fault addresses
    (3, 0, 6, 0, 0): "FAR_EL1",
    (3, 0, 6, 0, 5): "PFAR_EL1",
    (3, 4, 6, 0, 0): "FAR_EL2",
    (3, 4, 6, 0, 4): "HPFAR_EL2",
    (3, 4, 6, 0, 5): "PFAR_EL2",
    (3, 6, 6, 0, 0): "FAR_EL3",
    (3, 6, 6, 0, 5): "MFAR_EL3",
    # crn = 7
    (3, 0, 7, 4, 0): "PAR_EL1",
    # crn = 9: performance monitors, statistical profiling, trace buffer
    (3, 0, 9, 9, 0): "PMSCR_EL1",
    (3, 0, 9, 9, 1): "PMSNEVFR_EL1",
    (3, 0, 9, 9, 2): "PMSICR_EL1",
    (3, 0, 9, 9, 3): "PMSIRR_EL1",
    (3, 0, 9, 9, 4): "PMSFCR_EL1",
    (3, 0, 9, 9, 5): "PMSEVFR_EL1",
    (3, 0, 9, 9, 6): "PMSLATFR_EL1",
    (3, 0, 9, 9, 7): "PMSIDR_EL1",
    (3, 0, 9, 10, 0): "PMBLIMITR_EL1",
    (3, 0, 9, 10, 1): "PMBPTR_EL1",
    (3, 0, 9, 10, 3): "PMBSR_EL1",
    (3, 0, 9, 10, 7): "PMBIDR_EL1",
    (3, 0, 9, 11, 0): "TRBLIMITR_EL1",
    (3, 0, 9, 11, 1): "TRBPTR_EL1",
    (3, 0, 9, 11, 2): "TRBBASER_EL1",
    (3, 0, 9, 11, 3): "TRBSR_EL1",
    (3, 0, 9, 11, 4): "TRBMAR_EL1",
    (3, 0, 9, 11, 6): "TRBTRG_EL1",
    (3, 0, 9, 11, 7): "TRBIDR_EL1",
    (3, 0, 9, 14, 1): "PMINTENSET_EL1",
    (3, 0, 9, 14, 2): "PMINTENCLR_EL1",
    (3, 0, 9, 14, 6): "PMMIR_EL1",
    (3, 3, 9, 12, 0): "PMCR_EL0",
    (3, 3, 9, 12, 1): "PMCNTENSET_EL0",
    (3, 3, 9, 12, 2): "PMCNTENCLR_EL0",
    (3, 3, 9, 12, 3): "PMOVSCLR_EL0",
    (3, 3, 9, 12, 4): "PMSWINC_EL0",
    (3, 3, 9, 12, 5): "PMSELR_EL0",
    (3, 3, 9, 12, 6): "PMCEID0_EL0",
    (3, 3, 9, 12, 7): "PMCEID1_EL0",
    (3, 3, 9, 13, 0): "PMCCNTR_EL0",
    (3, 3, 9, 13, 1): "PMXEVTYPER_EL0",
    (3, 3, 9, 13, 2): "PMXEVCNTR_EL0",
    (3, 3, 9, 14, 0): "PMUSERENR_EL0",
    (3, 3, 9, 14, 3): "PMOVSSET_EL0",
    (3, 3, 9, 4, 0): "PMICNTR_EL0",
    (3, 3, 9, 6, 0): "PMICFILTR_EL0",
    (3, 4, 9, 9, 0): "PMSCR_EL2",
    (3, 6, 9, 10, 3): "PMBSR_EL3",
    (3, 6, 9, 11, 3): "TRBSR_EL3",
    # crn = 10: memory attributes, LORegions, MPAM, permission indirection/overlay
    (3, 0, 10, 2, 0): "MAIR_EL1",
    (3, 0, 10, 2, 1): "MAIR2_EL1",
    (3, 0, 10, 2, 2): "PIRE0_EL1",
    (3, 0, 10, 2, 3): "PIR_EL1",
    (3, 0, 10, 2, 4): "POR_EL1",
    (3, 0, 10, 2, 5): "S2POR_EL1",
    (3, 0, 10, 3, 0): "AMAIR_EL1",
    (3, 0, 10, 3, 1): "AMAIR2_EL1",
    (3, 0, 10, 4, 0): "LORSA_EL1",
    (3, 0, 10, 4, 1): "LOREA_EL1",
    (3, 0, 10, 4, 2): "LORN_EL1",
    (3, 0, 10, 4, 3): "LORC_EL1",
    (3, 0, 10, 4, 4): "MPAMIDR_EL1",
    (3, 0, 10, 4, 7): "LORID_EL1",
    (3, 0, 10, 5, 0): "MPAM1_EL1",
    (3, 0, 10, 5, 1): "MPAM0_EL1",
    (3, 0, 10, 5, 3): "MPAMSM_EL1",
    (3, 3, 10, 2, 4): "POR_EL0",
    (3, 4, 10, 1, 1): "MAIR2_EL2",
    (3, 4, 10, 2, 0): "MAIR_EL2",
    (3, 4, 10, 2, 2): "PIRE0_EL2",
    (3, 4, 10, 2, 3): "PIR_EL2",
    (3, 4, 10, 2, 4): "POR_EL2",
    (3, 4, 10, 2, 5): "S2PIR_EL2",
    (3, 4, 10, 3, 0): "AMAIR_EL2",
    (3, 4, 10, 3, 1): "AMAIR2_EL2",
    (3, 4, 10, 4, 0): "MPAMHCR_EL2",
    (3, 4, 10, 4, 1): "MPAMVPMV_EL2",
    (3, 4, 10, 5, 0): "MPAM2_EL2",
    (3, 4, 10, 8, 0): "MECID_P0_EL2",
    (3, 4, 10, 8, 1): "MECID_A0_EL2",
    (3, 4, 10, 8, 2): "MECID_P1_EL2",
    (3, 4, 10, 8, 3): "MECID_A1_EL2",
    (3, 4, 10, 8, 7): "MECIDR_EL2",
    (3, 4, 10, 9, 0): "VMECID_P_EL2",
    (3, 4, 10, 9, 1): "VMECID_A_EL2",
    (3, 6, 10, 1, 1): "MAIR2_EL3",
    (3, 6, 10, 2, 0): "MAIR_EL3",
    (3, 6, 10, 2, 3): "PIR_EL3",
    (3, 6, 10, 2, 4): "POR_EL3",
    (3, 6, 10, 3, 0): "AMAIR_EL3",
    (3, 6, 10, 3, 1): "AMAIR2_EL3",
    (3, 6, 10, 5, 0): "MPAM3_EL3",
    (3, 6, 10, 10, 1): "MECID_RL_A_EL3",
    # crn = 11 / 15: implementation defined (Cortex-A57 TRM names)
    (3, 1, 11, 0, 2): "L2CTLR_EL1",
    (3, 1, 11, 0, 3): "L2ECTLR_EL1",
    (3, 1, 15, 0, 0): "L2ACTLR_EL1",
    (3, 1, 15, 2, 0): "CPUACTLR_EL1",
    (3, 1, 15, 2, 1): "CPUECTLR_EL1",
    (3, 1, 15, 2, 2): "CPUMERRSR_EL1",
    (3, 1, 15, 2, 3): "L2MERRSR_EL1",
    (3, 1, 15, 3, 0): "CBAR_EL1",
    # crn = 12: vectors, reset, interrupt status, GICv3 CPU interface
    (3, 0, 12, 0, 0): "VBAR_EL1",
    (3, 0, 12, 0, 1): "RVBAR_EL1",
    (3, 0, 12, 0, 2): "RMR_EL1",
    (3, 0, 12, 1, 0): "ISR_EL1",
    (3, 0, 12, 1, 1): "DISR_EL1",
    (3, 0, 12, 8, 0): "ICC_IAR0_EL1",
    (3, 0, 12, 8, 1): "ICC_EOIR0_EL1",
    (3, 0, 12, 8, 2): "ICC_HPPIR0_EL1",
    (3, 0, 12, 8, 3): "ICC_BPR0_EL1",
    (3, 0, 12, 9, 5): "ICC_NMIAR1_EL1",
    (3, 0, 12, 11, 1): "ICC_DIR_EL1",
    (3, 0, 12, 11, 3): "ICC_RPR_EL1",
    (3, 0, 12, 11, 5): "ICC_SGI1R_EL1",
    (3, 0, 12, 11, 6): "ICC_ASGI1R_EL1",
    (3, 0, 12, 11, 7): "ICC_SGI0R_EL1",
    (3, 0, 12, 12, 0): "ICC_IAR1_EL1",
    (3, 0, 12, 12, 1): "ICC_EOIR1_EL1",
    (3, 0, 12, 12, 2): "ICC_HPPIR1_EL1",
    (3, 0, 12, 12, 3): "ICC_BPR1_EL1",
    (3, 0, 12, 12, 4): "ICC_CTLR_EL1",
    (3, 0, 12, 12, 5): "ICC_SRE_EL1",
    (3, 0, 12, 12, 6): "ICC_IGRPEN0_EL1",
    (3, 0, 12, 12, 7): "ICC_IGRPEN1_EL1",
    (3, 4, 12, 0, 0): "VBAR_EL2",
    (3, 4, 12, 0, 1): "RVBAR_EL2",
    (3, 4, 12, 0, 2): "RMR_EL2",
    (3, 4, 12, 1, 1): "VDISR_EL2",
    (3, 4, 12, 9, 5): "ICC_SRE_EL2",
    (3, 4, 12, 11, 0): "ICH_HCR_EL2",
    (3, 4, 12, 11, 1): "ICH_VTR_EL2",
    (3, 4, 12, 11, 2): "ICH_MISR_EL2",
    (3, 4, 12, 11, 3): "ICH_EISR_EL2",
    (3, 4, 12, 11, 5): "ICH_ELRSR_EL2",
    (3, 4, 12, 11, 7): "ICH_VMCR_EL2",
    (3, 6, 12, 0, 0): "VBAR_EL3",
    (3, 6, 12, 0, 1): "RVBAR_EL3",
    (3, 6, 12, 0, 2): "RMR_EL3",
    (3, 6, 12, 1, 1): "VDISR_EL3",
    (3, 6, 12, 12, 4): "ICC_CTLR_EL3",
    (3, 6, 12, 12, 5): "ICC_SRE_EL3",
    (3, 6, 12, 12, 7): "ICC_IGRPEN1_EL3",
    # crn = 13: context and thread ids, activity monitors
    (3, 0, 13, 0, 1): "CONTEXTIDR_EL1",
    (3, 0, 13, 0, 3): "RCWSMASK_EL1",
    (3, 0, 13, 0, 4): "TPIDR_EL1",
    (3, 0, 13, 0, 5): "ACCDATA_EL1",
    (3, 0, 13, 0, 6): "RCWMASK_EL1",
    (3, 0, 13, 0, 7): "SCXTNUM_EL1",
    (3, 3, 13, 0, 2): "TPIDR_EL0",
    (3, 3, 13, 0, 3): "TPIDRRO_EL0",
    (3, 3, 13, 0, 5): "TPIDR2_EL0",
    (3, 3, 13, 0, 7): "SCXTNUM_EL0",
    (3, 3, 13, 2, 0): "AMCR_EL0",
    (3, 3, 13, 2, 1): "AMCFGR_EL0",
    (3, 3, 13, 2, 2): "AMCGCR_EL0",
    (3, 3, 13, 2, 3): "AMUSERENR_EL0",
    (3, 3, 13, 2, 4): "AMCNTENCLR0_EL0",
    (3, 3, 13, 2, 5): "AMCNTENSET0_EL0",
    (3, 3, 13, 2, 6): "AMCG1IDR_EL0",
    (3, 3, 13, 3, 0): "AMCNTENCLR1_EL0",
    (3, 3, 13, 3, 1): "AMCNTENSET1_EL0",
    (3, 4, 13, 0, 1): "CONTEXTIDR_EL2",
    (3, 4, 13, 0, 2): "TPIDR_EL2",
    (3, 4, 13, 0, 7): "SCXTNUM_EL2",
    (3, 6, 13, 0, 2): "TPIDR_EL3",
    (3, 6, 13, 0, 7): "SCXTNUM_EL3",
    # crn = 14: generic timer (PMU event counters are generated below)
    (3, 0, 14, 1, 0): "CNTKCTL_EL1",
    (3, 3, 14, 0, 0): "CNTFRQ_EL0",
    (3, 3, 14, 0, 1): "CNTPCT_EL0",
    (3, 3, 14, 0, 2): "CNTVCT_EL0",
    (3, 3, 14, 0, 5): "CNTPCTSS_EL0",
    (3, 3, 14, 0, 6): "CNTVCTSS_EL0",
    (3, 3, 14, 2, 0): "CNTP_TVAL_EL0",
    (3, 3, 14, 2, 1): "CNTP_CTL_EL0",
    (3, 3, 14, 2, 2): "CNTP_CVAL_EL0",
    (3, 3, 14, 3, 0): "CNTV_TVAL_EL0",
    (3, 3, 14, 3, 1): "CNTV_CTL_EL0",
    (3, 3, 14, 3, 2): "CNTV_CVAL_EL0",
    (3, 3, 14, 15, 7): "PMCCFILTR_EL0",
    (3, 4, 14, 0, 3): "CNTVOFF_EL2",
    (3, 4, 14, 0, 6): "CNTPOFF_EL2",
    (3, 4, 14, 1, 0): "CNTHCTL_EL2",
    (3, 4, 14, 2, 0): "CNTHP_TVAL_EL2",
    (3, 4, 14, 2, 1): "CNTHP_CTL_EL2",
    (3, 4, 14, 2, 2): "CNTHP_CVAL_EL2",
    (3, 4, 14, 3, 0): "CNTHV_TVAL_EL2",
    (3, 4, 14, 3, 1): "CNTHV_CTL_EL2",
    (3, 4, 14, 3, 2): "CNTHV_CVAL_EL2",
    (3, 4, 14, 4, 0): "CNTHVS_TVAL_EL2",
    (3, 4, 14, 4, 1): "CNTHVS_CTL_EL2",
    (3, 4, 14, 4, 2): "CNTHVS_CVAL_EL2",
    (3, 4, 14, 5, 0): "CNTHPS_TVAL_EL2",
    (3, 4, 14, 5, 1): "CNTHPS_CTL_EL2",
    (3, 4, 14, 5, 2): "CNTHPS_CVAL_EL2",
    (3, 7, 14, 2, 0): "CNTPS_TVAL_EL1",
    (3, 7, 14, 2, 1): "CNTPS_CTL_EL1",
    (3, 7, 14, 2, 2): "CNTPS_CVAL_EL1",
}

# --------------------------------------------------------------------------------------
# AArch32, 32-bit (MRC/MCR): (cp, crn, crm, opc1, opc2) -> name
# --------------------------------------------------------------------------------------
AA32: dict[tuple[int, int, int, int, int], str] = {
    # cp14: debug (families DBGB/W{V,C}R<n>, DBGBXVR<n> are generated below)
    (14, 0, 0, 0, 0): "DBGDIDR",
    (14, 0, 0, 0, 2): "DBGDTRRXext",
    (14, 0, 0, 7, 0): "JIDR",
    (14, 0, 1, 0, 0): "DBGDSCRint",
    (14, 0, 2, 0, 0): "DBGDCCINT",
    (14, 0, 2, 0, 2): "DBGDSCRext",
    (14, 0, 3, 0, 2): "DBGDTRTXext",
    (14, 0, 5, 0, 0): "DBGDTRTXint",
    (14, 0, 5, 3, 0): "BOGUS_DBGDTRTX",
    (14, 0, 6, 0, 0): "DBGWFAR",
    (14, 0, 6, 0, 2): "DBGOSECCR",
    (14, 0, 7, 0, 0): "DBGVCR",
    (14, 1, 0, 0, 0): "DBGDRAR",
    (14, 1, 0, 0, 4): "DBGOSLAR",
    (14, 1, 1, 0, 4): "DBGOSLSR",
    (14, 1, 3, 0, 4): "DBGOSDLR",
    (14, 1, 4, 0, 4): "DBGPRCR",
    (14, 2, 0, 0, 0): "DBGDSAR",
    (14, 1, 0, 7, 0): "JOSCR",
    (14, 2, 0, 7, 0): "JMCR",
    (14, 7, 0, 0, 0): "BOGUS_DBGDEVID2",
    (14, 7, 0, 0, 1): "BOGUS_DBGDEVID1",
    (14, 7, 0, 0, 2): "BOGUS_DBGDEVID",
    (14, 7, 0, 0, 7): "DBGDEVID2",
    (14, 7, 1, 0, 7): "DBGDEVID1",
    (14, 7, 2, 0, 7): "DBGDEVID",
    (14, 7, 8, 0, 6): "DBGCLAIMSET",
    (14, 7, 9, 0, 6): "DBGCLAIMCLR",
    (14, 7, 14, 0, 6): "DBGAUTHSTATUS",
    # cp15 c0: identification
    (15, 0, 0, 0, 0): "MIDR",
    (15, 0, 0, 0, 1): "CTR",
    (15, 0, 0, 0, 2): "TCMTR",
    (15, 0, 0, 0, 3): "TLBTR",
    (15, 0, 0, 0, 5): "MPIDR",
    (15, 0, 0, 0, 6): "REVIDR",
    (15, 0, 1, 0, 0): "ID_PFR0",
    (15, 0, 1, 0, 1): "ID_PFR1",
    (15, 0, 1, 0, 2): "ID_DFR0",
    (15, 0, 1, 0, 3): "ID_AFR0",
    (15, 0, 1, 0, 4): "ID_MMFR0",
    (15, 0, 1, 0, 5): "ID_MMFR1",
    (15, 0, 1, 0, 6): "ID_MMFR2",
    (15, 0, 1, 0, 7): "ID_MMFR3",
    (15, 0, 2, 0, 0): "ID_ISAR0",
    (15, 0, 2, 0, 1): "ID_ISAR1",
    (15, 0, 2, 0, 2): "ID_ISAR2",
    (15, 0, 2, 0, 3): "ID_ISAR3",
    (15, 0, 2, 0, 4): "ID_ISAR4",
    (15, 0, 2, 0, 5): "ID_ISAR5",
    (15, 0, 2, 0, 6): "ID_MMFR4",
    (15, 0, 2, 0, 7): "ID_ISAR6",
    (15, 0, 3, 0, 4): "ID_PFR2",
    (15, 0, 3, 0, 5): "ID_DFR1",
    (15, 0, 3, 0, 6): "ID_MMFR5",
    (15, 0, 0, 1, 0): "CCSIDR",
    (15, 0, 0, 1, 1): "CLIDR",
    (15, 0, 0, 1, 2): "CCSIDR2",
    (15, 0, 0, 1, 7): "AIDR",
    (15, 0, 0, 2, 0): "CSSELR",
    (15, 0, 0, 4, 0): "VPIDR",
    (15, 0, 0, 4, 5): "VMPIDR",
    # c1: system control
    (15, 1, 0, 0, 0): "SCTLR",
    (15, 1, 0, 0, 1): "ACTLR",
    (15, 1, 0, 0, 2): "CPACR",
    (15, 1, 0, 0, 3): "ACTLR2",
    (15, 1, 1, 0, 0): "SCR",
    (15, 1, 1, 0, 1): "SDER",
    (15, 1, 1, 0, 2): "NSACR",
    (15, 1, 2, 0, 1): "TRFCR",
    (15, 1, 3, 0, 1): "SDCR",
    (15, 1, 0, 4, 0): "HSCTLR",
    (15, 1, 0, 4, 1): "HACTLR",
    (15, 1, 0, 4, 3): "HACTLR2",
    (15, 1, 1, 4, 0): "HCR",
    (15, 1, 1, 4, 1): "HDCR",
    (15, 1, 1, 4, 2): "HCPTR",
    (15, 1, 1, 4, 3): "HSTR",
    (15, 1, 1, 4, 4): "HCR2",
    (15, 1, 1, 4, 7): "HACR",
    (15, 1, 2, 4, 1): "HTRFCR",
    # c2, c3: translation tables, domains
    (15, 2, 0, 0, 0): "TTBR0",
    (15, 2, 0, 0, 1): "TTBR1",
    (15, 2, 0, 0, 2): "TTBCR",
    (15, 2, 0, 0, 3): "TTBCR2",
    (15, 2, 0, 4, 2): "HTCR",
    (15, 2, 1, 4, 2): "VTCR",
    (15, 3, 0, 0, 0): "DACR",
    # c4: GIC priority mask
    (15, 4, 6, 0, 0): "ICC_PMR",
    # c5, c6: faults, RAS
    (15, 5, 0, 0, 0): "DFSR",
    (15, 5, 0, 0, 1): "IFSR",
    (15, 5, 1, 0, 0): "ADFSR",
    (15, 5, 1, 0, 1): "AIFSR",
    (15, 5, 3, 0, 0): "ERRIDR",
    (15, 5, 3, 0, 1): "ERRSELR",
    (15, 5, 4, 0, 0): "ERXFR",
    (15, 5, 4, 0, 1): "ERXCTLR",
    (15, 5, 4, 0, 2): "ERXSTATUS",
    (15, 5, 4, 0, 3): "ERXADDR",
    (15, 5, 4, 0, 4): "ERXFR2",
    (15, 5, 4, 0, 5): "ERXCTLR2",
    (15, 5, 4, 0, 7): "ERXADDR2",
    (15, 5, 5, 0, 0): "ERXMISC0",
    (15, 5, 5, 0, 1): "ERXMISC1",
    (15, 5, 5, 0, 2): "ERXMISC4",
    (15, 5, 5, 0, 3): "ERXMISC5",
    (15, 5, 5, 0, 4): "ERXMISC2",
    (15, 5, 5, 0, 5): "ERXMISC3",
    (15, 5, 5, 0, 6): "ERXMISC6",
    (15, 5, 5, 0, 7): "ERXMISC7",
    (15, 5, 1, 4, 0): "HADFSR",
    (15, 5, 1, 4, 1): "HAIFSR",
    (15, 5, 2, 4, 0): "HSR",
    (15, 5, 2, 4, 3): "VDFSR",
    (15, 6, 0, 0, 0): "DFAR",
    (15, 6, 0, 0, 1): "WFAR",
    (15, 6, 0, 0, 2): "IFAR",
    (15, 6, 0, 4, 0): "HDFAR",
    (15, 6, 0, 4, 2): "HIFAR",
    (15, 6, 0, 4, 4): "HPFAR",
    # c7
    (15, 7, 4, 0, 0): "PAR",
    # c9: performance monitors
    (15, 9, 12, 0, 0): "PMCR",
    (15, 9, 12, 0, 1): "PMCNTENSET",
    (15, 9, 12, 0, 2): "PMCNTENCLR",
    (15, 9, 12, 0, 3): "PMOVSR",
    (15, 9, 12, 0, 4): "PMSWINC",
    (15, 9, 12, 0, 5): "PMSELR",
    (15, 9, 12, 0, 6): "PMCEID0",
    (15, 9, 12, 0, 7): "PMCEID1",
    (15, 9, 13, 0, 0): "PMCCNTR",
    (15, 9, 13, 0, 1): "PMXEVTYPER",
    (15, 9, 13, 0, 2): "PMXEVCNTR",
    (15, 9, 14, 0, 0): "PMUSERENR",
    (15, 9, 14, 0, 1): "PMINTENSET",
    (15, 9, 14, 0, 2): "PMINTENCLR",
    (15, 9, 14, 0, 3): "PMOVSSET",
    (15, 9, 14, 0, 4): "PMCEID2",
    (15, 9, 14, 0, 5): "PMCEID3",
    (15, 9, 14, 0, 6): "PMMIR",
    (15, 9, 0, 1, 2): "L2CTLR",
    (15, 9, 0, 1, 3): "L2ECTLR",
    # c10: memory attributes
    (15, 10, 2, 0, 0): "MAIR0",
    (15, 10, 2, 0, 1): "MAIR1",
    (15, 10, 3, 0, 0): "AMAIR0",
    (15, 10, 3, 0, 1): "AMAIR1",
    (15, 10, 2, 4, 0): "HMAIR0",
    (15, 10, 2, 4, 1): "HMAIR1",
    (15, 10, 3, 4, 0): "HAMAIR0",
    (15, 10, 3, 4, 1): "HAMAIR1",
    # c12: vectors, reset, interrupt status, GICv3 CPU interface
    (15, 12, 0, 0, 0): "VBAR",
    (15, 12, 0, 0, 1): "RVBAR",
    (15, 12, 0, 0, 2): "RMR",
    (15, 12, 1, 0, 0): "ISR",
    (15, 12, 1, 0, 1): "DISR",
    (15, 12, 8, 0, 0): "ICC_IAR0",
    (15, 12, 8, 0, 1): "ICC_EOIR0",
    (15, 12, 8, 0, 2): "ICC_HPPIR0",
    (15, 12, 8, 0, 3): "ICC_BPR0",
    (15, 12, 11, 0, 1): "ICC_DIR",
    (15, 12, 11, 0, 3): "ICC_RPR",
    (15, 12, 12, 0, 0): "ICC_IAR1",
    (15, 12, 12, 0, 1): "ICC_EOIR1",
    (15, 12, 12, 0, 2): "ICC_HPPIR1",
    (15, 12, 12, 0, 3): "ICC_BPR1",
    (15, 12, 12, 0, 4): "ICC_CTLR",
    (15, 12, 12, 0, 5): "ICC_SRE",
    (15, 12, 12, 0, 6): "ICC_IGRPEN0",
    (15, 12, 12, 0, 7): "ICC_IGRPEN1",
    (15, 12, 0, 4, 0): "HVBAR",
    (15, 12, 0, 4, 2): "HRMR",
    (15, 12, 1, 4, 1): "VDISR",
    (15, 12, 9, 4, 5): "ICC_HSRE",
    (15, 12, 11, 4, 0): "ICH_HCR",
    (15, 12, 11, 4, 1): "ICH_VTR",
    (15, 12, 11, 4, 2): "ICH_MISR",
    (15, 12, 11, 4, 3): "ICH_EISR",
    (15, 12, 11, 4, 5): "ICH_ELRSR",
    (15, 12, 11, 4, 7): "ICH_VMCR",
    (15, 12, 12, 6, 4): "ICC_MCTLR",
    (15, 12, 12, 6, 5): "ICC_MSRE",
    (15, 12, 12, 6, 7): "ICC_MGRPEN1",
    # c13: process, context and thread ids
    (15, 13, 0, 0, 0): "FCSEIDR",
    (15, 13, 0, 0, 1): "CONTEXTIDR",
    (15, 13, 0, 0, 2): "TPIDRURW",
    (15, 13, 0, 0, 3): "TPIDRURO",
    (15, 13, 0, 0, 4): "TPIDRPRW",
    (15, 13, 0, 4, 2): "HTPIDR",
    # c14: generic timer (PMU event counters are generated below)
    (15, 14, 0, 0, 0): "CNTFRQ",
    (15, 14, 1, 0, 0): "CNTKCTL",
    (15, 14, 2, 0, 0): "CNTP_TVAL",
    (15, 14, 2, 0, 1): "CNTP_CTL",
    (15, 14, 3, 0, 0): "CNTV_TVAL",
    (15, 14, 3, 0, 1): "CNTV_CTL",
    (15, 14, 15, 0, 7): "PMCCFILTR",
    (15, 14, 1, 4, 0): "CNTHCTL",
    (15, 14, 2, 4, 0): "CNTHP_TVAL",
    (15, 14, 2, 4, 1): "CNTHP_CTL",
    # c15: implementation defined (Cortex-A57 TRM names)
    (15, 15, 0, 1, 0): "L2ACTLR",
    (15, 15, 3, 1, 0): "CBAR",
}

# --------------------------------------------------------------------------------------
# AArch32, 64-bit (MRRC/MCRR): (cp, crm, opc1) -> name
# --------------------------------------------------------------------------------------
AA32_64: dict[tuple[int, int, int], str] = {
    (14, 1, 0): "DBGDRAR_64",
    (14, 2, 0): "DBGDSAR_64",
    (15, 2, 0): "TTBR0_64",
    (15, 2, 1): "TTBR1_64",
    (15, 2, 4): "HTTBR",
    (15, 2, 6): "VTTBR",
    (15, 7, 0): "PAR_64",
    (15, 9, 0): "PMCCNTR_64",
    (15, 12, 0): "ICC_SGI1R",
    (15, 12, 1): "ICC_ASGI1R",
    (15, 12, 2): "ICC_SGI0R",
    (15, 14, 0): "CNTPCT",
    (15, 14, 1): "CNTVCT",
    (15, 14, 2): "CNTP_CVAL",
    (15, 14, 3): "CNTV_CVAL",
    (15, 14, 4): "CNTVOFF",
    (15, 14, 6): "CNTHP_CVAL",
    (15, 14, 8): "CNTPCTSS",
    (15, 14, 9): "CNTVCTSS",
    (15, 15, 0): "CPUACTLR",
    (15, 15, 1): "CPUECTLR",
    (15, 15, 2): "CPUMERRSR",
    (15, 15, 3): "L2MERRSR",
}

# --------------------------------------------------------------------------------------
# KVM pseudo-registers (not system registers; only seen in KVM register lists)
# --------------------------------------------------------------------------------------
KVM: dict[int, str] = {
    0x6030_0000_0014_0000: "KVM_REG_ARM_PSCI_VERSION",
    0x6030_0000_0014_0001: "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1",
    0x6030_0000_0014_0002: "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2",
    0x6030_0000_0014_0003: "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3",
    0x6030_0000_0016_0000: "KVM_REG_ARM_STD_BMAP",
    0x6030_0000_0016_0001: "KVM_REG_ARM_STD_HYP_BMAP",
    0x6030_0000_0016_0002: "KVM_REG_ARM_VENDOR_HYP_BMAP",
    0x6030_0000_0016_0003: "KVM_REG_ARM_VENDOR_HYP_BMAP_2",
}

# Other accepted spellings: alias -> name in the tables above.
ALIASES: dict[str, str] = {
    "DBGDTRRX_EL0": "DBGDTRTX_EL0",
    "DBGDTRRXint": "DBGDTRTXint",
    "PRRR": "MAIR0",
    "NMRR": "MAIR1",
    "PMOVSR_EL0": "PMOVSCLR_EL0",
}


# --------------------------------------------------------------------------------------
# Register families
# --------------------------------------------------------------------------------------
def _add(table: dict[Any, str], key: tuple[int, ...], name: str) -> None:
    if key in table:
        raise ValueError(f"regnames: {name} collides with {table[key]} at {key}")
    table[key] = name


def _add_families() -> None:
    for n in range(16):
        # Breakpoint and watchpoint registers, both execution states.
        _add(AA64, (2, 0, 0, n, 4), f"DBGBVR{n}_EL1")
        _add(AA64, (2, 0, 0, n, 5), f"DBGBCR{n}_EL1")
        _add(AA64, (2, 0, 0, n, 6), f"DBGWVR{n}_EL1")
        _add(AA64, (2, 0, 0, n, 7), f"DBGWCR{n}_EL1")
        _add(AA32, (14, 0, n, 0, 4), f"DBGBVR{n}")
        _add(AA32, (14, 0, n, 0, 5), f"DBGBCR{n}")
        _add(AA32, (14, 0, n, 0, 6), f"DBGWVR{n}")
        _add(AA32, (14, 0, n, 0, 7), f"DBGWCR{n}")
        _add(AA32, (14, 1, n, 0, 1), f"DBGBXVR{n}")
        # GICv3 list registers.
        _add(AA64, (3, 4, 12, 12 + n // 8, n % 8), f"ICH_LR{n}_EL2")
        _add(AA32, (15, 12, 12 + n // 8, 4, n % 8), f"ICH_LR{n}")
        _add(AA32, (15, 12, 14 + n // 8, 4, n % 8), f"ICH_LRC{n}")
        # Activity monitor event counters and types (groups 0 and 1).
        _add(AA64, (3, 3, 13, 4 + n // 8, n % 8), f"AMEVCNTR0{n}_EL0")
        _add(AA64, (3, 3, 13, 6 + n // 8, n % 8), f"AMEVTYPER0{n}_EL0")
        _add(AA64, (3, 3, 13, 12 + n // 8, n % 8), f"AMEVCNTR1{n}_EL0")
        _add(AA64, (3, 3, 13, 14 + n // 8, n % 8), f"AMEVTYPER1{n}_EL0")
    for n in range(4):
        # GICv3 active priority registers.
        _add(AA64, (3, 0, 12, 8, 4 + n), f"ICC_AP0R{n}_EL1")
        _add(AA64, (3, 0, 12, 9, n), f"ICC_AP1R{n}_EL1")
        _add(AA64, (3, 4, 12, 8, n), f"ICH_AP0R{n}_EL2")
        _add(AA64, (3, 4, 12, 9, n), f"ICH_AP1R{n}_EL2")
        _add(AA32, (15, 12, 8, 0, 4 + n), f"ICC_AP0R{n}")
        _add(AA32, (15, 12, 9, 0, n), f"ICC_AP1R{n}")
        _add(AA32, (15, 12, 8, 4, n), f"ICH_AP0R{n}")
        _add(AA32, (15, 12, 9, 4, n), f"ICH_AP1R{n}")
    for n in range(31):
        # PMU event counters and event type registers (PMCCFILTR is n = 31 of the latter).
        _add(AA64, (3, 3, 14, 8 + n // 8, n % 8), f"PMEVCNTR{n}_EL0")
        _add(AA64, (3, 3, 14, 12 + n // 8, n % 8), f"PMEVTYPER{n}_EL0")
        _add(AA32, (15, 14, 8 + n // 8, 0, n % 8), f"PMEVCNTR{n}")
        _add(AA32, (15, 14, 12 + n // 8, 0, n % 8), f"PMEVTYPER{n}")
    for n in range(8):
        _add(AA64, (3, 4, 10, 6, n), f"MPAMVPM{n}_EL2")
    # Unallocated slots of the ID register space, which QEMU migrates as RAZ constants.
    for crm in range(1, 8):
        for op2 in range(8):
            if (3, 0, 0, crm, op2) not in AA64:
                _add(AA64, (3, 0, 0, crm, op2), f"RES_3_0_C0_C{crm}_{op2}")
    for crm in range(3, 16):
        for opc2 in range(8):
            if (15, 0, crm, 0, opc2) not in AA32:
                _add(AA32, (15, 0, crm, 0, opc2), f"RES_0_C0_C{crm}_{opc2}")
    for n in range(32):
        # Branch record buffer: BRBINF/BRBSRC/BRBTGT<n>_EL1, n = crm + 16 * op2[2].
        crm, hi = n % 16, (n // 16) << 2
        _add(AA64, (2, 1, 8, crm, hi | 0), f"BRBINF{n}_EL1")
        _add(AA64, (2, 1, 8, crm, hi | 1), f"BRBSRC{n}_EL1")
        _add(AA64, (2, 1, 8, crm, hi | 2), f"BRBTGT{n}_EL1")


_add_families()
