"""Fixtures of the daemon tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from testkit.labs import tls_unavailable
from testkit.pki import Ca, PkiUnavailable, creds_dir
from tests.daemon.loopback import Target


@pytest_asyncio.fixture
async def target() -> AsyncIterator[Target]:
    t = Target()
    yield t
    t.close()


@dataclass(frozen=True)
class Pki:
    creds: Path  # the libvirt layout, from the trusted CA
    rogue: Path  # the same layout from a CA nobody trusts


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Credentials directories from a trusted CA and from one nobody trusts (openssl)."""
    try:
        ca = Ca.create(tmp_path_factory.mktemp("ca"))
        rogue = Ca.create(tmp_path_factory.mktemp("rogue-ca"), name="rogue CA")
    except PkiUnavailable as e:
        tls_unavailable(str(e))
    return Pki(creds_dir(ca, tmp_path_factory.mktemp("pki") / "qemu"),
               creds_dir(rogue, tmp_path_factory.mktemp("rogue") / "qemu"))
