"""``migproxy inspect``: what a saved migration stream holds, byte by byte."""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from typing import Any

from migproxy.arm.events import CpuSeen
from migproxy.arm.registers import describe, format_id
from migproxy.stream.events import ItemFramed
from migproxy.tools.offline import run_file
from migproxy.tools.saveimage import SaveImage


def inspect_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Frame a stream file and report every item, the RAM statistics and each CPU's cpregs.

    ``accounted`` is true when the items cover the stream from its first to its last byte
    with no gap and no overlap. For a libvirt save image, ``save_image`` describes the
    header and the offsets and sizes are the QEMU stream's inside it. For a file in the
    mapped-ram layout, ``mapped_ram`` lists each RAM block's header and region at the
    file's own offsets (the regions are inside the ``ram`` START section's item).
    """
    run = run_file(path)
    items = [e for e in run.events if isinstance(e, ItemFramed)]
    items.sort(key=lambda e: e.offset)
    gaps: list[dict[str, int]] = []
    pos = 0
    for it in items:
        if it.offset != pos:
            gaps.append({"offset": pos, "size": it.offset - pos})
        pos = it.offset + it.size
    if pos != run.size:
        gaps.append({"offset": pos, "size": run.size - pos})
    stop = run.stop
    fr = run.engine.framer
    cpus = []
    for e in run.events:
        if isinstance(e, CpuSeen):
            c = e.cpu
            cpus.append({
                "instance_id": c.instance_id,
                "section_offset": c.section_offset,
                "count": len(c.indexes),
                "registers": [{"id": format_id(i), "name": describe(i), "value": f"0x{v:x}"}
                              for i, v in zip(c.indexes, c.values, strict=True)],
            })
    stats = asdict(fr.stats)
    return {
        "file": str(path),
        "size": run.size,
        "save_image": None if run.save_image is None else _save_image_dict(run.save_image),
        "complete": run.complete,
        "accounted": run.complete and not gaps,
        "gaps": gaps,
        "stopped": None if stop is None else {"reason": str(stop.reason), "message": stop.message,
                                              "offset": stop.offset},
        "machine": fr.machine,
        "page_size": fr.page_size,
        "capabilities": fr.capabilities,
        "commands": fr.commands_seen,
        "mapped_ram": None if not fr.mapped_ram else [
            {"block": b.name, "used_length": b.used_length, "header_offset": b.header_offset,
             "bitmap_offset": b.bitmap_offset, "pages_offset": b.pages_offset,
             "region_end": b.region_end, "ignored": b.ignored}
            for b in fr.mapped_ram_blocks],
        "ram": stats,
        "items": [_item_dict(it) for it in items],
        "cpus": cpus,
    }


def _save_image_dict(image: SaveImage) -> dict[str, Any]:
    h = image.header
    return {
        "format": h.format.label,
        "version": h.version,
        "byte_order": "little" if h.byteorder == "<" else "big",
        "was_running": bool(h.was_running),
        "data_len": h.data_len,
        "xml_bytes": len(image.xml.encode()),
        "cookie_bytes": None if image.cookie is None else len(image.cookie.encode()),
        "domain": image.domain,
        "stream_offset": h.stream_offset,
    }


def _item_dict(it: ItemFramed) -> dict[str, Any]:
    """An item as JSON: offset, size, kind, then its own fields (those that are set)."""
    out: dict[str, Any] = {"offset": it.offset, "size": it.size, "kind": it.kind}
    for f in fields(it):
        if f.name not in out:
            v = getattr(it, f.name)
            if v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def _item_line(it: dict[str, Any]) -> str:
    kind = str(it["kind"])
    head = f"{it['offset']:>10}  {it['size']:>9}  "
    if kind == "section":
        text = (f"{it['type']:<5} sid {it['section_id']:<3} {it['idstr']} "
                f"inst {it['instance_id']} v{it['version_id']}")
        if it["idstr"] == "ram" and "pages" in it:
            text += (f"  pages {it['pages']} zero {it['zero_pages']}"
                     + (f" xbzrle {it['xbzrle_pages']}" if it["xbzrle_pages"] else "")
                     + (f" flush {it['multifd_flushes']}" if it["multifd_flushes"] else ""))
        return head + text
    if kind == "command":
        extra = f" {it['value']}" if "value" in it else ""
        return f"{head}COMMAND {it['command']}{extra}"
    if kind == "configuration":
        return head + f"CONFIGURATION machine {it.get('machine')} page size {it.get('page_size')}"
    if kind == "package_rest":
        return head + "PACKAGE REST (the devices after the last cpu, kept byte for byte)"
    if kind == "vmdescription":
        return head + f"VMDESCRIPTION ({it['length']} bytes of JSON)"
    return f"{head}{kind.upper()}"


def format_report(rep: dict[str, Any], *, registers: bool = True) -> str:
    lines = []
    img = rep["save_image"]
    if img is not None:
        lines.append(f"{rep['file']}: libvirt save image, domain {img['domain']}, format "
                     f"{img['format']}, was running: {'yes' if img['was_running'] else 'no'}, "
                     f"XML area {img['data_len']} bytes, the QEMU stream from offset "
                     f"{img['stream_offset']}; the offsets below are the stream's"
                     + ("" if img["format"] in ("raw", "sparse") else ", decompressed"))
    lines.append(f"{rep['file']}: {rep['size']} bytes, machine {rep['machine']}, "
                 f"page size {rep['page_size']}")
    lines.append(f"{'offset':>10}  {'size':>9}  item")
    lines.extend(_item_line(it) for it in rep["items"])
    for b in rep["mapped_ram"] or ():
        lines.append(f"mapped-ram {b['block']} 0x{b['used_length']:x}: "
                     + ("left out (x-ignore-shared)" if b["ignored"] else
                        f"header at {b['header_offset']}, bitmap at {b['bitmap_offset']}, "
                        f"pages at {b['pages_offset']} to {b['region_end']}")
                     + " (file offsets)")
    ram = rep["ram"]
    lines.append(f"RAM: {ram['pages']} pages ({ram['page_bytes']} bytes), {ram['zero_pages']} "
                 f"zero pages, {ram['xbzrle_pages']} XBZRLE, {ram['compressed_pages']} "
                 f"compressed, {ram['multifd_flushes']} multifd flushes; blocks: "
                 + ", ".join(f"{k} 0x{v:x}" for k, v in ram["blocks"].items()))
    for cpu in rep["cpus"]:
        lines.append(f"cpu {cpu['instance_id']}: {cpu['count']} cpregs")
        if registers:
            for r in cpu["registers"]:
                lines.append(f"  {r['id']}  {r['name']:<32} {r['value']}")
    if rep["accounted"]:
        lines.append(f"all {rep['size']} bytes accounted for")
    else:
        if rep["stopped"]:
            s = rep["stopped"]
            lines.append(f"NOT fully understood ({s['reason']}): {s['message']}")
        for g in rep["gaps"]:
            lines.append(f"unaccounted: {g['size']} bytes at offset {g['offset']}")
    return "\n".join(lines)
