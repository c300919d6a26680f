"""Receipts in virtual time: what send() returns, when it settles, and that it settles once.

Outcomes are recorded with ``TestScheduler.create_observer()`` and compared
with marble strings (one tick per column), so each test states *when* a
receipt settles, not only how.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from reactivex import operators as ops
from reactivex.observable.marbles import parse
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.marbles import messages_to_records
from reactivex.testing.recorded import Recorded

import rxconn
from rxconn import (
    Backoff,
    Connection,
    ConnectionClosedError,
    ConnectionLost,
    Delivered,
    Dropped,
    Receipt,
    fallback,
)
from rxconn.testing import FakeTransport
from rxconn.transport import Acked


on_next, on_error, on_completed = (
    ReactiveTest.on_next,
    ReactiveTest.on_error,
    ReactiveTest.on_completed,
)

CUT = ConnectionLost("websocket", "cut")
QUICK = Backoff(initial=1.0, factor=1.0, jitter=0.0)


def marbles(diagram: str, lookup: dict[str | float, Any] | None = None) -> list[Recorded[Any]]:
    """The records a marble diagram stands for (one tick per column, from time 0)."""
    return messages_to_records(parse(diagram, timespan=1.0, lookup=lookup))


def make(ws: Any, s: TestScheduler, **kw: Any) -> Connection:
    kw.setdefault("idle_timeout", None)
    kw.setdefault("backoff", QUICK)
    return Connection(ws, scheduler=s, **kw)


def watch(s: TestScheduler, receipt: Receipt) -> Any:
    observer = s.create_observer()
    receipt.subscribe(observer)
    return observer


# ------------------------------------------------------------ when it settles


def test_plain_link_receipt_settles_when_the_socket_takes_the_payload() -> None:
    """Sent at 1 with no link; the link opens and takes it at 3: Delivered, not acknowledged."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "---o")
    conn = make(ws, s)
    conn.connect()
    s.advance_to(1)
    receipt = conn.send("a")
    outcome = watch(s, receipt)
    assert not receipt.done and receipt.outcome is None
    s.advance_to(10)
    assert outcome.messages == marbles(
        "---(d,|)", {"d": Delivered(1, "websocket", acknowledged=False)}
    )
    assert receipt.done


def test_with_the_hub_only_an_acknowledgement_delivers() -> None:
    """A hub link's write is not delivery: Acked(2) at 5 settles a and b, and c waits."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o------", acks=False, next_seqs={0: 1})
    conn = make(ws, s)
    conn.connect()
    s.advance_to(1)
    a, b, c = (conn.send(p) for p in "abc")
    outcomes = [watch(s, r) for r in (a, b, c)]
    s.schedule_absolute(5, lambda *_: ws.links[0].push(Acked(2)))
    s.schedule_absolute(6, lambda *_: ws.links[0].push(Acked(2)))  # repeated: nothing new
    s.schedule_absolute(7, lambda *_: ws.links[0].push(Acked(1)))  # stale: nothing
    s.advance_to(10)
    assert outcomes[0].messages == marbles("-----(d,|)", {"d": Delivered(1, "websocket")})
    assert outcomes[1].messages == marbles("-----(d,|)", {"d": Delivered(2, "websocket")})
    assert outcomes[2].messages == []
    assert not c.done and conn.buffered == 1


def test_late_subscribers_get_the_same_outcome() -> None:
    """AsyncSubject-like: a subscriber after the fact gets the outcome at once."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o", acks=True)
    conn = make(ws, s, max_buffer=1, overflow="drop_newest")
    conn.connect()
    s.advance_to(1)
    delivered = conn.send("a")
    s.advance_to(4)
    late = watch(s, delivered)
    assert late.messages == [on_next(4, Delivered(1, "websocket", False)), on_completed(4)]
    assert late.messages == watch(s, delivered).messages  # and again, the same
    conn2 = make(FakeTransport("websocket", "-"), s, max_buffer=1, overflow="drop_newest")
    conn2.send("x")
    refused = conn2.send("y")
    error = watch(s, refused).messages
    assert [on_error(4, lambda e: isinstance(e, Dropped))] == error


def test_a_cumulative_ack_settles_receipts_in_send_order_exactly_once() -> None:
    """One Acked(5) tells five receipts' observers in order; later acks tell nobody again."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o-----", acks=False, next_seqs={0: 1})
    conn = make(ws, s)
    conn.connect()
    s.advance_to(1)
    told: list[int] = []
    for i in range(5):
        conn.send(str(i)).subscribe(lambda d: told.append(d.seq))
    ws.links[0].push(Acked(5))
    ws.links[0].push(Acked(5))
    ws.links[0].push(Acked(9))
    assert told == [1, 2, 3, 4, 5]


def test_resume_point_settles_what_the_hub_already_has() -> None:
    """The link is cut before the ack; the next link opens at next_seq=3: a, b are Delivered."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o-#", "o---", error=CUT, acks=False, next_seqs={0: 1, 1: 3})
    conn = make(ws, s)
    conn.connect()
    s.advance_to(1)
    a, b, c = (conn.send(p) for p in "abc")
    outcome = watch(s, b)
    s.advance_to(10)  # cut at 2, next link at 3
    assert outcome.messages == marbles("---(d,|)", {"d": Delivered(2, "websocket")})
    assert a.outcome == Delivered(1, "websocket")
    assert not c.done
    assert [(w.link, w.seq, w.payload) for w in ws.writes if w.link == 1] == [(1, 3, "c")]


