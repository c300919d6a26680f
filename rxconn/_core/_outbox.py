"""The outbound buffer: payloads leave it when a link accepted them, or by policy.

Pure bookkeeping, no Rx, no I/O and no clock (times are passed in). The
outbox is the client's :class:`~rxconn.session.SenderLog` (the hub's replay
log is another): it holds the :class:`~rxconn.receipts.Receipt` of every
payload not yet accepted, in ``send()`` order, numbered (``seq``) from
``oldest`` on. A prefix of them is *in flight* (handed to the current link,
not yet acknowledged), the rest *pending* (not handed to any link). A new link
rewinds: everything in flight becomes pending again, oldest first, so that a
failed write keeps its payloads at the head.

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

import itertools
from datetime import datetime

from .._sender import SenderLog
from .._types import Payload
from ..errors import BufferFullError
from ..receipts import Receipt, Settled, Via


__all__ = ["Outbox"]


class Outbox(SenderLog[Receipt]):
    """The client's sender log: a bounded, ordered buffer of receipts awaiting acknowledgement.

    Args:
        max_size: How many unacknowledged payloads it holds before it is full
            (``push`` then raises :class:`BufferFullError`).
    """

    __slots__ = ("_owned", "_written")

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError(f"max_buffer must be >= 1, got {max_size!r}")
        super().__init__(max_size)
        self._written = 0  # length of the prefix in flight (handed to the current link)
        self._owned = 0  # length of the prefix handed to a hub link

    @property
    def max_size(self) -> int:
        """How many unacknowledged payloads it holds."""
        return self.limit

    @property
    def in_flight(self) -> int:
        """How many payloads were handed to the current link and await acknowledgement."""
        return self._written

    @property
    def has_pending(self) -> bool:
        """True when payloads wait to be handed to a link."""
        return len(self._entries) > self._written

    @property
    def owned(self) -> int:
        """How many payloads (the oldest) a hub session owns: no policy drops them."""
        return self._owned

    def push(self, receipt: Receipt) -> None:
        """Append ``receipt``; raises :class:`BufferFullError` when full (nothing is dropped)."""
        if len(self._entries) >= self.limit:
            raise BufferFullError(self.limit)
        self._entries.append(receipt)

    def take_pending(self, owned: bool) -> tuple[int, list[Payload]]:
        """Move every pending payload in flight; returns the first one's seq and the payloads.

        ``owned``: the link speaks the hub session protocol, so the session owns
        everything in flight from now on.
        """
        entries = self._entries
        written = self._written
        count = len(entries)
        if count - written == 1:  # the common case of a send() while connected
            batch = [entries[-1].payload]
        else:
            batch = [receipt.payload for receipt in itertools.islice(entries, written, None)]
        self._written = count
        if owned:
            self._owned = count
        return self.oldest + written, batch

    def ack(self, seq: int, via: Via) -> Settled | None:
        """Release and settle every payload numbered ``<= seq`` as delivered ``via`` a link.

        Acknowledgements are cumulative, so a stale or repeated one releases
        nothing. A pending payload may be released too: a peer that had it from
        an earlier link. Returns the settled receipts that have observers, with
        their observers, for the caller to notify (None when there are none).
        """
        entries = self._entries
        head = self.oldest
        if seq == head and entries:  # the common case: one write, one acknowledgement
            receipt = entries.popleft()
            self.acked = head
            watching = receipt._end  # noqa: SLF001  (the outbox settles receipts in place)
            receipt._seq = head  # noqa: SLF001
            receipt._end = via  # noqa: SLF001
            self.oldest = head + 1
            if self._written:
                self._written -= 1
            if self._owned:
                self._owned -= 1
            return None if watching is None else [(receipt, watching)]
        drop = self._acknowledge(seq)
        if not drop:
            return None
        settled: Settled | None = None
        for number in range(head, head + drop):
            receipt = entries.popleft()
            watching = receipt._end  # noqa: SLF001
            receipt._seq = number  # noqa: SLF001
            receipt._end = via  # noqa: SLF001
            if watching is not None:
                if settled is None:
                    settled = []
                settled.append((receipt, watching))
        self.oldest = head + drop
        self._written = max(self._written - drop, 0)
        self._owned = max(self._owned - drop, 0)
        return settled

    def rewind(self) -> None:
        """Make every in-flight payload pending again (a new link will write it first)."""
        self._written = 0

    def renumber(self, head_seq: int) -> None:
        """Rewind and number the buffer from ``head_seq`` (a new hub session starts at 1).

        The payloads stay owned: the new session gets them, under new numbers.
        """
        self._written = 0
        self.restart(head_seq)

    # --------------------------------------------------------------- policies

    def _first_candidate(self) -> int:
        """Index of the oldest payload a policy may drop (past the in-flight and owned ones)."""
        written, owned = self._written, self._owned
        return written if written > owned else owned

    def evict_oldest(self) -> Receipt | None:
        """Remove the oldest payload not yet handed to a link (and not owned); None if none."""
        index = self._first_candidate()
        entries = self._entries
        if index >= len(entries):
            return None
        if index == 0:
            return entries.popleft()
        receipt = entries[index]
        del entries[index]
        return receipt

    def oldest_candidate(self) -> Receipt | None:
        """The payload the ``ttl`` timer watches: the oldest one a policy may drop."""
        index = self._first_candidate()
        entries = self._entries
        return entries[index] if index < len(entries) else None

    def stamp(self, now: datetime) -> None:
        """Give every candidate sent while no clock was known the waiting start ``now``."""
        entries = self._entries
        for index in range(self._first_candidate(), len(entries)):
            receipt = entries[index]
            if receipt._t is None:  # noqa: SLF001
                receipt._t = now  # noqa: SLF001

    def expire(self, sent_before: datetime) -> list[Receipt]:
        """Remove (and return) the candidates that started waiting at or before ``sent_before``.

        Candidates are in ``send()`` order, so they are the oldest run of them.
        """
        entries = self._entries
        index = self._first_candidate()
        expired: list[Receipt] = []
        while index < len(entries):
            receipt = entries[index]
            stamp: datetime | None = receipt._t  # noqa: SLF001
            if stamp is None or stamp > sent_before:
                break
            del entries[index]
            expired.append(receipt)
        return expired

    # ------------------------------------------------------------ inspection

    def receipts(self) -> list[Receipt]:
        """Every unacknowledged receipt, oldest first."""
        return list(self._entries)
