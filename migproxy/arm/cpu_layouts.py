"""The layouts of the ARM ``cpu`` section that migproxy knows field for field.

With the return path, the end of the device state is recognised by content, and the
largest stretches of bytes a guest controls in the whole device state are in its cpu
section: the general registers (``env.regs``, ``env.xregs``: 320 bytes), the FP/SIMD
registers (``cpu/vfp``: 512 bytes) and, with SVE, the rest of the vector and predicate
registers (``cpu/sve``: 4,128 bytes). A guest that writes a VM description there can make
it frame the bytes before it only by describing its own cpu section as ending inside one
of those registers, i.e. with a field, a count or a subsection that QEMU does not write.
So a candidate description is taken only when every cpu entry is one of the layouts below,
with the element size and count of every field and the name, version and fields of every
subsection exactly as QEMU writes them (field names are not compared: 7.2 writes
``gt_timer[0]`` where 10.0 writes ``gt_timer[GTIMER_PHYS]``).

Source: ``vmstate_arm_cpu`` and its subsections in QEMU's target/arm/machine.c, and the
descriptions of the real streams in tests/data (QEMU 7.2.22, 10.0.2, 10.0.13, 11.1.3;
cortex-a57 and max), which a test checks against this table. A subsection that is not in
the table (for example ``cpu/za`` of a guest using SME) makes the end unrecognisable by
content: the stream is then released untouched when no byte follows for a second
(``device_state_not_framed``), exactly as a migration without migproxy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# A field's shape: (element size, element count, struct shape or None); a struct shape is
# (vmsd_name, version, field shapes).
FieldShape = tuple[int, int, "StructShape | None"]
StructShape = tuple[str, int, tuple[FieldShape, ...]]

ANY = -1  # the cpreg arrays: their count is the section's own, checked by cpu_section

# vmstate_arm_cpu version 22, top-level fields in order (7.2 through 11.1).
CPU_V22_FIELDS: tuple[FieldShape, ...] = (
    (4, 16, None), (8, 32, None), (8, 1, None),  # env.regs, env.xregs, env.pc
    (4, 1, None), (4, 1, None),  # cpsr, env.spsr
    (8, 8, None), (4, 8, None), (4, 8, None),  # banked_spsr, banked_r13, banked_r14
    (4, 5, None), (4, 5, None), (8, 4, None), (8, 4, None),  # usr, fiq, elr_el, sp_el
    (4, 1, None), (8, ANY, None), (8, ANY, None),  # cpreg count, indexes, values
    (8, 1, None), (8, 1, None), (8, 1, None), (8, 1, None),  # exclusive_*, unused
    (4, 1, None), (4, 1, None), (8, 1, None),  # exception syndrome, fsr, vaddress
    (8, 1, None), (8, 1, None), (1, 1, None),  # gt_timer phys, virt, power_state
)

_VFP_FIELDS: tuple[FieldShape, ...] = ((8, 2, None),) * 32 + (
    (4, 1, None), (4, 14, None), (4, 1, None))  # xregs[0], xregs[2..15], fpscr

# Subsections of vmstate_arm_cpu: (name, version) -> field shapes.
CPU_SUBSECTIONS: dict[tuple[str, int], tuple[FieldShape, ...]] = {
    ("cpu/vfp", 3): _VFP_FIELDS,
    ("cpu/sve", 1): (
        (112, 32, ("cpu/sve/zreg_hi", 1, ((8, 14, None),))),
        (32, 17, ("cpu/sve/preg", 1, ((8, 4, None),))),
    ),
    ("cpu/serror", 1): ((1, 1, None), (1, 1, None), (8, 1, None)),
    ("cpu/irq-line-state", 1): ((4, 1, None),),
    ("cpu/thumb2ee", 1): ((4, 1, None), (4, 1, None)),
    ("cpu/wfxt-timer", 1): ((8, 1, None),),
    ("cpu/fpmr", 1): ((8, 1, None),),
}

CPU_LAYOUTS: dict[int, tuple[FieldShape, ...]] = {22: CPU_V22_FIELDS}


def _shape(f: Mapping[str, Any]) -> FieldShape:
    s = f.get("struct")
    struct: StructShape | None = None
    if isinstance(s, Mapping):
        struct = (str(s.get("vmsd_name")), _num(s.get("version")),
                  tuple(_shape(g) for g in s.get("fields", []) if isinstance(g, Mapping)))
        if s.get("subsections"):
            struct = ("<struct with subsections>", -2, ())
    return (_num(f.get("size")), _num(f.get("array_len", 1)), struct)


def _num(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else -2


def field_shapes(entry: Mapping[str, Any]) -> tuple[FieldShape, ...]:
    """The shapes of an entry's fields, as compared with the table."""
    return tuple(_shape(f) for f in entry.get("fields", []) if isinstance(f, Mapping))


def _fields_match(got: tuple[FieldShape, ...], want: tuple[FieldShape, ...]) -> bool:
    if len(got) != len(want):
        return False
    return all((w[1] == ANY and g[0] == w[0] and g[2] == w[2]) or g == w
               for g, w in zip(got, want, strict=True))


def unknown_cpu_layout(entry: Mapping[str, Any]) -> str | None:
    """None if the cpu device entry is a known layout field for field; else why not."""
    version = entry.get("version")
    want = CPU_LAYOUTS.get(version) if isinstance(version, int) else None
    if want is None:
        return f"cpu section version {version!r} has no known layout"
    got = field_shapes(entry)
    if not _fields_match(got, want):
        # Without cpreg arrays (a count of 0) QEMU writes neither array entry.
        bare = tuple(w for w in want if w[1] != ANY)
        if not _fields_match(got, bare):
            return "the cpu entry's fields are not vmstate_arm_cpu's (size or count differs)"
    for sub in entry.get("subsections", []):
        if not isinstance(sub, Mapping):
            return "a cpu subsection entry is not an object"
        key = (sub.get("vmsd_name"), sub.get("version"))
        known = CPU_SUBSECTIONS.get(key)  # type: ignore[arg-type]
        if known is None:
            return f"cpu subsection {key[0]!r} version {key[1]!r} has no known layout"
        if sub.get("subsections"):
            return f"cpu subsection {key[0]!r} has subsections of its own"
        if field_shapes(sub) != known:
            return f"cpu subsection {key[0]!r} is not the known layout"
    return None