def test_a_new_hub_session_keeps_receipts_pending_until_it_acknowledges() -> None:
    """After a 410 / new session (next_seq=1) a and b are resent; only the new ack settles them."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o-#", "o---", error=CUT, acks=False, next_seqs={0: 1, 1: 1})
    conn = make(ws, s)
    conn.connect()
    s.advance_to(1)
    a, b = conn.send("a"), conn.send("b")
    ws.links[0].push(Acked(1))  # a delivered in the old session
    outcome = watch(s, b)
    s.advance_to(5)  # cut at 2, new session at 3: b resent as seq 1
    assert not b.done and outcome.messages == []
    assert [(w.link, w.seq, w.payload) for w in ws.writes if w.link == 1] == [(1, 1, "b")]
    s.schedule_absolute(6, lambda *_: ws.links[1].push(Acked(1)))
    s.advance_to(10)
    assert outcome.messages == marbles("------(d,|)", {"d": Delivered(1, "websocket")})
    assert a.outcome == Delivered(1, "websocket")


def test_a_failed_write_leaves_the_receipt_pending_until_the_next_link_takes_it() -> None:
    """The first link fails on the write; the second takes the payload: one Delivered."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o----", write_errors={0: CUT})
    conn = make(ws, s)
    conn.connect()
    s.advance_to(2)
    receipt = conn.send("a")
    outcome = watch(s, receipt)
    s.advance_to(10)  # failed at 2, retried at 3, opened at 4
    assert outcome.messages == marbles("----(d,|)", {"d": Delivered(1, "websocket", False)})


def test_delivered_names_the_transport_that_delivered() -> None:
    """Through a fallback whose WebSocket is refused, the receipt says "http"."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-#", error=CUT)
    http = FakeTransport("http", "-o---")
    conn = make(fallback(ws, http, timeout=5.0, upgrade_interval=None), s)
    receipt = conn.send("a")
    conn.connect()
    s.advance_to(10)
    assert receipt.outcome == Delivered(1, "http", False)


def test_the_receipt_observable_composes_with_operators() -> None:
    """receipt.observable is a plain Observable: pipe(ops...) works, in virtual time."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "--o")
    conn = make(ws, s)
    receipt = conn.send("a")
    conn.connect()
    seqs = s.create_observer()
    receipt.observable.pipe(ops.map(lambda d: d.seq)).subscribe(seqs)
    s.advance_to(5)
    assert seqs.messages == marbles("--(1,|)")


# ----------------------------------------------------------- observers, close


def test_receipt_observers_may_send_and_close_from_their_callbacks() -> None:
    """Re-entrant send() and close() from a receipt callback keep the outbox consistent."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o-----", acks=False, next_seqs={0: 1})
    conn = make(ws, s)
    conn.connect()
    s.advance_to(1)
    follow_ups: list[Receipt] = []
    a = conn.send("a")
    b = conn.send("b")
    a.subscribe(lambda _: follow_ups.append(conn.send("after-a")))
    b.subscribe(lambda _: conn.close())
    ws.links[0].push(Acked(2))
    assert ws.written == ["a", "b", "after-a"]
    assert [type(r.outcome) for r in follow_ups] == [ConnectionClosedError]
    assert conn.closed and conn.buffered == 0


def test_a_raising_receipt_observer_is_reported_and_the_others_are_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception in one receipt callback reaches the logs, not the link nor other receipts."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o------", acks=False, next_seqs={0: 1})
    conn = make(ws, s)
    conn.connect()
    s.advance_to(1)
    told: list[str] = []

    def explode(_: Delivered) -> None:
        raise RuntimeError("user bug")

    first, second = conn.send("a"), conn.send("b")
    first.subscribe(explode)
    first.subscribe(lambda _: told.append("a"))
    second.subscribe(lambda _: told.append("b"))
    with caplog.at_level(logging.ERROR, logger="rxconn"):
        ws.links[0].push(Acked(2))
    assert told == ["a", "b"]
    assert "receipt observer raised" in caplog.text
    assert conn.current_state == rxconn.Connected("websocket")


def test_a_disposed_receipt_subscription_hears_nothing() -> None:
    """Disposing before the receipt settles unregisters the observer."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "---o")
    conn = make(ws, s)
    conn.connect()
    receipt = conn.send("a")
    outcome = s.create_observer()
    receipt.subscribe(outcome).dispose()
    s.advance_to(10)
    assert receipt.done and outcome.messages == []


