"""Connection: one wanted link at a time, its state and messages as observables.

The connection wires the pure-Rx core together (see ``docs/lifecycle.md``)::

    transport.open()                 cold: one physical link per subscription
      -> idle_timeout                half-open detection, the fast lane that hands
                                     payloads straight to ``messages``, and the
                                     Connecting(name, attempt) announcement
      -> retry_with_backoff          reconnects; completion counts as a lost link
      -> _on_event                   state, acknowledgements, outbox flush

That pipeline runs exactly while something holds interest (a ``state`` or
``messages`` subscription, or an undisposed ``connect()`` handle); the first
interest subscribes it, disposing the last one disposes it. The state and
message observers, and the outbox, belong to the connection and outlive it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable, SerialDisposable

from ._core._idle import idle_timeout_
from ._core._outbox import Outbox
from ._core._retry import AttemptStarted, Paused, Retrying, retry_with_backoff_
from ._multicast import Multicast
from ._scheduler import default_scheduler, report_exception
from .backoff import Backoff
from .errors import (
    ConnectionClosedError,
    ConnectionLost,
    MessageTooLarge,
    RxconnError,
    TransportError,
    is_retryable,
)
from .session import ClientSession
from .states import Connected, Connecting, Disconnected, Errored, State
from .transport import Acked, Link, LinkContext, Opened, Payload, Transport, Trying


__all__ = ["Connection"]

_DISCONNECTED = Disconnected()


def _is_opened(event: object) -> bool:
    return type(event) is Opened


class Connection:
    """A resilient connection: exactly one live link, reconnected with backoff.

    Args:
        transport: How to open links (``rxconn.websocket``, ``rxconn.http``,
            ``rxconn.fallback`` or your own :class:`~rxconn.transport.Transport`).
        backoff: The reconnect schedule (default ``Backoff()``).
        idle_timeout: Seconds without any arrival (message, pong, SSE comment)
            after which an open link is declared dead and replaced; ``None``
            disables the check.
        max_buffer: How many sent payloads may await acceptance before
            ``send()`` raises :class:`~rxconn.errors.BufferFullError`.
        online: Optional ``Observable[bool]``; while it says False no attempt
            is started (an open link is kept), and True retries at once with a
            fresh schedule.
        scheduler: Where all timers come from (default: an ``AsyncIOScheduler``
            on the running loop, resolved when interest starts).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        backoff: Backoff | None = None,
        idle_timeout: float | None = 30.0,
        max_buffer: int = 10_000,
        online: Observable[bool] | None = None,
        scheduler: abc.SchedulerBase | None = None,
    ) -> None:
        if not isinstance(transport, Transport):
            raise TypeError(f"transport must be an rxconn Transport, got {transport!r}")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be > 0 or None, got {idle_timeout!r}")
        self._transport = transport
        self._backoff = backoff if backoff is not None else Backoff()
        self._idle_timeout = idle_timeout
        self._online = online
        self._scheduler = scheduler
        self._outbox = Outbox(max_buffer)
        limit = getattr(transport, "max_send_size", None)
        self._max_send_size: int | None = limit if isinstance(limit, int) else None
        self._session = ClientSession()  # the hub session outlives links and interest
        self._link_state: dict[str, Any] = {}  # LinkContext.connection

        self._state: State = _DISCONNECTED
        self._state_observers: tuple[abc.ObserverBase[State], ...] = ()
        self._messages: Multicast[Payload] = Multicast("messages", self._add_interest)

        self._interest = 0
        self._running = False
        self._pipeline = SerialDisposable()
        self._link: Link | None = None
        self._link_name = transport.name
        self._attempt = 0
        self._announced = True
        self._closed = False

        self.state: Observable[State] = Observable(self._subscribe_state)
        """Current state on subscribe, then each change (no repeats). Subscribing is interest."""
        self.messages: Observable[Payload] = self._messages.observable
        """Hot stream of received payloads (text as ``str``, binary as ``bytes``), in order.

        Subscribing is interest. Payloads that arrive while nobody subscribes
        to ``messages`` (interest held only by ``connect()`` or ``state``) are not kept.
        """

    # ----------------------------------------------------------------- public

    @property
    def current_state(self) -> State:
        """The state now, without subscribing (so without creating interest)."""
        return self._state

    @property
    def transport(self) -> Transport:
        """The transport this connection opens links with."""
        return self._transport

    @property
    def buffered(self) -> int:
        """How many sent payloads await acceptance (counted against ``max_buffer``)."""
        return len(self._outbox)

    @property
    def session_resets(self) -> int:
        """How many times the hub did not resume this connection's session (expired, restarted).

        Each reset is also logged on the ``rxconn`` logger; hub messages the old
        session had not delivered are gone, unacknowledged sends were resent.
        """
        return self._session.resets

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    def send(self, payload: Payload) -> None:
        """Queue ``payload`` for the link; never blocks and never drops.

        It is written at once when a link is open, else when one opens; it
        leaves the buffer only when the link (or the hub) accepted it.

        Raises:
            ConnectionClosedError: after ``close()``.
            BufferFullError: when ``max_buffer`` payloads already wait.
            MessageTooLarge: when the transport declares a smaller ``max_send_size``.
            TypeError: for anything but ``str`` or bytes-like data.
        """
        if self._closed:
            raise ConnectionClosedError()
        kind = type(payload)
        if kind is not str and kind is not bytes:
            if isinstance(payload, str):
                payload = str(payload)
            elif isinstance(payload, bytes | bytearray | memoryview):
                payload = bytes(payload)
            else:
                raise TypeError(f"send() takes str or bytes, got {kind.__name__}")
        limit = self._max_send_size
        if limit is not None and len(payload) * 4 > limit:  # cheap check first: 4 bytes/char max
            size = len(payload.encode()) if type(payload) is str else len(payload)
            if size > limit:
                raise MessageTooLarge(size, limit)
        self._outbox.push(payload)
        if self._link is not None:
            self._flush()

    def connect(self) -> abc.DisposableBase:
        """Hold interest without subscribing; dispose the handle to release it.

        Raises:
            ConnectionClosedError: after ``close()``.
        """
        if self._closed:
            raise ConnectionClosedError()
        return Disposable(self._add_interest())

    def close(self) -> list[Payload]:
        """Close for good: tear the link down, complete ``state`` and ``messages``.

        Idempotent and synchronous. Returns the payloads that were never
        accepted (so that nothing is lost silently); a second call returns ``[]``.
        """
        if self._closed:
            return []
        self._closed = True
        quit_session = getattr(self._link, "quit", None)
        if callable(quit_session):
            quit_session()  # the link ends the hub session as it closes
        self._stop_pipeline()
        self._set_state(_DISCONNECTED)
        state_observers, self._state_observers = self._state_observers, ()
        for observer in state_observers:
            self._guard(observer.on_completed)
        self._messages.complete()
        unsent = self._outbox.snapshot()
        self._outbox = Outbox(self._outbox.max_size)
        return unsent

    def __repr__(self) -> str:
        return f"<Connection {self._transport.name} {self._state!r}>"

    # --------------------------------------------------------------- interest

    def _add_interest(self, scheduler: abc.SchedulerBase | None = None) -> Callable[[], None]:
        """Count one interest; return its (idempotent) release.

        ``scheduler`` is the subscribe-time scheduler, used when the connection
        was built without one (the order RxPY's operators follow).
        """
        if not self._running and not self._closed:
            self._start_pipeline(scheduler)  # may raise (no event loop): then nothing was counted
        self._interest += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._interest -= 1
            if self._interest == 0 and not self._closed:
                self._stop_pipeline()
                self._set_state(_DISCONNECTED)

        return release

    def _start_pipeline(self, scheduler_: abc.SchedulerBase | None) -> None:
        scheduler = self._scheduler or scheduler_ or default_scheduler()
        context = LinkContext(session=self._session, connection=self._link_state)
        transport = self._transport

        # transport.open() is cold: each (re)subscription by the retry operator opens
        # a new link, so no defer is needed (every wrapper layer is one more call
        # per message on the hot path).
        attempt: Observable[Any] = transport.open(scheduler, context).pipe(
            idle_timeout_(
                self._idle_timeout,
                is_open=_is_opened,
                make_error=self._idle_error,
                sink=self._deliver,  # the fast lane: payloads skip the rest of the chain
                subscribed=self._announce_default,  # Connecting(name), unless Trying named it
                scheduler=scheduler,
            )
        )
        pipeline = attempt.pipe(
            retry_with_backoff_(
                self._backoff,
                is_retryable=is_retryable,
                is_open=_is_opened,
                on_completed=self._closed_by_peer,
                online=self._online,
                scheduler=scheduler,
            )
        )
        self._running = True
        self._pipeline.disposable = pipeline.subscribe(
            self._on_event, self._on_gave_up, scheduler=scheduler
        )

    def _stop_pipeline(self) -> None:
        self._running = False
        self._link = None
        self._pipeline.disposable = None

    # ----------------------------------------------------------------- events

    def _announce_default(self) -> None:
        if not self._announced:
            self._announced = True
            self._set_state(Connecting(self._transport.name, self._attempt))

    def _deliver(self, payload: Payload) -> None:
        try:
            self._messages.emit(payload)
        except Exception as exc:  # a user's on_next must not kill the link
            report_exception("rxconn: a messages observer raised", exc)

    def _on_event(self, event: Any) -> None:
        kind = type(event)
        if kind is str or kind is bytes:
            self._deliver(event)
        elif kind is Acked:
            self._outbox.ack(event.seq)
        elif kind is Opened:
            self._announce_default()
            self._link = event.link
            self._link_name = event.transport
            self._resume_outbox(event.next_seq)
            self._set_state(Connected(event.transport))
            self._flush()
        elif kind is AttemptStarted:
            self._link = None
            self._attempt = event.attempt
            self._announced = False  # the attempt's link subscribes right after this
        elif kind is Trying:
            self._announced = True
            self._link = None
            self._link_name = event.transport
            self._set_state(Connecting(event.transport, self._attempt))
        elif kind is Retrying:
            self._link = None
            self._announce_default()
            self._set_state(Errored(self._as_rxconn(event.error), event.attempt, event.delay))
        elif kind is Paused:
            self._link = None
            self._set_state(_DISCONNECTED)
        # ALIVE and unknown events only prove life (counted by idle_timeout).

    def _resume_outbox(self, next_seq: int | None) -> None:
        """Line the outbox up with a new link: what the peer has goes, the rest is resent."""
        outbox = self._outbox
        if next_seq is None or next_seq == outbox.head_seq:
            outbox.rewind()
            return
        written_upto = outbox.head_seq + outbox.in_flight - 1  # all the peer can have
        if outbox.head_seq < next_seq <= written_upto + 1:
            outbox.ack(next_seq - 1)  # the hub already has these
            outbox.rewind()
        else:
            # A new hub session (numbered from 1), or a peer that claims what we never
            # wrote: number from where it says and resend everything unacknowledged.
            outbox.renumber(next_seq)

    def _on_gave_up(self, error: Exception) -> None:
        self._running = False
        self._link = None
        self._announce_default()
        self._set_state(Errored(self._as_rxconn(error), self._attempt, None))

    def _flush(self) -> None:
        link = self._link
        if link is None or not self._outbox.has_pending:
            return
        first, batch = self._outbox.take_pending()
        try:
            link.write(first, batch)
        except Exception as exc:  # a link must report write failures by erroring, not raising
            self._outbox.rewind()
            report_exception("rxconn: Link.write raised instead of failing the link", exc)

    def _idle_error(self, seconds: float) -> Exception:
        return ConnectionLost(self._link_name, f"nothing received for {seconds:g} s (idle)")

    def _closed_by_peer(self) -> Exception:
        return ConnectionLost(self._link_name, "closed by the peer")

    def _as_rxconn(self, error: Exception) -> RxconnError:
        if isinstance(error, RxconnError):
            return error
        wrapped = TransportError(self._link_name, f"unexpected error: {error!r}", fatal=True)
        wrapped.__cause__ = error
        return wrapped

    # ---------------------------------------------------------- observables

    def _set_state(self, state: State) -> None:
        if state == self._state:
            return
        self._state = state
        for observer in self._state_observers:
            self._guard(observer.on_next, state)

    @staticmethod
    def _guard(method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception as exc:  # isolate user observers from each other and from the link
            report_exception("rxconn: an observer raised", exc)

    def _subscribe_state(
        self, observer: abc.ObserverBase[State], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        if self._closed:
            observer.on_next(self._state)
            observer.on_completed()
            return Disposable()
        self._state_observers = (*self._state_observers, observer)
        self._guard(observer.on_next, self._state)
        try:
            release = self._add_interest(scheduler)
        except Exception:
            self._drop_state_observer(observer)
            raise  # reaches the observer's on_error through Observable.subscribe

        def dispose() -> None:
            self._drop_state_observer(observer)
            release()

        return Disposable(dispose)

    def _drop_state_observer(self, observer: abc.ObserverBase[State]) -> None:
        self._state_observers = tuple(o for o in self._state_observers if o is not observer)
