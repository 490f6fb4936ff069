"""Tests for migproxy.arm.registers (register ids, names, parsing) and the regnames table."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migproxy.arm import regnames
from migproxy.arm.registers import (
    REGISTER_NAMES,
    AArch32Encoding,
    AArch64Encoding,
    OtherEncoding,
    decode,
    describe,
    encode_aa32,
    encode_aa64,
    format_id,
    is_id_register,
    name_of,
    parse_register,
)
from testkit.streams import KVM_STREAMS, REAL_STREAMS, cpus, real_stream, run_engine

# --------------------------------------------------------------------------------------
# Worked examples (docs/qemu-migration-format.md 8.5, verified against real streams)
# --------------------------------------------------------------------------------------
WORKED_EXAMPLES = [
    (0x40200000200E0298, "BOGUS_DBGDTRTX", AArch32Encoding(14, 0, 5, 3, 0)),
    (0x40200000200E0280, "DBGDTRTXint", AArch32Encoding(14, 0, 5, 0, 0)),
    (0x6030000000139820, "DBGDTR_EL0", AArch64Encoding(2, 3, 0, 4, 0)),
    (0x6030000000139828, "DBGDTRTX_EL0", AArch64Encoding(2, 3, 0, 5, 0)),
    (0x6030000000139808, "MDCCSR_EL0", AArch64Encoding(2, 3, 0, 1, 0)),
    (0x603000000013C030, "ID_AA64ISAR0_EL1", AArch64Encoding(3, 0, 0, 6, 0)),
    (0x40200000200F0082, "ID_DFR0", AArch32Encoding(15, 0, 1, 0, 2)),
    (0x603000000013C00A, "ID_DFR0_EL1", AArch64Encoding(3, 0, 0, 1, 2)),
    (0x40200000200F3A00, "PAR", AArch32Encoding(15, 7, 4, 0, 0)),
    (0x40200000200F6002, "RMR", AArch32Encoding(15, 12, 0, 0, 2)),
    (0x603000000013C602, "RMR_EL1", AArch64Encoding(3, 0, 12, 0, 2)),
    (0x603000000013C103, "TCR2_EL1", AArch64Encoding(3, 0, 2, 0, 3)),
    (0x603000000013C512, "PIRE0_EL1", AArch64Encoding(3, 0, 10, 2, 2)),
    (0x603000000013C513, "PIR_EL1", AArch64Encoding(3, 0, 10, 2, 3)),
    (0x6030000000160003, "KVM_REG_ARM_VENDOR_HYP_BMAP_2", OtherEncoding(0x6030000000160003)),
]


@pytest.mark.parametrize(("reg_id", "name", "encoding"), WORKED_EXAMPLES)
def test_worked_examples(reg_id: int, name: str, encoding: object) -> None:
    assert decode(reg_id) == encoding
    assert encoding.to_id() == reg_id  # type: ignore[attr-defined]
    assert name_of(reg_id) == name
    assert describe(reg_id) == name
    assert parse_register(name) == reg_id
    assert parse_register(name.lower()) == reg_id
    assert parse_register(format_id(reg_id)) == reg_id


def test_encode_functions_match_examples() -> None:
    assert encode_aa64(2, 3, 0, 4, 0) == 0x6030000000139820
    assert encode_aa64(3, 0, 0, 6, 0) == 0x603000000013C030
    assert encode_aa32(14, 0, 5, 3, 0) == 0x40200000200E0298
    assert encode_aa32(15, 7, 4, 0, 0) == 0x40200000200F3A00
    # 64-bit PAR (MRRC p15, 0, <Rt>, <Rt2>, c7) and the secure bank of SCTLR.
    assert encode_aa32(15, 0, 7, 0, 0, is64=True) == 0x40300000200F0380
    assert encode_aa32(15, 1, 0, 0, 0, ns=False) == 0x40200000000F0800


# --------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------
aa64_fields = st.tuples(
    st.integers(0, 3), st.integers(0, 7), st.integers(0, 15), st.integers(0, 15), st.integers(0, 7)
)


@given(aa64_fields)
def test_aa64_round_trip(fields: tuple[int, int, int, int, int]) -> None:
    reg_id = encode_aa64(*fields)
    assert reg_id & 0xFFFF_FFFF_FFFF_0000 == 0x6030_0000_0013_0000
    enc = decode(reg_id)
    assert isinstance(enc, AArch64Encoding)
    assert (enc.op0, enc.op1, enc.crn, enc.crm, enc.op2) == fields
    assert enc.to_id() == reg_id
    assert enc.text() == "S{}_{}_C{}_C{}_{}".format(*fields)
    assert parse_register(enc.text()) == reg_id
    assert parse_register(describe(reg_id)) == reg_id


aa32_32bit = st.builds(
    AArch32Encoding,
    cp=st.integers(0, 15),
    crn=st.integers(0, 15),
    crm=st.integers(0, 15),
    opc1=st.integers(0, 7),
    opc2=st.integers(0, 7),
    is64=st.just(False),
    ns=st.booleans(),
)
aa32_64bit = st.builds(
    AArch32Encoding,
    cp=st.integers(0, 15),
    crn=st.just(0),
    crm=st.integers(0, 15),
    opc1=st.integers(0, 15),
    opc2=st.just(0),
    is64=st.just(True),
    ns=st.booleans(),
)


@given(st.one_of(aa32_32bit, aa32_64bit))
def test_aa32_round_trip(enc: AArch32Encoding) -> None:
    reg_id = enc.to_id()
    assert reg_id >> 56 == 0x40
    assert (reg_id >> 52) & 0xF == (3 if enc.is64 else 2)
    assert bool(reg_id & (1 << 29)) == enc.ns
    assert decode(reg_id) == enc
    assert encode_aa32(enc.cp, enc.crn, enc.crm, enc.opc1, enc.opc2, is64=enc.is64, ns=enc.ns) == (
        reg_id
    )
    assert parse_register(enc.text()) == reg_id
    assert parse_register(describe(reg_id)) == reg_id


kvm_other_ids = st.builds(
    lambda family, size, index: 0x6000_0000_0000_0000 | size << 52 | family << 16 | index,
    st.sampled_from([0x10, 0x11, 0x14, 0x15, 0x16]),
    st.integers(0, 8),
    st.integers(0, 0xFFFF),
)


@given(kvm_other_ids)
def test_kvm_family_texts_round_trip(reg_id: int) -> None:
    try:
        enc = decode(reg_id)
    except ValueError:
        return
    assert isinstance(enc, OtherEncoding)
    assert parse_register(enc.text()) == reg_id
    assert parse_register(describe(reg_id)) == reg_id
    name = name_of(reg_id)
    assert name is None or parse_register(name) == reg_id


@given(st.integers(0, (1 << 64) - 1))
def test_decode_is_consistent_on_arbitrary_ids(reg_id: int) -> None:
    try:
        enc = decode(reg_id)
    except ValueError:
        return
    assert enc.to_id() == reg_id
    assert describe(reg_id)


@given(st.sampled_from(sorted(REGISTER_NAMES)), st.integers(0, 63))
def test_flipping_a_reserved_bit_is_rejected(reg_id: int, bit: int) -> None:
    flipped = reg_id ^ (1 << bit)
    enc = decode(reg_id)
    if isinstance(enc, AArch64Encoding):
        allowed = 0xFFFF
    elif isinstance(enc, AArch32Encoding):
        allowed = (1 << 29) | (0xF << 16) | 0x7FFF
        if enc.crn == 0 and enc.opc2 == 0 and enc.opc1 <= 7:
            # Bit 52 turns U32 into U64 (or back): with crn == opc2 == 0 and opc1 <= 7 both
            # the 32-bit and the 64-bit register are legal encodings.
            allowed |= 1 << 52
    else:
        return
    if (1 << bit) & allowed:
        return
    with pytest.raises(ValueError, match=r"^0x[0-9a-fA-F]{16}"):
        decode(flipped)


# --------------------------------------------------------------------------------------
# Strict decoding
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        0,
        0x5030000000130000,  # unknown architecture
        0x6020000000130000,  # AArch64 sysreg with 32-bit size
        0x6030000100139820,  # bit 32 set
        0x6030000010139820,  # bit 28 (QEMU's private AArch64 key bit)
        0x6030000000170000,  # unknown KVM family
        0x6020000000140000,  # firmware register with 32-bit size
        0x6030000000110000,  # demux with 64-bit size
        0x40100000200F0000,  # AArch32 with 16-bit size
        0x40400000200F0000,  # AArch32 with 128-bit size
        0x40200000201F0000,  # cp field beyond 4 bits
        0x40200000300F0000,  # bit 28 in an AArch32 id
        0x40200000600F0000,  # bit 30
        0x40200000200F8000,  # bit 15 (QEMU's private 64-bit key bit)
        0x40200000200F0040,  # 32-bit register with opc1 = 8
        0x40300000200F0800,  # 64-bit register with crn set
        0x40300000200F0001,  # 64-bit register with opc2 set
    ],
)
def test_decode_rejects_malformed_ids(bad: int) -> None:
    with pytest.raises(ValueError, match=r"^0x[0-9a-fA-F]{16}[: ]"):
        decode(bad)


def test_decode_rejects_out_of_range_and_wrong_types() -> None:
    with pytest.raises(ValueError, match="not an unsigned 64-bit value"):
        decode(-1)
    with pytest.raises(ValueError, match="not an unsigned 64-bit value"):
        decode(1 << 64)
    with pytest.raises(TypeError):
        decode("0x6030000000139820")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        decode(True)


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_aa64(4, 0, 0, 0, 0),
        lambda: encode_aa64(3, 8, 0, 0, 0),
        lambda: encode_aa64(3, 0, 16, 0, 0),
        lambda: encode_aa64(3, 0, 0, 16, 0),
        lambda: encode_aa64(3, 0, 0, 0, -1),
        lambda: encode_aa32(16, 0, 0, 0, 0),
        lambda: encode_aa32(15, 0, 0, 8, 0),
        lambda: encode_aa32(15, 1, 2, 0, 0, is64=True),
        lambda: encode_aa32(15, 0, 2, 16, 0, is64=True),
        lambda: OtherEncoding(0x6030000000139820),
    ],
)
def test_encoders_reject_out_of_range_fields(call: object) -> None:
    with pytest.raises(ValueError,
                       match=r"must be an integer|unknown KVM register family|has crn=0"):
        call()  # type: ignore[operator]


# --------------------------------------------------------------------------------------
# Text forms and descriptions
# --------------------------------------------------------------------------------------
def test_text_forms() -> None:
    assert decode(0x603000000013C030).text() == "S3_0_C0_C6_0"
    assert str(decode(0x603000000013C030)) == "S3_0_C0_C6_0"
    assert decode(0x40200000200F0082).text() == "cp15 crn0 crm1 opc1 0 opc2 2"
    assert decode(encode_aa32(15, 0, 2, 0, 0, is64=True)).text() == "cp15 crm2 opc1 0 (64-bit)"
    assert decode(encode_aa32(15, 1, 0, 0, 0, ns=False)).text() == (
        "cp15 crn1 crm0 opc1 0 opc2 0 (S)"
    )
    assert decode(encode_aa32(15, 0, 2, 1, 0, is64=True, ns=False)).text() == (
        "cp15 crm2 opc1 1 (64-bit) (S)"
    )


def test_describe_unknown_registers_uses_generic_text() -> None:
    unknown64 = encode_aa64(3, 0, 11, 0, 0)
    unknown32 = encode_aa32(15, 11, 0, 0, 0)
    assert name_of(unknown64) is None
    assert describe(unknown64) == "S3_0_C11_C0_0"
    assert name_of(unknown32) is None
    assert describe(unknown32) == "cp15 crn11 crm0 opc1 0 opc2 0"


def test_secure_instances_are_named_after_their_non_secure_register() -> None:
    sctlr_s = encode_aa32(15, 1, 0, 0, 0, ns=False)
    assert name_of(sctlr_s) == "SCTLR (S)"
    assert describe(sctlr_s) == "SCTLR (S)"
    assert parse_register("sctlr (s)") == sctlr_s
    assert parse_register("SCTLR  (S)") == sctlr_s
    ttbr0_64_s = encode_aa32(15, 0, 2, 0, 0, is64=True, ns=False)
    assert describe(ttbr0_64_s) == "TTBR0_64 (S)"


def test_other_encodings_describe_their_family() -> None:
    assert describe(0x6030000000140000) == "KVM_REG_ARM_PSCI_VERSION"
    assert describe(0x6030000000140007) == "KVM firmware register 7"
    assert describe(0x6030000000160009) == "KVM firmware feature bitmap 9"
    assert describe(0x6020000000110002) == "KVM_REG_ARM_DEMUX_CCSIDR(2)"
    assert name_of(0x6020000000110002) == "KVM_REG_ARM_DEMUX_CCSIDR(2)"
    assert describe(0x6020000000110103) == "KVM demultiplexed register 1 value 3"
    assert name_of(0x6020000000110103) is None
    assert describe(0x6080000000150400) == "KVM SVE register 1024 (2048-bit)"
    core = decode(0x6030000000100000)
    assert isinstance(core, OtherEncoding)
    assert core.family == 0x10
    assert core.size_bytes == 8
    assert describe(0x6030000000100000) == "KVM core register offset 0 (64-bit)"


def test_format_id() -> None:
    assert format_id(0x6030000000139820) == "0x6030000000139820"
    assert format_id(0x40200000200E0298) == "0x40200000200E0298"
    assert format_id(0x603000000013C00A) == "0x603000000013C00A"
    assert format_id(5) == "0x0000000000000005"
    assert re.fullmatch(r"0x[0-9A-F]{16}", format_id(0xABCDEF))
    with pytest.raises(ValueError, match="not an unsigned 64-bit value"):
        format_id(1 << 64)


# --------------------------------------------------------------------------------------
# parse_register
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0x6030000000139820", 0x6030000000139820),
        ("0X603000000013c030", 0x603000000013C030),
        ("0x6030_0000_0013_9820", 0x6030000000139820),
        ("  0x40200000200e0298\n", 0x40200000200E0298),
        (str(0x603000000013C602), 0x603000000013C602),
        ("ID_AA64ISAR0_EL1", 0x603000000013C030),
        ("id_aa64isar0_el1", 0x603000000013C030),
        ("dbgdtrtxINT", 0x40200000200E0280),
        ("DBGDTRRX_EL0", 0x6030000000139828),  # alias
        ("PRRR", encode_aa32(15, 10, 2, 0, 0)),  # alias
        ("S3_0_C0_C6_0", 0x603000000013C030),
        ("s2_3_c0_c4_0", 0x6030000000139820),
        ("S3_0_C11_C0_0", encode_aa64(3, 0, 11, 0, 0)),
        ("cp14 crn0 crm5 opc1 3 opc2 0", 0x40200000200E0298),
        ("CP14 CRN0 CRM5 OPC1 3 OPC2 0", 0x40200000200E0298),
        ("cp14  crn0 crm5  opc1 0 opc2 0", 0x40200000200E0280),
        ("cp15 crn0 crm1 opc1 0 opc2 2 (S)", 0x40200000000F0082),
        ("cp15 crm2 opc1 0 (64-bit)", encode_aa32(15, 0, 2, 0, 0, is64=True)),
        ("cp15 crm2 opc1 0 64-bit", encode_aa32(15, 0, 2, 0, 0, is64=True)),
        ("cp15 crm14 opc1 1 (64-bit) (S)", encode_aa32(15, 0, 14, 1, 0, is64=True, ns=False)),
        ("TTBR0_64", encode_aa32(15, 0, 2, 0, 0, is64=True)),
        ("TTBR0", encode_aa32(15, 2, 0, 0, 0)),
        ("KVM_REG_ARM_VENDOR_HYP_BMAP_2", 0x6030000000160003),
        ("KVM_REG_ARM_DEMUX_CCSIDR(3)", 0x6020000000110003),
        ("kvm_reg_arm_demux_ccsidr ( 13 )", 0x602000000011000D),
        ("KVM_REG_ARM_DEMUX_ID_CCSIDR(0)", 0x6020000000110000),
        ("KVM CCSIDR demux (CSSELR 3)", 0x6020000000110003),  # printed by older versions
        ("KVM demultiplexed register 1 value 3", 0x6020000000110103),
        ("KVM firmware register 7", 0x6030000000140007),
        ("KVM firmware register 0", 0x6030000000140000),
        ("kvm firmware feature bitmap  9", 0x6030000000160009),
        ("KVM core register offset 4 (32-bit)", 0x6020000000100004),
        ("KVM SVE register 1024 (2048-bit)", 0x6080000000150400),
    ],
)
def test_parse_register_accepted_forms(text: str, expected: int) -> None:
    assert parse_register(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("NOT_A_REGISTER", "unknown register"),
        ("0x5030000000130000", "not a valid ARM register id"),
        ("0x40200000200F8000", "not a valid ARM register id"),
        ("12", "not a valid ARM register id"),
        ("0xZZ", "unknown register"),
        ("S4_0_C0_C0_0", "unknown register"),
        ("S3_0_C16_C0_0", "crn"),
        ("cp16 crn0 crm0 opc1 0 opc2 0", "cp"),
        ("cp15 crn0 crm0 opc1 8 opc2 0", "opc1"),
        ("cp15 crm2 opc1 0", "needs crn and opc2"),
        ("cp15 crn1 crm2 opc1 0 opc2 0 (64-bit)", "crn=0"),
        ("ID_AA64ISAR0_EL1 (S)", "secure"),
        ("KVM_REG_ARM_DEMUX_CCSIDR(256)", "8-bit"),
        ("KVM demultiplexed register 256 value 0", "8-bit"),
        ("KVM core register offset 4", "give the size"),
        ("KVM SVE register 1 (24-bit)", "not 24"),
        ("KVM firmware register 7 (32-bit)", "is 64-bit"),
        ("KVM firmware register 65536", "16 bits"),
    ],
)
def test_parse_register_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_register(text)


def test_parse_register_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        parse_register(0x6030000000139820)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# is_id_register
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "MIDR_EL1",
        "MPIDR_EL1",
        "REVIDR_EL1",
        "ID_PFR0_EL1",
        "ID_DFR0_EL1",
        "ID_AA64ISAR0_EL1",
        "ID_AA64MMFR2_EL1",
        "ID_AA64ZFR0_EL1",
        "MVFR0_EL1",
        "CLIDR_EL1",
        "AIDR_EL1",
        "GMID_EL1",
        "CTR_EL0",
        "DCZID_EL0",
        "PMCEID0_EL0",
        "LORID_EL1",
        "MIDR",
        "CTR",
        "TLBTR",
        "ID_DFR0",
        "ID_ISAR6",
        "ID_MMFR5",
        "CLIDR",
        "AIDR",
        "PMCEID1",
        "DBGDIDR",
        "DBGDEVID1",
        "S3_0_C0_C3_3",  # reserved ID slot (RAZ)
        "S3_0_C0_C7_7",
        "cp15 crn0 crm3 opc1 0 opc2 7",
    ],
)
def test_is_id_register_true(name: str) -> None:
    assert is_id_register(parse_register(name))


@pytest.mark.parametrize(
    "name",
    [
        "SCTLR_EL1",
        "CSSELR_EL1",
        "VPIDR_EL2",
        "VMPIDR_EL2",
        "RMR_EL1",
        "DBGDTR_EL0",
        "MDSCR_EL1",
        "PMCR_EL0",
        "S3_0_C0_C8_0",
        "SCTLR",
        "CSSELR",
        "VPIDR",
        "RMR",
        "PAR",
        "PAR_64",
        "TTBR0_64",
        "BOGUS_DBGDTRTX",
        "DBGDTRTXint",
        "DBGDSCRint",
        "KVM_REG_ARM_PSCI_VERSION",
    ],
)
def test_is_id_register_false(name: str) -> None:
    assert not is_id_register(parse_register(name))


# --------------------------------------------------------------------------------------
# The name table
# --------------------------------------------------------------------------------------
def test_table_names_are_unique_ignoring_case() -> None:
    names = [n.upper() for n in REGISTER_NAMES.values()]
    assert len(names) == len(set(names))
    aliases = {a.upper() for a in regnames.ALIASES}
    assert not aliases & set(names)


def test_table_size_and_families() -> None:
    assert len(REGISTER_NAMES) > 900
    for n in range(16):
        assert parse_register(f"DBGBVR{n}_EL1") == encode_aa64(2, 0, 0, n, 4)
        assert parse_register(f"DBGWCR{n}_EL1") == encode_aa64(2, 0, 0, n, 7)
        assert parse_register(f"DBGBCR{n}") == encode_aa32(14, 0, n, 0, 5)
    for n in range(31):
        assert parse_register(f"PMEVCNTR{n}_EL0") == encode_aa64(3, 3, 14, 8 + n // 8, n % 8)
        assert parse_register(f"PMEVTYPER{n}") == encode_aa32(15, 14, 12 + n // 8, 0, n % 8)
    assert parse_register("PMCCFILTR_EL0") == encode_aa64(3, 3, 14, 15, 7)
    for n in range(4):
        assert parse_register(f"ICC_AP0R{n}_EL1") == encode_aa64(3, 0, 12, 8, 4 + n)
        assert parse_register(f"ICC_AP1R{n}_EL1") == encode_aa64(3, 0, 12, 9, n)


def test_every_table_entry_decodes_to_its_family() -> None:
    for key, name in regnames.AA64.items():
        enc = decode(parse_register(name))
        assert isinstance(enc, AArch64Encoding)
        assert (enc.op0, enc.op1, enc.crn, enc.crm, enc.op2) == key
    for key, name in regnames.AA32.items():
        enc = decode(parse_register(name))
        assert isinstance(enc, AArch32Encoding)
        assert not enc.is64
        assert enc.ns
        assert (enc.cp, enc.crn, enc.crm, enc.opc1, enc.opc2) == key
    for key, name in regnames.AA32_64.items():
        enc = decode(parse_register(name))
        assert isinstance(enc, AArch32Encoding)
        assert enc.is64
        assert enc.ns
        assert (enc.cp, enc.crm, enc.opc1) == key
    for reg_id, name in regnames.KVM.items():
        assert isinstance(decode(reg_id), OtherEncoding)
        assert parse_register(name) == reg_id


def test_every_table_entry_round_trips_through_its_name() -> None:
    for reg_id, name in REGISTER_NAMES.items():
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name), name
        assert name_of(reg_id) == name
        assert describe(reg_id) == name
        assert parse_register(name) == reg_id


# AArch64 registers named without an exception-level suffix (PSTATE fields and friends).
AA64_UNSUFFIXED = frozenset(
    {
        "SPSel", "CurrentEL", "PAN", "UAO", "ALLINT", "PM", "NZCV", "DAIF", "SVCR", "DIT",
        "SSBS", "TCO", "FPCR", "FPSR", "FPMR", "SPSR_irq", "SPSR_abt", "SPSR_und", "SPSR_fiq",
        "RNDR", "RNDRRS",
    }
)  # fmt: skip


def test_name_conventions() -> None:
    for name in regnames.AA64.values():
        assert (
            re.search(r"_EL[0-3]$", name)
            or name in AA64_UNSUFFIXED
            or re.fullmatch(r"RES_3_0_C0_C[1-7]_[0-7]", name)
        ), name
    for name in [*regnames.AA32.values(), *regnames.AA32_64.values()]:
        assert not re.search(r"_EL[0-3]$", name), name
    # A 64-bit view whose name is taken by a 32-bit register gets the _64 suffix.
    plain32 = set(regnames.AA32.values())
    for name in regnames.AA32_64.values():
        if name.endswith("_64"):
            assert name[:-3] in plain32, name
        else:
            assert name not in plain32, name


def test_aliases_resolve_to_the_same_id() -> None:
    for alias, target in regnames.ALIASES.items():
        assert parse_register(alias) == parse_register(target)
    assert describe(parse_register("DBGDTRRXint")) == "DBGDTRTXint"


# --------------------------------------------------------------------------------------
# Coverage of real QEMU streams
# --------------------------------------------------------------------------------------
# Every cpreg id found in the ``cpu`` sections of TCG streams saved by QEMU 7.2.22
# (virt-7.2, cortex-a57), 10.0.2, 10.0.13 and 11.1.3 (virt-10.0; cortex-a57 and max;
# smp 1 and 2): the union of all of them, 365 ids.
_OBSERVED_STREAM_IDS_TEXT = """
    0x40200000000F6800 0x40200000000F6801 0x40200000200E0000 0x40200000200E0002 0x40200000200E0004
    0x40200000200E0005 0x40200000200E0006 0x40200000200E0007 0x40200000200E0038 0x40200000200E0084
    0x40200000200E0085 0x40200000200E0086 0x40200000200E0087 0x40200000200E0100 0x40200000200E0102
    0x40200000200E0104 0x40200000200E0105 0x40200000200E0106 0x40200000200E0107 0x40200000200E0182
    0x40200000200E0184 0x40200000200E0185 0x40200000200E0186 0x40200000200E0187 0x40200000200E0204
    0x40200000200E0205 0x40200000200E0280 0x40200000200E0284 0x40200000200E0285 0x40200000200E0298
    0x40200000200E0302 0x40200000200E0380 0x40200000200E0800 0x40200000200E0838 0x40200000200E0884
    0x40200000200E0984 0x40200000200E1000 0x40200000200E1038 0x40200000200E3800 0x40200000200E3801
    0x40200000200E3802 0x40200000200E3C86 0x40200000200F0001 0x40200000200F0002 0x40200000200F0003
    0x40200000200F0006 0x40200000200F0009 0x40200000200F000F 0x40200000200F0080 0x40200000200F0082
    0x40200000200F0083 0x40200000200F0084 0x40200000200F0085 0x40200000200F0086 0x40200000200F0087
    0x40200000200F0100 0x40200000200F0101 0x40200000200F0102 0x40200000200F0103 0x40200000200F0104
    0x40200000200F0105 0x40200000200F0106 0x40200000200F0107 0x40200000200F0180 0x40200000200F0181
    0x40200000200F0182 0x40200000200F0183 0x40200000200F0184 0x40200000200F0185 0x40200000200F0186
    0x40200000200F0187 0x40200000200F0200 0x40200000200F0280 0x40200000200F0300 0x40200000200F0380
    0x40200000200F0400 0x40200000200F0480 0x40200000200F0500 0x40200000200F0580 0x40200000200F0600
    0x40200000200F0680 0x40200000200F0700 0x40200000200F0780 0x40200000200F0801 0x40200000200F0802
    0x40200000200F0803 0x40200000200F0821 0x40200000200F0823 0x40200000200F0882 0x40200000200F1800
    0x40200000200F2801 0x40200000200F2880 0x40200000200F2881 0x40200000200F2923 0x40200000200F2980
    0x40200000200F3000 0x40200000200F3001 0x40200000200F3002 0x40200000200F3A00 0x40200000200F480A
    0x40200000200F480B 0x40200000200F4E03 0x40200000200F4E06 0x40200000200F4E07 0x40200000200F4F00
    0x40200000200F4F04 0x40200000200F4F05 0x40200000200F4F06 0x40200000200F5100 0x40200000200F5101
    0x40200000200F5180 0x40200000200F5181 0x40200000200F6001 0x40200000200F6002 0x40200000200F6081
    0x40200000200F60A1 0x40200000200F6800 0x40200000200F6801 0x40200000200F6802 0x40200000200F6803
    0x40200000200F6804 0x40200000200F7080 0x40200000200F7808 0x40200000200F7988 0x40300000200E0080
    0x40300000200E0100 0x40300000200F0380 0x40300000200F0780 0x40300000200F0788 0x40300000200F0790
    0x40300000200F0798 0x6030000000138002 0x6030000000138004 0x6030000000138005 0x6030000000138006
    0x6030000000138007 0x603000000013800C 0x603000000013800D 0x603000000013800E 0x603000000013800F
    0x6030000000138010 0x6030000000138012 0x6030000000138014 0x6030000000138015 0x6030000000138016
    0x6030000000138017 0x603000000013801A 0x603000000013801C 0x603000000013801D 0x603000000013801E
    0x603000000013801F 0x6030000000138024 0x6030000000138025 0x603000000013802C 0x603000000013802D
    0x6030000000138032 0x6030000000138080 0x603000000013808C 0x603000000013809C 0x60300000001383CE
    0x6030000000139808 0x6030000000139820 0x6030000000139828 0x603000000013A038 0x603000000013C006
    0x603000000013C008 0x603000000013C00A 0x603000000013C00B 0x603000000013C00C 0x603000000013C00D
    0x603000000013C00E 0x603000000013C00F 0x603000000013C010 0x603000000013C011 0x603000000013C012
    0x603000000013C013 0x603000000013C014 0x603000000013C015 0x603000000013C016 0x603000000013C017
    0x603000000013C018 0x603000000013C019 0x603000000013C01A 0x603000000013C01B 0x603000000013C01C
    0x603000000013C01D 0x603000000013C01E 0x603000000013C01F 0x603000000013C021 0x603000000013C022
    0x603000000013C023 0x603000000013C024 0x603000000013C025 0x603000000013C026 0x603000000013C027
    0x603000000013C028 0x603000000013C029 0x603000000013C02A 0x603000000013C02B 0x603000000013C02C
    0x603000000013C02D 0x603000000013C02E 0x603000000013C02F 0x603000000013C030 0x603000000013C031
    0x603000000013C032 0x603000000013C033 0x603000000013C034 0x603000000013C035 0x603000000013C036
    0x603000000013C037 0x603000000013C038 0x603000000013C039 0x603000000013C03A 0x603000000013C03B
    0x603000000013C03C 0x603000000013C03D 0x603000000013C03E 0x603000000013C03F 0x603000000013C080
    0x603000000013C081 0x603000000013C082 0x603000000013C083 0x603000000013C090 0x603000000013C094
    0x603000000013C096 0x603000000013C100 0x603000000013C101 0x603000000013C102 0x603000000013C103
    0x603000000013C108 0x603000000013C109 0x603000000013C10A 0x603000000013C10B 0x603000000013C110
    0x603000000013C111 0x603000000013C112 0x603000000013C113 0x603000000013C118 0x603000000013C119
    0x603000000013C128 0x603000000013C129 0x603000000013C12A 0x603000000013C288 0x603000000013C289
    0x603000000013C290 0x603000000013C298 0x603000000013C300 0x603000000013C4F1 0x603000000013C4F6
    0x603000000013C510 0x603000000013C511 0x603000000013C512 0x603000000013C513 0x603000000013C518
    0x603000000013C519 0x603000000013C520 0x603000000013C521 0x603000000013C522 0x603000000013C523
    0x603000000013C527 0x603000000013C600 0x603000000013C601 0x603000000013C602 0x603000000013C609
    0x603000000013C681 0x603000000013C684 0x603000000013C687 0x603000000013C708 0x603000000013C801
    0x603000000013C806 0x603000000013C807 0x603000000013CD82 0x603000000013CD83 0x603000000013CF80
    0x603000000013CF90 0x603000000013CF91 0x603000000013CF92 0x603000000013CF93 0x603000000013CF98
    0x603000000013D000 0x603000000013D801 0x603000000013D929 0x603000000013DA12 0x603000000013DA17
    0x603000000013DA20 0x603000000013DA21 0x603000000013DA22 0x603000000013DCE0 0x603000000013DCE1
    0x603000000013DCE5 0x603000000013DCE6 0x603000000013DCE7 0x603000000013DCE8 0x603000000013DE82
    0x603000000013DE83 0x603000000013DE85 0x603000000013DE87 0x603000000013DF00 0x603000000013DF11
    0x603000000013DF12 0x603000000013DF19 0x603000000013DF1A 0x603000000013DF40 0x603000000013DF41
    0x603000000013DF42 0x603000000013DF43 0x603000000013DF44 0x603000000013DF45 0x603000000013DF60
    0x603000000013DF61 0x603000000013DF62 0x603000000013DF63 0x603000000013DF64 0x603000000013DF65
    0x603000000013DF7F 0x603000000013E081 0x603000000013E083 0x603000000013E08C 0x603000000013E08D
    0x603000000013E08E 0x603000000013E090 0x603000000013E092 0x603000000013E095 0x603000000013E096
    0x603000000013E103 0x603000000013E110 0x603000000013E128 0x603000000013E129 0x603000000013E180
    0x603000000013E18C 0x603000000013E18D 0x603000000013E281 0x603000000013E293 0x603000000013E509
    0x603000000013E512 0x603000000013E513 0x603000000013E515 0x603000000013E519 0x603000000013E540
    0x603000000013E541 0x603000000013E542 0x603000000013E543 0x603000000013E547 0x603000000013E548
    0x603000000013E549 0x603000000013E609 0x603000000013E681 0x603000000013E687 0x603000000013E706
    0x603000000013F081 0x603000000013F083 0x603000000013F090 0x603000000013F096 0x603000000013F099
    0x603000000013F128 0x603000000013F129 0x603000000013F509 0x603000000013F510 0x603000000013F513
    0x603000000013F519 0x603000000013F551 0x603000000013F687 0x603000000013FF11 0x603000000013FF12