def test_close_fails_every_pending_receipt_synchronously() -> None:
    """close() at 3: pending receipts fail then and there; delivered ones stay delivered."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o------", acks=False, next_seqs={0: 1})
    conn = make(ws, s)
    conn.connect()
    s.advance_to(1)
    a, b, c = (conn.send(p) for p in "abc")
    ws.links[0].push(Acked(1))
    outcomes = [watch(s, r) for r in (b, c)]
    s.advance_to(3)
    assert conn.close() == ["b", "c"]
    assert all(r.done for r in (a, b, c))
    for outcome in outcomes:
        assert [on_error(3, lambda e: isinstance(e, ConnectionClosedError))] == outcome.messages
    assert a.outcome == Delivered(1, "websocket")
    assert conn.close() == []
    with pytest.raises(ConnectionClosedError):
        conn.send("d")


# ------------------------------------------------------------ what send() takes


def test_send_refuses_text_that_cannot_be_encoded_as_utf8() -> None:
    """A lone surrogate would jam the link forever: ValueError at once, nothing buffered."""
    conn = make(FakeTransport("websocket", "o"), TestScheduler())

    class Text(str):
        pass

    for bad in ("\ud800", "ok \udfff", Text("x\ud83d")):
        with pytest.raises(ValueError, match="UTF-8"):
            conn.send(bad)
    assert conn.buffered == 0
    conn.send("héllo ✓ 🎉")
    conn.send(b"\xff\xfe not UTF-8 is fine as binary")
    conn.send(Text("plain"))
    assert conn.close() == ["héllo ✓ 🎉", b"\xff\xfe not UTF-8 is fine as binary", "plain"]


def test_a_receipt_is_a_small_slotted_object() -> None:
    """Ignoring receipts must cost almost nothing: no __dict__, nothing built until asked."""
    conn = make(FakeTransport("websocket", "o"), TestScheduler())
    receipt = conn.send("a")
    assert not hasattr(receipt, "__dict__")
    assert receipt.payload == "a" and repr(receipt) == "<Receipt pending>"


# --------------------------------------------------------------------- asyncio


@pytest.mark.asyncio
async def test_await_receipt_returns_delivered_or_raises() -> None:
    """await gives the Delivered; a dropped payload's receipt raises Dropped."""
    ws = FakeTransport("websocket", "o-----", timespan=0.01)
    conn = Connection(ws, max_buffer=1, overflow="drop_newest", idle_timeout=None)
    handle = conn.connect()
    first = conn.send("a")
    refused = conn.send("b")
    async with asyncio.timeout(5):
        assert await first == Delivered(1, "websocket", False)
        with pytest.raises(Dropped):
            await refused
    handle.dispose()
    conn.close()


@pytest.mark.asyncio
async def test_flush_waits_for_every_receipt_and_holds_interest_meanwhile() -> None:
    """With no other interest, flush() opens a link, waits for delivery, then lets go."""
    ws = FakeTransport("websocket", "--o-----", timespan=0.01)
    conn = Connection(ws, idle_timeout=None)
    receipts = [conn.send(str(i)) for i in range(5)]
    async with asyncio.timeout(5):
        await conn.flush()
    assert [r.outcome for r in receipts] == [Delivered(i, "websocket", False) for i in range(1, 6)]
    assert len(ws.subscriptions) == 1 and ws.subscriptions[0].unsubscribe is not None
    assert conn.current_state == rxconn.Disconnected()
    await conn.flush()  # nothing pending: at once
    conn.close()
    await conn.flush()  # closed: every receipt settled


@pytest.mark.asyncio
async def test_flush_counts_failed_receipts_as_settled() -> None:
    """A receipt that expires settles too: flush() returns; the receipt holds the error."""
    ws = FakeTransport("websocket", "-", timespan=0.01)  # a link that never opens
    conn = Connection(ws, ttl=0.05, idle_timeout=None)
    receipt = conn.send("a")
    async with asyncio.timeout(5):
        await conn.flush()
    assert isinstance(receipt.outcome, rxconn.Expired)
    conn.close()


@pytest.mark.asyncio
async def test_flush_timeout_raises_and_releases_interest() -> None:
    """A link that never takes anything: TimeoutError after the timeout, the link released."""
    ws = FakeTransport("websocket", "o-----", timespan=0.01, acks=False)
    conn = Connection(ws, idle_timeout=None)
    receipt = conn.send("a")
    with pytest.raises(TimeoutError):
        await conn.flush(timeout=0.1)
    assert not receipt.done
    assert ws.subscriptions[0].unsubscribe is not None
    conn.close()
    assert isinstance(receipt.outcome, ConnectionClosedError)


def test_the_connection_shortcut_passes_the_outbox_policies_on() -> None:
    """rxconn.connection(..., overflow=, ttl=) configures the Connection it builds."""
    import rxconn
    from rxconn.errors import Dropped

    conn = rxconn.connection("http://127.0.0.1:9/rx", max_buffer=1, overflow="drop_newest")
    kept = conn.send("kept")
    refused = conn.send("refused")
    assert not kept.done and refused.done and isinstance(refused.outcome, Dropped)
    assert conn.close() == ["kept"]
