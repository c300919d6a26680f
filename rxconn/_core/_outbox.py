"""The outbound buffer: payloads leave it when a link accepted them, or by policy.

Pure bookkeeping, no Rx, no I/O and no clock (times are passed in). The
outbox holds the :class:`~rxconn.receipts.Receipt` of every payload not yet
accepted, in ``send()`` order, numbered (``seq``) from ``head_seq`` on. Each is
either *in flight* (handed to the current link, not yet acknowledged) or
*pending* (not handed to any link). A new link rewinds: everything in flight
becomes pending again, oldest first, so that a failed write keeps its payloads
at the head.

Payloads handed to a hub link are *owned* by the hub session: no policy may
drop them any more, even after a rewind (the hub may already have them under
their numbers). Owned payloads always form a prefix of the outbox (writes take
from the head), so a count (``_owned``) is all it takes to track them. Policies
(overflow eviction, ``ttl`` expiry) only ever remove *candidates*: pending
payloads past that prefix. Those were never numbered for a hub, so removing
one renumbers nothing a peer has seen.

Settling receipts on an acknowledgement walks the acknowledged prefix once
and writes two fields per receipt; observers, if any, are returned to the
caller to notify once the outbox is consistent again (they may call ``send()``).
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

from .._types import Payload
from ..errors import BufferFullError
from ..receipts import Receipt, Settled, Via


__all__ = ["Outbox"]


class Outbox:
    """A bounded, ordered buffer of receipts awaiting acknowledgement.

    Args:
        max_size: How many unacknowledged payloads it holds before it is full
            (``push`` then raises :class:`BufferFullError`).
    """

    __slots__ = ("_in_flight", "_owned", "_pending", "head_seq", "max_size")

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError(f"max_buffer must be >= 1, got {max_size!r}")
        self.max_size = max_size
        self.head_seq = 1
        """Sequence number of the oldest unacknowledged payload."""
        self._in_flight: deque[Receipt] = deque()
        self._pending: deque[Receipt] = deque()
        self._owned = 0  # length of the prefix handed to a hub link

    def __len__(self) -> int:
        return len(self._in_flight) + len(self._pending)

    @property
    def in_flight(self) -> int:
        """How many payloads were handed to the current link and await acknowledgement."""
        return len(self._in_flight)

    @property
    def has_pending(self) -> bool:
        """True when payloads wait to be handed to a link."""
        return bool(self._pending)

    @property
    def owned(self) -> int:
        """How many payloads (the oldest) a hub session owns: no policy drops them."""
        return self._owned

    def push(self, receipt: Receipt) -> None:
        """Append ``receipt``; raises :class:`BufferFullError` when full (nothing is dropped)."""
        if len(self._in_flight) + len(self._pending) >= self.max_size:
            raise BufferFullError(self.max_size)
        self._pending.append(receipt)

    def take_pending(self, owned: bool) -> tuple[int, list[Payload]]:
        """Move every pending payload in flight; returns the first one's seq and the payloads.

        ``owned``: the link speaks the hub session protocol, so the session owns
        everything in flight from now on.
        """
        in_flight, pending = self._in_flight, self._pending
        first = self.head_seq + len(in_flight)
        if len(pending) == 1:  # the common case of a send() while connected
            receipt = pending.popleft()
            in_flight.append(receipt)
            batch = [receipt.payload]
        else:
            batch = [receipt.payload for receipt in pending]
            in_flight.extend(pending)
            pending.clear()
        if owned:
            self._owned = len(in_flight)
        return first, batch

    def ack(self, seq: int, via: Via) -> Settled | None:
        """Release and settle every payload numbered ``<= seq`` as delivered ``via`` a link.

        Acknowledgements are cumulative, so a stale or repeated one releases
        nothing. Returns the settled receipts that have observers, with their
        observers, for the caller to notify (None when there are none).
        """
        in_flight = self._in_flight
        head = self.head_seq
        if seq == head and in_flight:  # the common case: one write, one acknowledgement
            receipt = in_flight.popleft()
            watching = receipt._end  # noqa: SLF001  (the outbox settles receipts in place)
            receipt._seq = head  # noqa: SLF001
            receipt._end = via  # noqa: SLF001
            self.head_seq = head + 1
            if self._owned:
                self._owned -= 1
            return None if watching is None else [(receipt, watching)]
        pending = self._pending
        first = head
        settled: Settled | None = None
        while head <= seq:
            if in_flight:
                receipt = in_flight.popleft()
            elif pending:  # acknowledged by a peer that had it from an earlier link
                receipt = pending.popleft()
            else:
                break
            watching = receipt._end  # noqa: SLF001  (the outbox settles receipts in place)
            receipt._seq = head  # noqa: SLF001
            receipt._end = via  # noqa: SLF001
            if watching is not None:
                if settled is None:
                    settled = []
                settled.append((receipt, watching))
            head += 1
        if head != first:
            self.head_seq = head
            if self._owned:
                owned = self._owned - (head - first)
                self._owned = owned if owned > 0 else 0
        return settled

    def rewind(self) -> None:
        """Make every in-flight payload pending again (a new link will write it first)."""
        if self._in_flight:
            self._in_flight.extend(self._pending)
            self._pending, self._in_flight = self._in_flight, deque()

    def renumber(self, head_seq: int) -> None:
        """Rewind and number the buffer from ``head_seq`` (a new hub session starts at 1).

        The payloads stay owned: the new session gets them, under new numbers.
        """
        self.rewind()
        self.head_seq = head_seq

    # --------------------------------------------------------------- policies

    def _first_candidate(self) -> int:
        """Index in ``_pending`` of the oldest payload a policy may drop."""
        skip = self._owned - len(self._in_flight)
        return skip if skip > 0 else 0

    def evict_oldest(self) -> Receipt | None:
        """Remove the oldest payload not yet handed to a link (and not owned); None if none."""
        index = self._first_candidate()
        pending = self._pending
        if index >= len(pending):
            return None
        if index == 0:
            return pending.popleft()
        receipt = pending[index]
        del pending[index]
        return receipt

    def oldest_candidate(self) -> Receipt | None:
        """The payload the ``ttl`` timer watches: the oldest one a policy may drop."""
        index = self._first_candidate()
        pending = self._pending
        return pending[index] if index < len(pending) else None

    def stamp(self, now: datetime) -> None:
        """Give every candidate sent while no clock was known the waiting start ``now``."""
        pending = self._pending
        for index in range(self._first_candidate(), len(pending)):
            receipt = pending[index]
            if receipt._t is None:  # noqa: SLF001
                receipt._t = now  # noqa: SLF001

    def expire(self, sent_before: datetime) -> list[Receipt]:
        """Remove (and return) the candidates that started waiting at or before ``sent_before``.

        Candidates are in ``send()`` order, so they are the oldest run of them.
        """
        pending = self._pending
        index = self._first_candidate()
        expired: list[Receipt] = []
        while index < len(pending):
            receipt = pending[index]
            stamp: datetime | None = receipt._t  # noqa: SLF001
            if stamp is None or stamp > sent_before:
                break
            del pending[index]
            expired.append(receipt)
        return expired

    # ------------------------------------------------------------ inspection

    def receipts(self) -> list[Receipt]:
        """Every unacknowledged receipt, oldest first."""
        return [*self._in_flight, *self._pending]
