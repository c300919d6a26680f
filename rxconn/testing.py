"""Fake transports scripted with marble strings, for marble tests of connections.

One marble script per attempt (the last one repeats for later attempts)::

    ws = FakeTransport("websocket", "--#", "-o-a-b-|", error=BOOM)

* ``o`` opens the link (emits ``Opened``), ``k`` is a keep-alive (``ALIVE``);
* ``#`` fails the link with ``error``, ``|`` closes it cleanly;
* any other value is a received payload: letters and digits as ``str``, or
  whatever ``values`` maps the character to (``str`` or ``bytes``);
* a script that neither opens nor ends hangs (for timeouts).

The transport records every subscription (``subscriptions``, comparable with
``ReactiveTest.subscribe(start, end)``) and every write (``writes``), so a test
can prove both what was delivered and when each link was torn down. Links
acknowledge each write at once (``acks=True``), or never (``acks=False``, like a
receive-only link); ``write_errors={n: exc}`` makes any write on the n-th link
fail that link with ``exc``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import reactivex as rx
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.testing.subscription import Subscription

from .transport import ALIVE, Acked, LinkContext, LinkEvent, Opened, Payload, Transport


if TYPE_CHECKING:
    from reactivex.testing import TestScheduler

    from .connection import Connection


__all__ = ["FakeLink", "FakeTransport", "Write", "timeline", "virtual_connection"]


def _clock(scheduler: abc.SchedulerBase) -> Any:
    """Virtual ticks under a TestScheduler (comparable with ``ReactiveTest``), else a timestamp."""
    clock = getattr(scheduler, "clock", None)
    if isinstance(clock, int | float):
        return clock
    return scheduler.now.timestamp()


@dataclass(frozen=True, slots=True)
class Write:
    """One payload handed to a fake link: when, on which link, with which sequence number."""

    time: float
    link: int
    seq: int
    payload: Payload


class FakeLink:
    """The link of one subscription to a :class:`FakeTransport`; records what is written to it."""

    def __init__(
        self,
        transport: FakeTransport,
        index: int,
        scheduler: abc.SchedulerBase,
        context: LinkContext,
    ) -> None:
        self.transport = transport
        self.index = index
        self.context = context
        self._scheduler = scheduler
        self._observer: abc.ObserverBase[LinkEvent] | None = None

    def write(self, first_seq: int, payloads: Sequence[Payload]) -> None:
        """Record the payloads; then acknowledge them, or fail the link if so scripted."""
        now = _clock(self._scheduler)
        for offset, payload in enumerate(payloads):
            self.transport.writes.append(Write(now, self.index, first_seq + offset, payload))
        observer = self._observer
        if observer is None:
            return
        error = self.transport.write_errors.get(self.index)
        if error is not None:
            observer.on_error(error)
        elif self.transport.acks and payloads:
            observer.on_next(Acked(first_seq + len(payloads) - 1))

    def push(self, event: LinkEvent) -> None:
        """Emit ``event`` from this link now (a payload, ``ALIVE`` or ``Acked``)."""
        if self._observer is not None:
            self._observer.on_next(event)

    def fail(self, error: Exception) -> None:
        """Fail this link now with ``error``."""
        if self._observer is not None:
            self._observer.on_error(error)

    def __repr__(self) -> str:
        return f"<FakeLink {self.transport.name}#{self.index}>"


class FakeTransport:
    """A :class:`~rxconn.transport.Transport` whose links follow marble scripts.

    Args:
        name: The transport name reported in states.
        scripts: One marble script per attempt; the last one repeats.
        values: Maps marble characters to payloads.
        error: The exception ``#`` fails a link with.
        timespan: Seconds per marble character (default 1.0).
        acks: Acknowledge each write at once (True) or never (False).
        write_errors: ``{link index: exception}``: writes on that link fail it.
        next_seqs: ``{link index: seq}``: that link's ``Opened`` says the peer
            expects ``seq`` next, as a hub session link does after a resume.
        acks_prove_life: What its ``Opened`` says (False: acknowledgements come
            beside the stream, as over HTTP, and do not feed the idle timeout).
    """

    def __init__(
        self,
        name: str,
        *scripts: str,
        values: Mapping[str, Payload] | None = None,
        error: Exception | None = None,
        timespan: float = 1.0,
        acks: bool = True,
        write_errors: Mapping[int, Exception] | None = None,
        next_seqs: Mapping[int, int] | None = None,
        acks_prove_life: bool = True,
    ) -> None:
        if not scripts:
            raise ValueError("FakeTransport needs at least one marble script")
        self._name = name
        self.scripts = scripts
        self.values = dict(values or {})
        self.error = error if error is not None else ConnectionError("fake link failed")
        self.timespan = timespan
        self.acks = acks
        self.write_errors = dict(write_errors or {})
        self.next_seqs = dict(next_seqs or {})
        self.acks_prove_life = acks_prove_life
        self.subscriptions: list[Subscription] = []
        self.links: list[FakeLink] = []
        self.writes: list[Write] = []
        self.contexts: list[LinkContext] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def written(self) -> list[Payload]:
        """Every payload written, on any link, in order (repeats included)."""
        return [w.payload for w in self.writes]

    def open(
        self, scheduler: abc.SchedulerBase, context: LinkContext | None = None
    ) -> Observable[LinkEvent]:
        ctx = context if context is not None else LinkContext()

        def subscribe(
            observer: abc.ObserverBase[LinkEvent], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            index = len(self.links)
            link = FakeLink(self, index, scheduler, ctx)
            link._observer = observer
            self.links.append(link)
            self.contexts.append(ctx)
            slot = len(self.subscriptions)
            self.subscriptions.append(Subscription(_clock(scheduler)))
            script = self.scripts[min(index, len(self.scripts) - 1)]
            opened = Opened(
                link, self._name, self.next_seqs.get(index), acks_prove_life=self.acks_prove_life
            )
            lookup: dict[str | float, Any] = {"o": opened, "k": ALIVE}
            lookup.update(self.values)
            events = rx.cold(script, self.timespan, scheduler, lookup, self.error)
            inner = events.subscribe(
                lambda value: observer.on_next(_as_event(value)),
                observer.on_error,
                observer.on_completed,
                scheduler=scheduler,
            )

            def dispose() -> None:
                link._observer = None
                inner.dispose()
                start = self.subscriptions[slot].subscribe
                self.subscriptions[slot] = Subscription(start, _clock(scheduler))

            return Disposable(dispose)

        return Observable(subscribe)

    def __repr__(self) -> str:
        return f"<FakeTransport {self._name} scripts={list(self.scripts)!r}>"


def _as_event(value: Any) -> LinkEvent:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    event: LinkEvent = value
    return event


def virtual_connection(
    transport: Transport, scheduler: TestScheduler, **options: Any
) -> Connection:
    """A :class:`~rxconn.Connection` on ``transport`` in virtual time, for marble tests.

    Its timers run on ``scheduler``; the idle timeout is off unless ``options``
    set one (a fake link proves no life by itself); other ``options`` are the
    connection's (``backoff=``, ``max_buffer=``, ...).
    """
    from .connection import Connection

    options.setdefault("idle_timeout", None)
    return Connection(transport, scheduler=scheduler, **options)


def timeline(
    observable: Observable[Any],
    scheduler: TestScheduler,
    until: float,
    *,
    dispose_at: float | None = None,
) -> list[tuple[float, Any]]:
    """Subscribe now and run ``scheduler`` to ``until``: every item with its virtual tick.

    ``dispose_at`` disposes the subscription at that tick (to prove teardown).
    """
    items: list[tuple[float, Any]] = []
    subscription = observable.subscribe(
        lambda item: items.append((scheduler.clock, item)), scheduler=scheduler
    )
    if dispose_at is not None:
        scheduler.schedule_absolute(dispose_at, lambda *_: subscription.dispose())
    scheduler.advance_to(until)
    return items
