"""migproxy.stream.extensions: one place decides whether a built C extension is used."""

from __future__ import annotations

import pytest

from migproxy.stream import extensions


def test_a_missing_module_is_none() -> None:
    assert extensions.compiled("migproxy.stream._no_such_extension", "walk") is None


@pytest.mark.parametrize("value", ["1", "yes"])
def test_the_environment_turns_every_extension_off(monkeypatch: pytest.MonkeyPatch,
                                                   value: str) -> None:
    monkeypatch.setenv("MIGPROXY_NO_EXTENSIONS", value)
    assert extensions.disabled()
    # A module that certainly imports: still None, the variable decides first.
    assert extensions.compiled("migproxy.stream.wire", "RAM_PAGE") is None


@pytest.mark.parametrize("value", ["", "0"])
def test_empty_or_zero_leaves_them_on(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MIGPROXY_NO_EXTENSIONS", value)
    assert not extensions.disabled()
    from migproxy.stream import wire
    assert extensions.compiled("migproxy.stream.wire", "RAM_PAGE") == wire.RAM_PAGE
