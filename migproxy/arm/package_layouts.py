"""The layouts of the sections before the last ``cpu`` section in postcopy's package.

Postcopy sends the device state inside ``MIG_CMD_PACKAGED`` without a VM description
(:mod:`migproxy.stream.package`), so the engine frames the sections there by layouts
migproxy knows exactly. Under TCG with the ``virt`` machine the package starts with
``timer``, the two ``pflash_cfi01`` and each vCPU's ``cpu_common`` and ``cpu``
(``machvirt_init`` creates the vCPUs in one loop, so their sections follow each other);
the interrupt controller and the other devices come after the last ``cpu`` and are kept
byte for byte. Under KVM with GICv3, ``arm_gicv3`` (its per-vCPU arrays have no count on
the wire) comes first: there is no layout for it here, so such a package is relayed
untouched (``postcopy_layout``).

Sources: ``vmstate_timers`` (system/cpu-timers.c), ``vmstate_pflash`` (hw/block/
pflash_cfi01.c), ``vmstate_cpu_common`` (hw/core/cpu-system.c) and ``vmstate_arm_cpu``
(target/arm/machine.c, the field table of :mod:`migproxy.arm.cpu_layouts`), checked by a
test against the VM descriptions of every capture in tests/data and against the captured
postcopy packages. Left out on purpose, so a package that has them is not framed:

* ``timer/icount`` (only with ``-icount``; it nests subsections of its own);
* ``pflash_cfi01_blk_write`` (a block write in progress: its buffer's size,
  ``writeblock_size``, is a property of the device, not on the wire).
"""

from __future__ import annotations

from collections.abc import Sequence

from migproxy.arm.cpu_layouts import ANY, CPU_SUBSECTIONS, CPU_V22_FIELDS, FieldShape
from migproxy.arm.cpu_section import F_IDX, F_LEN, F_VAL
from migproxy.stream.package import FieldLayout, PackageLayouts, SectionLayout
from migproxy.stream.vmdesc import FullSection

_CPREG_FIELDS = {12: F_LEN, 13: F_IDX, 14: F_VAL}  # their places in CPU_V22_FIELDS


def _fields(shapes: Sequence[FieldShape], names: dict[int, str] | None = None
            ) -> tuple[FieldLayout, ...]:
    """Field layouts from the cpu layout table's shapes (a struct of fixed size is that
    many bytes: none of the cpu's has subsections)."""
    out = []
    for i, (size, count, _struct) in enumerate(shapes):
        name = (names or {}).get(i, f"field{i}")
        if count == ANY:
            out.append(FieldLayout(name, size, count_field=F_LEN))
        else:
            out.append(FieldLayout(name, size, count))
    return tuple(out)


CPU_V22 = SectionLayout(
    "cpu", 22, _fields(CPU_V22_FIELDS, _CPREG_FIELDS),
    tuple(SectionLayout(name, version, _fields(shapes))
          for (name, version), shapes in CPU_SUBSECTIONS.items()))

TIMER_V2 = SectionLayout("timer", 2, (
    FieldLayout("cpu_ticks_offset", 8), FieldLayout("unused", 8),
    FieldLayout("cpu_clock_offset", 8)))

PFLASH_CFI01_V1 = SectionLayout("pflash_cfi01", 1, (
    FieldLayout("wcycle", 1), FieldLayout("cmd", 1), FieldLayout("status", 1),
    FieldLayout("counter", 8)))

CPU_COMMON_V1 = SectionLayout("cpu_common", 1, (
    FieldLayout("halted", 4), FieldLayout("interrupt_request", 4)), (
    SectionLayout("cpu_common/exception_index", 1, (FieldLayout("exception_index", 4),)),
    SectionLayout("cpu_common/crash_occurred", 1, (FieldLayout("crash_occurred", 1),))))

# (idstr, version) -> layout: the sections that come before the last cpu under TCG virt.
SECTION_LAYOUTS: dict[tuple[str, int], SectionLayout] = {
    (layout.name, layout.version): layout
    for layout in (TIMER_V2, PFLASH_CFI01_V1, CPU_COMMON_V1, CPU_V22)
}


def vcpus_framed(framed: Sequence[FullSection]) -> str | None:
    """None when the framed sections hold every vCPU: ``cpu_common`` and ``cpu`` of
    instances 0, 1, ... in turn, and the framing stopped right after the last ``cpu``."""
    cpus = [s for s in framed if s.idstr in ("cpu", "cpu_common")]
    if not cpus or framed[-1].idstr != "cpu":
        return "the sections framed by known layouts do not end with a vCPU's cpu section"
    for i, s in enumerate(cpus):
        want = ("cpu_common", "cpu")[i % 2]
        if s.idstr != want or s.instance_id != i // 2:
            return (f"vCPU sections out of order: {s.idstr!r} instance {s.instance_id} "
                    f"where {want!r} instance {i // 2} was expected")
    return None


ARM_PACKAGE_LAYOUTS = PackageLayouts(SECTION_LAYOUTS, vcpus_framed)
