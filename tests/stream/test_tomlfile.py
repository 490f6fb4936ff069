"""Unit tests of :mod:`migproxy.stream.tomlfile`: the size cap and the nesting bound that
run before ``tomllib`` (hostile configuration and profile files, issue 17 L4/L5)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from migproxy.stream.tomlfile import (
    MAX_TOML_BYTES,
    MAX_TOML_NESTING,
    TomlFileError,
    load_toml_file,
    nesting,
    parse_toml,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "migproxy.example.toml"


@pytest.mark.parametrize(("text", "depth"), [
    ("", 0),
    ("a = 1\n", 0),
    ("[t]\na = 1\n", 1),
    ("[[route]]\nallow = []\n", 2),
    ("a = [[1], [2, [3]]]\n", 3),
    ('a = { b = { c = [1] } }\n', 3),
    ('a = "[[[[" # [[[[[\n', 0),
    ("a = '[[[[' \n", 0),
    ('a = "\\"[[["\n', 0),
    ('a = """\n[[[\n"""\n', 0),
    ('a = """x[""""\nb = [1]\n', 1),  # a multi-line string may end in extra quotes
    ("a = '''x[['''''\nb = [1]\n", 1),
    ('"k[" = [1]\n', 1),
])
def test_nesting_counts_brackets_outside_strings_and_comments(text: str, depth: int) -> None:
    assert nesting(text) == depth


def test_nesting_of_the_example_configuration() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert nesting(text) == 2
    assert parse_toml(text, "example") == tomllib.loads(text)


def test_deep_nesting_is_refused_before_parsing() -> None:
    n = 500
    text = "allow = " + "[" * n + '"x"' + "]" * n + "\n"
    with pytest.raises(TomlFileError, match=f"nested {n} deep, more than {MAX_TOML_NESTING}"):
        parse_toml(text, "f.toml")
    ok = MAX_TOML_NESTING
    assert parse_toml("a = " + "[" * ok + "1" + "]" * ok + "\n", "f.toml")["a"]


def test_a_file_larger_than_the_cap_is_refused_unread(tmp_path: Path) -> None:
    p = tmp_path / "big.toml"
    p.write_text("# x\n" * (MAX_TOML_BYTES // 4) + "a = 1\n", encoding="utf-8")
    with pytest.raises(TomlFileError, match=f"more than {MAX_TOML_BYTES} bytes"):
        load_toml_file(str(p))
    p.write_text("# x\n" * (MAX_TOML_BYTES // 4 - 2) + "a = 1\n", encoding="utf-8")
    assert load_toml_file(str(p)) == {"a": 1}


def test_dev_zero_is_refused_after_the_cap() -> None:
    with pytest.raises(TomlFileError, match="/dev/zero: more than"):
        load_toml_file("/dev/zero")


@pytest.mark.parametrize(("data", "match"), [
    (b"a = \xff\n", "not UTF-8 text"),
    (b"a = [\n", "invalid TOML"),
])
def test_bad_files(tmp_path: Path, data: bytes, match: str) -> None:
    p = tmp_path / "f.toml"
    p.write_bytes(data)
    with pytest.raises(TomlFileError, match=match):
        load_toml_file(str(p))
