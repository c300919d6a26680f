"""Fixtures for the whole suite: every asynchronous test ends with a leak check."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.helpers import assert_no_leaked_tasks
from tests.redis_server import RedisServer, require_redis_server


@pytest_asyncio.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """The test must leave no rxconn task running once teardown had its chance."""
    yield
    await assert_no_leaked_tasks()


@pytest_asyncio.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    """A real ``redis-server`` of this test's own (free port, temp dir, no persistence)."""
    server = RedisServer(require_redis_server())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        server.cleanup()


@pytest_asyncio.fixture
async def redis_url(redis_server: RedisServer) -> str:
    """The URL of :func:`redis_server`."""
    return redis_server.url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every coroutine test the leak check (synchronous tests start no task)."""
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.add_marker(pytest.mark.usefixtures("no_leaked_tasks"))
