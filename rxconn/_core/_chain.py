"""one_pass_: one pass along a fallback's chain of transports.

::

    catch(                                        move on when a transport fails to open
        Trying(ws)   + ws.open().pipe(open_within(timeout)),
        Trying(sse)  + sse.open().pipe(open_within(timeout)),
        Trying(poll) + poll.open(),               the last one has no deadline
    )

Each move along the chain is reported as a ``fell_back``
:class:`~rxconn.diagnostics.Diagnostic` (naming the transport moved on to, the
one that failed and its error), emitted just before that transport's ``Trying``.

Only a failure *before* a link opened moves the pass on. An error after a link
opened (or a ``SessionExpired``, which is the session's fault, not the
transport's) fails the pass, so that the connection retries: inside the chain
it travels as a :class:`_LateError` value, which ``catch`` lets through, and
is raised again after the last ``catch``. When every transport of a pass
failed to open, the pass fails with the last one's error, noted (PEP 678) with
why each one before it failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import reactivex as rx
from reactivex import Observable, abc
from reactivex import operators as ops

from ..diagnostics import diagnostic
from ..errors import OpenTimeout, SessionExpired
from ..transport import LinkContext, LinkEvent, Opened, Transport, Trying
from ._open import open_within_


__all__ = ["FAILED_FIRST", "is_opened", "one_pass_", "open_deadline"]

FAILED_FIRST = "fallback tried first: "
"""How the notes on a failed pass's last error begin (see :func:`_note_failures`)."""


def is_opened(event: object) -> bool:
    """Whether ``event`` is the ``Opened`` of a link."""
    return type(event) is Opened


def open_deadline(
    seconds: float, name: str, scheduler: abc.SchedulerBase
) -> Callable[[Observable[Any]], Observable[Any]]:
    """Fail with ``OpenTimeout`` if the link of transport ``name`` does not open in time.

    Used for every transport of the chain but the last, and for upgrade
    probes and candidates.
    """
    return open_within_(
        seconds,
        is_open=is_opened,
        make_error=lambda s: OpenTimeout(name, f"did not open within {s:g} s (fallback)"),
        scheduler=scheduler,
    )


@dataclass(frozen=True, slots=True)
class _LateError:
    """An error of a link that had opened, carried past ``catch`` as a value."""

    error: Exception


