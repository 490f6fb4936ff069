"""ARM system-register ids as they appear in QEMU's ``cpu`` migration state.

QEMU migrates the coprocessor/system register list of each vCPU as two arrays: 64-bit
register ids and 64-bit values.  The ids use KVM's ``KVM_REG_ARM*`` layout (QEMU's
``cpreg_to_kvm_id``), whatever the accelerator.  This module decodes, encodes, names and
parses those ids; it knows nothing about values.

Id layouts (every bit not named here must be zero, see :func:`decode`):

AArch64 system register::

    0x6030_0000_0013_0000 | op0 << 14 | op1 << 11 | crn << 7 | crm << 3 | op2

AArch32 coprocessor register (``size`` is ``0x0020...`` for a 32-bit MRC/MCR register and
``0x0030...`` for a 64-bit MRRC/MCRR one; 64-bit ones have ``crn == opc2 == 0`` and a 4-bit
``opc1``, 32-bit ones a 3-bit ``opc1``; ``ns`` is 1 for the non-secure instance, which is
the only one KVM knows and the one QEMU migrates unless the register is banked)::

    0x4000_0000_0000_0000 | size | ns << 29 | cp << 16 | crn << 11 | crm << 7 | opc1 << 3 | opc2

Other KVM register families (firmware pseudo-registers ``0x6030_0000_0014_xxxx``, firmware
feature bitmaps ``0x6030_0000_0016_xxxx``, the CCSIDR demultiplexer ``0x6020_0000_0011_xxxx``,
core and SVE registers) decode to :class:`OtherEncoding`.

Text forms (:meth:`text`, accepted back by :func:`parse_register`):

* AArch64: ``S3_0_C0_C6_0`` (the assembler's generic name),
* AArch32: ``cp15 crn0 crm1 opc1 0 opc2 2``; 64-bit: ``cp15 crm2 opc1 0 (64-bit)``;
  a secure (``ns == 0``) instance gets `` (S)`` appended,
* CCSIDR demultiplexer: ``KVM_REG_ARM_DEMUX_CCSIDR(3)`` (KVM's ``KVM_REG_ARM_DEMUX_ID_CCSIDR``
  with CSSELR value 3; this is also its name, see :func:`name_of`); the form printed before,
  ``KVM CCSIDR demux (CSSELR 3)``, is still accepted,
* other KVM families: ``KVM demultiplexed register 1 value 3``,
  ``KVM core register offset 0 (64-bit)``, ``KVM SVE register 1024 (2048-bit)``,
  ``KVM firmware register 7``, ``KVM firmware feature bitmap 9``.

Every text :func:`describe` prints is accepted back by :func:`parse_register` and gives the
same id.

Names come from :mod:`migproxy.arm.regnames` (see its docstring for the naming rules).  A secure
instance of a named AArch32 register is shown as ``NAME (S)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from migproxy.arm import regnames

# KVM id fields (linux/kvm.h, arch/arm64/include/uapi/asm/kvm.h, QEMU kvm-consts.h).
ARCH_MASK: Final = 0xFF00_0000_0000_0000
ARCH_ARM: Final = 0x4000_0000_0000_0000
ARCH_ARM64: Final = 0x6000_0000_0000_0000
SIZE_SHIFT: Final = 52
SIZE_MASK: Final = 0x00F0_0000_0000_0000
SIZE_U32: Final = 0x0020_0000_0000_0000
SIZE_U64: Final = 0x0030_0000_0000_0000
COPROC_SHIFT: Final = 16
COPROC_MASK: Final = 0x0FFF_0000

AA64_SYSREG_BASE: Final = ARCH_ARM64 | SIZE_U64 | (0x13 << COPROC_SHIFT)
AA32_NS_BIT: Final = 1 << 29

# ARM64 coprocessor-field values of the KVM register families.
KVM_ARM64_CORE: Final = 0x10
KVM_ARM64_DEMUX: Final = 0x11
KVM_ARM64_SYSREG: Final = 0x13
KVM_ARM64_FW: Final = 0x14
KVM_ARM64_SVE: Final = 0x15
KVM_ARM64_FW_FEAT_BMAP: Final = 0x16

_U64_MAX: Final = (1 << 64) - 1
# Bits an AArch32 id may use besides arch and size: ns, cp (4 bits), crn, crm, opc1, opc2.
_AA32_FIELD_BITS: Final = AA32_NS_BIT | (0xF << 16) | 0x7FFF
# Bits between the size field and the coprocessor field that must be zero in every id.
_RESERVED_BITS: Final = 0x000F_FFFF_F000_0000

# KVM_REG_ARM_DEMUX_ID_MASK / KVM_REG_ARM_DEMUX_VAL_MASK: bits 8..15 and 0..7 of the index.
DEMUX_ID_CCSIDR: Final = 0
DEMUX_CCSIDR_BASE: Final = ARCH_ARM64 | SIZE_U32 | (KVM_ARM64_DEMUX << COPROC_SHIFT)

_FAMILY_NAMES: Final = {
    KVM_ARM64_CORE: "KVM core register",
    KVM_ARM64_DEMUX: "KVM demultiplexed register",
    KVM_ARM64_FW: "KVM firmware register",
    KVM_ARM64_SVE: "KVM SVE register",
    KVM_ARM64_FW_FEAT_BMAP: "KVM firmware feature bitmap",
}


def _check_field(name: str, value: int, limit: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < limit:
        raise ValueError(f"{name} must be an integer in 0..{limit - 1}, got {value!r}")


@dataclass(frozen=True, slots=True)
class AArch64Encoding:
    """An AArch64 system register ``S<op0>_<op1>_C<crn>_C<crm>_<op2>``."""

    op0: int
    op1: int
    crn: int
    crm: int
    op2: int

    def __post_init__(self) -> None:
        _check_field("op0", self.op0, 4)
        _check_field("op1", self.op1, 8)
        _check_field("crn", self.crn, 16)
        _check_field("crm", self.crm, 16)
        _check_field("op2", self.op2, 8)

    def to_id(self) -> int:
        return (
            AA64_SYSREG_BASE
            | self.op0 << 14
            | self.op1 << 11
            | self.crn << 7
            | self.crm << 3
            | self.op2
        )

    def text(self) -> str:
        return f"S{self.op0}_{self.op1}_C{self.crn}_C{self.crm}_{self.op2}"

    def __str__(self) -> str:
        return self.text()


@dataclass(frozen=True, slots=True)
class AArch32Encoding:
    """An AArch32 coprocessor register (``is64``: accessed with MRRC/MCRR)."""

    cp: int
    crn: int
    crm: int
    opc1: int
    opc2: int
    is64: bool = False
    ns: bool = True

    def __post_init__(self) -> None:
        _check_field("cp", self.cp, 16)
        _check_field("crm", self.crm, 16)
        if not isinstance(self.is64, bool) or not isinstance(self.ns, bool):
            raise ValueError("is64 and ns must be booleans")
        if self.is64:
            _check_field("opc1", self.opc1, 16)
            if self.crn != 0 or self.opc2 != 0:
                raise ValueError(
                    f"a 64-bit AArch32 register has crn=0 and opc2=0, "
                    f"got crn={self.crn!r} opc2={self.opc2!r}"
                )
        else:
            _check_field("crn", self.crn, 16)
            _check_field("opc1", self.opc1, 8)
            _check_field("opc2", self.opc2, 8)

    def to_id(self) -> int:
        return (
            ARCH_ARM
            | (SIZE_U64 if self.is64 else SIZE_U32)
            | (AA32_NS_BIT if self.ns else 0)
            | self.cp << 16
            | self.crn << 11
            | self.crm << 7
            | self.opc1 << 3
            | self.opc2
        )

    def text(self) -> str:
        if self.is64:
            base = f"cp{self.cp} crm{self.crm} opc1 {self.opc1} (64-bit)"
        else:
            base = f"cp{self.cp} crn{self.crn} crm{self.crm} opc1 {self.opc1} opc2 {self.opc2}"
        return base if self.ns else base + " (S)"

    def __str__(self) -> str:
        return self.text()


@dataclass(frozen=True, slots=True)
class OtherEncoding:
    """A KVM register id outside the system-register families (firmware, demux, ...)."""

    raw: int

    def __post_init__(self) -> None:
        _validate_other(self.raw)

    @property
    def family(self) -> int:
        """The KVM coprocessor field (0x10 core, 0x11 demux, 0x14 firmware, ...)."""
        return (self.raw & COPROC_MASK) >> COPROC_SHIFT

    @property
    def size_bytes(self) -> int:
        return 1 << ((self.raw & SIZE_MASK) >> SIZE_SHIFT)

    @property
    def index(self) -> int:
        """The low 16 bits: register number within the family."""
        return self.raw & 0xFFFF

    def to_id(self) -> int:
        return self.raw

    @property
    def csselr(self) -> int | None:
        """The CSSELR value of a CCSIDR demultiplexer id, ``None`` for any other id."""
        if self.family == KVM_ARM64_DEMUX and self.index >> 8 == DEMUX_ID_CCSIDR:
            return self.index & 0xFF
        return None

    def text(self) -> str:
        family = self.family
        if family == KVM_ARM64_DEMUX:
            csselr = self.csselr
            if csselr is not None:
                return f"KVM_REG_ARM_DEMUX_CCSIDR({csselr})"
            return f"KVM demultiplexed register {self.index >> 8} value {self.index & 0xFF}"
        text = f"{_FAMILY_TEXT[family]} {self.index}"
        return text if family in _FIXED_SIZES else f"{text} ({self.size_bytes * 8}-bit)"

    def __str__(self) -> str:
        return self.text()


# Text of each KVM family for OtherEncoding.text (the demultiplexer has its own forms), and
# the sizes of the families whose size is fixed (the others print it).
_FAMILY_TEXT: Final = {
    KVM_ARM64_CORE: "KVM core register offset",
    KVM_ARM64_SVE: "KVM SVE register",
    KVM_ARM64_FW: "KVM firmware register",
    KVM_ARM64_FW_FEAT_BMAP: "KVM firmware feature bitmap",
}
_FIXED_SIZES: Final = {KVM_ARM64_FW: SIZE_U64, KVM_ARM64_FW_FEAT_BMAP: SIZE_U64,
                       KVM_ARM64_DEMUX: SIZE_U32}


Encoding = AArch64Encoding | AArch32Encoding | OtherEncoding


def _check_id(reg_id: int) -> None:
    if not isinstance(reg_id, int) or isinstance(reg_id, bool):
        raise TypeError(f"register id must be an int, got {type(reg_id).__name__}")
    if not 0 <= reg_id <= _U64_MAX:
        raise ValueError(f"register id {reg_id!r} is not an unsigned 64-bit value")


def _validate_other(raw: int) -> None:
    _check_id(raw)
    if raw & ARCH_MASK != ARCH_ARM64 or raw & _RESERVED_BITS:
        raise ValueError(f"{raw:#018x} is not a KVM ARM64 register id")
    family = (raw & COPROC_MASK) >> COPROC_SHIFT
    size = raw & SIZE_MASK
    if family not in _FAMILY_NAMES:
        raise ValueError(f"{raw:#018x}: unknown KVM register family {family:#x}")
    fixed = _FIXED_SIZES.get(family)
    if fixed is not None and size != fixed:
        bits = 8 << (fixed >> SIZE_SHIFT)
        raise ValueError(f"{raw:#018x}: a {_FAMILY_NAMES[family]} is {bits}-bit")
    if size >> SIZE_SHIFT > 8:
        raise ValueError(f"{raw:#018x}: invalid size field")


def decode(reg_id: int) -> Encoding:
    """Decode a 64-bit register id; raise ``ValueError`` if it is not well formed."""
    _check_id(reg_id)
    arch = reg_id & ARCH_MASK
    if arch == ARCH_ARM64:
        if reg_id & ~0xFFFF == AA64_SYSREG_BASE:
            return AArch64Encoding(
                op0=(reg_id >> 14) & 0x3,
                op1=(reg_id >> 11) & 0x7,
                crn=(reg_id >> 7) & 0xF,
                crm=(reg_id >> 3) & 0xF,
                op2=reg_id & 0x7,
            )
        if (reg_id & COPROC_MASK) >> COPROC_SHIFT == KVM_ARM64_SYSREG:
            raise ValueError(f"{reg_id:#018x}: AArch64 system register ids are 64-bit only")
        return OtherEncoding(reg_id)
    if arch == ARCH_ARM:
        size = reg_id & SIZE_MASK
        if size not in (SIZE_U32, SIZE_U64):
            raise ValueError(f"{reg_id:#018x}: AArch32 register size must be 32 or 64 bits")
        low = reg_id & ~(ARCH_MASK | SIZE_MASK)
        if low & ~_AA32_FIELD_BITS:
            raise ValueError(f"{reg_id:#018x}: bits set outside the AArch32 register fields")
        is64 = size == SIZE_U64
        crn = (low >> 11) & 0xF
        opc1 = (low >> 3) & 0xF
        opc2 = low & 0x7
        if is64 and (crn or opc2):
            raise ValueError(f"{reg_id:#018x}: 64-bit AArch32 register with crn/opc2 set")
        if not is64 and opc1 > 7:
            raise ValueError(f"{reg_id:#018x}: 32-bit AArch32 register with opc1 > 7")
        return AArch32Encoding(
            cp=(low >> 16) & 0xF,
            crn=crn,
            crm=(low >> 7) & 0xF,
            opc1=opc1,
            opc2=opc2,
            is64=is64,
            ns=bool(low & AA32_NS_BIT),
        )
    raise ValueError(f"{reg_id:#018x} is not an ARM register id (architecture {arch >> 56:#x})")


def encode_aa64(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    """Id of the AArch64 system register ``S<op0>_<op1>_C<crn>_C<crm>_<op2>``."""
    return AArch64Encoding(op0, op1, crn, crm, op2).to_id()


def encode_aa32(
    cp: int, crn: int, crm: int, opc1: int, opc2: int, *, is64: bool = False, ns: bool = True
) -> int:
    """Id of an AArch32 coprocessor register (for ``is64`` pass ``crn = opc2 = 0``)."""
    return AArch32Encoding(cp, crn, crm, opc1, opc2, is64=is64, ns=ns).to_id()


# --------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------
def _build_name_tables() -> tuple[dict[int, str], dict[str, int]]:
    by_id: dict[int, str] = {}
    for (op0, op1, crn, crm, op2), name in regnames.AA64.items():
        by_id[encode_aa64(op0, op1, crn, crm, op2)] = name
    for (cp, crn, crm, opc1, opc2), name in regnames.AA32.items():
        by_id[encode_aa32(cp, crn, crm, opc1, opc2)] = name
    for (cp, crm, opc1), name in regnames.AA32_64.items():
        by_id[encode_aa32(cp, 0, crm, opc1, 0, is64=True)] = name
    for reg_id, name in regnames.KVM.items():
        if not isinstance(decode(reg_id), OtherEncoding):
            raise ValueError(f"regnames.KVM entry {name} is not a KVM pseudo-register id")
        by_id[reg_id] = name
    by_name: dict[str, int] = {}
    for reg_id, name in by_id.items():
        key = name.upper()
        if key in by_name:
            raise ValueError(f"register name {name} is used twice in regnames")
        by_name[key] = reg_id
    for alias, target in regnames.ALIASES.items():
        key = alias.upper()
        if key in by_name or target.upper() not in by_name:
            raise ValueError(f"bad register alias {alias} -> {target}")
        by_name[key] = by_name[target.upper()]
    return by_id, by_name


_NAME_BY_ID, _ID_BY_NAME = _build_name_tables()

#: Read-only view of the name table: register id -> name.
REGISTER_NAMES: Final[Mapping[int, str]] = MappingProxyType(_NAME_BY_ID)

_SECURE_SUFFIX: Final = " (S)"


def name_of(reg_id: int) -> str | None:
    """Architectural name of ``reg_id``, or ``None`` if it is not in the table.

    A secure instance of a named AArch32 register is returned as ``"NAME (S)"``, a CCSIDR
    demultiplexer id as ``"KVM_REG_ARM_DEMUX_CCSIDR(<csselr>)"``.
    Raises ``ValueError`` if ``reg_id`` is not a well-formed id.
    """
    name = _NAME_BY_ID.get(reg_id)
    if name is not None:
        return name
    enc = decode(reg_id)
    if isinstance(enc, AArch32Encoding) and not enc.ns:
        ns_name = _NAME_BY_ID.get(reg_id | AA32_NS_BIT)
        if ns_name is not None:
            return ns_name + _SECURE_SUFFIX
    if isinstance(enc, OtherEncoding) and enc.csselr is not None:
        return enc.text()
    return None


def describe(reg_id: int) -> str:
    """The register's name if known, otherwise its generic text form."""
    name = name_of(reg_id)
    return name if name is not None else decode(reg_id).text()


