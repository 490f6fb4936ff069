"""Shared fixtures. The helpers the tests import (the engine driver, the captured real
streams, the labs as a test sees them) are in ``testkit`` (``testkit.streams``,
``testkit.labs``): a test module imports from there, never from this file."""

from __future__ import annotations

import pytest

from testkit.streams import SMALL
from testkit.synthetic import build


@pytest.fixture(scope="session")
def synth_small() -> bytes:
    return build(SMALL)
