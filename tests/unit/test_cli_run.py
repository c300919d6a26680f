"""The command line's event-loop runner: a task that ignores cancellation cannot keep a
command (a ``serve`` process after SIGTERM) from exiting."""

from __future__ import annotations

import asyncio
import time

import pytest

from rxconn.cli._run import run


def test_a_leftover_task_that_ignores_cancellation_is_abandoned_within_the_grace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """asyncio.run would wait for it forever; run() reports it and returns the code."""

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue  # as a retry loop that takes cancellation for an error does

    async def command() -> int:
        asyncio.get_running_loop().create_task(stubborn())
        await asyncio.sleep(0)
        return 7

    started = time.monotonic()
    assert run(command(), grace=0.2) == 7
    assert time.monotonic() - started < 2.0
    assert "did not stop" in capsys.readouterr().err


def test_leftover_tasks_that_stop_are_cancelled_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    async def idle() -> None:
        await asyncio.sleep(10)

    async def command() -> int:
        asyncio.get_running_loop().create_task(idle())
        return 0

    assert run(command()) == 0
    assert capsys.readouterr().err == ""