def format_id(reg_id: int) -> str:
    """``0x`` and 16 upper-case hex digits, e.g. ``0x6030000000139820``."""
    _check_id(reg_id)
    return f"0x{reg_id:016X}"


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------
_HEX_RE: Final = re.compile(r"0x[0-9a-f]+(?:_[0-9a-f]+)*", re.IGNORECASE)
_DEC_RE: Final = re.compile(r"[0-9]+")
_AA64_RE: Final = re.compile(r"s([0-3])_([0-7])_c([0-9]+)_c([0-9]+)_([0-7])", re.IGNORECASE)
_AA32_RE: Final = re.compile(
    r"""cp(?P<cp>[0-9]+)
        (?:\s+crn\s*(?P<crn>[0-9]+))?
        \s+crm\s*(?P<crm>[0-9]+)
        \s+opc1\s*(?P<opc1>[0-9]+)
        (?:\s+opc2\s*(?P<opc2>[0-9]+))?
        (?P<is64>\s+\(?64-bit\)?)?
        (?P<secure>\s+\(s\))?""",
    re.IGNORECASE | re.VERBOSE,
)

# KVM families (after whitespace is collapsed to single spaces).
_DEMUX_CCSIDR_RE: Final = re.compile(
    r"kvm_reg_arm_demux(?:_id)?_ccsidr ?\( ?([0-9]+) ?\)"
    r"|kvm ccsidr demux \(csselr ([0-9]+)\)",  # the form printed before
    re.IGNORECASE,
)
_DEMUX_RE: Final = re.compile(r"kvm demultiplexed register ([0-9]+) value ([0-9]+)",
                              re.IGNORECASE)
