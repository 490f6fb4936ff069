"""Synthetic migration streams, generated chunk by chunk (for tests and benchmarks).

The streams follow the real grammar closely: header, configuration with target page bits,
a ``ram`` START with the block list, PART sections of page records (full pages, zero
pages, CONTINUE, optional multifd flushes), SWITCHOVER_START, the END section, a device
tail of FULL sections including ARM ``cpu`` sections with cpreg arrays, EOF, and a JSON VM
description that describes every tail byte. Nothing is held in memory beyond one section
of page records, so multi-GiB streams can be produced.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from migproxy.stream import wire

PAGE = 4096
BLOCK = b"mach-virt.ram"

# A small, realistic cpreg list (ascending ids); includes the bogus DBGDTRTX register.
DEFAULT_CPREGS: tuple[tuple[int, int], ...] = (
    (0x40200000200E0002, 0),  # DBGDTRRXext
    (0x40200000200E0182, 0),  # DBGDTRTXext
    (0x40200000200E0298, 0),  # BOGUS_DBGDTRTX
    (0x40200000200F0082, 0x03010066),  # ID_DFR0
    (0x6030000000139828, 0),  # DBGDTRTX_EL0
    (0x603000000013C000, 0x411FD070),  # MIDR_EL1
    (0x603000000013C005, 0x80000000),  # MPIDR_EL1
    (0x603000000013C030, 0x11120),  # ID_AA64ISAR0_EL1
    (0x603000000013C080, 0x00C50838),  # SCTLR_EL1
)


@dataclass
class SynthSpec:
    ram_bytes: int = 64 << 20  # size of the RAM block
    part_sections: int = 2
    full_pages: int = 64  # page records carrying data, spread over the PART sections
    zero_pages: int = 256
    multifd_flush: bool = False
    cpus: int = 1
    cpregs: tuple[tuple[int, int], ...] = DEFAULT_CPREGS
    tail_blob: int = 0  # bytes of an extra opaque device in the tail
    seed: int = 1
    page_patterns: list[bytes] = field(default_factory=list)  # guest data to place in pages
    return_path: bool = False  # send OPEN_RETURN_PATH after the configuration, as QEMU does
    # None: one full page every four records; a number: each page is independently zero
    # with this probability (fragmented guest memory), until one kind runs out
    zero_ratio: float | None = None


def _cstr(s: bytes) -> bytes:
    return bytes((len(s),)) + s


def _section_header(t: int, sid: int, idstr: bytes, inst: int, ver: int) -> bytes:
    return bytes((t,)) + struct.pack(">I", sid) + _cstr(idstr) + struct.pack(">II", inst, ver)


def _footer(sid: int) -> bytes:
    return bytes((wire.VM_SECTION_FOOTER,)) + struct.pack(">I", sid)


def _field(name: str, size: int, count: int = 1, typ: str = "uint64") -> dict[str, Any]:
    f: dict[str, Any] = {"name": name}
    if count > 1:
        f["array_len"] = count
    f["type"] = typ
    f["size"] = size
    return f


def cpu_payload(inst: int, cpregs: tuple[tuple[int, int], ...]) -> tuple[bytes, dict[str, Any]]:
    """A version-22 ``cpu`` section payload and its description entry."""
    rnd = random.Random(inst)
    n = len(cpregs)
    body = bytearray()
    fields: list[dict[str, Any]] = []

    def add(name: str, size: int, count: int = 1, typ: str = "uint64") -> None:
        for _ in range(count):
            body.extend(rnd.getrandbits(size * 8).to_bytes(size, "big"))
        fields.append(_field(name, size, count, typ))

    add("env.regs", 4, 16, "uint32")
    add("env.xregs", 8, 32)
    add("env.pc", 8)
    add("cpsr", 4, 1, "cpsr")
    add("env.spsr", 4, 1, "uint32")
    add("env.banked_spsr", 8, 8)
    add("env.banked_r13", 4, 8, "uint32")
    add("env.banked_r14", 4, 8, "uint32")
    add("env.usr_regs", 4, 5, "uint32")
    add("env.fiq_regs", 4, 5, "uint32")
    add("env.elr_el", 8, 4)
    add("env.sp_el", 8, 4)
    body += struct.pack(">i", n)
    fields.append(_field("cpreg_vmstate_array_len", 4, 1, "int32 le"))
    ids = [r for r, _ in cpregs]
    if ids != sorted(set(ids)):
        raise ValueError("cpreg ids must be strictly ascending")
    body += struct.pack(f">{n}Q", *ids)
    body += struct.pack(f">{n}Q", *(v for _, v in cpregs))
    if n:
        fields.append(_field("cpreg_vmstate_indexes", 8, n))
        fields.append(_field("cpreg_vmstate_values", 8, n))
    add("env.exclusive_addr", 8)
    add("env.exclusive_val", 8)
    add("env.exclusive_high", 8)
    body += bytes(8)
    fields.append(_field("unused", 8, 1, "unused_buffer"))
    add("env.exception.syndrome", 4, 1, "uint32")
    add("env.exception.fsr", 4, 1, "uint32")
    add("env.exception.vaddress", 8)
    add("gt_timer[GTIMER_PHYS]", 8, 1, "timer")
    add("gt_timer[GTIMER_VIRT]", 8, 1, "timer")
    body += b"\x00"
    fields.append(_field("power_state", 1, 1, "powered_off"))
    # One subsection, like cpu/irq-line-state.
    sub_name = b"cpu/irq-line-state"
    body += bytes((wire.VM_SUBSECTION,)) + _cstr(sub_name) + struct.pack(">I", 1)
    body += struct.pack(">I", 0)
    desc = {"name": "cpu", "instance_id": inst, "vmsd_name": "cpu", "version": 22,
            "fields": fields,
            "subsections": [{"vmsd_name": "cpu/irq-line-state", "version": 1,
                             "fields": [_field("env.irq_line_state", 4, 1, "uint32")]}]}
    return bytes(body), desc


def _device(name: str, inst: int, ver: int, payload: bytes,
            fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "instance_id": inst, "vmsd_name": name, "version": ver,
            "fields": fields, "_payload": payload}


def tail_devices(spec: SynthSpec) -> list[dict[str, Any]]:
    devs: list[dict[str, Any]] = []
    devs.append(_device("timer", 0, 2, bytes(24), [_field("cpu_ticks_offset", 8),
                                                    _field("dummy", 8),
                                                    _field("cpu_clock_offset", 8)]))
    for i in range(spec.cpus):
        devs.append(_device("cpu_common", i, 1, struct.pack(">II", 0, 0),
                            [_field("halted", 4, 1, "uint32"),
                             _field("interrupt_request", 4, 1, "uint32")]))
        payload, d = cpu_payload(i, spec.cpregs)
        d["_payload"] = payload
        devs.append(d)
    # A device with a nested struct field, like the GIC.
    inner = {"vmsd_name": "inner", "version": 1,
             "fields": [_field("a", 4, 1, "uint32"), _field("b", 2, 1, "uint16")]}
    devs.append({"name": "arm_gic", "instance_id": 0, "vmsd_name": "arm_gic", "version": 12,
                 "fields": [{"name": "irq", "array_len": 3, "type": "struct", "struct": inner,
                             "size": 6}, _field("enabled", 1, 1, "uint8")],
                 "_payload": bytes(range(19))})
    if spec.tail_blob:
        rnd = random.Random(spec.seed)
        blob = rnd.randbytes(spec.tail_blob)
        devs.append(_device("test-blob", 0, 1, blob,
                            [_field("data", spec.tail_blob, 1, "buffer")]))
    devs.append(_device("globalstate", 0, 1, struct.pack(">I", 7) + b"running",
                        [_field("size", 4, 1, "int32 equal"), _field("runstate", 7, 1,
                                                                     "buffer")]))
    return devs


def generate(spec: SynthSpec | None = None, *, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Yield the stream in pieces of about ``chunk`` bytes."""
    spec = spec or SynthSpec()
    rnd = random.Random(spec.seed)
    out = bytearray()
    header = struct.pack(">II", wire.FILE_MAGIC, wire.FILE_VERSION)
    header += bytes((wire.VM_CONFIGURATION,)) + struct.pack(">I", 9) + b"virt-10.0"
    header += bytes((wire.VM_SUBSECTION,)) + _cstr(b"configuration/target-page-bits")
    header += struct.pack(">II", 1, 12)
    if spec.return_path:
        header += bytes((wire.VM_COMMAND,)) + struct.pack(">HH", wire.CMD_OPEN_RETURN_PATH, 0)
    out += header
    sid_ram = 1
    out += _section_header(wire.VM_SECTION_START, sid_ram, b"ram", 0, 4)
    out += struct.pack(">Q", spec.ram_bytes | wire.RAM_MEM_SIZE)
    out += _cstr(BLOCK) + struct.pack(">Q", spec.ram_bytes)
    if spec.multifd_flush:
        out += struct.pack(">Q", wire.RAM_MULTIFD_FLUSH)
    out += struct.pack(">Q", wire.RAM_EOS) + _footer(sid_ram)
    pages = [rnd.randbytes(PAGE) for _ in range(4)]
    for pat in spec.page_patterns:
        pages.append((pat * (PAGE // max(1, len(pat)) + 1))[:PAGE])
    total_pages = spec.ram_bytes // PAGE
    n_sections = max(1, spec.part_sections)
    addr = 0
    first = True
    for s in range(n_sections):
        out += _section_header(wire.VM_SECTION_PART, sid_ram, b"", 0, 0)[:5]
        full = spec.full_pages // n_sections + (1 if s < spec.full_pages % n_sections else 0)
        zero = spec.zero_pages // n_sections + (1 if s < spec.zero_pages % n_sections else 0)
        k = 0
        while full or zero:
            if spec.zero_ratio is None:
                use_full = full and (not zero or k % 4 == 0)
            else:
                use_full = full and (not zero or rnd.random() >= spec.zero_ratio)
            flag = wire.RAM_PAGE if use_full else wire.RAM_ZERO
            word = (addr % total_pages) * PAGE | flag
            if first:
                out += struct.pack(">Q", word) + _cstr(BLOCK)
                first = False
            else:
                out += struct.pack(">Q", word | wire.RAM_CONTINUE)
            if use_full:
                out += pages[k % len(pages)]
                full -= 1
            else:
                out += b"\x00"
                zero -= 1
            addr += 1
            k += 1
            if len(out) >= chunk:
                yield bytes(out)
                out.clear()
        if spec.multifd_flush:
            out += struct.pack(">Q", wire.RAM_MULTIFD_FLUSH)
        out += struct.pack(">Q", wire.RAM_EOS) + _footer(sid_ram)
    out += bytes((wire.VM_COMMAND,)) + struct.pack(">HH", wire.CMD_SWITCHOVER_START, 0)
    out += bytes((wire.VM_SECTION_END,)) + struct.pack(">I", sid_ram)
    out += struct.pack(">Q", wire.RAM_EOS) + _footer(sid_ram)
    yield bytes(out)
    out.clear()
    tail = bytearray()
    devices = tail_devices(spec)
    sid = 2
    for d in devices:
        payload = d.pop("_payload")
        tail += _section_header(wire.VM_SECTION_FULL, sid, d["name"].encode(), d["instance_id"],
                                d["version"])
        tail += payload + _footer(sid)
        sid += 1
    desc = {"page_size": PAGE, "devices": devices}
    body = json.dumps(desc, separators=(", ", ": ")).encode()
    tail += bytes((wire.VM_EOF, wire.VM_VMDESCRIPTION)) + struct.pack(">I", len(body)) + body
    for i in range(0, len(tail), chunk):
        yield bytes(tail[i : i + chunk])


def build(spec: SynthSpec | None = None) -> bytes:
    """The whole stream in memory (small specs only)."""
    return b"".join(generate(spec))
