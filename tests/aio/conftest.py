"""Fixtures for adapter tests: a real hub on 127.0.0.1, and a leak check after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from rxconn.server import Hub, Server, serve
from tests.helpers import assert_no_leaked_tasks


@pytest_asyncio.fixture
async def hub_server() -> AsyncIterator[Server]:
    """An echoing hub with short timers, served on a free loopback port."""
    async with serve(Hub(echo=True, ping_interval=1.0, session_grace=5.0)) as server:
        yield server


@pytest_asyncio.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Every test must leave no rxconn task running once teardown had its chance."""
    yield
    await assert_no_leaked_tasks()
