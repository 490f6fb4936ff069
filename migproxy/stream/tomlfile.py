"""Reading a TOML file an operator names (a configuration, a profile) within bounds.

A file is read with a size cap (:data:`MAX_TOML_BYTES`), so ``/dev/zero`` or a runaway
file is refused after 1 MiB instead of being read forever, and its inline arrays and
tables may nest at most :data:`MAX_TOML_NESTING` deep, checked before ``tomllib`` parses
it (``tomllib`` recurses once per level: a file nested 500 deep would end in a
``RecursionError``). Every refusal is a :class:`TomlFileError` whose message names the
file; callers turn it into their own error (exit code 2).
"""

from __future__ import annotations

import tomllib
from typing import Any

from migproxy.stream.errors import MigproxyError

MAX_TOML_BYTES = 1 << 20
"""Bytes of a configuration or profile file read at most (1 MiB). The shipped example
configuration is about 10 KiB and a profile a few KiB: a larger file is a mistake (a
device, a wrong path) rather than a configuration."""

MAX_TOML_NESTING = 32
"""Inline arrays and tables nested at most this deep (``allow = [[["x"]]]`` is 3). No
setting nests deeper than 2."""


class TomlFileError(MigproxyError):
    """A TOML file cannot be read or parsed: unreadable, too large, not UTF-8, nested too
    deep or not TOML."""


def read_capped(path: str, what: str, cap: int = MAX_TOML_BYTES) -> bytes:
    """The bytes of ``path``, at most ``cap`` of them; more is an error (never read on)."""
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise TomlFileError(f"cannot read {what}{path}: {e.strerror or e}") from None
    if len(data) > cap:
        raise TomlFileError(f"{path}: more than {cap} bytes, too large for a "
                            f"{what.strip() or 'configuration'} file")
    return data


def nesting(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings and comments (a table header
    ``[[route]]`` counts 2). Cheap and iterative: it runs before the recursive parser."""
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(depth - 1, 0)
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c in "\"'":
            i = _string_end(text, i)
            continue
        i += 1
    return deepest


def _string_end(text: str, i: int) -> int:
    """The index after the string that starts at ``text[i]`` (basic, literal or
    multi-line; an unterminated one runs to the end, which the parser then refuses)."""
    q = text[i]
    n = len(text)
    if text.startswith(q * 3, i):  # multi-line: ends at the last 3 of a run of quotes
        j = i + 3
        while j < n:
            if q == '"' and text[j] == "\\":
                j += 2
                continue
            if text.startswith(q * 3, j):
                run = 3
                while j + run < n and text[j + run] == q and run < 5:
                    run += 1
                return j + run
            j += 1
        return n
    j = i + 1
    while j < n and text[j] != "\n":
        if q == '"' and text[j] == "\\":
            j += 2
            continue
        if text[j] == q:
            return j + 1
        j += 1
    return j


def parse_toml(text: str, source: str, *, max_nesting: int = MAX_TOML_NESTING) -> dict[str, Any]:
    """``tomllib.loads(text)``, refusing nesting deeper than ``max_nesting`` first."""
    deepest = nesting(text)
    if deepest > max_nesting:
        raise TomlFileError(f"{source}: arrays or tables nested {deepest} deep, more than "
                            f"{max_nesting}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TomlFileError(f"{source}: invalid TOML: {e}") from None
    except RecursionError:  # not expected below max_nesting; never a traceback
        raise TomlFileError(f"{source}: arrays or tables nested too deep") from None


def load_toml_file(path: str, what: str = "") -> dict[str, Any]:
    """Read ``path`` (at most :data:`MAX_TOML_BYTES`) as UTF-8 TOML with bounded nesting.
    ``what`` ("profile ") names the file in the "cannot read" message."""
    data = read_capped(path, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TomlFileError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return parse_toml(text, path)
