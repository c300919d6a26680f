"""Where the core gets its time when the user injects none, and where it reports stray errors.

The only module of the core that touches asyncio: the default scheduler is
resolved at subscribe time (never at import or construction), on the running loop.
"""

from __future__ import annotations

import asyncio
import logging

from reactivex import abc
from reactivex.scheduler.eventloop import AsyncIOScheduler

from .errors import RxconnError


__all__ = ["default_scheduler", "report_exception"]

logger = logging.getLogger("rxconn")


def default_scheduler() -> abc.SchedulerBase:
    """An ``AsyncIOScheduler`` on the running loop; a clear error when there is none."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RxconnError(
            "no running asyncio event loop: use rxconn inside a coroutine (or a notebook), "
            "or pass scheduler=... (e.g. a TestScheduler)"
        ) from None
    return AsyncIOScheduler(loop)


def report_exception(message: str, exc: BaseException) -> None:
    """Hand an error that has no observer to own it to the loop's exception handler (or log it)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        logger.error("%s", message, exc_info=exc)
        return
    loop.call_exception_handler({"message": message, "exception": exc})
