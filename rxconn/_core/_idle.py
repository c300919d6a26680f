"""IdleWatch and idle_timeout_: a link is dead when nothing arrives for a while after it opened.

Re-arming a timer on every item would cost a scheduler call per message on the
hot path, so arrivals only set a flag (:attr:`IdleWatch.seen`); a timer checks
the flag every ``seconds / 2`` and declares the link dead after two quiet
checks in a row. The link is therefore declared dead between ``seconds`` and
``1.5 * seconds`` after the last arrival (exactly ``seconds`` after opening if
nothing ever came).

:class:`IdleWatch` is the rule, with no Rx in it; :func:`idle_timeout_` is the
public operator built on it, and the connection's fast lane (``_lane.py``)
drives one directly, so a link's events pass one operator, not two. A
:class:`~rxconn.diagnostics.Diagnostic` does not count as an arrival: an upgrade
probe's report says nothing about the active link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import (
    CompositeDisposable,
    Disposable,
    SerialDisposable,
    SingleAssignmentDisposable,
)

from ..diagnostics import Diagnostic
from ._scheduling import pick_scheduler


__all__ = ["IdleWatch", "idle_timeout_"]

_T = TypeVar("_T")


class IdleWatch:
    """Calls ``on_dead(seconds)`` once nothing was :attr:`seen` for ``seconds`` (see above).

    Set :attr:`seen` to True on every arrival; :meth:`start` when the link opens;
    :meth:`dispose` when it ends.
    """

    __slots__ = ("_half", "_on_dead", "_quiet", "_scheduler", "_timer", "seen")

    def __init__(
        self, seconds: float, scheduler: abc.SchedulerBase, on_dead: Callable[[float], None]
    ) -> None:
        if not seconds > 0:
            raise ValueError(f"idle timeout must be > 0, got {seconds!r}")
        self.seen = False
        self._half = seconds / 2
        self._scheduler = scheduler
        self._on_dead = on_dead
        self._quiet = 0
        self._timer = SerialDisposable()

    def start(self) -> None:
        """The link opened: the first check is due in ``seconds / 2``."""
        self._timer.disposable = self._scheduler.schedule_relative(self._half, self._check)

    def dispose(self) -> None:
        """Stop watching (no more checks)."""
        self._timer.dispose()

    def _check(self, _: abc.SchedulerBase, __: Any = None) -> None:
        if self.seen:
            self.seen = False
            self._quiet = 0
        else:
            self._quiet += 1
            if self._quiet >= 2:
                self._on_dead(self._half * 2)
                return
        self._timer.disposable = self._scheduler.schedule_relative(self._half, self._check)


def idle_timeout_(
    seconds: float,
    *,
    is_open: Callable[[Any], bool],
    make_error: Callable[[float], Exception],
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Build the operator; see :func:`rxconn.operators.idle_timeout` for the contract."""
    if not seconds > 0:
        raise ValueError(f"idle timeout must be > 0, got {seconds!r}")

    def operator(source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            sched = pick_scheduler("idle_timeout", scheduler, scheduler_)
            upstream = SingleAssignmentDisposable()

            def dead(after: float) -> None:
                upstream.dispose()
                observer.on_error(make_error(after))

            watch = IdleWatch(seconds, sched, dead)
            armed = False

            def on_next(value: _T) -> None:
                nonlocal armed
                if armed:
                    if type(value) is not Diagnostic:  # a report, not a sign of life
                        watch.seen = True
                elif is_open(value):
                    armed = True
                    watch.start()
                observer.on_next(value)

            def on_error(error: Exception) -> None:
                watch.dispose()
                observer.on_error(error)

            def on_completed() -> None:
                watch.dispose()
                observer.on_completed()

            upstream.disposable = source.subscribe(
                on_next, on_error, on_completed, scheduler=scheduler_
            )
            return CompositeDisposable(upstream, Disposable(watch.dispose))

        return Observable(subscribe)

    return operator
