"""Marble tests of the outbox against hub session links: acks, resume point, new sessions."""

from __future__ import annotations

from reactivex.testing import TestScheduler

from rxconn import Backoff, Connection, ConnectionLost
from rxconn.testing import FakeTransport
from rxconn.transport import Acked


BOOM = ConnectionLost("websocket", "cut")


def make(ws: FakeTransport, s: TestScheduler) -> Connection:
    return Connection(ws, backoff=Backoff(initial=1.0, jitter=0.0), idle_timeout=None, scheduler=s)


def test_payloads_leave_only_when_acknowledged() -> None:
    """Written is not delivered: a session link's payloads stay until an Acked covers them."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o--------", acks=False, next_seqs={0: 1})
    conn = make(ws, s)
    conn.connect()
    s.advance_to(1)
    for p in "abc":
        conn.send(p)
    assert conn.buffered == 3
    ws.links[0].push(Acked(2))
    assert conn.buffered == 1
    ws.links[0].push(Acked(1))  # stale, cumulative: nothing more
    assert conn.buffered == 1


def test_resume_point_from_the_hub_skips_what_it_already_has() -> None:
    """After a cut, the next link opens at next_seq=3: payloads 1-2 are released, 3.. resent."""
    s = TestScheduler()
    ws = FakeTransport(
        "websocket", "o--#", "-o----", error=BOOM, acks=False, next_seqs={0: 1, 1: 3}
    )
    conn = make(ws, s)
    conn.connect()
    s.advance_to(1)
    for p in "abcd":
        conn.send(p)
    s.advance_to(10)
    assert [(w.link, w.seq, w.payload) for w in ws.writes if w.link == 1] == [
        (1, 3, "c"),
        (1, 4, "d"),
    ]
    assert conn.buffered == 2


def test_a_new_session_renumbers_and_resends_everything_unacknowledged() -> None:
    """The hub lost the session (next_seq=1 while we are at 5): renumber from 1, resend all."""
    s = TestScheduler()
    ws = FakeTransport(
        "websocket", "o--#", "-o----", error=BOOM, acks=False, next_seqs={0: 1, 1: 1}
    )
    conn = make(ws, s)
    conn.connect()
    s.advance_to(1)
    for p in "abcd":
        conn.send(p)
    ws.links[0].push(Acked(2))  # a, b delivered in the old session
    s.advance_to(10)
    assert [(w.seq, w.payload) for w in ws.writes if w.link == 1] == [(1, "c"), (2, "d")]


def test_sends_after_the_resume_continue_the_numbering() -> None:
    """New sends on a resumed link carry the next numbers, in order."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o------", acks=False, next_seqs={0: 8})
    conn = make(ws, s)
    conn.connect()
    conn.send("early")  # buffered before the link: numbered when the hub says where it is
    s.advance_to(3)
    conn.send("late")
    assert [(w.seq, w.payload) for w in ws.writes] == [(8, "early"), (9, "late")]
