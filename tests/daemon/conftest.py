"""Fixtures of the daemon tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.daemon.loopback import Target


@pytest_asyncio.fixture
async def target() -> AsyncIterator[Target]:
    t = Target()
    yield t
    t.close()
