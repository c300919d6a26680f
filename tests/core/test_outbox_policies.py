"""Marble tests of the outbox policies in virtual time: overflow, ttl, drops.

Sends are driven by marble strings (one payload per letter, sent at its
column), and ``conn.drops`` is compared with a marble string of ``Drop``
values. One tick is one second.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from reactivex import abc
from reactivex.observable.marbles import parse
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.marbles import messages_to_records
from reactivex.testing.recorded import Recorded

from rxconn import (
    Backoff,
    BufferFullError,
    Connection,
    ConnectionLost,
    Delivered,
    Drop,
    Dropped,
    Expired,
    Receipt,
)
from rxconn.testing import FakeTransport
from rxconn.transport import Acked


on_completed, subscribe = ReactiveTest.on_completed, ReactiveTest.subscribe

CUT = ConnectionLost("websocket", "cut")
SLOW = Backoff(initial=10.0, factor=1.0, jitter=0.0)


def marbles(diagram: str, lookup: dict[str | float, Any] | None = None) -> list[Recorded[Any]]:
    """The records a marble diagram stands for (one tick per column, from time 0)."""
    return messages_to_records(parse(diagram, timespan=1.0, lookup=lookup))


def send_at(s: TestScheduler, conn: Connection, diagram: str) -> dict[str, Receipt]:
    """Send each letter of ``diagram`` at its column; the receipts, by payload."""
    receipts: dict[str, Receipt] = {}
    for time, note in parse(diagram, timespan=1.0):
        payload = str(note.value)  # type: ignore[attr-defined]

        def act(_: abc.SchedulerBase, __: Any = None, p: str = payload) -> None:
            receipts[p] = conn.send(p)

        s.schedule_absolute(float(time), act)  # type: ignore[arg-type]
    return receipts


def record_drops(s: TestScheduler, conn: Connection) -> Any:
    drops = s.create_observer()
    conn.drops.subscribe(drops)
    return drops


def outcomes(receipts: dict[str, Receipt]) -> dict[str, object]:
    return {p: r.outcome for p, r in receipts.items()}


def overflow(payload: str) -> Drop:
    return Drop(payload, "overflow")


def expired(payload: str) -> Drop:
    return Drop(payload, "expired")


# ------------------------------------------------------------------ overflow


def test_drop_oldest_keeps_the_newest_max_buffer_payloads_in_order() -> None:
    """max_buffer=3, five sends with no link: a and b go (once each), c d e are written in order."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o")
    conn = Connection(ws, max_buffer=3, overflow="drop_oldest", idle_timeout=None, scheduler=s)
    drops = record_drops(s, conn)
    receipts = send_at(s, conn, "-a-b-c-d-e")
    s.schedule_absolute(12, lambda *_: conn.connect())
    s.advance_to(20)
    assert drops.messages == marbles("-------x-y", {"x": overflow("a"), "y": overflow("b")})
    assert ws.written == ["c", "d", "e"]
    assert outcomes(receipts) == {
        "a": receipts["a"].outcome,
        "b": receipts["b"].outcome,
        "c": Delivered(1, "websocket", False),
        "d": Delivered(2, "websocket", False),
        "e": Delivered(3, "websocket", False),
    }
    for dropped in "ab":
        error = receipts[dropped].outcome
        assert isinstance(error, Dropped) and not isinstance(error, Expired)
        assert error.reason == "overflow"


