"""open_within_: fail a link that does not open within a deadline.

Only the open is timed (unlike ``ops.timeout``, which restarts at every item
and errors with a bare ``Exception``): the timer is armed at subscription and
cancelled by the first item for which ``is_open`` is true.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SerialDisposable, SingleAssignmentDisposable

from ._scheduling import pick_scheduler


__all__ = ["open_within_"]

_T = TypeVar("_T")


def open_within_(
    seconds: float,
    *,
    is_open: Callable[[Any], bool],
    make_error: Callable[[float], Exception],
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Build the operator: ``make_error(seconds)`` if nothing opened within ``seconds``."""

    def operator(source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            sched = pick_scheduler("open_within", scheduler, scheduler_)
            timer = SerialDisposable()
            upstream = SingleAssignmentDisposable()
            opened = False

            def expire(_: abc.SchedulerBase, __: Any = None) -> None:
                if not opened:
                    upstream.dispose()
                    observer.on_error(make_error(seconds))

            def on_next(value: _T) -> None:
                nonlocal opened
                if not opened and is_open(value):
                    opened = True
                    timer.dispose()
                observer.on_next(value)

            timer.disposable = sched.schedule_relative(seconds, expire)
            upstream.disposable = source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler_
            )
            return CompositeDisposable(upstream, timer)

        return Observable(subscribe)

    return operator
