"""Upgrades: run a fallback's active link, probe better transports, switch make-before-break.

The active link is the latest inner observable of ``switch_latest``: first the
pass along the chain, then each adopted upgrade. While the active link is not
the preferred (first) transport's, a *probe round* runs every
``upgrade_interval`` seconds (doubling after each setback, see
:class:`~rxconn._core._memory.FallbackMemory`). The loop's :class:`Phase`
changes like this (h11-style, one row per transition)::

    IDLE       a later transport's link opened         -> WAITING
    WAITING    the round's timer fired                 -> PROBING the best target
    PROBING    failed; a next target is still better   -> PROBING that target
    PROBING    failed; no target left (a setback)      -> WAITING
    PROBING    verified                                -> SWITCHING
    SWITCHING  the candidate failed (a setback)        -> WAITING, or the attempt
                                                          fails if the old link ended
    SWITCHING  the candidate opened: adopted           -> IDLE (then WAITING at once
                                                          unless it is the preferred)
    any        disposed, or the attempt ended          -> STOPPED

**What a round probes.** The transports preferred to the active one, in order
of preference, one probe link at a time: on the second transport, only the
first; on the third, the first and, if it fails, the second. The first target
whose probe is verified gets the switch, so a chain WebSocket → SSE → long
polling can move up from long polling to WebSocket, or to SSE when WebSocket
is still blocked (and later from SSE to WebSocket). A round that does not
reach the preferred transport is a setback.

**A probe is verified, and carries nothing.** It is a link opened with
``LinkContext.probe`` set: the transport must send no messages on it, create
no hub session, and emit ``Opened`` only after a round trip (the WebSocket
transport waits for a pong). It gets the fallback ``timeout`` to do so. Its
context has no hub session (``session=None``), so a probe cannot touch the
connection's session even if a transport ignored probe mode.

**Make-before-break.** Once a probe is verified, a real link of its transport
(a :class:`_Candidate`) is opened *while the active link still carries
messages*. When the candidate opened, ``switch_latest`` adopts it (events it
received meanwhile are replayed: nothing is lost in the hand-over) and
disposes the old link. An error or a close of the old link during that
overlap is held back (it is most likely the hub closing it as the new link
takes the session over): dropped if the switch succeeds, raised if it fails.
If the candidate fails to open, the old link stays.

**Reports.** The loop tells the connection what it does as
:class:`~rxconn.diagnostics.Diagnostic` link events, each at the moment it
happens: ``probe_started`` as a probe link is subscribed, ``probe_failed``
when a probe ends unverified (``stage="probe"``) or its candidate fails to
open (``stage="switch"``), ``upgraded`` once the candidate is the active link.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.disposable import (
    CompositeDisposable,
    Disposable,
    SerialDisposable,
    SingleAssignmentDisposable,
)
from reactivex.subject import Subject

from ..diagnostics import DiagnosticKind, diagnostic
from ..errors import ConnectionLost, RxconnError, SessionExpired
from ..transport import LinkContext, LinkEvent, Transport
from ._chain import is_opened, open_deadline
from ._memory import FallbackMemory


__all__ = ["Phase", "Upgrades"]


class Phase(enum.Enum):
    """Where the upgrade loop is; see the diagram in the module docstring."""

    IDLE = "idle"
    """Nothing to do: no link opened yet, or the active link is the preferred transport's."""
    WAITING = "waiting"
    """A probe round is scheduled."""
    PROBING = "probing"
    """A probe link is open and not verified yet."""
    SWITCHING = "switching"
    """A candidate link is opening next to the active one; the active link's end is held."""
    STOPPED = "stopped"
    """Disposed, or the attempt ended: nothing is scheduled or opened any more."""