def test_drop_newest_refuses_the_new_payload_and_fails_its_receipt_at_once() -> None:
    """A full outbox refuses c and d: their receipts fail with Dropped in send(), drops says so."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o")
    conn = Connection(ws, max_buffer=2, overflow="drop_newest", idle_timeout=None, scheduler=s)
    drops = record_drops(s, conn)
    receipts = send_at(s, conn, "-a-b-c-d")
    seen_at_send: list[bool] = []
    s.schedule_absolute(5, lambda *_: seen_at_send.append(receipts["c"].done))
    s.schedule_absolute(10, lambda *_: conn.connect())
    s.advance_to(20)
    assert drops.messages == marbles("-----x-y", {"x": overflow("c"), "y": overflow("d")})
    assert seen_at_send == [True]  # settled inside send(), before anything else ran
    assert ws.written == ["a", "b"]
    assert isinstance(receipts["c"].outcome, Dropped)
    assert isinstance(receipts["d"].outcome, Dropped)
    assert receipts["a"].outcome == Delivered(1, "websocket", False)


def test_overflow_error_is_the_default_and_raises_without_dropping() -> None:
    """overflow="error": send() raises BufferFullError; nothing is dropped or reported."""
    s = TestScheduler()
    conn = Connection(FakeTransport("websocket", "o"), max_buffer=1, scheduler=s)
    drops = record_drops(s, conn)
    first = conn.send("a")
    with pytest.raises(BufferFullError):
        conn.send("b")
    assert drops.messages == []
    assert not first.done
    assert conn.close() == ["a"]
    assert drops.messages == [on_completed(0)]


def test_drop_oldest_skips_payloads_a_hub_session_owns() -> None:
    """a and b were handed to a hub link: the session owns them, so c is evicted for d."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o---#", "o---", error=CUT, acks=False, next_seqs={0: 1, 1: 1})
    conn = Connection(
        ws, max_buffer=3, overflow="drop_oldest", backoff=SLOW, idle_timeout=None, scheduler=s
    )
    drops = record_drops(s, conn)
    conn.connect()
    receipts = send_at(s, conn, "-a-b-c-d")  # a, b written at once; cut at 4; c, d while down
    s.advance_to(20)  # the next link opens at 14 with a new session: a, b, d resent
    assert drops.messages == marbles("-------x", {"x": overflow("c")})
    assert [(w.link, w.seq, w.payload) for w in ws.writes] == [
        (0, 1, "a"),
        (0, 2, "b"),
        (1, 1, "a"),
        (1, 2, "b"),
        (1, 3, "d"),
    ]
    ws.links[1].push(Acked(3))
    assert [receipts[p].outcome for p in "abd"] == [
        Delivered(1, "websocket"),
        Delivered(2, "websocket"),
        Delivered(3, "websocket"),
    ]


def test_drop_oldest_refuses_the_new_payload_when_the_session_owns_everything() -> None:
    """Nothing a policy may drop is left: the new payload itself is the oldest unsent one."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o---", acks=False, next_seqs={0: 1})
    conn = Connection(ws, max_buffer=2, overflow="drop_oldest", idle_timeout=None, scheduler=s)
    drops = record_drops(s, conn)
    conn.connect()
    receipts = send_at(s, conn, "-a-b-c")
    s.advance_to(10)
    assert drops.messages == marbles("-----x", {"x": overflow("c")})
    assert ws.written == ["a", "b"]
    assert isinstance(receipts["c"].outcome, Dropped)
    assert not receipts["a"].done and not receipts["b"].done


# ----------------------------------------------------------------------- ttl


def test_ttl_expiry_fires_at_exactly_ttl() -> None:
    """ttl=5: a sent at 1 expires at 6, b sent at 3 at 8; their receipts fail with Expired."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o")
    conn = Connection(ws, ttl=5.0, idle_timeout=None, scheduler=s)
    drops = record_drops(s, conn)
    receipts = send_at(s, conn, "-a-b")
    s.advance_to(20)
    assert drops.messages == marbles("------x-y", {"x": expired("a"), "y": expired("b")})
    for payload in "ab":
        error = receipts[payload].outcome
        assert isinstance(error, Expired) and isinstance(error, Dropped)
        assert error.ttl == 5.0 and error.reason == "expired"
    assert conn.buffered == 0
    assert ws.subscriptions == []  # drops is not interest: no link was ever opened


def test_ttl_uses_one_timer_per_outbox_not_one_per_message() -> None:
    """A burst of 1,000 sends arms one timer; they all expire at ttl, and no timer is left."""

    class Counting(TestScheduler):
        timers = 0

        def schedule_absolute(self, duetime: Any, action: Any, state: Any = None) -> Any:
            self.timers += 1
            return super().schedule_absolute(duetime, action, state)

    s = Counting()
    conn = Connection(FakeTransport("websocket", "o"), ttl=2.0, max_buffer=2_000, scheduler=s)
    drops = record_drops(s, conn)
    s.schedule_absolute(1, lambda *_: [conn.send(str(i)) for i in range(1_000)])
    s.advance_to(10)
    assert s.timers == 2  # the burst's action, and the one ttl timer
    assert len(drops.messages) == 1_000
    assert {m.time for m in drops.messages} == {3}
    assert [m.value.value.payload for m in drops.messages] == [str(i) for i in range(1_000)]


