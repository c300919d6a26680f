"""The hub session protocol, sans-I/O: numbering, acknowledgement, replay, de-duplication.

Both ends use these pieces, so client and hub cannot drift:

* every data message in each direction carries a sequence number, 1, 2, 3, …
  within its session (``seq``);
* the receiver keeps an :class:`Inbound` counter of the last message it
  delivered; a message is delivered only if it is the next one
  (``seq == received + 1``), a repeat (``seq <= received``) is dropped, and a
  gap is a protocol error;
* the receiver acknowledges cumulatively (``ack(received)``), batched;
* the sender keeps what was not acknowledged: the client in its outbox
  (``rxconn._core._outbox``), the hub in a bounded :class:`ReplayLog`, and
  resends it on the next link, starting after the peer's ``received``.

See ``docs/protocol.md`` for the frames that carry this over WebSocket
(``rxconn.v1``) and over HTTP (SSE ids + sequenced POSTs).
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from ._types import Payload
from .errors import BufferFullError


__all__ = [
    "ACK_DELAY",
    "ACK_EVERY",
    "Accept",
    "AckSchedule",
    "HubSession",
    "Inbound",
    "ReplayGap",
    "ReplayLog",
]

logger = logging.getLogger("rxconn")


class ReplayGap(Exception):
    """The replay log no longer holds a message the peer asked for (it fell too far behind)."""

    def __init__(self, wanted: int, oldest: int) -> None:
        super().__init__(wanted, oldest)
        self.wanted = wanted
        self.oldest = oldest

    def __str__(self) -> str:
        return f"replay needs message {self.wanted}, oldest kept is {self.oldest}"


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


class ReplayLog:
    """The sending side's bounded log of numbered messages the peer may still need.

    Messages stay until acknowledged, and at most ``limit`` messages (and
    ``max_bytes`` payload bytes, if given) are kept. A push into a full log
    raises :class:`~rxconn.errors.BufferFullError` (nothing is dropped behind
    anyone's back), unless the caller allows evicting messages
    it already wrote (``evict_upto``): that is the replay *window* of clients
    that never acknowledge (a browser ``EventSource``); a resume that needs an
    evicted message then fails (:meth:`can_resume`) and starts a new session.
    """

    __slots__ = ("_entries", "acked", "bytes", "limit", "max_bytes", "next_seq")

    def __init__(self, limit: int, max_bytes: int | None = None) -> None:
        if limit < 1:
            raise ValueError(f"replay limit must be >= 1, got {limit!r}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"replay byte limit must be >= 1, got {max_bytes!r}")
        self.limit = limit
        self.max_bytes = max_bytes
        self.bytes = 0
        """Payload bytes kept (text counted in characters, a cheap upper-bound proxy)."""
        self.next_seq = 1
        self.acked = 0
        """The highest sequence number the peer acknowledged: it holds everything up to it,
        so a cursor below it (a request that left before a later ack overtook it on
        another link) is stale, not a gap."""
        self._entries: deque[Payload] = deque()

    @property
    def oldest(self) -> int:
        """Sequence number of the oldest message kept (``next_seq`` when empty)."""
        return self.next_seq - len(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, payload: Payload, *, evict_upto: int = 0) -> int:
        """Number and keep ``payload``; returns its sequence number.

        Raises:
            BufferFullError: if the log is full and its oldest message is not
                ``<= evict_upto`` (so may not be evicted).
        """
        entries = self._entries
        size = len(payload)
        max_bytes = self.max_bytes
        while len(entries) >= self.limit or (
            max_bytes is not None and entries and self.bytes + size > max_bytes
        ):
            if self.next_seq - len(entries) > evict_upto:
                raise BufferFullError(self.limit)
            self.bytes -= len(entries.popleft())
        entries.append(payload)
        self.bytes += size
        seq = self.next_seq
        self.next_seq = seq + 1
        return seq

    def ack(self, seq: int) -> None:
        """Forget every message numbered ``<= seq`` (cumulative; stale acks do nothing)."""
        if seq > self.acked:
            self.acked = min(seq, self.next_seq - 1)
        drop = min(seq - self.oldest + 1, len(self._entries))
        entries = self._entries
        for _ in range(max(drop, 0)):
            self.bytes -= len(entries.popleft())

    def after(self, seq: int) -> Iterator[tuple[int, Payload]]:
        """Yield ``(seq, payload)`` for every kept message numbered ``> seq``, in order.

        A ``seq`` below :attr:`acked` counts as ``acked``: the peer already has those.

        Raises:
            ReplayGap: if a message numbered ``> seq`` was forgotten unacknowledged.
        """
        seq = max(seq, self.acked)
        oldest = self.oldest
        if seq + 1 < oldest:
            raise ReplayGap(seq + 1, oldest)
        start = max(seq + 1 - oldest, 0)
        # islice walks the deque once (indexing a deque in the middle is O(n) per item).
        return zip(itertools.count(oldest + start), itertools.islice(self._entries, start, None))

    def can_resume(self, seq: int) -> bool:
        """True when every message after ``seq`` the peer lacks is still kept.

        A stale ``seq`` (below :attr:`acked`) resumes from ``acked``; only messages
        evicted unacknowledged (an ``EventSource`` window) or a ``seq`` from the future
        make it False.
        """
        return max(seq, self.acked) + 1 >= self.oldest and seq < self.next_seq


@dataclass(eq=False)
class HubSession:
    """A connection's hub session: it outlives links and spans transports.

    Attributes:
        id: The hub's session id (``None`` until a hub named one); public.
        key: The session's secret, which every resume and POST presents; never logged.
        inbound: What was delivered from the hub (so a new link asks for the rest).
    """

    id: str | None = None
    key: str | None = field(default=None, repr=False)
    inbound: Inbound | None = None
    resets: int = 0
    """How many times the hub did not resume our session and a new one began."""
    on_reset: Callable[[int], None] | None = field(default=None, repr=False)
    """Called with ``resets`` right after each reset (the connection reports it as a
    ``session_reset`` diagnostic); it must not raise."""

    def __post_init__(self) -> None:
        if self.inbound is None:
            self.inbound = Inbound()

    @property
    def received(self) -> int:
        """Sequence number of the last hub message delivered."""
        assert self.inbound is not None
        return self.inbound.received

    def start(self, session_id: str, resumed: bool, key: str | None = None) -> None:
        """Adopt ``session_id`` (with its ``key`` when new); a new session numbers afresh.

        Replacing a session we had is logged (``rxconn`` logger: WARNING without
        the ids, which are logged at DEBUG) and counted in ``resets``: hub
        messages it never delivered are gone.
        """
        assert self.inbound is not None
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
