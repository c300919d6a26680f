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

import itertools
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from ._types import Payload
from .errors import BufferFullError


__all__ = ["ClientSession", "Inbound", "ReplayLog", "ReplayGap"]

logger = logging.getLogger("rxconn")


class ReplayGap(Exception):
    """The replay log no longer holds a message the peer asked for (it fell too far behind)."""

    def __init__(self, wanted: int, oldest: int) -> None:
        super().__init__(wanted, oldest)
        self.wanted = wanted
        self.oldest = oldest

    def __str__(self) -> str:
        return f"replay needs message {self.wanted}, oldest kept is {self.oldest}"


class Inbound:
    """The receiving side's counter: which numbered messages were already delivered."""

    __slots__ = ("received",)

    def __init__(self, received: int = 0) -> None:
        self.received = received
        """Sequence number of the last message delivered (0: none yet)."""

    def accept(self, seq: int) -> bool | None:
        """Classify message ``seq``: True to deliver, False for a repeat, None for a gap."""
        expected = self.received + 1
        if seq == expected:
            self.received = seq
            return True
        if seq < expected:
            return False
        return None


class ReplayLog:
    """The sending side's bounded log of numbered messages the peer may still need.

    Messages stay until acknowledged, and at most ``limit`` are kept. A push
    into a full log raises :class:`~rxconn.errors.BufferFullError` (nothing is
    dropped behind anyone's back), unless the caller allows evicting messages
    it already wrote (``evict_upto``): that is the replay *window* of clients
    that never acknowledge (a browser ``EventSource``); a resume that needs an
    evicted message then fails (:meth:`can_resume`) and starts a new session.
    """

    __slots__ = ("_entries", "limit", "next_seq")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"replay limit must be >= 1, got {limit!r}")
        self.limit = limit
        self.next_seq = 1
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
        if len(self._entries) >= self.limit:
            if self.next_seq - len(self._entries) > evict_upto:
                raise BufferFullError(self.limit)
            self._entries.popleft()
        self._entries.append(payload)
        seq = self.next_seq
        self.next_seq = seq + 1
        return seq

    def ack(self, seq: int) -> None:
        """Forget every message numbered ``<= seq`` (cumulative; stale acks do nothing)."""
        drop = min(seq - self.oldest + 1, len(self._entries))
        for _ in range(max(drop, 0)):
            self._entries.popleft()

    def after(self, seq: int) -> Iterator[tuple[int, Payload]]:
        """Yield ``(seq, payload)`` for every kept message numbered ``> seq``, in order.

        Raises:
            ReplayGap: if a message numbered ``> seq`` was already forgotten.
        """
        oldest = self.oldest
        if seq + 1 < oldest:
            raise ReplayGap(seq + 1, oldest)
        start = max(seq + 1 - oldest, 0)
        # islice walks the deque once (indexing a deque in the middle is O(n) per item).
        return zip(itertools.count(oldest + start), itertools.islice(self._entries, start, None))

    def can_resume(self, seq: int) -> bool:
        """True when every message after ``seq`` is still kept."""
        return seq + 1 >= self.oldest and seq < self.next_seq


@dataclass(eq=False)
class ClientSession:
    """A connection's hub session: it outlives links and spans transports.

    Attributes:
        id: The hub's session id (``None`` until a hub named one).
        inbound: What was delivered from the hub (so a new link asks for the rest).
    """

    id: str | None = None
    inbound: Inbound | None = None
    resets: int = 0
    """How many times the hub did not resume our session and a new one began."""

    def __post_init__(self) -> None:
        if self.inbound is None:
            self.inbound = Inbound()

    @property
    def received(self) -> int:
        """Sequence number of the last hub message delivered."""
        assert self.inbound is not None
        return self.inbound.received

    def start(self, session_id: str, resumed: bool) -> None:
        """Adopt ``session_id``; a session that was not resumed starts numbering afresh.

        Replacing a session we had is logged (``rxconn`` logger, WARNING) and
        counted in ``resets``: hub messages it never delivered are gone.
        """
        assert self.inbound is not None
        if not resumed or session_id != self.id:
            if self.id is not None:
                self.resets += 1
                logger.warning(
                    "rxconn: hub session %s was not resumed (expired or hub restarted); "
                    "continuing in new session %s",
                    self.id,
                    session_id,
                )
            self.inbound = Inbound()
        self.id = session_id

    def forget(self) -> None:
        """Drop the session (the hub no longer knows it): the next link starts a new one."""
        if self.id is not None:
            self.resets += 1
            logger.warning("rxconn: hub session %s expired or unknown to the hub (410)", self.id)
        self.id = None
        self.inbound = Inbound()