def test_ttl_never_expires_what_was_delivered_in_time() -> None:
    """Payloads a link took before their ttl ran out are delivered, never reported."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "---o")
    conn = Connection(ws, ttl=5.0, idle_timeout=None, scheduler=s)
    drops = record_drops(s, conn)
    receipts = send_at(s, conn, "-a-b")
    conn.connect()
    s.advance_to(20)
    assert drops.messages == []
    assert receipts["a"].outcome == Delivered(1, "websocket", False)
    assert receipts["b"].outcome == Delivered(2, "websocket", False)


def test_payload_handed_to_a_hub_link_never_expires() -> None:
    """The hub link dies with a and b unacknowledged: c (never handed over) expires, a, b wait."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o-#", "o---", error=CUT, acks=False, next_seqs={0: 1, 1: 2})
    conn = Connection(ws, ttl=3.0, backoff=SLOW, idle_timeout=None, scheduler=s)
    drops = record_drops(s, conn)
    conn.connect()
    receipts = send_at(s, conn, "-a-b-c")  # a at 1 written; cut at 2; b at 3, c at 5 wait
    s.advance_to(20)  # down until 12; b expires at 6, c at 8; a is owned
    assert drops.messages == marbles("------x-y", {"x": expired("b"), "y": expired("c")})
    # The hub already has a (next_seq=2): the resume settles it, nothing is resent.
    assert receipts["a"].outcome == Delivered(1, "websocket")
    assert [w.link for w in ws.writes] == [0]


def test_a_payload_once_handed_to_a_hub_link_stays_owned_on_later_links() -> None:
    """a went to a hub link, then to a plain one that was lost too: a still never expires."""
    s = TestScheduler()
    ws = FakeTransport(
        "websocket", "o-#", "o-#", "-", error=CUT, acks=False, next_seqs={0: 1}
    )  # link 0 speaks the hub protocol, link 1 plain frames, link 2 never opens
    conn = Connection(
        ws,
        ttl=3.0,
        overflow="drop_oldest",
        max_buffer=2,
        scheduler=s,
        backoff=Backoff(initial=1.0, factor=1.0, jitter=0.0),
        idle_timeout=None,
    )
    drops = record_drops(s, conn)
    conn.connect()
    receipts = send_at(s, conn, "-a----b-c")  # a on link 0 at 1; cut at 2; link 1 at 3..5
    s.advance_to(20)
    # b (sent at 6, link 1 lost) is evicted by c at 8, and c expires at 11; a waits.
    assert drops.messages == marbles("--------x--y", {"x": overflow("b"), "y": expired("c")})
    assert [(w.link, w.payload) for w in ws.writes] == [(0, "a"), (1, "a")]
    assert not receipts["a"].done and conn.buffered == 1


def test_a_plain_links_unaccepted_payloads_expire_once_the_link_is_lost() -> None:
    """A plain link that never accepted a: once it is lost, a waits unsent again and expires."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o--#", "-", error=CUT, acks=False)
    conn = Connection(ws, ttl=4.0, backoff=SLOW, idle_timeout=None, scheduler=s)
    drops = record_drops(s, conn)
    conn.connect()
    receipts = send_at(s, conn, "-a")
    s.advance_to(20)
    # handed to link 0 at 1 (not candidates while that link lives), lost at 3: expires at 5.
    assert drops.messages == marbles("-----x", {"x": expired("a")})
    assert isinstance(receipts["a"].outcome, Expired)


def test_ttl_counts_from_interest_for_payloads_sent_without_a_clock() -> None:
    """No scheduler and no loop at send(): the wait starts when interest brings a scheduler."""
    s = TestScheduler()
    conn = Connection(FakeTransport("websocket", "-"), ttl=3.0, idle_timeout=None)
    receipt = conn.send("a")  # no clock anywhere yet
    drops = s.create_observer()
    conn.drops.subscribe(drops)
    s.schedule_absolute(4, lambda *_: conn.state.subscribe(lambda _: None, scheduler=s))
    s.advance_to(20)
    assert drops.messages == marbles("-------x", {"x": expired("a")})
    assert isinstance(receipt.outcome, Expired)


def test_close_stops_the_ttl_timer_and_completes_drops() -> None:
    """After close() nothing expires: receipts failed with ConnectionClosedError instead."""
    s = TestScheduler()
    conn = Connection(FakeTransport("websocket", "o"), ttl=5.0, scheduler=s)
    drops = record_drops(s, conn)
    receipts = send_at(s, conn, "-a")
    s.schedule_absolute(3, lambda *_: conn.close())
    s.advance_to(20)
    assert drops.messages == [on_completed(3)]
    assert type(receipts["a"].outcome).__name__ == "ConnectionClosedError"


# --------------------------------------------------------------------- drops


def test_drops_is_hot_and_subscribing_is_not_interest() -> None:
    """A drops subscriber opens no link; a late one sees only later drops."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o")
    conn = Connection(ws, max_buffer=1, overflow="drop_newest", scheduler=s)
    early = record_drops(s, conn)
    send_at(s, conn, "-a-b---c")
    late = s.create_observer()
    s.schedule_absolute(5, lambda *_: conn.drops.subscribe(late))
    s.advance_to(10)
    assert ws.subscriptions == []
    assert conn.current_state.kind == "disconnected"
    assert early.messages == marbles("---x---y", {"x": overflow("b"), "y": overflow("c")})
    assert late.messages == marbles("-------y", {"y": overflow("c")})