_KVM_FAMILY_BY_TEXT: Final = {text.upper(): family for family, text in _FAMILY_TEXT.items()}
_KVM_FAMILY_RE: Final = re.compile(
    "(" + "|".join(re.escape(t) for t in _FAMILY_TEXT.values()) + r") ([0-9]+)"
    r"(?: \(([0-9]+)-bit\))?",
    re.IGNORECASE,
)

_PARSE_HELP: Final = (
    "expected a hex id (0x...), a decimal id, a register name, "
    "S<op0>_<op1>_C<crn>_C<crm>_<op2>, 'cp<n> crn<n> crm<n> opc1 <n> opc2 <n>' "
    "or 'cp<n> crm<n> opc1 <n> 64-bit', optionally followed by '(S)', "
    "KVM_REG_ARM_DEMUX_CCSIDR(<csselr>) or a KVM family text such as "
    "'KVM firmware register 7' or 'KVM core register offset 0 (64-bit)'"
)


def _id_from_number(text: str, value: int) -> int:
    try:
        decode(value)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid ARM register id: {exc}") from None
    return value


def _parse_aa32(text: str, m: re.Match[str]) -> int:
    is64 = m.group("is64") is not None
    ns = m.group("secure") is None
    crn, opc2 = m.group("crn"), m.group("opc2")
    if not is64 and (crn is None or opc2 is None):
        raise ValueError(f"{text!r}: a 32-bit AArch32 register needs crn and opc2")
    fields = [int(m.group(g) or 0) for g in ("cp", "crn", "crm", "opc1", "opc2")]
    try:
        return encode_aa32(*fields, is64=is64, ns=ns)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None


