"""The sending side of a session, sans-I/O: one numbered log type for both ends, and a
link's write queue.

* :class:`SenderLog` numbers what one end sends (1, 2, 3, … within a session),
  keeps it until the peer acknowledges it (cumulatively), and says what a new
  link must send again (:meth:`SenderLog.after`). The client's outbox
  (``rxconn._core._outbox.Outbox``, of receipts) and the hub's
  :class:`ReplayLog` (of payloads, with a byte bound and a browser's replay
  window) are both one.
* :class:`LinkQueue` is one link's queue of numbered payloads to write; the
  connection hands a link everything pending on every flush, so what the link
  already queued is skipped, at both client links (WebSocket, HTTP POSTs).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from ._types import Payload
from .errors import BufferFullError


__all__ = ["LinkQueue", "ReplayGap", "ReplayLog", "SenderLog"]

T = TypeVar("T")


class ReplayGap(Exception):
    """The replay log no longer holds a message the peer asked for (it fell too far behind)."""

    def __init__(self, wanted: int, oldest: int) -> None:
        super().__init__(wanted, oldest)
        self.wanted = wanted
        self.oldest = oldest

    def __str__(self) -> str:
        return f"replay needs message {self.wanted}, oldest kept is {self.oldest}"


class SenderLog(Generic[T]):
    """A bounded log of consecutively numbered entries, kept until the peer acknowledges.

    Entries are numbered from :attr:`oldest` on; :attr:`next_seq` is the number
    the next one gets. Acknowledgements are cumulative (``ack(n)`` covers every
    entry numbered ``<= n``), so a stale one releases nothing; the highest is
    kept in :attr:`acked`, which also tells a stale cursor (a request that left
    before a later acknowledgement overtook it on another link) from a gap.
    """

    __slots__ = ("_entries", "acked", "limit", "oldest")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.oldest = 1
        """Sequence number of the oldest entry kept (``next_seq`` when empty)."""
        self.acked = 0
        """The highest sequence number the peer acknowledged (it holds everything up to it)."""
        self._entries: deque[T] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def next_seq(self) -> int:
        """The number the next entry gets."""
        return self.oldest + len(self._entries)

    def _acknowledge(self, seq: int) -> int:
        """Record the peer's cumulative ack of ``seq``; returns how many entries it releases."""
        count = len(self._entries)
        if seq > self.acked:
            last = self.oldest + count - 1
            self.acked = seq if seq < last else last
        drop = seq - self.oldest + 1
        if drop <= 0:
            return 0
        return drop if drop < count else count

    def restart(self, oldest: int) -> None:
        """Number what is kept from ``oldest`` on (a new session numbers from 1)."""
        self.oldest = oldest
        self.acked = oldest - 1

    def after(self, seq: int) -> Iterator[tuple[int, T]]:
        """Yield ``(seq, entry)`` for every kept entry numbered ``> seq``, in order.

        A ``seq`` below :attr:`acked` counts as ``acked``: the peer already has those.

        Raises:
            ReplayGap: if an entry numbered ``> seq`` was forgotten unacknowledged.
        """
        if seq < self.acked:
            seq = self.acked
        oldest = self.oldest
        if seq + 1 < oldest:
            raise ReplayGap(seq + 1, oldest)
        start = max(seq + 1 - oldest, 0)
        # islice walks the deque once (indexing a deque in the middle is O(n) per item).
        return zip(itertools.count(oldest + start), itertools.islice(self._entries, start, None))

    def can_resume(self, seq: int) -> bool:
        """True when every entry after ``seq`` the peer lacks is still kept.

        A stale ``seq`` (below :attr:`acked`) resumes from ``acked``; only entries
        evicted unacknowledged (an ``EventSource`` window) or a ``seq`` from the
        future make it False.
        """
        return max(seq, self.acked) + 1 >= self.oldest and seq < self.next_seq


class ReplayLog(SenderLog[Payload]):
    """The hub's log of one session's outgoing messages: numbered, kept until acknowledged.

    At most ``limit`` messages (and ``max_bytes`` payload bytes, if given) are
    kept. A push into a full log raises :class:`~rxconn.errors.BufferFullError`
    (nothing is dropped behind anyone's back), unless the caller allows evicting
    messages it already wrote (``evict_upto``): that is the replay *window* of
    clients that never acknowledge (a browser ``EventSource``); a resume that
    needs an evicted message then fails (:meth:`can_resume`) and starts a new
    session.
    """

    __slots__ = ("bytes", "max_bytes")

    def __init__(self, limit: int, max_bytes: int | None = None) -> None:
        if limit < 1:
            raise ValueError(f"replay limit must be >= 1, got {limit!r}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"replay byte limit must be >= 1, got {max_bytes!r}")
        super().__init__(limit)
        self.max_bytes = max_bytes
        self.bytes = 0
        """Payload bytes kept (text counted in characters, a cheap upper-bound proxy)."""

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
            if self.oldest > evict_upto:
                raise BufferFullError(self.limit)
            self.bytes -= len(entries.popleft())
            self.oldest += 1
        entries.append(payload)
        self.bytes += size
        return self.oldest + len(entries) - 1

    def ack(self, seq: int) -> None:
        """Forget every message numbered ``<= seq`` (cumulative; stale acks do nothing)."""
        drop = self._acknowledge(seq)
        if drop:
            entries = self._entries
            for _ in range(drop):
                self.bytes -= len(entries.popleft())
            self.oldest += drop


class LinkQueue:
    """One link's queue of numbered payloads waiting to be written.

    The connection hands a link every pending payload on each flush (numbered
    from ``first_seq``); :meth:`put` keeps only those this link has not queued
    yet, so nothing is written twice on one link.
    """

    __slots__ = ("_payloads", "next_seq")

    def __init__(self) -> None:
        self._payloads: deque[Payload] = deque()
        self.next_seq: int | None = None
        """The number the next new payload will have (None before the first put)."""

    def __len__(self) -> int:
        return len(self._payloads)

    def put(self, first_seq: int, payloads: Sequence[Payload]) -> bool:
        """Queue the payloads numbered ``first_seq``… not queued yet; True if any were new."""
        if self.next_seq is None or first_seq > self.next_seq:
            self.next_seq = first_seq
        skip = self.next_seq - first_seq
        if skip >= len(payloads):
            return False
        self._payloads.extend(payloads[skip:] if skip else payloads)
        self.next_seq = first_seq + len(payloads)
        return True

    @property
    def head_seq(self) -> int:
        """The number of the oldest queued payload (``next_seq`` when empty; 1 before any)."""
        return (self.next_seq or 1) - len(self._payloads)

    def popleft(self) -> Payload:
        """Take the oldest queued payload (numbered :attr:`head_seq`)."""
        return self._payloads.popleft()

    def peek(self) -> Payload:
        """The oldest queued payload, left in place."""
        return self._payloads[0]

    def put_back(self, payloads: Sequence[Payload]) -> None:
        """Queue ``payloads`` (just taken, numbered up to :attr:`head_seq` - 1) first again."""
        self._payloads.extendleft(reversed(payloads))
