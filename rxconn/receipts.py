"""Receipts: what became of each sent payload, known without waiting and free when ignored.

``Connection.send(payload)`` returns a :class:`Receipt`. It settles exactly
once, with one of:

* :class:`Delivered` (``seq``, ``transport``, ``acknowledged``): the hub
  acknowledged the payload (links that speak the hub session protocol), or the
  socket took it (plain servers: ``acknowledged`` is False);
* :class:`~rxconn.errors.Dropped`: refused or evicted by the ``overflow``
  policy (its :class:`Drop` is also on ``Connection.drops``);
* :class:`~rxconn.errors.Expired`: waited unsent longer than ``ttl`` (a
  :class:`~rxconn.errors.Dropped` too, and on ``Connection.drops``);
* :class:`~rxconn.errors.ConnectionClosedError`: ``close()`` came first.

A receipt is a slotted object of two fields while nobody looks at it: no
future, subject, observable or timer is created per message. The outbox
settles it in place when an acknowledgement covers it (walking only the
acknowledged prefix), and it creates its observable only when asked. Reading
it is AsyncSubject-like: ``await receipt`` returns the :class:`Delivered` or
raises the error; ``receipt.subscribe(...)`` gets one ``Delivered`` and
completion, or one error, even when subscribing after the fact.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias

from reactivex import Observable, abc
from reactivex.disposable import Disposable, SerialDisposable

from ._scheduler import report_exception
from ._types import Payload


__all__ = ["Delivered", "Drop", "DropReason", "Overflow", "Receipt"]

Overflow: TypeAlias = Literal["error", "drop_oldest", "drop_newest"]
"""What ``send()`` does when ``max_buffer`` payloads await acceptance: ``Connection(overflow=)``."""

DropReason: TypeAlias = Literal["overflow", "expired"]
"""Why a payload was dropped: the ``overflow`` policy, or ``ttl`` ran out."""


@dataclass(frozen=True, slots=True)
class Delivered:
    """A payload was delivered.

    Attributes:
        seq: Its sequence number: in the hub session (with the hub), or in the
            connection's own numbering (plain servers).
        transport: The kind of link that delivered it (``"websocket"``, ``"http"``).
        acknowledged: True when the hub acknowledged it (it is in the hub
            session: exactly once, in order); False when a plain server's
            socket took it (it may still be lost if the link is cut right after).
    """

    seq: int
    transport: str
    acknowledged: bool = True


@dataclass(frozen=True, slots=True)
class Drop:
    """A payload that will never be sent: ``reason`` is ``"overflow"`` or ``"expired"``."""

    payload: Payload
    reason: DropReason


class Via:
    """How the current link delivers; one instance per link, shared by every receipt it settles."""

    __slots__ = ("acknowledged", "transport")

    def __init__(self, transport: str, acknowledged: bool) -> None:
        self.transport = transport
        self.acknowledged = acknowledged

    def __repr__(self) -> str:
        return f"Via({self.transport!r}, acknowledged={self.acknowledged})"


# Receipt._end, the whole state in one slot (the outbox settles receipts in place):
#   None                      pending, nobody watching
#   list[ObserverBase]        pending, these observers are watching
#   Via                       delivered (``_seq`` holds the sequence number)
#   BaseException             failed with it
_Observers: TypeAlias = list[abc.ObserverBase[Delivered]]


class Receipt:
    """The fate of one sent payload: pending, then :class:`Delivered` or an error, exactly once.

    Awaitable (``await receipt`` returns the :class:`Delivered` or raises),
    observable (``receipt.subscribe(...)``: one ``Delivered`` then completion,
    or one error; late subscribers get the same outcome) and inspectable
    (``done``, ``outcome``). Awaiting or subscribing does not hold interest in
    the connection; ``Connection.flush()`` does.

    Receipts are made by ``Connection.send()``; creating one yourself gives a
    receipt that never settles.
    """

    __slots__ = ("_end", "_seq", "_t", "payload")

    _seq: int  # set when delivered
    _t: datetime | None  # when it started waiting; set only under a ttl (None: no clock yet)

    def __init__(self, payload: Payload) -> None:
        self.payload = payload
        """The payload as sent (after ``bytes``-like data was turned into ``bytes``)."""
        self._end: Any = None

    # ------------------------------------------------------------- reading

    @property
    def done(self) -> bool:
        """True once the receipt settled (delivered or failed)."""
        end = self._end
        return end is not None and type(end) is not list

    @property
    def outcome(self) -> Delivered | BaseException | None:
        """The :class:`Delivered`, the error, or None while pending (without waiting)."""
        end = self._end
        if end is None or type(end) is list:
            return None
        if type(end) is Via:
            return Delivered(self._seq, end.transport, end.acknowledged)
        error: BaseException = end
        return error

    @property
    def observable(self) -> Observable[Delivered]:
        """An observable of the outcome, for ``pipe(...)``; created on each access."""
        return Observable(self._subscribe)

    def subscribe(
        self,
        on_next: abc.ObserverBase[Delivered] | Callable[[Delivered], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        on_completed: Callable[[], None] | None = None,
        *,
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        """Subscribe to the outcome, like ``Observable.subscribe``.

        An observer (or callbacks) gets one ``Delivered`` and completion, or
        one error, at once if the receipt already settled. Callbacks run where
        the receipt settles (the connection's scheduler); an exception they
        raise is reported to the event loop's exception handler, never to the link.
        """
        return Observable(self._subscribe).subscribe(
            on_next, on_error, on_completed, scheduler=scheduler
        )

    def __await__(self) -> Generator[Any, None, Delivered]:
        """``await receipt``: the :class:`Delivered`, or the error raised."""
        return Observable(self._subscribe).__await__()

    def __repr__(self) -> str:
        outcome = self.outcome
        if outcome is None:
            return "<Receipt pending>"
        if isinstance(outcome, Delivered):
            return f"<Receipt {outcome!r}>"
        return f"<Receipt failed: {outcome!r}>"

    # ------------------------------------------------------------ settling

    def _subscribe(
        self, observer: abc.ObserverBase[Delivered], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        end = self._end
        if end is None:
            self._end = [observer]
        elif type(end) is list:
            end.append(observer)
        else:
            outcome = self.outcome
            if isinstance(outcome, Delivered):
                observer.on_next(outcome)
                observer.on_completed()
            else:
                assert isinstance(outcome, Exception)
                observer.on_error(outcome)
            return Disposable()

        def dispose() -> None:
            watching = self._end
            if type(watching) is list and observer in watching:
                watching.remove(observer)

        return Disposable(dispose)

    def _fail(self, error: BaseException) -> _Observers | None:
        """Settle with ``error`` unless settled; returns the observers to notify (or None)."""
        end = self._end
        if end is not None and type(end) is not list:
            return None
        self._end = error
        watching: _Observers | None = end
        return watching

    def _notify(self, observers: _Observers) -> None:
        """Tell ``observers`` the outcome; what they raise is reported, not propagated."""
        outcome = self.outcome
        for observer in observers:
            try:
                if isinstance(outcome, Delivered):
                    observer.on_next(outcome)
                    observer.on_completed()
                elif isinstance(outcome, Exception):
                    observer.on_error(outcome)
            except Exception as exc:  # a user's callback must not break the link or the outbox
                report_exception("rxconn: a receipt observer raised", exc)

    def _on_settled(self, callback: Callable[[], None]) -> abc.DisposableBase:
        """Call ``callback`` once the receipt settled, whatever the outcome (for flush)."""
        return self._subscribe(_Settled(callback))


class _Settled(abc.ObserverBase[Delivered]):
    """An observer that only wants to know that a receipt settled."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback

    def on_next(self, value: Delivered) -> None:
        pass

    def on_error(self, error: Exception) -> None:
        self._callback()

    def on_completed(self) -> None:
        self._callback()


Settled: TypeAlias = list[tuple[Receipt, _Observers]]
"""Receipts just settled, with the observers to tell (the outbox returns them)."""


def notify_all(settled: Settled) -> None:
    """Notify the observers of receipts that were settled (after the outbox is consistent)."""
    for receipt, observers in settled:
        receipt._notify(observers)  # noqa: SLF001


def all_settled(receipts: Sequence[Receipt]) -> Observable[int]:
    """Emit ``len(receipts)`` and complete once every one of ``receipts`` settled.

    It waits on the newest receipt still pending, then looks again: deliveries
    settle in order and drops take the oldest first, so this takes a couple of
    rounds, not one per receipt.
    """

    def subscribe(
        observer: abc.ObserverBase[int], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        current = SerialDisposable()
        waiting = list(receipts)

        def step() -> None:
            nonlocal waiting
            waiting = [r for r in waiting if not r.done]
            if not waiting:
                observer.on_next(len(receipts))
                observer.on_completed()
                return
            current.disposable = waiting[-1]._on_settled(step)  # noqa: SLF001

        step()
        return current

    return Observable(subscribe)
