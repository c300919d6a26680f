"""serial_links: the cold observable both aiohttp transports hand out.

Each subscription runs one link as one task kept in :data:`TASKS`; disposing
the subscription cancels that task, whose ``finally`` blocks release the link.
Links of one transport for one connection are *serial* (break before make): a
new link starts only once the connection's previous link of that transport
has finished closing, so a server never sees two of its links at once. The
previous link is found in ``LinkContext.connection``, so one transport object
can serve several connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final, NoReturn

import aiohttp
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from ..errors import ConnectionLost
from ..transport import LinkContext, LinkEvent
from ._tasks import TASKS


__all__ = ["LinkRun", "first_to_end", "serial_links"]

_CLOSING: Final = (aiohttp.ClientConnectionError, ConnectionError)

LinkRun = Callable[[abc.ObserverBase[LinkEvent], LinkContext], Coroutine[Any, Any, None]]
"""Runs one link to its end, reporting to the observer; cancelled on disposal."""


def serial_links(
    key: str, name: str, run: LinkRun, context: LinkContext | None
) -> Observable[LinkEvent]:
    """A cold observable: each subscription runs ``run`` as one link task, after the last one.

    Args:
        key: Where the connection's last link task of this transport is kept
            in ``LinkContext.connection``.
        name: The task name (for debugging and crash reports).
        run: The link's coroutine function.
        context: The connection's context (a fresh one if ``None``).
    """
    ctx = context if context is not None else LinkContext()

    def subscribe(
        observer: abc.ObserverBase[LinkEvent], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        previous = ctx.connection.get(key)
        task = TASKS.spawn(_after(previous, run, observer, ctx), name=name)
        ctx.connection[key] = task

        def dispose() -> None:
            task.cancel()

        return Disposable(dispose)

    return Observable(subscribe)


async def _after(
    previous: asyncio.Task[Any] | None,
    run: LinkRun,
    observer: abc.ObserverBase[LinkEvent],
    ctx: LinkContext,
) -> None:
    """Run the link once ``previous`` (cancelled, or ended) has finished closing."""
    if previous is not None and not previous.done():
        await asyncio.wait((previous,))
    previous = None  # else every link would keep the one before it alive, forever
    await run(observer, ctx)  # created only now: a task cancelled first never makes it


async def first_to_end(
    kind: str,
    tasks: Sequence[asyncio.Task[Any]],
    *,
    settle: float = 0.0,
    on_end: Callable[[], None] | None = None,
) -> NoReturn:
    """Run a link's tasks until one ends, then raise how it ended.

    ``tasks[0]`` (the reader) wins when several ended together: it knows why a link
    died. With ``settle``, another task that failed on a closing connection
    (``ConnectionError``, ``aiohttp.ClientConnectionError``) waits up to ``settle``
    seconds for the reader to learn why (a close code says more than a broken
    write). A task that returns is a lost link. ``on_end`` runs first on the way
    out; then every task is cancelled and awaited, so none outlives the link.
    """
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        reader = tasks[0]
        first = reader if reader in done else next(iter(done))
        if settle and first is not reader and isinstance(first.exception(), _CLOSING):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settle):
                    await asyncio.wait((reader,))
            if reader.done():
                first = reader
        first.result()
        raise ConnectionLost(kind, "link task ended unexpectedly")
    finally:
        if on_end is not None:
            on_end()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
