"""The one error hierarchy: every error class of the product is a ``MigproxyError`` and
carries the command line's exit status; ``main`` exits with it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import migproxy
from migproxy.arm.profile import ProfileError
from migproxy.cli import EXIT_STREAM, EXIT_USAGE, main
from migproxy.daemon.addresses import ConfigError
from migproxy.daemon.tls import TlsConfigError
from migproxy.stream.errors import MigproxyError, UsageError
from migproxy.tools.compression import MissingProgram

PRODUCT = ("stream", "arm", "daemon", "tools", "cli")


def _product_modules() -> list[str]:
    names = []
    for m in pkgutil.walk_packages(migproxy.__path__, "migproxy."):
        part = m.name.split(".")[1]
        if part in PRODUCT and not m.name.endswith("_ramwalk"):
            names.append(m.name)
    return names


def _error_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _product_modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_the_product_has_error_classes_to_check() -> None:
    names = {c.__name__ for c in _error_classes()}
    assert {"FormatError", "ConfigError", "ProfileError", "StartError",
            "DescriptionMismatch", "HoldCapExceeded"} <= names


def test_every_public_error_class_is_a_migproxy_error() -> None:
    outside = [f"{c.__module__}.{c.__qualname__}" for c in _error_classes()
               if not issubclass(c, MigproxyError) and not c.__name__.startswith("_")]
    assert outside == []


@pytest.mark.parametrize("cls", [ConfigError, ProfileError, TlsConfigError, MissingProgram])
def test_what_the_operator_gave_is_a_usage_error(cls: type[MigproxyError]) -> None:
    assert issubclass(cls, UsageError)
    assert cls.exit_code == EXIT_USAGE


def test_a_stream_error_exits_1() -> None:
    assert MigproxyError.exit_code == EXIT_STREAM
    assert MigproxyError("x").user_message() == "x"
    assert ConfigError("x").user_message() == "invalid configuration: x"


def test_main_exits_with_the_class_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve"]) == EXIT_USAGE
    assert capsys.readouterr().err == (
        "migproxy: invalid configuration: no route: give --listen and --target, or "
        "[[route]] in --config\n")
