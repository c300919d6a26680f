"""Multicast: a hot observable whose emit costs one call with a single subscriber.

A ``Subject`` hop costs several hundred nanoseconds per item in RxPY (locks,
observer wrappers, a copy of the observer list). Message streams are the hot
path, so ``emit`` is rebuilt on every (un)subscription: nothing with no
subscriber, the subscriber's own ``on_next`` with one, a loop with several.
Observers are isolated: one that raises is reported and the others go on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from ._scheduler import report_exception


__all__ = ["Multicast"]

_T = TypeVar("_T")


def _drop(_: object) -> None:
    """Emit target while nobody subscribes: the stream is hot."""


class Multicast(Generic[_T]):
    """A hot stream with per-subscription hooks (used for interest counting).

    Args:
        what: Names the stream in error reports.
        on_subscribe: Called with the subscribe-time scheduler for each new
            subscriber; returns the release to call when it is disposed. If it
            raises, the subscriber gets the error and is not added.
    """

    def __init__(
        self,
        what: str,
        on_subscribe: Callable[[abc.SchedulerBase | None], Callable[[], None]] | None = None,
    ) -> None:
        self._what = what
        self._on_subscribe = on_subscribe
        self._observers: tuple[abc.ObserverBase[_T], ...] = ()
        self._completed = False
        self.emit: Callable[[_T], None] = _drop
        """Deliver one item to every subscriber (may raise only if a single subscriber does)."""
        self.observable: Observable[_T] = Observable(self._subscribe)

    @property
    def count(self) -> int:
        """How many subscribers there are."""
        return len(self._observers)

    def send(self, item: _T) -> None:
        """Deliver ``item``, reporting (not raising) what a subscriber raises."""
        try:
            self.emit(item)
        except Exception as exc:
            report_exception(f"rxconn: a {self._what} observer raised", exc)

    def complete(self) -> None:
        """Complete every subscriber; later subscribers complete at once."""
        if self._completed:
            return
        self._completed = True
        observers, self._observers = self._observers, ()
        self.emit = _drop
        for observer in observers:
            try:
                observer.on_completed()
            except Exception as exc:
                report_exception(f"rxconn: a {self._what} observer raised", exc)

    def _subscribe(
        self, observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        if self._completed:
            observer.on_completed()
            return Disposable()
        self._observers = (*self._observers, observer)
        self._rebuild()
        release: Callable[[], None] | None = None
        if self._on_subscribe is not None:
            try:
                release = self._on_subscribe(scheduler)
            except Exception:
                self._remove(observer)
                raise  # reaches the observer's on_error through Observable.subscribe

        def dispose() -> None:
            self._remove(observer)
            if release is not None:
                release()

        return Disposable(dispose)

    def _remove(self, observer: abc.ObserverBase[_T]) -> None:
        self._observers = tuple(o for o in self._observers if o is not observer)
        self._rebuild()

    def _rebuild(self) -> None:
        observers = self._observers
        if not observers:
            self.emit = _drop
        elif len(observers) == 1:
            self.emit = observers[0].on_next
        else:
            what = self._what

            def fan_out(item: _T) -> None:
                for observer in observers:
                    try:
                        observer.on_next(item)
                    except Exception as exc:
                        report_exception(f"rxconn: a {what} observer raised", exc)

            self.emit = fan_out
