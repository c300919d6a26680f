"""retry_with_backoff_: re-subscribe after retryable errors, waiting a backoff schedule.

RxPY has ``retry(n)`` but no ``retry_when``; this operator is the missing piece,
shaped like RxPY's own ``_catch.py``: one live attempt in a ``SerialDisposable``
(replaced by the retry timer when it fails), a generation id so that a late
event from a replaced attempt is ignored, and every timer from the scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import (
    CompositeDisposable,
    Disposable,
    SerialDisposable,
    SingleAssignmentDisposable,
)

from ..backoff import Backoff
from ..errors import RetriesExhausted, SessionExpired, TransportError
from ._scheduling import pick_scheduler


__all__ = [
    "AttemptStarted",
    "Paused",
    "RetryEvent",
    "Retrying",
    "renews_credentials",
    "retry_with_backoff_",
]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class AttemptStarted:
    """Attempt ``attempt`` (0-based since the schedule last started over) is subscribing."""

    attempt: int


@dataclass(frozen=True, slots=True)
class Retrying:
    """Attempt ``attempt`` failed with ``error``; the next one starts in ``delay`` seconds.

    ``advised`` is the server's advice (``retry_after``, in seconds) when it set
    ``delay`` (it asked for at least the backoff's wait); ``None`` when the
    backoff (or an immediate renewal) did.
    """

    error: Exception
    attempt: int
    delay: float
    advised: float | None = None


@dataclass(frozen=True, slots=True)
class Paused:
    """Offline: no attempt runs until ``online`` says True again (``error``: the last failure)."""

    error: Exception | None


RetryEvent = AttemptStarted | Retrying | Paused


MAX_ADVICE = 3600.0
"""Longest server-advised wait honoured, in seconds (longer advice is capped)."""


def _delay(backoff: Backoff, attempt: int, advised: object) -> tuple[float, float | None]:
    """The wait before the next attempt, and the advice if it set it: never a storm.

    Advice (``retry_after``) is honoured when it asks for at least the
    backoff's wait; it can never shorten it, so a server that advises 0 (SSE
    ``retry: 0``, ``Retry-After: 0``, a 410 on every resume) still gets the
    growing schedule. Nonsense advice (negative, NaN, infinite) is ignored.
    """
    computed = backoff.delay(attempt)
    if isinstance(advised, int | float) and math.isfinite(advised) and advised >= 0:
        capped = min(float(advised), MAX_ADVICE)
        if capped >= computed:
            return capped, float(advised)
    return computed, None


def renews_credentials(error: Exception) -> bool:
    """Whether ``error`` is a 401 at open, worth one immediate try with fresh credentials.

    The transports call a ``headers`` callable again for every link, so the
    retry presents a refreshed token. A 401 marked ``fatal`` (a POST refused
    twice in a row, which already had its renewal) is not renewed.
    """
    return isinstance(error, TransportError) and error.status == 401 and not error.fatal


def retry_with_backoff_(
    backoff: Backoff,
    *,
    is_retryable: Callable[[Exception], bool],
    is_open: Callable[[Any], bool] | None = None,
    on_completed: Callable[[], Exception] | None = None,
    online: Observable[bool] | None = None,
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[_T]], Observable[_T | RetryEvent]]:
    """Build the operator; see :func:`rxconn.operators.retry_with_backoff` for the contract."""

    def operator(source: Observable[_T]) -> Observable[_T | RetryEvent]:
        def subscribe(
            observer: abc.ObserverBase[_T | RetryEvent],
            scheduler_: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            sched = pick_scheduler("retry_with_backoff", scheduler, scheduler_)
            current = SerialDisposable()  # the live attempt, or the timer before the next
            stable = SerialDisposable()  # fires when the open link counts as stable
            online_sub = SingleAssignmentDisposable()
            attempt = 0
            generation = 0
            is_online = True
            paused = False
            stopped = False
            waiting = False  # between a failure and the retry timer firing
            renewed = False  # a 410 was retried at once since the last open link
            reauthorized = False  # a 401 was retried at once since the last open link
            last_error: Exception | None = None

            def start() -> None:
                nonlocal generation, paused, waiting
                paused = False
                waiting = False
                generation += 1
                mine = generation
                observer.on_next(AttemptStarted(attempt))
                holder = SingleAssignmentDisposable()
                current.disposable = holder  # before subscribing: a sync error may replace it

                watching = is_open is not None  # until the link opened (then skip the check)

                def on_next(value: _T) -> None:
                    nonlocal watching, renewed, reauthorized
                    if mine == generation:
                        if watching and is_open is not None and is_open(value):
                            watching = False
                            renewed = False
                            reauthorized = False
                            stable.disposable = sched.schedule_relative(
                                backoff.stable_after, settle
                            )
                        observer.on_next(value)

                def on_error_(error: Exception) -> None:
                    if mine == generation:
                        fail(error)

                def on_completed_() -> None:
                    if mine != generation:
                        return
                    if on_completed is None:
                        finish()
                    else:
                        fail(on_completed())

                holder.disposable = source.subscribe(
                    on_next, on_error_, on_completed_, scheduler=scheduler_
                )

            def settle(_: abc.SchedulerBase, __: Any = None) -> None:
                nonlocal attempt
                attempt = 0  # the link stayed up: the schedule starts over

            def restart(_: abc.SchedulerBase, __: Any = None) -> None:
                start()

            def finish() -> None:
                nonlocal stopped, generation
                stopped = True
                generation += 1
                stable.dispose()
                online_sub.dispose()
                observer.on_completed()

            def give_up(error: Exception) -> None:
                nonlocal stopped, generation
                stopped = True
                generation += 1
                stable.dispose()
                online_sub.dispose()
                current.disposable = Disposable()
                observer.on_error(error)

            def fail(error: Exception) -> None:
                nonlocal attempt, generation, last_error, paused, waiting, renewed, reauthorized
                generation += 1  # the failed attempt can no longer speak
                stable.disposable = Disposable()
                last_error = error
                # A 401 at open: once (until a link opens), retry at once, so that the
                # transport asks its headers callable for a fresh token; a second 401
                # in a row is left to the policy, for which 401 is fatal.
                reauthorize = not reauthorized and renews_credentials(error)
                if not reauthorize:
                    try:
                        retryable = is_retryable(error)
                    except Exception as policy_error:  # a user policy that raises is reported
                        give_up(policy_error)
                        return
                    if not retryable:
                        give_up(error)
                        return
                if backoff.gives_up_after(attempt):
                    exhausted = RetriesExhausted(attempt + 1)
                    exhausted.__cause__ = error
                    give_up(exhausted)
                    return
                if not is_online:
                    paused = True
                    current.disposable = Disposable()
                    observer.on_next(Paused(error))
                    return
                delay, advised = _delay(backoff, attempt, getattr(error, "retry_after", None))
                if isinstance(error, SessionExpired) and not renewed:
                    # The hub answered (the link is healthy) but no longer knows our
                    # session: open a new one at once. Only once until a link opens,
                    # so a hub that answers 410 to everything still gets the backoff.
                    renewed = True
                    delay, advised = 0.0, None
                elif reauthorize:
                    reauthorized = True
                    delay, advised = 0.0, None
                failed = attempt
                attempt += 1
                waiting = True
                current.disposable = sched.schedule_relative(delay, restart)
                observer.on_next(Retrying(error, failed, delay, advised))

            def on_online(value: bool) -> None:
                nonlocal is_online, attempt, paused, waiting
                if stopped or value == is_online:
                    return
                is_online = value
                if not value:
                    if waiting:  # stop waiting for the retry timer; an open attempt goes on
                        waiting = False
                        paused = True
                        current.disposable = Disposable()
                        observer.on_next(Paused(last_error))
                elif paused:
                    attempt = 0  # back online: at once, with a fresh schedule
                    start()

            if online is not None:
                online_sub.disposable = online.subscribe(
                    on_online, observer.on_error, scheduler=scheduler_
                )
            if not stopped:
                if is_online:
                    start()
                elif not paused:
                    paused = True
                    observer.on_next(Paused(None))
            return CompositeDisposable(current, stable, online_sub)

        return Observable(subscribe)

    return operator