"""
OBSERVED_STREAM_IDS = [int(word, 16) for word in _OBSERVED_STREAM_IDS_TEXT.split()]


@pytest.mark.parametrize("name", REAL_STREAMS + KVM_STREAMS)
def test_every_printed_name_of_a_stream_register_parses_back(name: str) -> None:
    states = cpus(run_engine([real_stream(name)])[2])
    ids = {r for c in states for r in c.indexes}
    assert ids
    for reg_id in ids:
        assert parse_register(describe(reg_id)) == reg_id, format_id(reg_id)
        assert parse_register(decode(reg_id).text()) == reg_id, format_id(reg_id)
        reg_name = name_of(reg_id)
        assert reg_name is None or parse_register(reg_name) == reg_id, format_id(reg_id)


def test_every_register_seen_in_real_streams_has_a_name() -> None:
    assert len(set(OBSERVED_STREAM_IDS)) == 365
    unnamed = [format_id(i) for i in OBSERVED_STREAM_IDS if name_of(i) is None]
    assert unnamed == []


@pytest.mark.parametrize(
    ("reg_id", "name"),
    [
        (0x40200000000F6800, "FCSEIDR (S)"),
        (0x40200000000F6801, "CONTEXTIDR (S)"),
        (0x40200000200E0038, "JIDR"),
        (0x40200000200E3800, "BOGUS_DBGDEVID2"),
        (0x40200000200E3802, "BOGUS_DBGDEVID"),
        (0x40200000200F0180, "RES_0_C0_C3_0"),
        (0x40200000200F0780, "RES_0_C0_C15_0"),
        (0x40200000200F3001, "WFAR"),
        (0x40200000200F480A, "L2CTLR"),
        (0x40200000200F7988, "CBAR"),
        (0x40300000200E0080, "DBGDRAR_64"),
        (0x40300000200F0780, "CPUACTLR"),
        (0x603000000013C01B, "RES_3_0_C0_C3_3"),
        (0x603000000013CF98, "CBAR_EL1"),
        (0x603000000013E547, "MECIDR_EL2"),
        (0x603000000013F551, "MECID_RL_A_EL3"),
    ],
)
def test_names_of_qemu_specific_stream_registers(reg_id: int, name: str) -> None:
    assert describe(reg_id) == name
    assert parse_register(name) == reg_id
