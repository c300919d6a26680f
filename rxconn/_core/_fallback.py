"""Fallback: try transports in order, and upgrade back to the preferred one when it works.

One subscription is one attempt, one pass along the chain::

    catch(                                   move on when a transport fails to open
        Trying(ws)   + ws.open().pipe(open_within(timeout)),
        Trying(http) + http.open(),          the last one has no deadline
    )

An error *after* a link opened is not a reason to try the next transport: it
fails the attempt (the connection retries), so the chain carries such errors
as values past ``catch`` and turns them back into errors after it.

While the active link is not the preferred transport, an upgrade loop probes
the preferred one every ``upgrade_interval`` seconds (doubling after each
failure, up to ``max_upgrade_interval``). A probe counts only after a real
round trip (the transport's probe mode: a WebSocket ping/pong) and carries no
messages. Then a real link of the preferred transport is opened *while the old
one still runs* (make-before-break); once it opened, ``switch_latest`` makes
it the active link and disposes the old one. An error of the old link during
that short overlap is held back, and dropped if the switch succeeds (the hub
closes the old link when the new one takes the session over).

The fallback remembers, for the current period of interest
(``LinkContext.memory``), which transport worked: reconnects go straight to it
instead of paying the timeout again; new interest starts from the top.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import reactivex as rx
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.disposable import (
    CompositeDisposable,
    Disposable,
    SerialDisposable,
    SingleAssignmentDisposable,
)
from reactivex.subject import Subject

from ..errors import ConnectionLost, OpenTimeout, RxconnError, SessionExpired
from ..transport import LinkContext, LinkEvent, Opened, Transport, Trying
from ._open import open_within_


__all__ = ["Fallback", "fallback"]


@dataclass(frozen=True, slots=True)
class _LateError:
    """An error of a link that had opened, carried past ``catch`` as a value."""

    error: Exception


def _is_opened(event: object) -> bool:
    return type(event) is Opened


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
    on_open: Callable[[], None], on_early_error: Callable[[], None]
) -> Callable[[Observable[Any]], Observable[Any]]:
    """Errors after the first ``Opened`` (or SessionExpired) become ``_LateError`` values."""

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
                if opened or isinstance(error, SessionExpired):
                    observer.on_next(_LateError(error))
                    observer.on_completed()
                else:
                    on_early_error()
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


class _Candidate:
    """A link opened ahead of the switch; it is adopted (subscribed) once it opened.

    Until adopted it belongs to the upgrade loop (which disposes it on
    failure); after that to ``switch_latest``. Events that arrive before
    adoption are kept and replayed, so nothing is lost in the hand-over.
    """

    def __init__(self) -> None:
        self.subscription = SingleAssignmentDisposable()
        self.adopted = False
        self._buffer: list[Any] = []
        self._adopter: abc.ObserverBase[Any] | None = None
        self._terminal: tuple[str, Exception | None] | None = None
        self.observable: Observable[Any] = Observable(self._adopt)

    def start(
        self,
        source: Observable[Any],
        scheduler: abc.SchedulerBase,
        on_event: Callable[[Any], None],
        on_failure: Callable[[Exception], None],
    ) -> None:
        opened = False

        def on_next(event: Any) -> None:
            nonlocal opened
            if self._adopter is not None:
                self._adopter.on_next(event)
                return
            self._buffer.append(event)
            if not opened and type(event) is Opened:
                opened = True
                on_event(event)

        def on_error(error: Exception) -> None:
            if self._adopter is not None:
                self._adopter.on_error(error)
            elif opened:
                self._terminal = ("error", error)
            else:
                on_failure(error)

        def on_completed() -> None:
            if self._adopter is not None:
                self._adopter.on_completed()
            elif opened:
                self._terminal = ("completed", None)
            else:
                on_failure(RxconnError("the upgrade link closed before it opened"))

        self.subscription.disposable = source.subscribe(
            on_next, on_error, on_completed, scheduler=scheduler
        )

    def owned_until_adopted(self) -> abc.DisposableBase:
        """What the upgrade loop holds: it closes the link only if it was never adopted."""

        def dispose() -> None:
            if not self.adopted:
                self.subscription.dispose()

        return Disposable(dispose)

    def _adopt(
        self, observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        self.adopted = True
        buffered, self._buffer = self._buffer, []
        for event in buffered:
            observer.on_next(event)
        terminal = self._terminal
        if terminal is not None:
            if terminal[0] == "error" and terminal[1] is not None:
                observer.on_error(terminal[1])
            else:
                observer.on_completed()
        else:
            self._adopter = observer
        return self.subscription


class Fallback:
    """A transport that tries several in order and upgrades back; see the module docstring.

    Build it with :func:`fallback`.
    """

    def __init__(
        self,
        transports: Sequence[Transport],
        *,
        timeout: float = 2.0,
        upgrade_interval: float | None = 30.0,
        max_upgrade_interval: float = 300.0,
    ) -> None:
        if not transports:
            raise ValueError("fallback() needs at least one transport")
        for transport in transports:
            if not isinstance(transport, Transport):
                raise TypeError(f"not a transport: {transport!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        if upgrade_interval is not None and not upgrade_interval > 0:
            raise ValueError(f"upgrade_interval must be > 0 or None, got {upgrade_interval!r}")
        self.transports = tuple(transports)
        self.timeout = timeout
        self.upgrade_interval = upgrade_interval
        self.max_upgrade_interval = max(max_upgrade_interval, upgrade_interval or 0.0)
        limits = [getattr(t, "max_send_size", None) for t in transports]
        sizes = [limit for limit in limits if isinstance(limit, int)]
        self.max_send_size: int | None = min(sizes) if sizes else None
        self._key = f"fallback:{id(self)}"

    @property
    def name(self) -> str:
        return "fallback"

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transports)
        return (
            f"fallback({inner}, timeout={self.timeout}, upgrade_interval={self.upgrade_interval})"
        )

    # ---------------------------------------------------------- the chain

    def _memory(self, ctx: LinkContext) -> dict[str, int]:
        memory: dict[str, int] = ctx.memory.setdefault(self._key, {"start": 0, "failures": 0})
        return memory

    def _try(self, index: int, scheduler: abc.SchedulerBase, ctx: LinkContext) -> Observable[Any]:
        transport = self.transports[index]
        last = index == len(self.transports) - 1
        memory = self._memory(ctx)

        def opened() -> None:
            if index > 0 and memory["start"] == 0:
                memory["failures"] += 1  # fell back: probes start from a longer interval
            memory["start"] = index

        def failed_early() -> None:
            if last:
                memory["start"] = 0  # nothing worked: next attempt walks the whole chain

        def make() -> Observable[Any]:
            source: Observable[Any] = transport.open(scheduler, ctx)
            if not last:
                source = source.pipe(self._deadline(transport.name, scheduler))
            return _starting_with(
                Trying(transport.name), source.pipe(_late_errors_as_values(opened, failed_early))
            )

        return rx.defer(lambda _: make())

    def _deadline(
        self, name: str, scheduler: abc.SchedulerBase
    ) -> Callable[[Observable[Any]], Observable[Any]]:
        return open_within_(
            self.timeout,
            is_open=_is_opened,
            make_error=lambda s: OpenTimeout(name, f"did not open within {s:g} s (fallback)"),
            scheduler=scheduler,
        )

    def open(
        self, scheduler: abc.SchedulerBase, context: LinkContext | None = None
    ) -> Observable[LinkEvent]:
        ctx = context if context is not None else LinkContext()
        count = len(self.transports)

        def chain_from(index: int) -> Observable[Any]:
            attempt = self._try(index, scheduler, ctx)
            if index == count - 1:
                return attempt
            # ops.catch subscribes the next one synchronously (rx.catch would go
            # through the scheduler, and Trying would reach the state late).
            return attempt.pipe(ops.catch(lambda _error, _source: chain_from(index + 1)))

        def subscribe(
            observer: abc.ObserverBase[LinkEvent], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            chain = chain_from(self._memory(ctx)["start"]).pipe(_late_errors_raised)
            return self._with_upgrades(chain, scheduler, ctx, observer)

        return Observable(subscribe)

    # --------------------------------------------------------- the upgrade

    def _with_upgrades(
        self,
        chain: Observable[Any],
        scheduler: abc.SchedulerBase,
        ctx: LinkContext,
        observer: abc.ObserverBase[LinkEvent],
    ) -> abc.DisposableBase:
        """Run ``chain`` as the first active link, and switch to upgrades as they succeed."""
        preferred = self.transports[0]
        memory = self._memory(ctx)
        links: Subject[Observable[Any]] = Subject()
        probe = SerialDisposable()  # the probe timer, the probe link, or the candidate link
        stable = SerialDisposable()
        held: list[Exception] = []
        probing = False
        switching = False
        stopped = False

        def hold_while_switching(source: Observable[Any]) -> Observable[Any]:
            def subscribe(
                inner: abc.ObserverBase[Any], scheduler_: abc.SchedulerBase | None = None
            ) -> abc.DisposableBase:
                def on_error(error: Exception) -> None:
                    if switching:
                        held.append(error)  # most likely the hub closing it for the new link
                    else:
                        inner.on_error(error)

                def on_completed() -> None:
                    # switch_latest waits for its outer stream to end too; the link
                    # closing cleanly ends this attempt, so complete downstream now.
                    if switching:
                        held.append(ConnectionLost(preferred.name, "closed during the switch"))
                    else:
                        observer.on_completed()

                return source.subscribe(inner.on_next, on_error, on_completed, scheduler=scheduler_)

            return Observable(subscribe)

        def interval() -> float:
            assert self.upgrade_interval is not None
            failures = max(memory["failures"] - 1, 0)
            return min(self.max_upgrade_interval, self.upgrade_interval * 2.0**failures)

        def schedule_probe() -> None:
            nonlocal probing
            if stopped or self.upgrade_interval is None or len(self.transports) < 2:
                return
            probing = True
            probe.disposable = scheduler.schedule_relative(interval(), run_probe)

        def stop_probing() -> None:
            nonlocal probing, switching
            probing = switching = False
            probe.disposable = Disposable()

        def probe_failed(_: Exception | None = None) -> None:
            nonlocal switching
            memory["failures"] += 1
            if switching:
                switching = False
                if held:  # the old link died during the failed switch: the attempt fails
                    error = held[-1]
                    held.clear()
                    stop_probing()
                    observer.on_error(error)
                    return
            schedule_probe()

        def run_probe(_: abc.SchedulerBase, __: Any = None) -> None:
            holder = SingleAssignmentDisposable()
            probe.disposable = holder
            verified = False

            def on_next(event: Any) -> None:
                nonlocal verified
                if type(event) is Opened and not verified:
                    verified = True
                    start_candidate()  # replaces, and so closes, the probe link

            def on_error(_: Exception) -> None:
                if not verified:
                    probe_failed()

            def on_completed() -> None:
                if not verified:
                    probe_failed()

            source = preferred.open(scheduler, replace(ctx, probe=True))
            holder.disposable = source.pipe(self._deadline(preferred.name, scheduler)).subscribe(
                on_next, on_error, on_completed, scheduler=scheduler
            )

        def start_candidate() -> None:
            nonlocal switching
            switching = True
            candidate = _Candidate()
            probe.disposable = candidate.owned_until_adopted()

            def adopt(_: Any) -> None:
                nonlocal switching, probing
                switching = probing = False
                held.clear()
                links.on_next(hold_while_switching(candidate.observable))  # switch_latest owns it
                probe.disposable = Disposable()

            source = preferred.open(scheduler, ctx).pipe(self._deadline(preferred.name, scheduler))
            candidate.start(source, scheduler, adopt, probe_failed)

        def settle(_: abc.SchedulerBase, __: Any = None) -> None:
            memory["failures"] = 0  # the preferred link held: probe at the base interval again

        def on_next(event: Any) -> None:
            if type(event) is Opened:
                if event.transport == preferred.name:
                    stop_probing()
                    memory["start"] = 0
                    if self.upgrade_interval is not None:
                        stable.disposable = scheduler.schedule_relative(
                            self.upgrade_interval, settle
                        )
                elif not probing:
                    schedule_probe()
            observer.on_next(event)

        subscription = links.pipe(ops.switch_latest()).subscribe(
            on_next, observer.on_error, observer.on_completed, scheduler=scheduler
        )
        links.on_next(hold_while_switching(chain))

        def stop() -> None:
            nonlocal stopped
            stopped = True

        return CompositeDisposable(Disposable(stop), probe, stable, subscription)


def fallback(
    *transports: Transport,
    timeout: float = 2.0,
    upgrade_interval: float | None = 30.0,
    max_upgrade_interval: float = 300.0,
) -> Fallback:
    """Try ``transports`` in order; upgrade back to the first while on a later one.

    Args:
        transports: In order of preference (e.g. ``websocket(...)``, ``http(...)``).
        timeout: Seconds each but the last may take to open before the next is tried.
        upgrade_interval: Seconds between probes of the preferred transport while
            on a later one (``None``: never upgrade); doubles after each failed
            probe or fall-back, up to ``max_upgrade_interval``, and returns to
            the base once the preferred link held for ``upgrade_interval``.
        max_upgrade_interval: Cap on the probe interval.

    Returns:
        A :class:`~rxconn.transport.Transport` named ``"fallback"``; states
        name the transport of the active link.
    """
    return Fallback(
        transports,
        timeout=timeout,
        upgrade_interval=upgrade_interval,
        max_upgrade_interval=max_upgrade_interval,
    )
