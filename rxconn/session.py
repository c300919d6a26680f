"""The hub session protocol, sans-I/O: numbering, acknowledgement, replay, de-duplication.

Both ends use these pieces, so client and hub cannot drift:

* every data message in each direction carries a sequence number, 1, 2, 3, …
  within its session (``seq``);
* the receiver keeps an :class:`Inbound` counter of the last message it
  delivered; a message is delivered only if it is the next one
  (``seq == received + 1``), a repeat (``seq <= received``) is dropped, and a
  gap is a protocol error;
* the receiver acknowledges cumulatively (``ack(received)``), batched;
* the sender keeps what was not acknowledged in one :class:`SenderLog` type:
  the client in its outbox (``rxconn._core._outbox``), the hub in a bounded
  :class:`ReplayLog`, and resends it on the next link, starting after the
  peer's ``received``.

:class:`SessionProtocol` holds one end of a session (id, secret, inbound
counter, sender log); the client's :class:`HubSession` and the hub's sessions
are both one, and :class:`SessionState` is that end as plain data (what a hub
keeps in Redis).

See ``docs/protocol.md`` for the frames that carry this over WebSocket
(``rxconn.v1``) and over HTTP (SSE ids + sequenced POSTs).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from ._sender import LinkQueue, ReplayGap, ReplayLog, SenderLog


__all__ = [
    "ACK_DELAY",
    "ACK_EVERY",
    "Accept",
    "AckSchedule",
    "HubSession",
    "Inbound",
    "LinkQueue",
    "ReplayGap",
    "ReplayLog",
    "SenderLog",
    "SessionProtocol",
    "SessionState",
]

T = TypeVar("T")

logger = logging.getLogger("rxconn")


class Accept(enum.Enum):
    """What the receiver does with an incoming numbered message."""

    DELIVER = "deliver"
    """The next one: deliver it (the counter moved on)."""
    REPEAT = "repeat"
    """Already delivered (sent again after a cut): drop it."""
    GAP = "gap"
    """Later than the next one: a protocol error (something was lost)."""


class Inbound:
    """The receiving side's counter: which numbered messages were already delivered."""

    __slots__ = ("received",)

    def __init__(self, received: int = 0) -> None:
        self.received = received
        """Sequence number of the last message delivered (0: none yet)."""

    def accept(self, seq: int) -> Accept:
        """Classify message ``seq``, and count it if it is the next one."""
        expected = self.received + 1
        if seq == expected:
            self.received = seq
            return Accept.DELIVER
        if seq < expected:
            return Accept.REPEAT
        return Accept.GAP


ACK_EVERY: Final = 1024
"""Acknowledge at once after this many unacknowledged messages (over WebSocket)."""
ACK_DELAY: Final = 0.05
"""Otherwise this many seconds after the first unacknowledged one (over WebSocket)."""


class AckSchedule:
    """When the receiver acknowledges, the same rule at both ends (sans-I/O).

    Acknowledgements are cumulative, so they are coalesced: one goes out after
    ``every`` unacknowledged messages, or ``delay`` seconds after the first
    unacknowledged one, whichever comes first. The driver arms a timer when
    :meth:`delivered` says ``"arm"``, sends at once when it says ``"now"``,
    and calls :meth:`sent` when an acknowledgement left.
    """

    __slots__ = ("armed", "delay", "every", "unacked")

    def __init__(self, delay: float = ACK_DELAY, every: int | None = ACK_EVERY) -> None:
        self.delay = delay
        self.every = every
        self.unacked = 0
        self.armed = False

    def delivered(self) -> str | None:
        """A message was delivered: ``"now"``, ``"arm"`` (a timer for ``delay``), or None."""
        self.unacked += 1
        if self.every is not None and self.unacked >= self.every:
            return "now"
        if not self.armed:
            self.armed = True
            return "arm"
        return None

    def sent(self) -> None:
        """An acknowledgement of everything delivered so far left."""
        self.unacked = 0
        self.armed = False