def _kvm_id(text: str, family: int, index: int, size: int) -> int:
    if index > 0xFFFF:
        raise ValueError(f"{text!r}: index {index} does not fit in 16 bits")
    return _id_from_number(text, ARCH_ARM64 | size | family << COPROC_SHIFT | index)


def _size_field(text: str, bits: int) -> int:
    for field_value in range(9):
        if 8 << field_value == bits:
            return field_value << SIZE_SHIFT
    raise ValueError(f"{text!r}: a KVM register is 8, 16, ... or 2048 bits, not {bits}")


def _parse_kvm(text: str, s: str) -> int | None:
    """The id of a KVM family text form (see :meth:`OtherEncoding.text`), or ``None``."""
    m = _DEMUX_CCSIDR_RE.fullmatch(s)
    if m:
        return _demux_id(text, DEMUX_ID_CCSIDR, int(m.group(1) or m.group(2)))
    m = _DEMUX_RE.fullmatch(s)
    if m:
        return _demux_id(text, int(m.group(1)), int(m.group(2)))
    m = _KVM_FAMILY_RE.fullmatch(s)
    if m is None:
        return None
    family = _KVM_FAMILY_BY_TEXT[m.group(1).upper()]
    fixed = _FIXED_SIZES.get(family)
    if m.group(3) is not None:
        size = _size_field(text, int(m.group(3)))
    elif fixed is not None:
        size = fixed
    else:
        raise ValueError(f"{text!r}: give the size, e.g. '{m.group(0)} (64-bit)'")
    return _kvm_id(text, family, int(m.group(2)), size)


