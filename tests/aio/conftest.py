"""Fixtures for adapter tests: a real hub on 127.0.0.1 (the leak check is suite-wide)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from rxconn.server import Hub, Server, serve


@pytest_asyncio.fixture
async def hub_server() -> AsyncIterator[Server]:
    """An echoing hub with short timers, served on a free loopback port."""
    async with serve(Hub(echo=True, ping_interval=1.0, session_grace=5.0)) as server:
        yield server
