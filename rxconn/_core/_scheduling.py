"""Which scheduler an operator uses: its own, else the subscriber's; never a thread default."""

from __future__ import annotations

from reactivex import abc

from ..errors import RxconnError


__all__ = ["pick_scheduler"]


def pick_scheduler(
    operator: str, own: abc.SchedulerBase | None, subscribers: abc.SchedulerBase | None
) -> abc.SchedulerBase:
    """The operator's scheduler, else the one given at subscribe time (RxPY's order).

    RxPY would fall back to a thread-based ``TimeoutScheduler``, which takes
    a test out of virtual time and an asyncio app into threads; rxconn refuses.

    Raises:
        RxconnError: when neither is given.
    """
    scheduler = own or subscribers
    if scheduler is None:
        raise RxconnError(f"{operator} needs a scheduler (operator or subscribe argument)")
    return scheduler