def _demux_id(text: str, demux_id: int, value: int) -> int:
    if demux_id > 0xFF or value > 0xFF:
        raise ValueError(f"{text!r}: demultiplexer id and value are 8-bit")
    return _kvm_id(text, KVM_ARM64_DEMUX, demux_id << 8 | value, SIZE_U32)


def parse_register(text: str) -> int:
    """Parse a register given as id, name or encoding text and return its 64-bit id.

    Accepted: ``0x6030000000139820`` (hex id), ``6931039826524297248`` (decimal id), a
    name from the table or an alias (case-insensitive; ``NAME (S)`` for the secure
    instance of an AArch32 register), ``S3_0_C0_C6_0``, ``cp14 crn0 crm5 opc1 3 opc2 0``,
    ``cp15 crm2 opc1 0 (64-bit)``, each optionally followed by ``(S)``, and the KVM
    family forms of :meth:`OtherEncoding.text` (``KVM_REG_ARM_DEMUX_CCSIDR(3)``, also the
    older ``KVM CCSIDR demux (CSSELR 3)``; ``KVM firmware register 7``...).
    Raises ``ValueError`` with an explanation for anything else.
    """
    if not isinstance(text, str):
        raise TypeError(f"register text must be a str, got {type(text).__name__}")
    s = " ".join(text.split())
    if not s:
        raise ValueError(f"empty register text; {_PARSE_HELP}")
    if _HEX_RE.fullmatch(s):
        return _id_from_number(text, int(s, 16))
    if _DEC_RE.fullmatch(s):
        return _id_from_number(text, int(s))
    reg_id = _ID_BY_NAME.get(s.upper())
    if reg_id is not None:
        return reg_id
    if s.upper().endswith(_SECURE_SUFFIX):
        base_id = _ID_BY_NAME.get(s[: -len(_SECURE_SUFFIX)].rstrip().upper())
        if base_id is not None:
            enc = decode(base_id)
            if not isinstance(enc, AArch32Encoding):
                raise ValueError(f"{text!r}: only AArch32 registers have a secure instance")
            return base_id & ~AA32_NS_BIT
    m = _AA64_RE.fullmatch(s)
    if m:
        try:
            return encode_aa64(*(int(g) for g in m.groups()))
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
    m = _AA32_RE.fullmatch(s)
    if m:
        return _parse_aa32(text, m)
    kvm_id = _parse_kvm(text, s)
    if kvm_id is not None:
        return kvm_id
    raise ValueError(f"unknown register {text!r}; {_PARSE_HELP}")


