"""retry_with_backoff_: re-subscribe after retryable errors, waiting a backoff schedule.

RxPY has ``retry(n)`` but no ``retry_when``; this operator is the missing piece,
shaped like RxPY's own ``_catch.py``: one live attempt in a ``SerialDisposable``
(replaced by the retry timer when it fails), a generation id so that a late
event from a replaced attempt is ignored, and every timer from the scheduler.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

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
    "Phase",
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


class Phase(enum.Enum):
    """Where one subscription of the retry operator is (the table below drives it).

    =========== ============================ =====================================
    phase       what runs                    leaves on
    =========== ============================ =====================================
    IDLE        nothing yet (subscribing)    the start (ATTEMPTING, or PAUSED
                                             when offline)
    ATTEMPTING  one subscribed attempt       its failure (WAITING, PAUSED or
                                             STOPPED), its completion (STOPPED)
    WAITING     the retry timer              the timer (ATTEMPTING), offline
                                             (PAUSED)
    PAUSED      nothing (offline)            online (ATTEMPTING, fresh schedule)
    STOPPED     nothing                      never (gave up, or completed)
    =========== ============================ =====================================
    """

    IDLE = "idle"
    ATTEMPTING = "attempting"
    WAITING = "waiting"
    PAUSED = "paused"
    STOPPED = "stopped"


class _Retrier(Generic[_T]):
    """One subscription of the operator: its attempts, timers and online switch."""

    def __init__(
        self,
        source: Observable[_T],
        observer: abc.ObserverBase[_T | RetryEvent],
        backoff: Backoff,
        policy: Callable[[Exception], bool],
        is_open: Callable[[Any], bool] | None,
        on_completed: Callable[[], Exception] | None,
        sched: abc.SchedulerBase,
        scheduler_: abc.SchedulerBase | None,
    ) -> None:
        self.source, self.observer, self.backoff = source, observer, backoff
        self.policy, self.is_open, self.on_completed = policy, is_open, on_completed
        self.sched, self.scheduler_ = sched, scheduler_
        self.current = SerialDisposable()  # the live attempt, or the timer before the next
        self.stable = SerialDisposable()  # fires when the open link counts as stable
        self.online_sub = SingleAssignmentDisposable()
        self.phase = Phase.IDLE
        self.online = True
        self.attempt = 0
        self.generation = 0  # bumped whenever the live attempt changes: stale events drop
        self.renewed = False  # a 410 was retried at once since the last open link
        self.reauthorized = False  # a 401 was retried at once since the last open link
        self.last_error: Exception | None = None

    def run(self, online: Observable[bool] | None) -> abc.DisposableBase:
        if online is not None:
            self.online_sub.disposable = online.subscribe(
                self.on_online, self.observer.on_error, scheduler=self.scheduler_
            )
        if self.phase is Phase.IDLE:  # (``online`` may have started or stopped it already)
            if self.online:
                self.start()
            else:
                self.phase = Phase.PAUSED
                self.observer.on_next(Paused(None))
        return CompositeDisposable(self.current, self.stable, self.online_sub)

    # ------------------------------------------------------------ attempts

    def start(self) -> None:
        self.phase = Phase.ATTEMPTING
        self.generation += 1
        mine = self.generation
        self.observer.on_next(AttemptStarted(self.attempt))
        holder = SingleAssignmentDisposable()
        self.current.disposable = holder  # before subscribing: a sync error may replace it
        watching = self.is_open is not None  # until the link opened (then skip the check)

        def on_next(value: _T) -> None:
            nonlocal watching
            if mine != self.generation:
                return
            if watching and self.is_open is not None and self.is_open(value):
                watching = False
                self.opened()
            self.observer.on_next(value)

        def on_error(error: Exception) -> None:
            if mine == self.generation:
                self.fail(error)

        def on_completed() -> None:
            if mine != self.generation:
                return
            if self.on_completed is None:
                self.stop(None)
            else:
                self.fail(self.on_completed())

        holder.disposable = self.source.subscribe(
            on_next, on_error, on_completed, scheduler=self.scheduler_
        )

    def opened(self) -> None:
        """The attempt's link opened: immediate renewals are granted again, and the
        schedule starts over once the link stayed up for ``stable_after``."""
        self.renewed = self.reauthorized = False
        self.stable.disposable = self.sched.schedule_relative(
            self.backoff.stable_after, self.settle
        )

    def settle(self, _: abc.SchedulerBase, __: Any = None) -> None:
        self.attempt = 0  # the link stayed up: the schedule starts over

    def restart(self, _: abc.SchedulerBase, __: Any = None) -> None:
        self.start()

    # ------------------------------------------------------------ failures

    def fail(self, error: Exception) -> None:
        self.generation += 1  # the failed attempt can no longer speak
        self.stable.disposable = Disposable()
        self.last_error = error
        # A 401 at open: once (until a link opens), retry at once, so that the
        # transport asks its headers callable for a fresh token; a second 401 in a
        # row is left to the policy, for which 401 is fatal.
        reauthorize = not self.reauthorized and renews_credentials(error)
        if not reauthorize:
            try:
                retryable = self.policy(error)
            except Exception as policy_error:  # a user policy that raises is reported
                self.stop(policy_error)
                return
            if not retryable:
                self.stop(error)
                return
        if self.backoff.gives_up_after(self.attempt):
            exhausted = RetriesExhausted(self.attempt + 1)
            exhausted.__cause__ = error
            self.stop(exhausted)
            return
        if not self.online:
            self.phase = Phase.PAUSED
            self.current.disposable = Disposable()
            self.observer.on_next(Paused(error))
            return
        delay, advised = self.next_delay(error, reauthorize)
        failed = self.attempt
        self.attempt += 1
        self.phase = Phase.WAITING
        self.current.disposable = self.sched.schedule_relative(delay, self.restart)
        self.observer.on_next(Retrying(error, failed, delay, advised))

    def next_delay(self, error: Exception, reauthorize: bool) -> tuple[float, float | None]:
        """The wait before the next attempt, and the server advice if it set it."""
        if isinstance(error, SessionExpired) and not self.renewed:
            # The hub answered (the link is healthy) but no longer knows our session:
            # open a new one at once. Only once until a link opens, so a hub that
            # answers 410 to everything still gets the backoff.
            self.renewed = True
            return 0.0, None
        if reauthorize:
            self.reauthorized = True
            return 0.0, None
        return _delay(self.backoff, self.attempt, getattr(error, "retry_after", None))

    def stop(self, error: Exception | None) -> None:
        """Completed (``None``) or gave up with ``error``: nothing runs any more."""
        self.phase = Phase.STOPPED
        self.generation += 1
        self.stable.dispose()
        self.online_sub.dispose()
        if error is None:
            self.observer.on_completed()
        else:
            self.current.disposable = Disposable()
            self.observer.on_error(error)

    # -------------------------------------------------------------- online

    def on_online(self, value: bool) -> None:
        if self.phase is Phase.STOPPED or value == self.online:
            return
        self.online = value
        if not value:
            if self.phase is Phase.WAITING:  # stop waiting; an open attempt goes on
                self.phase = Phase.PAUSED
                self.current.disposable = Disposable()
                self.observer.on_next(Paused(self.last_error))
        elif self.phase is Phase.PAUSED:
            self.attempt = 0  # back online: at once, with a fresh schedule
            self.start()


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
            retrier = _Retrier(
                source, observer, backoff, is_retryable, is_open, on_completed, sched, scheduler_
            )
            return retrier.run(online)

        return Observable(subscribe)

    return operator
