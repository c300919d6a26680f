"""idle_timeout_: error the stream when nothing arrives for a while after it opened.

Re-arming a timer on every item would cost a scheduler call per message on the
hot path, so arrivals only set a flag; a timer checks the flag every
``seconds / 2`` and declares the link dead after two quiet checks in a row.
The link is therefore declared dead between ``seconds`` and ``1.5 * seconds``
after the last arrival (exactly ``seconds`` after opening if nothing ever came).

A :class:`~rxconn.diagnostics.Diagnostic` flows downstream untouched and does
not count as an arrival: an upgrade probe's report says nothing about the
active link. Arrivals that never reach this operator (the connection's fast
lane, ``_lane.py``, takes payloads off the chain before it) count through a
shared :class:`Activity`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SerialDisposable, SingleAssignmentDisposable

from ..diagnostics import Diagnostic
from ._scheduling import pick_scheduler


__all__ = ["Activity", "idle_timeout_"]

_T = TypeVar("_T")


class Activity:
    """A flag: something arrived since the idle timer last looked."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = False


def idle_timeout_(
    seconds: float,
    *,
    is_open: Callable[[Any], bool],
    make_error: Callable[[float], Exception],
    activity: Activity | None = None,
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Build the operator; see :func:`rxconn.operators.idle_timeout` for the contract.

    ``activity``: a flag other operators upstream also set when something arrives.
    """
    if not seconds > 0:
        raise ValueError(f"idle timeout must be > 0, got {seconds!r}")
    half = seconds / 2

    def operator(source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            sched = pick_scheduler("idle_timeout", scheduler, scheduler_)
            timer = SerialDisposable()
            upstream = SingleAssignmentDisposable()
            seen = activity if activity is not None else Activity()
            armed = False
            quiet = 0

            def check(_: abc.SchedulerBase, __: Any = None) -> None:
                nonlocal quiet
                if seen.seen:
                    seen.seen = False
                    quiet = 0
                else:
                    quiet += 1
                    if quiet >= 2:
                        upstream.dispose()
                        observer.on_error(make_error(half * 2))
                        return
                timer.disposable = sched.schedule_relative(half, check)

            def on_next(value: _T) -> None:
                nonlocal armed
                if armed:
                    if type(value) is not Diagnostic:  # a report, not a sign of life
                        seen.seen = True
                elif is_open(value):
                    armed = True
                    timer.disposable = sched.schedule_relative(half, check)
                observer.on_next(value)

            def on_error(error: Exception) -> None:
                timer.dispose()
                observer.on_error(error)

            def on_completed() -> None:
                timer.dispose()
                observer.on_completed()

            upstream.disposable = source.subscribe(
                on_next, on_error, on_completed, scheduler=scheduler_
            )
            return CompositeDisposable(upstream, timer)

        return Observable(subscribe)

    return operator
