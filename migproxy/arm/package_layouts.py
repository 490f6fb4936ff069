"""The layouts of the sections before the last ``cpu`` section in postcopy's package.

Postcopy sends the device state inside ``MIG_CMD_PACKAGED`` without a VM description
(:mod:`migproxy.stream.package`), so the engine frames the sections there by layouts
migproxy knows exactly. Under TCG with the ``virt`` machine the package starts with
``timer``, the two ``pflash_cfi01`` and each vCPU's ``cpu_common`` and ``cpu``
(``machvirt_init`` creates the vCPUs in one loop, so their sections follow each other);
a GICv2 and the other devices come after the last ``cpu`` and are kept byte for byte.
With GICv3 (``gic-version=3``; always under KVM on GICv3 hosts) ``arm_gicv3`` and
``arm_gicv3_its`` come first (their vmstate priority, ``MIG_PRI_GICV3`` and
``MIG_PRI_GICV3_ITS``, is above the others').

The GICv3's per-vCPU state is an array with no count on the wire
(``VMSTATE_STRUCT_VARRAY_POINTER_UINT32(cpu, GICv3State, num_cpu, ...)``: ``num_cpu`` is a
property of the device, the machine's vCPU count). Its end is exact all the same:

* the array is always followed by the subsection ``arm_gicv3/gicd_no_migration_shift_bug``
  (``needed`` always, since QEMU 3.0), so after the last element the stream holds
  ``05 26 "arm_gicv3/gicd_no_migration_shift_bug"``;
* every element starts with ``level``, the be32 bitmap of the redistributor's input lines
  INTID 0-31 (TCG: set by the devices wired to them; KVM: the line levels the kernel
  reports). Its first byte is INTIDs 31-24, its second INTIDs 23-16. ``05 26`` would need
  INTIDs 24, 26, 21, 18 and 17 high; on ``virt`` only INTID 23 (PMU), 25 (GIC maintenance)
  and 26-30 (the generic timers) are wired, so no element starts with that marker, whatever
  the guest does. The guest writes the other registers of an element (priorities, base
  registers), never ``level``;
* the element count so found must equal the number of vCPUs framed after it
  (``machvirt_init`` sets ``num-cpu`` to the number of vCPUs it creates), or the package is
  not framed.

An element's subsections (``arm_gicv3_cpu/virt`` with the virtualization extensions,
``arm_gicv3_cpu/sre_el1`` when ICC_SRE_EL1 is not 7, ``arm_gicv3_cpu/gicv4``,
``arm_gicv3_cpu/nmi``) are recognised by their marker and name where its fields end, as the
cpu's are.

Sources: ``vmstate_timers`` (system/cpu-timers.c), ``vmstate_pflash`` (hw/block/
pflash_cfi01.c), ``vmstate_cpu_common`` (hw/core/cpu-system.c), ``vmstate_arm_cpu``
(target/arm/machine.c, the field table of :mod:`migproxy.arm.cpu_layouts`),
``vmstate_gicv3`` (hw/intc/arm_gicv3_common.c) and ``vmstate_its``
(hw/intc/arm_gicv3_its_common.c), checked by tests against the VM descriptions of every
capture in tests/data (tests/data/kvm for the GICv3 under KVM) and against the captured
postcopy packages. Left out on purpose, so a package that has them is not framed:

* ``timer/icount`` (only with ``-icount``; it nests subsections of its own);
* ``pflash_cfi01_blk_write`` (a block write in progress: its buffer's size,
  ``writeblock_size``, is a property of the device, not on the wire).
"""

from __future__ import annotations

from collections.abc import Sequence

from migproxy.arm.cpu_layouts import ANY, CPU_SUBSECTIONS, CPU_V22_FIELDS, FieldShape
from migproxy.arm.cpu_section import F_IDX, F_LEN, F_VAL
from migproxy.stream.package import FieldLayout, PackageLayout, PackageLayouts, SectionLayout
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

GICV3_MAXIRQ = 1020
GICV3_BMP_SIZE = 32  # be32 words of a bitmap of GICV3_MAXIRQ bits
GICV3_LR_MAX = 16
GIC_INTERNAL = 32
GICV3_ARRAY_END = "arm_gicv3/gicd_no_migration_shift_bug"

