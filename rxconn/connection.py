"""Connection: one wanted link at a time, its state and messages as observables.

The connection wires the pure-Rx core together (see ``docs/lifecycle.md``)::

    transport.open()                 cold: one physical link per subscription
      -> link_events                 the fast lane that hands payloads straight to
                                     ``messages``, half-open detection (idle
                                     timeout), and the Connecting announcement
      -> retry_with_backoff          reconnects; completion counts as a lost link
      -> _on_event                   state, acknowledgements, outbox flush

That pipeline runs exactly while something holds interest (a ``state`` or
``messages`` subscription, or an undisposed ``connect()`` handle); the first
interest subscribes it, disposing the last one disposes it. The state and
message observers, and the outbox, belong to the connection and outlive it.

Every ``send()`` returns a :class:`~rxconn.receipts.Receipt` that the outbox
settles in place (``docs/lifecycle.md``, "Delivery"): on acknowledgements, by
the ``overflow`` policy, by the one ``ttl`` timer of the outbox, or by ``close()``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import reactivex as rx
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.disposable import Disposable, SerialDisposable

from ._core._lane import link_events_
from ._core._outbox import Outbox
from ._core._retry import AttemptStarted, Paused, Retrying, retry_with_backoff_
from ._multicast import Multicast
from ._scheduler import default_scheduler, report_exception
from ._types import require_utf8
from .backoff import Backoff
from .diagnostics import Diagnostic, diagnostic
from .errors import (
    BufferFullError,
    ConnectionClosedError,
    ConnectionLost,
    Dropped,
    Expired,
    MessageTooLarge,
    RxconnError,
    TransportError,
    is_retryable,
)
from .quality import LinkQuality, QualityEstimator, RoundTrip
from .receipts import Drop, DropReason, Overflow, Receipt, Via, all_settled, notify_all
from .session import HubSession
from .states import Connected, Connecting, Disconnected, Errored, State
from .transport import (
    Acked,
    Link,
    LinkContext,
    Opened,
    Payload,
    Payloads,
    QuittableLink,
    SizedTransport,
    Transport,
    Trying,
)


__all__ = ["Connection"]

_DISCONNECTED = Disconnected()
_new_receipt = object.__new__  # Receipt's __init__, minus its frame (see send())
_OVERFLOW_POLICIES = ("error", "drop_oldest", "drop_newest")


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
        max_buffer: How many sent payloads may await acceptance (with the
            hub: acknowledgement) at once; what happens beyond is ``overflow``.
        overflow: ``"error"`` (default): ``send()`` raises
            :class:`~rxconn.errors.BufferFullError`; ``"drop_oldest"``: the
            oldest payload not yet handed to a link is dropped to make room;
            ``"drop_newest"``: the new payload is refused. A dropped payload's
            receipt fails with :class:`~rxconn.errors.Dropped` and it appears
            on ``drops``. Payloads handed to a hub link are never dropped.
        ttl: Seconds a payload may wait unsent before it expires (its receipt
            fails with :class:`~rxconn.errors.Expired`, and it appears on
            ``drops``); ``None`` (default): forever. One timer per connection.
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
        overflow: Overflow = "error",
        ttl: float | None = None,
        online: Observable[bool] | None = None,
        scheduler: abc.SchedulerBase | None = None,
    ) -> None:
        if not isinstance(transport, Transport):
            raise TypeError(f"transport must be an rxconn Transport, got {transport!r}")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be > 0 or None, got {idle_timeout!r}")
        if overflow not in _OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {_OVERFLOW_POLICIES}, got {overflow!r}")
        if ttl is not None and not 0 < ttl < float("inf"):
            raise ValueError(f"ttl must be > 0 seconds or None, got {ttl!r}")
        self._transport = transport
        self._backoff = backoff if backoff is not None else Backoff()
        self._idle_timeout = idle_timeout
        self._online = online
        self._scheduler = scheduler
        self._outbox = Outbox(max_buffer)
        self._overflow = overflow
        self._ttl = ttl
        self._ttl_span = timedelta(seconds=ttl) if ttl is not None else timedelta()
        self._expiry = SerialDisposable()  # the outbox's one ttl timer
        self._expiry_armed = False
        self._clock: abc.SchedulerBase | None = scheduler  # where the ttl timer runs
        self._drops: Multicast[Drop] = Multicast("drops")  # no hook: not interest
        self._via = Via(transport.name, False)  # how the current link delivers
        limit = transport.max_send_size if isinstance(transport, SizedTransport) else None
        self._max_send_size: int | None = limit if isinstance(limit, int) else None
        # The hub session outlives links and interest; the outbox is its sender log.
        self._session = HubSession(log=self._outbox, on_reset=self._session_reset)
        self._diagnostics: Multicast[Diagnostic] = Multicast("diagnostics")  # not interest
        self._quality: Multicast[LinkQuality] = Multicast("quality")  # not interest
        self._estimator = QualityEstimator(transport.name)
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
        self.drops: Observable[Drop] = self._drops.observable
        """Hot stream of every payload dropped by ``overflow`` or expired by ``ttl``, once each.

        Subscribing is *not* interest: it opens no link. Completes on ``close()``.
        """
        self.quality: Observable[LinkQuality] = self._quality.observable
        """Hot stream of the active link's round trips, as :class:`~rxconn.LinkQuality` items.

        One item per heartbeat (WebSocket: rxconn's ping and the pong; HTTP and
        long polling: a small POST and the hub's answer), nothing per message.
        Subscribing is *not* interest: it opens no link. Completes on ``close()``.
        """
        self.diagnostics: Observable[Diagnostic] = self._diagnostics.observable
        """Hot stream of what the connection does and why, as :class:`~rxconn.Diagnostic` items.

        Each is emitted at the moment it happens: ``retry_scheduled``,
        ``server_advice``, ``fell_back``, ``probe_started``, ``probe_failed``,
        ``upgraded``, ``session_reset``, ``dropped``, ``expired`` (see
        ``docs/lifecycle.md``, "Diagnostics"). Subscribing is *not* interest: it
        opens no link. Nothing is built per message, and nothing at all while
        nobody subscribes. Completes on ``close()``.
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
    def scheduler(self) -> abc.SchedulerBase:
        """The scheduler this connection's timers run on, for your own time operators.

        The ``scheduler=`` given to the constructor; without one, an
        ``AsyncIOScheduler`` on the running event loop, the loop the connection
        resolves its default on when interest starts (so also before any interest).
        Pass it to reactivex time operators (``buffer_with_time``, ``debounce``,
        ``throttle_first``, ...): without a scheduler they run on a thread pool.
        A scheduler passed to ``subscribe(..., scheduler=)`` instead is not reflected.

        Raises:
            RxconnError: when none was injected and no event loop is running.
        """
        return self._scheduler or default_scheduler()

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
    def session_id(self) -> str | None:
        """The hub session's public id (None until a hub named one; always with plain servers).

        What the hub's ``hub.send(session_id, payload)`` and ``hub.session(...)`` take.
        """
        return self._session.id

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    def send(self, payload: Payload) -> Receipt:
        """Queue ``payload`` for the link; never blocks, never drops silently.

        It is written at once when a link is open, else when one opens; it
        leaves the buffer only when the link (or the hub) accepted it. The
        returned :class:`~rxconn.receipts.Receipt` says what became of it;
        ignoring it costs next to nothing.

        Raises:
            ConnectionClosedError: after ``close()``.
            BufferFullError: when ``max_buffer`` payloads already wait and
                ``overflow="error"`` (the other policies drop instead; see
                ``Connection``).
            MessageTooLarge: when the transport declares a smaller ``max_send_size``.
            TypeError: for anything but ``str`` or bytes-like data.
            ValueError: for text that cannot be encoded as UTF-8 (a lone
                surrogate such as ``"\\ud800"``): no link could ever write it.
        """
        if self._closed:
            raise ConnectionClosedError()
        kind = type(payload)
        if kind is str:
            if not payload.isascii():  # O(1); only non-ASCII text can be unencodable
                require_utf8(payload)  # type: ignore[arg-type]
        elif kind is not bytes:
            if isinstance(payload, str):
                payload = str(payload)
                require_utf8(payload)
            elif isinstance(payload, bytes | bytearray | memoryview):
                payload = bytes(payload)
            else:
                raise TypeError(f"send() takes str or bytes, got {kind.__name__}")
        limit = self._max_send_size
        if limit is not None and len(payload) * 4 > limit:  # cheap check first: 4 bytes/char max
            size = len(payload.encode()) if type(payload) is str else len(payload)
            if size > limit:
                raise MessageTooLarge(size, limit)
        # The hot path, inlined: Outbox.push() and Receipt(payload) without their
        # Python call frames (together about 100 ns of the 150 ns budget).
        outbox = self._outbox
        entries = outbox._entries  # noqa: SLF001
        if len(entries) >= outbox.limit:
            return self._overflowing(payload)
        receipt: Receipt = _new_receipt(Receipt)
        receipt.payload = payload
        receipt._end = None  # noqa: SLF001
        entries.append(receipt)
        if self._ttl is not None:
            self._start_waiting(receipt)
        if self._link is not None:
            self._flush()
        return receipt

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every payload sent so far is delivered or failed.

        While it waits it holds interest (like ``connect()``), so that a link
        opens to take the payloads. It does not raise for payloads that
        failed: their receipts (and ``drops``) tell. After ``close()`` it
        returns at once, since every receipt has failed.

        Args:
            timeout: Seconds to wait at most (``None``: no bound).

        Raises:
            TimeoutError: when payloads are still pending after ``timeout`` seconds.
        """
        receipts = [r for r in self._outbox.receipts() if not r.done]
        if not receipts:
            return
        handle = self.connect()
        try:
            settled: Observable[int] = all_settled(receipts)
            if timeout is not None:
                late = TimeoutError(f"flush: payloads still pending after {timeout:g} s")
                settled = settled.pipe(ops.timeout(timeout, rx.throw(late)))
            await settled
        finally:
            handle.dispose()

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

        Idempotent and synchronous. Every pending receipt fails with
        :class:`~rxconn.errors.ConnectionClosedError` before it returns, and
        ``drops`` completes. Returns the payloads that were never accepted
        (so that nothing is lost silently); a second call returns ``[]``.
        """
        if self._closed:
            return []
        self._closed = True
        if isinstance(self._link, QuittableLink):
            self._link.quit()  # the link ends the hub session as it closes
        self._stop_pipeline()
        self._set_state(_DISCONNECTED)
        state_observers, self._state_observers = self._state_observers, ()
        for observer in state_observers:
            self._guard(observer.on_completed)
        self._messages.complete()
        self._expiry.dispose()
        outbox, self._outbox = self._outbox, Outbox(self._outbox.max_size)
        receipts = outbox.receipts()
        closed = ConnectionClosedError()
        for receipt in receipts:
            watching = receipt._fail(closed)  # noqa: SLF001
            if watching:
                receipt._notify(watching)  # noqa: SLF001
        self._drops.complete()
        self._diagnostics.complete()
        self._quality.complete()
        return [receipt.payload for receipt in receipts]

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
            link_events_(
                self._deliver,  # the fast lane: payloads skip the rest of the chain
                is_open=_is_opened,
                idle_timeout=self._idle_timeout,
                make_error=self._idle_error,
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
        self._clock = scheduler
        if self._ttl is not None:
            self._arm_expiry()  # payloads sent while no clock was known start waiting now
        self._pipeline.disposable = pipeline.subscribe(
            self._on_event, self._on_gave_up, scheduler=scheduler
        )

    def _stop_pipeline(self) -> None:
        self._running = False
        self._lose_link()
        self._pipeline.disposable = None

    def _lose_link(self) -> None:
        """No link carries payloads now: a plain link's unaccepted ones wait unsent again.

        A hub link's are owned by the session and stay in flight: the next link's
        resume point (``Opened.next_seq``) says which of them the hub has.
        """
        self._link = None
        if not self._via.acknowledged and self._outbox.in_flight:
            self._outbox.rewind()
            if self._ttl is not None:
                self._arm_expiry()

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
        elif kind is Payloads:
            for payload in event:
                self._deliver(payload)
        elif kind is Acked:
            settled = self._outbox.ack(event.seq, self._via)
            if settled is not None:
                notify_all(settled)
        elif kind is Opened:
            self._announce_default()
            self._link = event.link
            self._link_name = event.transport
            self._via = Via(event.transport, event.next_seq is not None)
            self._estimator.reset(event.transport)
            settled = self._resume_outbox(event.next_seq)
            self._set_state(Connected(event.transport))
            self._flush()
            if settled is not None:
                notify_all(settled)
        elif kind is AttemptStarted:
            self._lose_link()
            self._attempt = event.attempt
            self._announced = False  # the attempt's link subscribes right after this
        elif kind is Trying:
            self._announced = True
            self._lose_link()
            self._link_name = event.transport
            self._set_state(Connecting(event.transport, self._attempt))
        elif kind is Retrying:
            self._lose_link()
            self._announce_default()
            self._set_state(Errored(self._as_rxconn(event.error), event.attempt, event.delay))
            if self._diagnostics.count:
                self._report_retry(event)
        elif kind is Paused:
            self._lose_link()
            self._set_state(_DISCONNECTED)
        elif kind is Diagnostic:
            self._diagnostics.send(event)  # from the transport (a fallback's chain or upgrades)
        elif kind is RoundTrip:
            quality = self._estimator.add(event)
            if quality is not None and self._quality.count:
                self._quality.send(quality)
        # ALIVE and unknown events only prove life (counted by idle_timeout).

    def _resume_outbox(self, next_seq: int | None) -> Any:
        """Line the outbox up with a new link: what the peer has goes, the rest is resent.

        Returns the receipts settled on the way (with observers), to notify.
        """
        outbox = self._outbox
        if next_seq is None or next_seq == outbox.oldest:
            outbox.rewind()
            return None
        written_upto = outbox.oldest + outbox.in_flight - 1  # all the peer can have
        if outbox.oldest < next_seq <= written_upto + 1:
            settled = outbox.ack(next_seq - 1, self._via)  # the hub already has these
            outbox.rewind()
            return settled
        # A new hub session (numbered from 1), or a peer that claims what we never
        # wrote: number from where it says and resend everything unacknowledged.
        # Their receipts stay pending until the new session acknowledges them.
        outbox.renumber(next_seq)
        return None

    def _on_gave_up(self, error: Exception) -> None:
        self._running = False
        self._lose_link()
        self._announce_default()
        self._set_state(Errored(self._as_rxconn(error), self._attempt, None))

    def _flush(self) -> None:
        link = self._link
        if link is None or not self._outbox.has_pending:
            return
        first, batch = self._outbox.take_pending(self._via.acknowledged)
        try:
            link.write(first, batch)
        except Exception as exc:  # a link must report write failures by erroring, not raising
            self._outbox.rewind()
            report_exception("rxconn: Link.write raised instead of failing the link", exc)

    # ---------------------------------------------------------- outbox policy

    def _overflowing(self, payload: Payload) -> Receipt:
        """``send()`` into a full outbox: raise, or drop the oldest candidate or the new one."""
        policy = self._overflow
        if policy == "error":
            raise BufferFullError(self._outbox.max_size)
        receipt = Receipt(payload)
        victim = self._outbox.evict_oldest() if policy == "drop_oldest" else None
        if victim is None:  # drop_newest, or nothing left that a policy may drop
            self._discard(receipt, Dropped(), "overflow")
            return receipt
        self._outbox.push(receipt)  # room was just made
        if self._ttl is not None:
            self._start_waiting(receipt)
        self._discard(victim, Dropped(), "overflow")
        if self._link is not None:
            self._flush()
        return receipt

    def _discard(self, receipt: Receipt, error: Dropped, reason: DropReason) -> None:
        """Fail ``receipt`` (already out of the outbox) and report it on ``drops``, once.

        Also a ``dropped``/``expired`` diagnostic (without the payload: that is
        on ``drops``), built only when someone subscribes to ``diagnostics``.
        """
        watching = receipt._fail(error)  # noqa: SLF001
        self._drops.send(Drop(receipt.payload, reason))
        if self._diagnostics.count:
            if reason == "expired":
                report = diagnostic("expired", self._link_name, ttl=self._ttl)
            else:
                report = diagnostic("dropped", self._link_name, policy=self._overflow)
            self._diagnostics.send(report)
        if watching:
            receipt._notify(watching)  # noqa: SLF001

    def _start_waiting(self, receipt: Receipt) -> None:
        """Stamp ``receipt`` with the time it starts waiting; make sure the ttl timer runs."""
        clock = self._ttl_clock()
        receipt._t = clock.now if clock is not None else None  # noqa: SLF001
        if not self._expiry_armed and clock is not None:
            self._arm_expiry()

    def _ttl_clock(self) -> abc.SchedulerBase | None:
        """The scheduler of the ttl timer: injected, or the pipeline's, or the running loop's."""
        clock = self._clock
        if clock is None:
            try:
                clock = self._clock = default_scheduler()
            except RxconnError:
                return None  # no loop yet: payloads start waiting when interest starts
        return clock

    def _arm_expiry(self) -> None:
        """Arm the one ttl timer for the oldest payload a policy may drop (if not armed)."""
        if self._expiry_armed or self._closed:
            return
        clock = self._ttl_clock()
        oldest = self._outbox.oldest_candidate()
        if clock is None or oldest is None:
            return
        since = oldest._t  # noqa: SLF001
        if since is None:
            since = clock.now
            self._outbox.stamp(since)
        self._expiry_armed = True
        due = since + self._ttl_span
        self._expiry.disposable = clock.schedule_absolute(due, self._expire)

    def _expire(self, scheduler: abc.SchedulerBase, _: Any = None) -> None:
        self._expiry_armed = False
        if self._closed:
            return
        expired = self._outbox.expire(scheduler.now - self._ttl_span)
        self._arm_expiry()
        if expired:
            error = Expired(self._ttl or 0.0)
            for receipt in expired:
                self._discard(receipt, error, "expired")

    # ------------------------------------------------------------ diagnostics

    def _report_retry(self, event: Retrying) -> None:
        """``server_advice`` (if the server's advice set the delay), then ``retry_scheduled``."""
        error = self._as_rxconn(event.error)
        name = self._link_name
        if event.advised is not None:
            self._diagnostics.send(
                diagnostic("server_advice", name, advised=event.advised, delay=event.delay)
            )
        self._diagnostics.send(
            diagnostic(
                "retry_scheduled", name, attempt=event.attempt, delay=event.delay, error=error
            )
        )

    def _session_reset(self, resets: int) -> None:
        """The hub did not resume our session (``HubSession.on_reset``): report it."""
        if self._diagnostics.count:
            self._diagnostics.send(diagnostic("session_reset", self._link_name, resets=resets))

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
