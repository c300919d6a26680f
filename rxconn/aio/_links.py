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
from collections.abc import Callable, Coroutine
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from ..transport import LinkContext, LinkEvent
from ._tasks import TASKS


__all__ = ["LinkRun", "serial_links"]

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
