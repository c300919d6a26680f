"""Connection.quality in virtual time: one item per timed heartbeat, none per message,
not interest, reset when a new link opens, complete on close."""

from __future__ import annotations

from reactivex.testing import TestScheduler

from rxconn import Backoff, ConnectionLost, LinkQuality
from rxconn.quality import RoundTrip
from rxconn.testing import FakeTransport, timeline, virtual_connection


CUT = ConnectionLost("websocket", "cut")
TIMED = {"r": RoundTrip(0.1), "s": RoundTrip(0.3), "x": RoundTrip(None)}


def test_quality_follows_the_heartbeats_and_only_them() -> None:
    """Each RoundTrip of the link becomes a LinkQuality at its tick; messages make none."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o-r-a-b-s-x-", values=TIMED)  # type: ignore[arg-type]
    conn = virtual_connection(ws, s)
    handle = conn.connect()
    items = timeline(conn.quality, s, 20)
    jitter = (abs(0.3 - 0.1) - 0.0) / 16  # as the estimator computes it
    assert items == [
        (3, LinkQuality("websocket", 0.1, 0.1, 0.0, 0)),
        (9, LinkQuality("websocket", 0.3, 0.125, jitter, 0)),
        (11, LinkQuality("websocket", 0.3, 0.125, jitter, 1)),
    ]
    handle.dispose()
    conn.close()


def test_subscribing_to_quality_is_not_interest_and_it_completes_on_close() -> None:
    """quality opens no link; close() completes it."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o-r-", values=TIMED)  # type: ignore[arg-type]
    conn = virtual_connection(ws, s)
    done: list[bool] = []
    conn.quality.subscribe(on_completed=lambda: done.append(True))
    s.advance_to(10)
    assert ws.subscriptions == []
    conn.close()
    assert done == [True]


def test_a_new_link_starts_its_statistics_over() -> None:
    """After a reconnect the average is the new link's, and missed heartbeats reset."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o-x-s-#", "-o-r-", values=TIMED, error=CUT)  # type: ignore[arg-type]
    conn = virtual_connection(ws, s, backoff=Backoff(initial=1.0, jitter=0.0))
    handle = conn.connect()
    items = [quality for _, quality in timeline(conn.quality, s, 30)]
    assert items[-1] == LinkQuality("websocket", 0.1, 0.1, 0.0, 0)
    assert items[0].missed == 1
    handle.dispose()
    conn.close()
