"""TaskSet: strong references to link tasks, crash reporting, and a drain for teardown.

The event loop keeps only weak references to tasks, and an exception nobody
retrieves surfaces later as "Task exception was never retrieved". Every task
rxconn starts goes through :data:`TASKS`, which holds it until it ends,
retrieves its outcome and hands unexpected crashes to the loop's exception handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


__all__ = ["TASKS", "TaskSet", "drain"]


class TaskSet:
    """A set of running tasks that nobody else awaits."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Start ``coro`` as a task on the running loop and keep it until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            task.get_loop().call_exception_handler(
                {
                    "message": f"rxconn task {task.get_name()} crashed",
                    "exception": exc,
                    "task": task,
                }
            )

    def running(self) -> list[asyncio.Task[Any]]:
        """The tasks of the running loop that have not finished."""
        loop = asyncio.get_running_loop()
        return [t for t in self._tasks if t.get_loop() is loop and not t.done()]

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every task of this loop has finished (teardown included)."""
        async with asyncio.timeout(timeout):
            while pending := self.running():
                await asyncio.wait(pending)


TASKS = TaskSet()
"""Every link, writer and hub task rxconn starts."""


async def drain(timeout: float = 10.0) -> None:
    """Wait until every rxconn task of the running loop has finished tearing down."""
    await TASKS.drain(timeout)