class _Candidate:
    """A real link opened ahead of the switch; handed to ``switch_latest`` once it opened.

    Until it is handed over it belongs to the upgrade loop (which disposes it
    when the switch fails or is abandoned); then to ``switch_latest``. Events
    that arrive before adoption are kept and replayed, so nothing is lost in
    the hand-over.
    """

    def __init__(self) -> None:
        self.subscription = SingleAssignmentDisposable()
        self._handed_over = False
        self._buffer: list[Any] = []
        self._adopter: abc.ObserverBase[Any] | None = None
        self._terminal: Callable[[abc.ObserverBase[Any]], None] | None = None

    def start(
        self,
        source: Observable[Any],
        scheduler: abc.SchedulerBase,
        on_open: Callable[[], None],
        on_failure: Callable[[Exception], None],
    ) -> None:
        """Subscribe ``source``: ``on_open`` at its first ``Opened``, ``on_failure`` if it
        ends before."""
        opened = False

        def on_next(event: Any) -> None:
            nonlocal opened
            if self._adopter is not None:
                self._adopter.on_next(event)
                return
            self._buffer.append(event)
            if not opened and is_opened(event):
                opened = True
                on_open()

        def on_error(error: Exception) -> None:
            if self._adopter is not None:
                self._adopter.on_error(error)
            elif opened:
                self._terminal = lambda observer: observer.on_error(error)
            else:
                on_failure(error)

        def on_completed() -> None:
            if self._adopter is not None:
                self._adopter.on_completed()
            elif opened:
                self._terminal = lambda observer: observer.on_completed()
            else:
                on_failure(RxconnError("the upgrade link closed before it opened"))

        self.subscription.disposable = source.subscribe(
            on_next, on_error, on_completed, scheduler=scheduler
        )

    def owned_until_handed_over(self) -> abc.DisposableBase:
        """What the upgrade loop holds: it closes the link only if it was not handed over."""

        def dispose() -> None:
            if not self._handed_over:
                self.subscription.dispose()

        return Disposable(dispose)

    def hand_over(self) -> Observable[Any]:
        """The link as an observable for ``switch_latest``: buffered events first, then live."""
        self._handed_over = True
        return Observable(self._subscribe)

    def _subscribe(
        self, observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        buffered, self._buffer = self._buffer, []
        for event in buffered:
            observer.on_next(event)
        if self._terminal is not None:
            self._terminal(observer)
        else:
            self._adopter = observer
        return self.subscription


class Upgrades:
    """The active link of one fallback subscription, and its upgrade loop.

    Build it, feed it the index of each transport whose link opened in the pass
    (:meth:`activate`), then :meth:`run` the pass; see the module docstring.
    """

    def __init__(
        self,
        transports: Sequence[Transport],
        *,
        timeout: float,
        interval: float | None,
        max_interval: float,
        scheduler: abc.SchedulerBase,
        context: LinkContext,
        memory: FallbackMemory,
        observer: abc.ObserverBase[LinkEvent],
    ) -> None:
        self.phase = Phase.IDLE
        self.active: int | None = None
        """The index of the active link's transport, once a link opened."""
        self._transports = transports
        self._timeout = timeout
        self._interval = interval
        self._max_interval = max_interval
        self._scheduler = scheduler
        self._context = context
        self._memory = memory
        self._observer = observer
        self._links: Subject[Observable[Any]] = Subject()
        self._slot = SerialDisposable()  # the round's timer, its probe link, or its candidate
        self._settle = SerialDisposable()
        self._held: Exception | None = None  # the old link's end, during a switch
        self._switching_to = 0  # the target of the switch under way (SWITCHING)

    def run(self, first: Observable[Any]) -> abc.DisposableBase:
        """Make ``first`` (the pass along the chain) the active link; returns the teardown."""
        subscription = self._links.pipe(ops.switch_latest()).subscribe(
            self._on_next, self._fail, self._complete, scheduler=self._scheduler
        )
        self._links.on_next(self._guarded(first))
        return CompositeDisposable(Disposable(self._stop), self._slot, self._settle, subscription)

    def activate(self, index: int) -> None:
        """A link of transport ``index`` opened and is (about to be) the active link."""
        self.active = index
        self._memory.opened(index)

    # ----------------------------------------------------------- the active link

    def _guarded(self, source: Observable[Any]) -> Observable[Any]:
        """``source`` as an active link: its end is held back while switching.

        A clean close ends the attempt at once (``switch_latest`` would wait
        for its outer stream, which never ends).
        """

        def subscribe(
            inner: abc.ObserverBase[Any], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            def on_error(error: Exception) -> None:
                if self.phase is Phase.SWITCHING:
                    self._held = error  # most likely the hub closing it for the new link
                else:
                    inner.on_error(error)

            def on_completed() -> None:
                if self.phase is Phase.SWITCHING:
                    self._held = ConnectionLost(self._active_name(), "closed during the switch")
                else:
                    self._complete()

            return source.subscribe(
                inner.on_next, on_error, on_completed, scheduler=scheduler_ or self._scheduler
            )

        return Observable(subscribe)

    def _active_name(self) -> str:
        return "fallback" if self.active is None else self._transports[self.active].name

    def _report(self, kind: DiagnosticKind, target: int, **detail: Any) -> None:
        """Tell the connection (through the link events) what the upgrade loop just did."""
        self._observer.on_next(diagnostic(kind, self._transports[target].name, **detail))

    def _on_next(self, event: Any) -> None:
        if is_opened(event) and self.phase is not Phase.STOPPED:
            if self.active == 0:
                self._on_preferred()
            elif self.phase is Phase.IDLE:
                self._schedule_round()
        self._observer.on_next(event)

    def _on_preferred(self) -> None:
        """The preferred transport's link opened: no more probes; settle once it held."""
        self.phase = Phase.IDLE
        self._slot.disposable = Disposable()
        if self._interval is not None:
            self._settle.disposable = self._scheduler.schedule_relative(
                self._interval, lambda *_: self._memory.settled()
            )

    def _fail(self, error: Exception) -> None:
        if isinstance(error, SessionExpired) and self.active is not None:
            self._memory.session_expired(self.active)  # an adopted link too
        self._stop()
        self._observer.on_error(error)

    def _complete(self) -> None:
        self._stop()
        self._observer.on_completed()

    def _stop(self) -> None:
        self.phase = Phase.STOPPED
        self._slot.dispose()
        self._settle.dispose()

    # ---------------------------------------------------------------- the probes

    def _schedule_round(self) -> None:
        """Schedule the next probe round, if upgrades are on and a better transport exists."""
        if self.phase is Phase.STOPPED or self._interval is None or not self.active:
            return
        self.phase = Phase.WAITING
        delay = self._memory.probe_interval(self._interval, self._max_interval)
        self._slot.disposable = self._scheduler.schedule_relative(delay, self._start_round)

    def _start_round(self, _: abc.SchedulerBase, __: Any = None) -> None:
        self._probe(0)

    def _probe(self, target: int) -> None:
        """Open a probe link of transport ``target``; switch to it once it is verified."""
        self.phase = Phase.PROBING
        holder = SingleAssignmentDisposable()
        self._slot.disposable = holder  # before subscribing: a synchronous failure replaces it
        transport = self._transports[target]
        verified = False

        def on_next(event: Any) -> None:
            nonlocal verified
            if not verified and is_opened(event):
                verified = True
                self._switch(target)  # replaces, and so closes, the probe link

        def on_error(error: Exception) -> None:
            if not verified:
                self._report("probe_failed", target, error=error, stage="probe")
                self._missed(target)

        def on_completed() -> None:
            if not verified:
                closed = ConnectionLost(transport.name, "the probe closed before it was verified")
                self._report("probe_failed", target, error=closed, stage="probe")
                self._missed(target)

        self._report("probe_started", target, active=self._active_name())
        # Without the hub session: even a transport that ignored probe mode could
        # then neither take the session over nor count messages as received.
        probe = replace(self._context, probe=True, session=None)
        source = transport.open(self._scheduler, probe)
        holder.disposable = source.pipe(
            open_deadline(self._timeout, transport.name, self._scheduler)
        ).subscribe(on_next, on_error, on_completed, scheduler=self._scheduler)

    def _missed(self, target: int) -> None:
        """The probe of ``target`` failed: probe the next better transport, or end the round."""
        following = target + 1
        if self.active is not None and following < self.active:
            self._probe(following)
        else:
            self._memory.setback()
            self._schedule_round()

    # ---------------------------------------------------------------- the switch

    def _switch(self, target: int) -> None:
        """Open a real link of ``target`` next to the active one (make-before-break)."""
        self.phase = Phase.SWITCHING
        self._switching_to = target
        candidate = _Candidate()
        self._slot.disposable = candidate.owned_until_handed_over()
        transport = self._transports[target]
        source = transport.open(self._scheduler, self._context).pipe(
            open_deadline(self._timeout, transport.name, self._scheduler)
        )
        candidate.start(
            source, self._scheduler, lambda: self._adopt(candidate, target), self._switch_failed
        )

    def _adopt(self, candidate: _Candidate, target: int) -> None:
        """The candidate opened: it becomes the active link, and the old one is closed."""
        if self.phase is not Phase.SWITCHING:
            return
        self.phase = Phase.IDLE
        self._held = None
        if target > 0:
            self._memory.setback()  # better, but still not the preferred transport
        link = candidate.hand_over()
        self._slot.disposable = Disposable()  # switch_latest owns the candidate now
        previous = self._active_name()
        self.activate(target)
        self._links.on_next(self._guarded(link))  # disposes the old link
        if self.phase is not Phase.STOPPED:
            self._report("upgraded", target, previous=previous)

    def _switch_failed(self, error: Exception) -> None:
        """The candidate failed to open: keep the old link, unless it ended meanwhile."""
        self._report("probe_failed", self._switching_to, error=error, stage="switch")
        self._memory.setback()
        held, self._held = self._held, None
        if held is not None:  # the old link died during the failed switch: the attempt fails
            self._fail(held)
            return
        self.phase = Phase.IDLE
        self._schedule_round()