def test_a_raising_drops_observer_is_reported_and_the_send_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception in a drops subscriber never escapes send() or the timer."""
    s = TestScheduler()
    conn = Connection(
        FakeTransport("websocket", "o"), max_buffer=1, overflow="drop_oldest", scheduler=s
    )

    def explode(_: Drop) -> None:
        raise RuntimeError("user bug")

    conn.drops.subscribe(explode)
    conn.send("a")
    receipt = conn.send("b")
    assert conn.close() == ["b"]
    assert type(receipt.outcome).__name__ == "ConnectionClosedError"
    assert "observer raised" in caplog.text


@pytest.mark.parametrize("seed", range(12))
def test_every_payload_has_exactly_one_fate_under_flapping_links(seed: int) -> None:
    """Random sends, policies and link cuts: each payload is delivered xor dropped, once."""
    rng = random.Random(seed)
    s = TestScheduler()
    scripts = ["".join(rng.choice("----k") for _ in range(rng.randint(2, 12))) for _ in range(6)]
    ws = FakeTransport(
        "websocket",
        *[f"{'-' * rng.randint(0, 3)}o{script}#" for script in scripts],
        error=CUT,
        write_errors={i: CUT for i in range(12) if rng.random() < 0.3},
        next_seqs={i: 1 for i in range(0, 12, 3)} if seed % 2 else None,
    )
    conn = Connection(
        ws,
        max_buffer=rng.randint(2, 6),
        overflow=rng.choice(["drop_oldest", "drop_newest"]),
        ttl=rng.choice([None, 2.0, 5.0]),
        backoff=Backoff(initial=1.0, factor=1.0, jitter=0.0),
        idle_timeout=None,
        scheduler=s,
    )
    drops = record_drops(s, conn)
    fates: dict[str, list[object]] = {}
    receipts: dict[str, Receipt] = {}
    conn.connect()
    for i in range(60):

        def act(_: abc.SchedulerBase, __: Any = None, p: str = f"p{i}") -> None:
            receipt = receipts[p] = conn.send(p)
            receipt.subscribe(
                lambda d, p=p: fates.setdefault(p, []).append(d),
                lambda e, p=p: fates.setdefault(p, []).append(e),
            )

        s.schedule_absolute(1 + i // 2, act)
    s.advance_to(40)
    unsettled = {p for p, r in receipts.items() if not r.done}
    assert set(conn.close()) == unsettled  # close() hands back exactly the unsettled ones
    assert drops.messages[-1] == on_completed(40)
    dropped = [m.value.value.payload for m in drops.messages[:-1]]
    assert len(dropped) == len(set(dropped))  # each drop reported once
    for payload in receipts:
        seen = fates[payload]
        assert len(seen) == 1, (payload, seen)  # settled exactly once
        if payload in dropped:
            assert isinstance(seen[0], Dropped)
        elif payload in unsettled:
            assert type(seen[0]).__name__ == "ConnectionClosedError"
        else:
            assert isinstance(seen[0], Delivered)  # never both delivered and dropped
    assert len(ws.subscriptions) > 2


def test_policy_arguments_are_checked() -> None:
    """Unknown overflow policies and non-positive ttls are refused at construction."""
    ws = FakeTransport("websocket", "o")
    with pytest.raises(ValueError):
        Connection(ws, overflow="drop_random")  # type: ignore[arg-type]
    for ttl in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            Connection(ws, ttl=ttl)
