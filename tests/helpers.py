"""Shared test helpers: wait on events (never on sleeps) with a bound on every wait."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from reactivex import Observable

import rxconn
from rxconn.states import State


MS = float(os.environ.get("RXCONN_TEST_MS", "1.0")) / 1000.0
"""One millisecond, scaled by RXCONN_TEST_MS for slow machines (websockets' trick)."""

TIMEOUT = 10.0


class Recorder:
    """Records what an observable emits and lets a test await a condition on it."""

    def __init__(self, source: Observable[Any]) -> None:
        self.items: list[Any] = []
        self.errors: list[Exception] = []
        self.completed = False
        self._changed = asyncio.Event()
        self.subscription = source.subscribe(self._on_next, self._on_error, self._on_completed)

    def _on_next(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    def _on_error(self, error: Exception) -> None:
        self.errors.append(error)
        self._changed.set()

    def _on_completed(self) -> None:
        self.completed = True
        self._changed.set()

    async def until(self, predicate: Callable[[list[Any]], bool], timeout: float = TIMEOUT) -> None:
        """Wait until ``predicate(items)`` holds."""
        async with asyncio.timeout(timeout):
            while not predicate(self.items):
                self._changed.clear()
                await self._changed.wait()

    async def count(self, n: int, timeout: float = TIMEOUT) -> list[Any]:
        await self.until(lambda items: len(items) >= n, timeout)
        return self.items

    def dispose(self) -> None:
        self.subscription.dispose()


async def reach(
    conn: rxconn.Connection, predicate: Callable[[State], bool], timeout: float = TIMEOUT
) -> State:
    """Wait (as a state subscriber, so holding interest) until the state satisfies ``predicate``."""
    rec = Recorder(conn.state)
    try:
        await rec.until(lambda items: bool(items) and predicate(items[-1]), timeout)
        state: State = rec.items[-1]
        return state
    finally:
        rec.dispose()


async def settle() -> None:
    """Let every rxconn task finish tearing down (bounded)."""
    await rxconn.aio.drain(TIMEOUT)
