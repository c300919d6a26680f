"""Public Rx operators of the core, for users composing their own pipelines.

Thin façade in RxPY's style: each function documents the operator and imports
its implementation lazily from ``rxconn._core``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc

from ._core._retry import AttemptStarted, Paused, Retrying
from .backoff import Backoff
from .errors import is_retryable as _default_is_retryable


__all__ = ["AttemptStarted", "Paused", "Retrying", "idle_timeout", "retry_with_backoff"]

_T = TypeVar("_T")


def retry_with_backoff(
    backoff: Backoff,
    *,
    is_retryable: Callable[[Exception], bool] = _default_is_retryable,
    is_open: Callable[[Any], bool] | None = None,
    on_completed: Callable[[], Exception] | None = None,
    online: Observable[bool] | None = None,
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[_T]], Observable[Any]]:
    """Re-subscribe to the source after retryable errors, waiting ``backoff`` delays.

    .. marble::
        :alt: retry_with_backoff

        --a--#
        [ retry_with_backoff(Backoff(initial=2.0, jitter=0, max_attempts=2)) ]
        S-a--R--S-a--#

    Before each subscription it emits ``AttemptStarted(n)``; after a retryable
    failure ``Retrying(error, n, delay, advised)`` (``delay`` is the error's
    ``retry_after`` if the server advised a longer one, else ``backoff.delay(n)``).
    A 410 (``SessionExpired``: the hub answered, the session is new) and a
    first 401 at open (credentials to refresh) are retried at once, each only
    once until a link opens; a second 401 in a row passes through as fatal.
    A non-retryable error passes through at once; after ``max_attempts``
    failures in a row it errors with ``RetriesExhausted`` (``__cause__``: the
    last error). An item for which ``is_open`` is true starts a
    ``backoff.stable_after`` timer; when it fires the schedule starts over.
    While ``online`` says False no attempt starts (``Paused`` is emitted);
    True starts one at once with a fresh schedule.

    Args:
        backoff: The delay schedule.
        is_retryable: Policy hook: False makes an error final.
        is_open: Marks the item that means "the link is open".
        on_completed: If given, completion counts as a failure with this error.
        online: Optional network availability.
        scheduler: Timer scheduler; defaults to the one given at subscribe time.

    Returns:
        An operator for ``Observable.pipe``.
    """
    from ._core._retry import retry_with_backoff_

    return retry_with_backoff_(
        backoff,
        is_retryable=is_retryable,
        is_open=is_open,
        on_completed=on_completed,
        online=online,
        scheduler=scheduler,
    )


def idle_timeout(
    seconds: float,
    *,
    is_open: Callable[[Any], bool],
    make_error: Callable[[float], Exception],
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Error with ``make_error(seconds)`` when nothing arrives for ``seconds`` after opening.

    .. marble::
        :alt: idle_timeout

        o-a-------
        [ idle_timeout(4.0) ]
        o-a-----#

    Timing starts at the first item for which ``is_open`` is true. Arrivals only
    set a flag that a timer checks every ``seconds / 2``, so a quiet link is
    declared dead between ``seconds`` and ``1.5 * seconds`` after its last
    arrival, at no per-item timer cost.
    """
    from ._core._idle import idle_timeout_

    return idle_timeout_(seconds, is_open=is_open, make_error=make_error, scheduler=scheduler)
