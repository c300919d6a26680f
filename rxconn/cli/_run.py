"""Running a command on the event loop: signals that cancel it, and waiting for results.

Kept apart so every command stops the same way (cleanup runs, exit code 130 or its own).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from ._console import CliError


__all__ = ["Changes", "Outcome", "interruptible", "run"]

LEFTOVER_GRACE = 5.0
"""Seconds the tasks still running when a command returns get to end once cancelled."""


def run(main: Coroutine[Any, Any, int], *, grace: float = LEFTOVER_GRACE) -> int:
    """``asyncio.run(main)``, except that leftover tasks get ``grace`` seconds to end.

    ``asyncio.run`` cancels what is left and then waits for it without a bound: one
    task that swallows its cancellation (redis-py's retries can, mid-command) keeps
    the process alive after a SIGTERM. Here such a task is reported on stderr and
    abandoned, and the command still exits with its code.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            leftover = asyncio.all_tasks(loop)
            for task in leftover:
                task.cancel()
            if leftover:
                loop.run_until_complete(asyncio.wait(leftover, timeout=grace))
                for task in leftover:
                    if not task.done():
                        print(
                            f"rxconn: abandoned a task that did not stop: {task!r}", file=sys.stderr
                        )
                    elif not task.cancelled() and task.exception() is not None:
                        loop.call_exception_handler(
                            {
                                "message": "unhandled exception while stopping",
                                "task": task,
                                "exception": task.exception(),
                            }
                        )
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(asyncio.wait_for(loop.shutdown_default_executor(), grace))
        except TimeoutError:
            print("rxconn: the default executor did not stop in time", file=sys.stderr)
        finally:
            asyncio.set_event_loop(None)
            loop.close()


@contextmanager
def _signal_handlers(handler: Callable[[signal.Signals], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler`` on the running loop (where supported)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handler, sig)
        except (RuntimeError, ValueError):  # unsupported (Windows: a RuntimeError subclass)
            continue  # or not the main thread: KeyboardInterrupt still ends main()
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def interruptible(job: Coroutine[Any, Any, int], *, stop_code: int | None) -> int:
    """Await ``job``; a signal cancels it (its cleanup runs) and picks the exit code.

    Returns ``stop_code`` after a signal when given, else ``128 + signal number``.
    """
    task = asyncio.current_task()
    assert task is not None
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        task.cancel()

    with _signal_handlers(on_signal):
        try:
            return await job
        except asyncio.CancelledError:
            if not received:
                raise
            task.uncancel()
            return stop_code if stop_code is not None else 128 + received[0]


class Changes:
    """Wakes waiters whenever something they wait for may have changed (no polling)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Something changed: re-check every waiting predicate."""
        self._event.set()

    async def until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds, at most ``timeout`` s; return whether it does."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._event.clear()
                    await self._event.wait()
        except TimeoutError:
            return predicate()
        return True


class Outcome:
    """The result a client command settles on, set once from Rx callbacks."""

    def __init__(self) -> None:
        self.future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def finish(self, code: int) -> None:
        """End with exit code ``code`` (first call wins)."""
        if not self.future.done():
            self.future.set_result(code)

    def fail(self, message: str) -> None:
        """End with a one-line error (exit code 1; first call wins)."""
        if not self.future.done():
            self.future.set_exception(CliError(message))

    async def wait(self) -> int:
        """The exit code, or raise the failure."""
        return await self.future
