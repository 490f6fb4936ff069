"""Fixtures shared by the real-QEMU tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.faults import BLOB_SIZE


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Random data for the guest's RAM (``-device loader``), so that the RAM phase of a
    migration lasts long enough to hold it (or break it) in the middle."""
    path = tmp_path_factory.mktemp("blob") / "ram.bin"
    path.write_bytes(os.urandom(BLOB_SIZE))
    yield path
    path.unlink()
