"""When every transport of a fallback pass fails, the error says why each one failed."""

from __future__ import annotations

from reactivex.testing import TestScheduler

from rxconn import (
    Backoff,
    Connection,
    ConnectionLost,
    Errored,
    RetriesExhausted,
    TransportError,
    fallback,
)
from rxconn._core._fallback import FAILED_FIRST
from rxconn.testing import FakeTransport


WS_DOWN = TransportError("websocket", "refused")
NO_JITTER = Backoff(initial=1.0, factor=2.0, jitter=0.0)


def errored(
    ws: FakeTransport, http: FakeTransport, until: float, backoff: Backoff = NO_JITTER
) -> list[Errored]:
    """Every Errored state of a connection over ``fallback(ws, http)`` until ``until``."""
    s = TestScheduler()
    conn = Connection(
        fallback(ws, http, timeout=2.0, upgrade_interval=None),
        backoff=backoff,
        idle_timeout=None,
        scheduler=s,
    )
    states: list[object] = []
    conn.state.subscribe(states.append)
    s.advance_to(until)
    return [state for state in states if isinstance(state, Errored)]


def notes(error: BaseException) -> list[str]:
    return list(getattr(error, "__notes__", []))


def test_the_last_error_notes_why_each_earlier_transport_failed() -> None:
    """WebSocket refused, then HTTP reset: the attempt's error is HTTP's, noting WebSocket's."""
    ws_down = TransportError("websocket", "refused")
    http_down = ConnectionLost("http", "reset")
    ws = FakeTransport("websocket", "#", error=ws_down)
    http = FakeTransport("http", "-#", error=http_down)
    first = errored(ws, http, 1.5)[0]
    assert first.error is http_down  # kept as is: its type and status decide the retry
    assert notes(first.error) == [f"{FAILED_FIRST}websocket: refused"]


def test_a_timed_out_transport_is_named_with_its_timeout() -> None:
    """A WebSocket abandoned after the fallback's timeout is noted as such."""
    http_down = ConnectionLost("http", "reset")
    ws = FakeTransport("websocket", "-----")
    http = FakeTransport("http", "#", error=http_down)
    first = errored(ws, http, 2.5)[0]
    assert notes(first.error) == [f"{FAILED_FIRST}websocket: did not open within 2 s (fallback)"]


def test_notes_do_not_pile_up_when_an_error_instance_is_raised_again() -> None:
    """Each pass replaces the notes of the previous one (fakes reuse one error instance)."""
    http_down = ConnectionLost("http", "reset")
    ws = FakeTransport("websocket", "#", error=WS_DOWN)
    http = FakeTransport("http", "#", error=http_down)
    states = errored(ws, http, 10)
    assert len(states) >= 3
    assert all(state.error is http_down for state in states)
    assert notes(http_down) == [f"{FAILED_FIRST}websocket: refused"]


def test_no_note_when_only_the_remembered_transport_was_tried() -> None:
    """A link lost after it opened, then a reconnect that goes straight to HTTP (it worked
    before) and fails: neither error has anything to add."""
    http_lost = ConnectionLost("http", "lost")
    ws = FakeTransport("websocket", "#", error=WS_DOWN)
    http = FakeTransport("http", "o-#", "#", error=http_lost)
    states = errored(ws, http, 3.5)
    assert [(state.attempt, state.error) for state in states] == [(0, http_lost), (1, http_lost)]
    assert ws.subscriptions[1:] == []  # the reconnect did not try WebSocket
    assert notes(http_lost) == []


def test_the_cause_of_retries_exhausted_carries_the_notes() -> None:
    """After max_attempts, RetriesExhausted's cause is the last error, notes included."""
    http_down = ConnectionLost("http", "reset")
    ws = FakeTransport("websocket", "#", error=WS_DOWN)
    http = FakeTransport("http", "#", error=http_down)
    last = errored(ws, http, 10, Backoff(initial=1.0, jitter=0.0, max_attempts=2))[-1]
    assert last.retry_in is None
    assert isinstance(last.error, RetriesExhausted)
    assert last.error.__cause__ is http_down
    assert notes(http_down) == [f"{FAILED_FIRST}websocket: refused"]