def _starting_with(first: LinkEvent, source: Observable[Any]) -> Observable[Any]:
    """Emit ``first`` synchronously on subscribe, then mirror ``source``.

    (``rx.of`` would go through the trampoline and could deliver after the
    connection already announced its state.)
    """

    def subscribe(
        observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        observer.on_next(first)
        return source.subscribe(observer, scheduler=scheduler)

    return Observable(subscribe)


def _late_errors_as_values(
    on_open: Callable[[], None],
    on_early_error: Callable[[Exception], None],
    on_expired: Callable[[], None],
) -> Callable[[Observable[Any]], Observable[Any]]:
    """Errors after the first ``Opened`` (or SessionExpired) become ``_LateError`` values.

    ``on_open`` runs just before the first ``Opened`` is passed on,
    ``on_early_error`` just before an error that moves the pass on, and
    ``on_expired`` just before a ``SessionExpired`` fails the pass.
    """

    def operator(source: Observable[Any]) -> Observable[Any]:
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            opened = False

            def on_next(event: Any) -> None:
                nonlocal opened
                if not opened and type(event) is Opened:
                    opened = True
                    on_open()
                observer.on_next(event)

            def on_error(error: Exception) -> None:
                # A session the hub no longer knows is not this transport's fault:
                # retry it (with a new session) rather than moving down the chain.
                if isinstance(error, SessionExpired):
                    on_expired()
                if opened or isinstance(error, SessionExpired):
                    observer.on_next(_LateError(error))
                    observer.on_completed()
                else:
                    on_early_error(error)
                    observer.on_error(error)

            return source.subscribe(on_next, on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator


def _late_errors_raised(source: Observable[Any]) -> Observable[Any]:
    """Turn ``_LateError`` values back into errors."""

    def subscribe(
        observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        def on_next(event: Any) -> None:
            if type(event) is _LateError:
                observer.on_error(event.error)
            else:
                observer.on_next(event)

        return source.subscribe(
            on_next, observer.on_error, observer.on_completed, scheduler=scheduler
        )

    return Observable(subscribe)


def _note_failures(error: Exception, failures: list[Exception]) -> None:
    """Note on ``error`` (the last transport's) why each transport before it failed to open.

    The error itself is kept (its type, status and fatality decide the retry;
    callers may compare it by identity): the earlier reasons become PEP 678
    notes, ``"fallback tried first: <error>"`` each, replacing any such notes
    from an earlier pass (a transport may raise one error instance again).
    """
    notes: list[str] = getattr(error, "__notes__", [])
    notes[:] = [note for note in notes if not note.startswith(FAILED_FIRST)]
    for failure in failures:
        error.add_note(f"{FAILED_FIRST}{failure}")


@dataclass(frozen=True, slots=True)
class _Pass:
    """What every transport of a pass needs; see :func:`one_pass_`."""

    transports: Sequence[Transport]
    timeout: float
    scheduler: abc.SchedulerBase
    context: LinkContext
    on_opened: Callable[[int], None]
    on_exhausted: Callable[[], None]
    on_expired: Callable[[int], None]

    def attempt(self, index: int, failures: list[Exception]) -> Observable[Any]:
        """Open transport ``index``; ``failures`` holds this pass's earlier early errors."""
        transport = self.transports[index]
        last = index == len(self.transports) - 1

        def failed_early(error: Exception) -> None:
            if last:
                self.on_exhausted()
                if failures:
                    _note_failures(error, failures)

        def make() -> Observable[Any]:
            source: Observable[Any] = transport.open(self.scheduler, self.context)
            if not last:
                source = source.pipe(open_deadline(self.timeout, transport.name, self.scheduler))
            late = _late_errors_as_values(
                lambda: self.on_opened(index), failed_early, lambda: self.on_expired(index)
            )
            return _starting_with(Trying(transport.name), source.pipe(late))

        return rx.defer(lambda _: make())

    def chain_from(self, index: int, failures: list[Exception]) -> Observable[Any]:
        """Transports ``index`` and after, each tried when the one before failed to open."""
        if index == len(self.transports) - 1:
            return self.attempt(index, failures)

        def next_one(error: Exception, _source: Observable[Any]) -> Observable[Any]:
            failures.append(error)
            fell_back = diagnostic(
                "fell_back",
                self.transports[index + 1].name,
                previous=self.transports[index].name,
                error=error,
            )
            return _starting_with(fell_back, self.chain_from(index + 1, failures))

        # ops.catch subscribes the next one synchronously (rx.catch would go
        # through the scheduler, and Trying would reach the state late).
        return self.attempt(index, failures).pipe(ops.catch(next_one))


def one_pass_(
    transports: Sequence[Transport],
    start: int,
    *,
    timeout: float,
    scheduler: abc.SchedulerBase,
    context: LinkContext,
    on_opened: Callable[[int], None],
    on_exhausted: Callable[[], None],
    on_expired: Callable[[int], None],
) -> Observable[Any]:
    """One pass along ``transports[start:]``: each subscription tries them in order.

    Args:
        transports: The whole chain, in order of preference.
        start: The index the pass starts at.
        timeout: Seconds each transport but the last may take to open.
        scheduler: For the links and their deadlines.
        context: Handed to every link.
        on_opened: Called with the transport's index when its link opened,
            just before that ``Opened`` is emitted.
        on_exhausted: Called when the last transport failed to open too.
        on_expired: Called with the transport's index when a ``SessionExpired``
            fails the pass (before or after its link opened).

    Returns:
        The events of the link that opened, preceded by a ``Trying`` for each
        transport tried; it errors when the pass fails (see the module docstring).
    """
    chain = _Pass(transports, timeout, scheduler, context, on_opened, on_exhausted, on_expired)

    def subscribe(
        observer: abc.ObserverBase[Any], scheduler_: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        failures: list[Exception] = []  # this pass's early errors, in chain order
        events = chain.chain_from(start, failures).pipe(_late_errors_raised)
        return events.subscribe(observer, scheduler=scheduler_ or scheduler)

    return Observable(subscribe)
