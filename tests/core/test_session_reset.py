"""A 410 (the hub forgot our session) starts a new session at once, in virtual time.

Before, the retry after a 410 waited the whole backoff delay it had grown to while the
hub was down (6.9 s in the report), although the hub had just answered.
"""

from __future__ import annotations

from collections.abc import Sequence

import reactivex as rx
from reactivex import Observable, abc
from reactivex.testing import ReactiveTest, TestScheduler

from rxconn import Backoff, Connected, Connecting, Connection, ConnectionLost, Disconnected, Errored
from rxconn.errors import SessionExpired
from rxconn.testing import FakeLink, FakeTransport
from rxconn.transport import LinkContext, LinkEvent, Opened


on_next = ReactiveTest.on_next

DOWN = ConnectionLost("websocket", "refused")
GONE = SessionExpired("websocket", "session unknown", status=410, retry_after=0)
BACKOFF = Backoff(initial=2.0, factor=2.0, max_delay=30.0, jitter=0.0)


class PerAttempt:
    """A transport whose n-th link fails with ``errors[n]`` after one second, or opens."""

    name = "websocket"

    def __init__(self, errors: Sequence[Exception | None]) -> None:
        self.errors = list(errors)
        self.opened = 0
        self._fake = FakeTransport("websocket", "-")  # only lends its FakeLink

    def open(
        self, scheduler: abc.SchedulerBase, context: LinkContext | None = None
    ) -> Observable[LinkEvent]:
        def attempt(_: abc.SchedulerBase) -> Observable[LinkEvent]:
            index = self.opened
            self.opened += 1
            error = self.errors[min(index, len(self.errors) - 1)]
            if error is None:
                link = FakeLink(self._fake, index, scheduler, context or LinkContext())
                return rx.concat(
                    rx.timer(1.0, scheduler=scheduler).pipe(
                        rx.operators.map(lambda _: Opened(link, "websocket"))
                    ),
                    rx.never(),
                )
            return rx.timer(1.0, scheduler=scheduler).pipe(
                rx.operators.flat_map(lambda _: rx.throw(error))
            )

        return rx.defer(attempt)


def states_of(errors: Sequence[Exception | None]) -> list[object]:
    scheduler = TestScheduler()
    conn = Connection(PerAttempt(errors), backoff=BACKOFF, idle_timeout=None, scheduler=scheduler)
    return scheduler.start(lambda: conn.state, disposed=100_000).messages


def test_a_410_after_the_hub_came_back_retries_at_once() -> None:
    """Down (2 s backoff), then the hub answers 410: a new attempt starts the same instant."""
    assert states_of([DOWN, GONE, None]) == [
        on_next(200, Disconnected()),
        on_next(200, Connecting("websocket", 0)),
        on_next(201, Errored(DOWN, 0, 2.0)),
        on_next(203, Connecting("websocket", 1)),
        on_next(204, Errored(GONE, 1, 0.0)),  # the hub answered: no wait
        on_next(204, Connecting("websocket", 2)),
        on_next(205, Connected("websocket")),
    ]


def test_a_hub_that_answers_410_to_everything_still_gets_the_backoff() -> None:
    """Only the first 410 since the last open link skips the wait: no reconnect storm."""
    assert states_of([GONE, GONE, GONE, None]) == [
        on_next(200, Disconnected()),
        on_next(200, Connecting("websocket", 0)),
        on_next(201, Errored(GONE, 0, 0.0)),
        on_next(201, Connecting("websocket", 1)),
        on_next(202, Errored(GONE, 1, 4.0)),
        on_next(206, Connecting("websocket", 2)),
        on_next(207, Errored(GONE, 2, 8.0)),
        on_next(215, Connecting("websocket", 3)),
        on_next(216, Connected("websocket")),
    ]
