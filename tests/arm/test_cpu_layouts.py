"""The cpu layouts migproxy knows field for field (migproxy.arm.cpu_layouts), against the
descriptions of the real captured streams."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from migproxy.arm.cpu_layouts import (
    ANY,
    CPU_SUBSECTIONS,
    CPU_V22_FIELDS,
    field_shapes,
    unknown_cpu_layout,
)
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream.engine import StreamEngine
from testkit.streams import DATA, real_stream

NAMES = sorted(p.name.removesuffix(".mig.xz") for p in DATA.glob("*.mig.xz"))


def cpu_entries(name: str) -> list[dict[str, Any]]:
    eng = StreamEngine(arm_engine_config(None))
    eng.feed(real_stream(name))
    eng.feed_eof()
    assert eng.layout is not None
    return [d for d in eng.layout.description["devices"] if d["name"] == "cpu"]


@pytest.fixture(scope="module")
def entries() -> dict[str, list[dict[str, Any]]]:
    return {n: cpu_entries(n) for n in NAMES}


def test_every_captured_cpu_entry_is_a_known_layout(
        entries: dict[str, list[dict[str, Any]]]) -> None:
    assert len(NAMES) == 6
    for name, cpus in entries.items():
        assert cpus, name
        for entry in cpus:
            assert unknown_cpu_layout(entry) is None, name


def test_the_table_is_what_qemu_wrote(entries: dict[str, list[dict[str, Any]]]) -> None:
    """Every subsection the captures hold is in the table exactly as written, and the
    top-level fields are the table's but for the cpreg arrays' counts."""
    seen: set[tuple[str, int]] = set()
    for cpus in entries.values():
        for entry in cpus:
            got = field_shapes(entry)
            assert [g[:1] + g[2:] for g in got] == [w[:1] + w[2:] for w in CPU_V22_FIELDS]
            assert [g[1] for g, w in zip(got, CPU_V22_FIELDS, strict=True) if w[1] != ANY] \
                == [w[1] for w in CPU_V22_FIELDS if w[1] != ANY]
            for sub in entry.get("subsections", []):
                key = (sub["vmsd_name"], sub["version"])
                assert field_shapes(sub) == CPU_SUBSECTIONS[key]
                seen.add(key)
    assert {("cpu/vfp", 3), ("cpu/sve", 1), ("cpu/irq-line-state", 1),
            ("cpu/wfxt-timer", 1), ("cpu/fpmr", 1)} <= seen


def _sub(entry: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in entry["subsections"] if s["vmsd_name"] == name)


MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "fewer xregs": (lambda e: e["fields"][1].update(array_len=31), "fields are not"),
    "a field dropped": (lambda e: e["fields"].pop(), "fields are not"),
    "a field added": (lambda e: e["fields"].append(
        {"name": "x", "type": "buffer", "size": 8}), "fields are not"),
    "wider pc": (lambda e: e["fields"][2].update(size=16), "fields are not"),
    "version": (lambda e: e.update(version=23), "version 23 has no known layout"),
    "vfp shortened": (lambda e: _sub(e, "cpu/vfp")["fields"].pop(), "'cpu/vfp' is not"),
    "vfp version": (lambda e: _sub(e, "cpu/vfp").update(version=4), "'cpu/vfp' version 4"),
    "sve fewer zregs": (lambda e: _sub(e, "cpu/sve")["fields"][0].update(array_len=1),
                        "'cpu/sve' is not"),
    "sve struct": (lambda e: _sub(e, "cpu/sve")["fields"][0]["struct"]["fields"][0]
                   .update(array_len=2), "'cpu/sve' is not"),
    "unknown subsection": (lambda e: e["subsections"].append(
        {"vmsd_name": "cpu/za", "version": 1, "fields": []}), "'cpu/za' version 1 has no"),
    "nested subsection": (lambda e: _sub(e, "cpu/vfp").update(
        subsections=[{"vmsd_name": "cpu/vfp/x", "version": 1}]), "subsections of its own"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_any_other_layout_is_not_known(entries: dict[str, list[dict[str, Any]]],
                                       mutation: str) -> None:
    change, message = MUTATIONS[mutation]
    entry = copy.deepcopy(entries["v11.1.3-virt-10.0-max-smp2"][0])
    change(entry)
    why = unknown_cpu_layout(entry)
    assert why is not None
    assert message in why


def test_without_cpreg_arrays_the_layout_is_still_known(
        entries: dict[str, list[dict[str, Any]]]) -> None:
    entry = copy.deepcopy(entries["v10.0.2-virt-10.0-cortex-a57-smp1"][0])
    entry["fields"] = [f for f in entry["fields"]
                       if f["name"] not in ("cpreg_vmstate_indexes", "cpreg_vmstate_values")]
    assert unknown_cpu_layout(entry) is None