@dataclass(slots=True)
class SessionState:
    """One end of a session as plain data: what survives a process, and what Redis stores.

    Only ``str`` and ``int`` fields, so :meth:`to_fields` and :meth:`from_fields`
    map it onto a Redis hash (or JSON) and back exactly. The messages still
    unacknowledged are not in it: they live in the sender's log (in Redis, a
    stream next to the hash).
    """

    id: str
    key: str
    received: int = 0
    """The last message of the peer delivered (the inbound high-water mark)."""
    sent: int = 0
    """The last message of this end numbered."""
    acked: int = 0
    """The last message of this end the peer acknowledged."""
    epoch: int = 0
    """Which owner may write the session's link (fencing across hubs; 0 in one process)."""

    def to_fields(self) -> dict[str, str]:
        """The state as a flat ``{name: text}`` mapping (a Redis hash's fields)."""
        return {
            "id": self.id,
            "key": self.key,
            "in": str(self.received),
            "out": str(self.sent),
            "acked": str(self.acked),
            "epoch": str(self.epoch),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> SessionState:
        """The inverse of :meth:`to_fields`; names and values may be ``str`` or ``bytes``.

        Raises:
            ValueError: a field is missing or not a number where one is due.
        """
        text = {_text(name): _text(value) for name, value in fields.items()}
        try:
            return cls(
                text["id"],
                text["key"],
                int(text.get("in", 0)),
                int(text.get("out", 0)),
                int(text.get("acked", 0)),
                int(text.get("epoch", 0)),
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"not a session state: {exc}") from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


class SessionProtocol(Generic[T]):
    """One end of a hub session, the same object at the client and at the hub.

    It holds what the session protocol needs and nothing about I/O: the
    session's id and secret, the :class:`Inbound` counter of the peer's
    messages, and this end's :class:`~rxconn.session.SenderLog` (the hub's
    :class:`ReplayLog` of payloads; the client's outbox of receipts). Drivers
    feed it what arrived (:meth:`receive`, the log's ``ack``) and ask it what to
    write (the log's ``after``); :meth:`state` and :meth:`restore` turn it
    into plain data and back, which is how a hub keeps a session in Redis.
    """

    __slots__ = ("epoch", "id", "inbound", "key", "log")

    def __init__(
        self,
        log: SenderLog[T] | None,
        session_id: str | None = None,
        key: str | None = None,
        *,
        received: int = 0,
        epoch: int = 0,
    ) -> None:
        self.id = session_id
        self.key = key
        self.inbound = Inbound(received)
        self.log = log
        """This end's sender log (None for a client link opened without a ``Connection``,
        whose caller numbers its own writes)."""
        self.epoch = epoch

    @property
    def received(self) -> int:
        """Sequence number of the last message of the peer delivered."""
        return self.inbound.received

    def receive(self, seq: int) -> Accept:
        """Classify the peer's message ``seq`` (and count it if it is the next one)."""
        return self.inbound.accept(seq)

    def state(self) -> SessionState:
        """This end as plain data (see :class:`SessionState`).

        Raises:
            ValueError: the session has no id or key yet (the hub has not named it).
        """
        if self.id is None or self.key is None:
            raise ValueError("a session without an id and key has no state to keep")
        log = self.log
        sent = log.next_seq - 1 if log is not None else 0
        acked = log.acked if log is not None else 0
        return SessionState(self.id, self.key, self.received, sent, acked, self.epoch)

    @classmethod
    def restore(cls, state: SessionState, log: SenderLog[T]) -> SessionProtocol[T]:
        """Continue a session from ``state``; ``log`` numbers from ``state.acked + 1`` on.

        The caller puts the unacknowledged entries back into ``log`` (a hub reads
        them from its Redis stream), numbered up to ``state.sent``.
        """
        log.restart(state.acked + 1)
        return cls(log, state.id, state.key, received=state.received, epoch=state.epoch)


class HubSession(SessionProtocol[Any]):
    """The client's end of its hub session: it outlives links and spans transports.

    Attributes:
        id: The hub's session id (``None`` until a hub named one); public.
        key: The session's secret, which every resume and POST presents; never logged.
        inbound: What was delivered from the hub (so a new link asks for the rest).
        resets: How many times the hub did not resume our session and a new one began.
        on_reset: Called with ``resets`` right after each reset (the connection
            reports it as a ``session_reset`` diagnostic); it must not raise.
    """

    __slots__ = ("on_reset", "resets")

    def __init__(
        self,
        session_id: str | None = None,
        key: str | None = None,
        *,
        log: SenderLog[Any] | None = None,
        on_reset: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(log, session_id, key)
        self.resets = 0
        self.on_reset = on_reset

    def __repr__(self) -> str:
        return f"HubSession(id={self.id!r}, received={self.received}, resets={self.resets})"

    def start(self, session_id: str, resumed: bool, key: str | None = None) -> None:
        """Adopt ``session_id`` (with its ``key`` when new); a new session numbers afresh.

        Replacing a session we had is logged (``rxconn`` logger: WARNING without
        the ids, which are logged at DEBUG) and counted in ``resets``: hub
        messages it never delivered are gone.
        """
        if not resumed or session_id != self.id:
            if self.id is not None:
                self.resets += 1
                logger.warning(
                    "rxconn: the hub did not resume our session (expired or hub restarted); "
                    "continuing in a new one"
                )
                logger.debug("rxconn: session %s replaced by %s", self.id, session_id)
            replaced = self.id is not None
            self.inbound = Inbound()
            self.key = key
            self.id = session_id
            if replaced and self.on_reset is not None:
                self.on_reset(self.resets)
            return
        if key is not None:
            self.key = key
        self.id = session_id

    def forget(self) -> None:
        """Drop the session (the hub no longer knows it): the next link starts a new one."""
        known = self.id is not None
        if known:
            self.resets += 1
            logger.warning("rxconn: our hub session expired or is unknown to the hub (410)")
            logger.debug("rxconn: session %s forgotten", self.id)
        self.id = None
        self.key = None
        self.inbound = Inbound()
        if known and self.on_reset is not None:
            self.on_reset(self.resets)
