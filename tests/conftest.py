"""Fixtures for the whole suite: every asynchronous test ends with a leak check."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.helpers import assert_no_leaked_tasks


@pytest_asyncio.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """The test must leave no rxconn task running once teardown had its chance."""
    yield
    await assert_no_leaked_tasks()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every coroutine test the leak check (synchronous tests start no task)."""
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.add_marker(pytest.mark.usefixtures("no_leaked_tasks"))
