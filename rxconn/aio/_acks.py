"""AckTimer: the event-loop driver of the sans-I/O :class:`~rxconn.session.AckSchedule`.

Every end that receives numbered messages (the client's WebSocket and HTTP
links, the hub's WebSocket endpoint) acknowledges on the same schedule; this
is the one place that turns the schedule into a loop timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..session import AckSchedule


__all__ = ["AckTimer"]


class AckTimer:
    """Calls ``send`` when an acknowledgement is due; ``cancel()`` when the link ends."""

    __slots__ = ("_loop", "_schedule", "_send", "_timer")

    def __init__(self, schedule: AckSchedule, send: Callable[[], None]) -> None:
        self._schedule = schedule
        self._send = send
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None

    def delivered(self) -> None:
        """A numbered message was delivered (call once per message, or per batch)."""
        schedule = self._schedule
        every = schedule.every
        if schedule.armed and (every is None or schedule.unacked + 1 < every):
            schedule.unacked += 1  # the common case, without a second call per message
            return
        action = schedule.delivered()
        if action == "now":
            self.fire()
        elif action == "arm":
            self._timer = self._loop.call_later(self._schedule.delay, self.fire)

    def fire(self) -> None:
        """Acknowledge now (the schedule says so, or the timer ran out)."""
        self.sent()
        self._send()

    def sent(self) -> None:
        """An acknowledgement left (by :meth:`fire`, or riding on other traffic)."""
        self._schedule.sent()
        self.cancel()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
