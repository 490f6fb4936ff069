"""``unlike_qemus``: is a description the one QEMU wrote for this stream? (Return path
only: there the end of the device state is recognised by content.)"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream.engine import StreamEngine
from migproxy.stream.vmdesc import StreamFacts, encode_description, unlike_qemus
from testkit.streams import DATA, real_stream

NAMES = sorted(p.name.removesuffix(".mig.xz") for p in DATA.glob("*.mig.xz"))


def _facts_and_description(name: str) -> tuple[StreamFacts, dict[str, Any], bytes]:
    data = real_stream(name)
    eng = StreamEngine(arm_engine_config(None))
    eng.feed(data)
    eng.feed_eof()
    assert eng.layout is not None
    fr = eng.framer
    facts = StreamFacts(fr.page_size, fr.machine, tuple(fr.config_subsections))
    desc = eng.layout.description
    raw = encode_description(desc)
    assert raw in data  # QEMU's own bytes, byte for byte
    return facts, desc, raw


@pytest.mark.parametrize("name", NAMES)
def test_every_captured_description_is_qemus(name: str) -> None:
    facts, desc, raw = _facts_and_description(name)
    assert unlike_qemus(raw, desc, facts) is None


def _config(d: dict[str, Any]) -> dict[str, Any]:
    return d["configuration"]


EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "page size": (lambda d: d.update(page_size=65536), "page_size 65536 differs"),
    "keys reordered": (lambda d: d.update(configuration=d.pop("configuration")),
                       "not in QEMU's order"),
    "unknown key": (lambda d: d.update(extra=1), "not in QEMU's order"),
    "machine name": (lambda d: _config(d)["fields"][1].update(size=4), "machine name of [4]"),
    "config subsections": (lambda d: _config(d).pop("subsections"), "lists subsections []"),
    "device without vmsd_name": (lambda d: d["devices"][0].pop("vmsd_name"), "lacks"),
    "field without type": (lambda d: d["devices"][0]["fields"][0].pop("type"), "lacks"),
    "array_len 1": (lambda d: d["devices"][0]["fields"].__setitem__(0, {
        "name": "x", "array_len": 1, "type": "uint64", "size": 8}), "array_len 1"),
    "field keys reordered": (lambda d: d["devices"][0]["fields"].__setitem__(
        0, dict(reversed(list(d["devices"][0]["fields"][0].items())))), "QEMU's order"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_anything_else_is_named(edit: str) -> None:
    facts, desc, _raw = _facts_and_description("v10.0.13-virt-10.0-cortex-a57-smp1")
    change, message = EDITS[edit]
    d = copy.deepcopy(desc)
    change(d)
    why = unlike_qemus(encode_description(d), d, facts)
    assert why is not None, why
    assert message in why, why


@pytest.mark.parametrize("text", [
    lambda d: json.dumps(d).replace(", ", ",", 1),  # another separator
    lambda d: json.dumps(d, separators=(",", ":")),  # compact
    lambda d: json.dumps(d, separators=(", ", ": ")) + " ",  # trailing whitespace
    lambda d: json.dumps(d, separators=(", ", ": ")).replace('"name"', '"n\\u0061me"', 1),
])
def test_the_json_must_be_qemus_serialisation(text: Callable[[dict[str, Any]], str]) -> None:
    facts, desc, _raw = _facts_and_description("v10.0.13-virt-10.0-cortex-a57-smp1")
    raw = text(desc).encode()
    assert json.loads(raw) == desc
    assert unlike_qemus(raw, desc, facts) == "the JSON is not byte for byte as QEMU writes it"


def test_a_description_without_configuration_is_fine_for_old_qemu() -> None:
    """QEMU 7.2 writes no configuration entry."""
    facts, desc, raw = _facts_and_description("v7.2.22-virt-7.2-cortex-a57-smp1")
    assert "configuration" not in desc
    assert unlike_qemus(raw, desc, facts) is None
