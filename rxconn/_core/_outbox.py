"""The outbound buffer: payloads leave it only when a link acknowledged them.

Pure bookkeeping, no Rx and no I/O. Payloads are numbered (``seq``) from
``head_seq`` on; they are either *in flight* (handed to the current link, not
yet acknowledged) or *pending* (not yet handed to any link). A new link
rewinds: everything in flight becomes pending again, oldest first, so that a
failed write keeps its payloads at the head.
"""

from __future__ import annotations

from collections import deque

from .._types import Payload
from ..errors import BufferFullError


__all__ = ["Outbox"]


class Outbox:
    """A bounded, ordered buffer of payloads awaiting acknowledgement.

    Args:
        max_size: How many unacknowledged payloads it holds before ``push``
            raises :class:`BufferFullError`.
    """

    __slots__ = ("_in_flight", "_pending", "head_seq", "max_size")

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError(f"max_buffer must be >= 1, got {max_size!r}")
        self.max_size = max_size
        self.head_seq = 1
        """Sequence number of the oldest unacknowledged payload."""
        self._in_flight: deque[Payload] = deque()
        self._pending: deque[Payload] = deque()

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

    def push(self, payload: Payload) -> None:
        """Append ``payload``; raises :class:`BufferFullError` when full (nothing is dropped)."""
        if len(self._in_flight) + len(self._pending) >= self.max_size:
            raise BufferFullError(self.max_size)
        self._pending.append(payload)

    def take_pending(self) -> tuple[int, list[Payload]]:
        """Move every pending payload in flight; returns the first one's seq and the payloads."""
        first = self.head_seq + len(self._in_flight)
        batch = list(self._pending)
        self._pending.clear()
        self._in_flight.extend(batch)
        return first, batch

    def ack(self, seq: int) -> int:
        """Release every payload numbered ``<= seq``; returns how many were released.

        Acknowledgements are cumulative, so a stale or repeated one releases nothing.
        """
        released = 0
        in_flight, pending = self._in_flight, self._pending
        while self.head_seq <= seq:
            if in_flight:
                in_flight.popleft()
            elif pending:  # acknowledged by a peer that had it from an earlier link
                pending.popleft()
            else:
                break
            self.head_seq += 1
            released += 1
        return released

    def rewind(self) -> None:
        """Make every in-flight payload pending again (a new link will write it first)."""
        if self._in_flight:
            self._in_flight.extend(self._pending)
            self._pending, self._in_flight = self._in_flight, deque()

    def renumber(self, head_seq: int) -> None:
        """Rewind and number the buffer from ``head_seq`` (a new hub session starts at 1)."""
        self.rewind()
        self.head_seq = head_seq

    def snapshot(self) -> list[Payload]:
        """Every unacknowledged payload, oldest first (for inspection and tests)."""
        return [*self._in_flight, *self._pending]
