"""link_events_: a link's events on their way to the connection, in one operator.

A message would otherwise cost one call per operator between the link and the
connection. Applied right on a link's events, this operator

* hands each payload (``str``/``bytes``, or each of a
  :class:`~rxconn.transport.Payloads`) that arrives once the link has opened
  (``is_open``) straight to ``sink``: the *fast lane*; opened,
  acknowledgements, errors and diagnostics flow downstream as before;
* with ``idle_timeout``, drives an :class:`~rxconn._core._idle.IdleWatch`
  (every arrival but a diagnostic counts, and but acknowledgements and round
  trips of a link whose ``Opened`` says they come beside its stream), and
  errors with ``make_error`` when the link went quiet;
* calls ``subscribed`` once the link's subscription returned (the connection
  announces ``Connecting`` there, after a transport's own synchronous ``Trying``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SingleAssignmentDisposable

from ..diagnostics import Diagnostic
from ..quality import RoundTrip
from ..transport import Acked, Opened, Payloads
from ._idle import IdleWatch
from ._scheduling import pick_scheduler


__all__ = ["link_events_"]

_T = TypeVar("_T")


def link_events_(
    sink: Callable[[Any], None],
    *,
    is_open: Callable[[Any], bool],
    idle_timeout: float | None,
    make_error: Callable[[float], Exception],
    subscribed: Callable[[], None] | None = None,
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Build the operator (see the module docstring)."""
    if idle_timeout is not None and not idle_timeout > 0:
        raise ValueError(f"idle timeout must be > 0, got {idle_timeout!r}")

    def operator(source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            upstream = SingleAssignmentDisposable()
            watch: IdleWatch | None = None
            if idle_timeout is not None:

                def dead(after: float) -> None:
                    upstream.dispose()
                    observer.on_error(make_error(after))

                sched = pick_scheduler("idle_timeout", scheduler, scheduler_)
                watch = IdleWatch(idle_timeout, sched, dead)
            armed = False
            side_acks = False  # acknowledgements arrive beside the stream: not life

            def on_next(value: _T) -> None:
                nonlocal armed, side_acks
                if armed:
                    kind = type(value)
                    if kind is str or kind is bytes:
                        if watch is not None:
                            watch.seen = True
                        sink(value)
                        return
                    if kind is Payloads:
                        if watch is not None:
                            watch.seen = True
                        for payload in value:  # type: ignore[attr-defined]
                            sink(payload)
                        return
                    if kind is Opened:  # a fallback switched links: its kind may differ
                        side_acks = not value.acks_prove_life  # type: ignore[attr-defined]
                    if watch is not None and kind is not Diagnostic:
                        if not (side_acks and (kind is Acked or kind is RoundTrip)):
                            watch.seen = True  # a sign of life; a report is not
                elif is_open(value):
                    armed = True
                    side_acks = type(value) is Opened and not value.acks_prove_life  # type: ignore[attr-defined]
                    if watch is not None:
                        watch.start()
                observer.on_next(value)

            def on_error(error: Exception) -> None:
                if watch is not None:
                    watch.dispose()
                observer.on_error(error)

            def on_completed() -> None:
                if watch is not None:
                    watch.dispose()
                observer.on_completed()

            upstream.disposable = source.subscribe(
                on_next, on_error, on_completed, scheduler=scheduler_
            )
            if subscribed is not None:
                subscribed()
            if watch is None:
                return upstream
            return CompositeDisposable(upstream, Disposable(watch.dispose))

        return Observable(subscribe)

    return operator