# --------------------------------------------------------------------------------------
# Identification registers
# --------------------------------------------------------------------------------------
# Constant identification registers outside the crn=0 ID spaces.
_EXTRA_ID_NAMES: Final = (
    "LORID_EL1",
    "ERRIDR_EL1",
    "PMCEID0_EL0",
    "PMCEID1_EL0",
    "PMMIR_EL1",
    "MPAMIDR_EL1",
    "PMSIDR_EL1",
    "PMBIDR_EL1",
    "TRBIDR_EL1",
    "BRBIDR0_EL1",
    "ICH_VTR_EL2",
    "MECIDR_EL2",
    "ERRIDR",
    "PMCEID0",
    "PMCEID1",
    "PMCEID2",
    "PMCEID3",
    "PMMIR",
    "ICH_VTR",
    "DBGDIDR",
    "DBGDEVID",
    "DBGDEVID1",
    "DBGDEVID2",
    "BOGUS_DBGDEVID",
    "BOGUS_DBGDEVID1",
    "BOGUS_DBGDEVID2",
    "JIDR",
)
_EXTRA_ID_REGS: Final = frozenset(_ID_BY_NAME[n.upper()] for n in _EXTRA_ID_NAMES)


def is_id_register(reg_id: int) -> bool:
    """True for constant identification (feature ID) registers.

    A value difference in one of these between two QEMU versions is a CPU feature
    difference, not guest state.  Covered: AArch64 ``op0=3, op1=0, crn=0, crm=0..7``
    (MIDR/MPIDR/REVIDR and every ID_* / MVFR* register, allocated or reserved),
    ``op0=3, op1=1, crn=0, crm=0`` (CCSIDR, CLIDR, CCSIDR2, GMID, SMIDR, AIDR),
    ``op0=3, op1=3, crn=0, crm=0`` (CTR_EL0, DCZID_EL0); AArch32 32-bit cp15
    ``crn=0, opc1=0/1`` (MIDR, CTR, TCMTR, TLBTR, MPIDR, REVIDR, ID_*, CCSIDR, CLIDR,
    AIDR); and the ID registers of other blocks (PMCEID*, PMMIR, ERRIDR, LORID, MPAMIDR,
    SPE/TRBE/BRBE ID registers, MECIDR_EL2, ICH_VTR, cp14 DBGDIDR, DBGDEVID* (also at QEMU's wrong
    encodings) and JIDR).
    """
    enc = decode(reg_id)
    if reg_id in _EXTRA_ID_REGS:
        return True
    if isinstance(enc, AArch64Encoding):
        return (
            enc.op0 == 3
            and enc.crn == 0
            and ((enc.op1 == 0 and enc.crm <= 7) or (enc.op1 in (1, 3) and enc.crm == 0))
        )
    if isinstance(enc, AArch32Encoding):
        return enc.cp == 15 and not enc.is64 and enc.crn == 0 and enc.opc1 in (0, 1)
    return False