GICV3_CPU_V1 = SectionLayout("arm_gicv3_cpu", 1, (
    FieldLayout("level", 4), FieldLayout("gicr_ctlr", 4), FieldLayout("gicr_statusr", 4, 2),
    FieldLayout("gicr_waker", 4), FieldLayout("gicr_propbaser", 8),
    FieldLayout("gicr_pendbaser", 8), FieldLayout("gicr_igroupr0", 4),
    FieldLayout("gicr_ienabler0", 4), FieldLayout("gicr_ipendr0", 4),
    FieldLayout("gicr_iactiver0", 4), FieldLayout("edge_trigger", 4),
    FieldLayout("gicr_igrpmodr0", 4), FieldLayout("gicr_nsacr", 4),
    FieldLayout("gicr_ipriorityr", 1, GIC_INTERNAL), FieldLayout("icc_ctlr_el1", 8, 2),
    FieldLayout("icc_pmr_el1", 8), FieldLayout("icc_bpr", 8, 3), FieldLayout("icc_apr", 8, 12),
    FieldLayout("icc_igrpen", 8, 3), FieldLayout("icc_ctlr_el3", 8)), (
    SectionLayout("arm_gicv3_cpu/virt", 1, (
        FieldLayout("ich_apr", 8, 12), FieldLayout("ich_hcr_el2", 8),
        FieldLayout("ich_lr_el2", 8, GICV3_LR_MAX), FieldLayout("ich_vmcr_el2", 8))),
    SectionLayout("arm_gicv3_cpu/sre_el1", 1, (FieldLayout("icc_sre_el1", 8),)),
    SectionLayout("arm_gicv3_cpu/gicv4", 1, (
        FieldLayout("gicr_vpropbaser", 8), FieldLayout("gicr_vpendbaser", 8))),
    SectionLayout("arm_gicv3_cpu/nmi", 1, (FieldLayout("gicr_inmir0", 4),))))

GICV3_V1 = SectionLayout("arm_gicv3", 1, (
    FieldLayout("gicd_ctlr", 4), FieldLayout("gicd_statusr", 4, 2),
    *(FieldLayout(name, 4, GICV3_BMP_SIZE) for name in (
        "group", "grpmod", "enabled", "pending", "active", "level", "edge_trigger")),
    FieldLayout("gicd_ipriority", 1, GICV3_MAXIRQ), FieldLayout("gicd_irouter", 8, GICV3_MAXIRQ),
    FieldLayout("gicd_nsacr", 4, (GICV3_MAXIRQ + 15) // 16),
    FieldLayout("cpu", 0, element=GICV3_CPU_V1, ends_before=GICV3_ARRAY_END)), (
    SectionLayout(GICV3_ARRAY_END, 1, (FieldLayout("gicd_no_migration_shift_bug", 1),)),
    SectionLayout("arm_gicv3/gicd_nmi", 1, (FieldLayout("nmi", 4, GICV3_BMP_SIZE),))))

GICV3_ITS_V0 = SectionLayout("arm_gicv3_its", 0, (
    FieldLayout("ctlr", 4), FieldLayout("iidr", 4), FieldLayout("cbaser", 8),
    FieldLayout("cwriter", 8), FieldLayout("creadr", 8), FieldLayout("baser", 8, 8)))

# (idstr, version) -> layout: the sections that come before the last cpu under virt.
SECTION_LAYOUTS: dict[tuple[str, int], SectionLayout] = {
    (layout.name, layout.version): layout
    for layout in (TIMER_V2, PFLASH_CFI01_V1, CPU_COMMON_V1, CPU_V22, GICV3_V1, GICV3_ITS_V0)
}


def vcpus_framed(pkg: PackageLayout) -> str | None:
    """None when the framed sections hold every vCPU: ``cpu_common`` and ``cpu`` of
    instances 0, 1, ... in turn, the framing stopped right after the last ``cpu``, and a
    GICv3 framed before them has one element of per-vCPU state for each."""
    framed = pkg.sections
    cpus = [s for s in framed if s.idstr in ("cpu", "cpu_common")]
    if not cpus or framed[-1].idstr != "cpu":
        return "the sections framed by known layouts do not end with a vCPU's cpu section"
    for i, s in enumerate(cpus):
        want = ("cpu_common", "cpu")[i % 2]
        if s.idstr != want or s.instance_id != i // 2:
            return (f"vCPU sections out of order: {s.idstr!r} instance {s.instance_id} "
                    f"where {want!r} instance {i // 2} was expected")
    return _gic_elements_match(pkg, framed, len(cpus) // 2)


def _gic_elements_match(pkg: PackageLayout, framed: Sequence[FullSection],
                        vcpus: int) -> str | None:
    for s in framed:
        if s.idstr == GICV3_V1.name:
            n = pkg.elements(s, "cpu")
            if n != vcpus:
                return (f"arm_gicv3 holds per-vCPU state for {n} vCPUs, the package "
                        f"{vcpus} vCPUs")
    return None


ARM_PACKAGE_LAYOUTS = PackageLayouts(SECTION_LAYOUTS, vcpus_framed)
