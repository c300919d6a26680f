"""fast_lane_: a link's payloads go straight to the connection, everything else down the chain.

A message would otherwise cost one call per operator between the link and the
connection (idle timeout, retry, …). Once the link has opened (``is_open``),
this operator, applied right on the link's events, hands each payload
(``str``/``bytes``) to ``sink`` and marks ``activity`` (so the idle timeout
still sees it arrive); opened, acknowledgements, errors and diagnostics flow
downstream as before. ``subscribed`` runs once the link's subscription returned
(the connection announces ``Connecting`` there, after a transport's own
synchronous ``Trying``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc

from ._idle import Activity


__all__ = ["fast_lane_"]

_T = TypeVar("_T")


def fast_lane_(
    sink: Callable[[Any], None],
    *,
    is_open: Callable[[Any], bool],
    activity: Activity,
    subscribed: Callable[[], None] | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Build the operator (see the module docstring)."""

    def operator(source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            armed = False

            def on_next(value: _T) -> None:
                nonlocal armed
                if armed:
                    if type(value) is str or type(value) is bytes:
                        activity.seen = True
                        sink(value)
                        return
                elif is_open(value):
                    armed = True
                observer.on_next(value)

            disposable = source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )
            if subscribed is not None:
                subscribed()
            return disposable

        return Observable(subscribe)

    return operator
