"""Marble tests of Connection in virtual time: states, messages, link lifetimes, outbox."""

from __future__ import annotations

import logging
import random

import pytest
from reactivex.subject import BehaviorSubject
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.marbles import marbles_testing
from reactivex.testing.subscription import Subscription

from rxconn import (
    Backoff,
    BufferFullError,
    Connected,
    Connecting,
    Connection,
    ConnectionClosedError,
    ConnectionLost,
    Disconnected,
    Errored,
    ProtocolError,
    RetriesExhausted,
    RxconnError,
    TransportError,
)
from rxconn.testing import FakeTransport
from rxconn.transport import Payloads


on_next, on_completed, subscribe = (
    ReactiveTest.on_next,
    ReactiveTest.on_completed,
    ReactiveTest.subscribe,
)

BOOM = ConnectionLost("websocket", "refused")
FATAL = TransportError("websocket", "not found", status=404)
NO_JITTER = Backoff(initial=2.0, factor=2.0, max_delay=30.0, jitter=0.0)

S = {
    "d": Disconnected(),
    "c": Connecting("websocket", 0),
    "C": Connecting("websocket", 1),
    "D": Connecting("websocket", 2),
    "o": Connected("websocket"),
    "e": Errored(BOOM, 0, 2.0),
    "E": Errored(BOOM, 1, 4.0),
}


def make(
    ws: FakeTransport, scheduler: TestScheduler, backoff: Backoff = NO_JITTER, **kw: object
) -> Connection:
    kw.setdefault("idle_timeout", None)
    return Connection(ws, backoff=backoff, scheduler=scheduler, **kw)  # type: ignore[arg-type]


def test_first_subscriber_sees_disconnected_then_connecting_then_connected() -> None:
    """State starts Disconnected, and the subscription itself is interest."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "--o---")
    conn = make(ws, s)
    results = s.start(lambda: conn.state)
    assert results.messages == [
        on_next(200, Disconnected()),
        on_next(200, Connecting("websocket", 0)),
        on_next(202, Connected("websocket")),
    ]
    assert ws.subscriptions == [subscribe(200, 1000)]
    assert conn.current_state == Disconnected()


def test_reconnects_after_one_failure_in_marbles() -> None:
    """A retryable failure yields Errored, waits the backoff delay, then connects."""
    with marbles_testing(timespan=1.0) as (start, _cold, _hot, exp):
        ws = FakeTransport("websocket", "------#", "--o--", error=BOOM)
        conn = Connection(ws, backoff=NO_JITTER, idle_timeout=None)
        expected = exp("(d,c)-e-C-o", S, None)
        "               012345678901"
        # (d,c) emits both at 0 and takes 5 columns; the retry waits 2.0 s.
        states = start(conn.state)
    assert expected == states
    assert ws.subscriptions == [subscribe(200, 206), subscribe(208, 1000)]


def test_many_interest_sources_open_exactly_one_link() -> None:
    """State and message subscribers plus connect() handles share one link."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o---")
    conn = make(ws, s)
    subs = []

    def action(_: object, __: object = None) -> None:
        for _ in range(5):
            subs.append(conn.state.subscribe(lambda _: None))
            subs.append(conn.messages.subscribe(lambda _: None))
            subs.append(conn.connect())

    def release(_: object, __: object = None) -> None:
        for sub in subs:
            sub.dispose()

    s.schedule_absolute(10, action)
    s.schedule_absolute(50, release)
    s.start()
    assert ws.subscriptions == [subscribe(10, 50)]
    assert conn.current_state == Disconnected()


def test_rapid_interest_cycles_never_overlap_links() -> None:
    """Fifty-plus subscribe/dispose cycles give link lifetimes that never overlap."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o-a-b-")
    conn = make(ws, s)
    holder: list[object] = []

    for i in range(60):
        at = 10 + i * 3

        def grab(_: object, __: object = None) -> None:
            holder.append(conn.connect())

        def drop(_: object, __: object = None) -> None:
            holder.pop().dispose()  # type: ignore[attr-defined]

        s.schedule_absolute(at, grab)
        s.schedule_absolute(at + 2, drop)
    s.start()
    spans = [(sub.subscribe, sub.unsubscribe) for sub in ws.subscriptions]
    assert len(spans) == 60
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end is not None and end <= start
    assert all(end is not None for _, end in spans)


def test_two_connect_handles_keep_the_link_until_both_are_disposed() -> None:
    """Disposing one of two handles keeps the link; a handle disposed twice counts once."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o---")
    conn = make(ws, s)
    a, b = conn.connect(), conn.connect()
    s.advance_to(5)
    a.dispose()
    a.dispose()
    s.advance_to(8)
    assert conn.current_state == Connected("websocket")
    b.dispose()
    assert ws.subscriptions == [subscribe(0, 8)]
    assert conn.current_state == Disconnected()


def test_events_from_a_replaced_link_are_ignored() -> None:
    """A link that failed and was replaced can no longer deliver or acknowledge."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o--#", "-o----", error=BOOM)
    conn = make(ws, s)
    got: list[object] = []
    conn.messages.subscribe(got.append)
    s.advance_to(3)
    old = ws.links[0]
    old.push("from-old-before")
    s.advance_to(10)  # link 0 failed at 4, link 1 opened at 7
    old.push("from-old-after")
    ws.links[1].push("from-new")
    assert got == ["from-old-before", "from-new"]


def test_invalid_message_replaces_the_link_without_crashing() -> None:
    """A link failing with a (non-fatal) ProtocolError is replaced; messages go on."""
    bad = ProtocolError("websocket", "malformed frame")
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o-a-#", "-o-b-", error=bad)
    conn = make(ws, s)
    states = s.create_observer()
    messages = s.create_observer()
    conn.state.subscribe(states)
    conn.messages.subscribe(messages)
    s.advance_to(20)
    assert [m.value.value for m in messages.messages] == ["a", "b"]
    assert Errored(bad, 0, 2.0) in [m.value.value for m in states.messages]
    assert ws.subscriptions == [subscribe(0, 5), subscribe(7, None)]


def test_dispose_while_connecting_ends_the_link_at_that_frame() -> None:
    """Disposal during the open tears the link down at once and emits nothing after."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-----o-a-")
    conn = make(ws, s)
    states = s.create_observer()
    messages = s.create_observer()
    sub_s = conn.state.subscribe(states)
    sub_m = conn.messages.subscribe(messages)
    s.advance_to(3)
    sub_s.dispose()
    sub_m.dispose()
    s.advance_to(20)
    assert ws.subscriptions == [subscribe(0, 3)]
    assert [m.value.value for m in states.messages] == [Disconnected(), Connecting("websocket", 0)]
    assert messages.messages == []
    assert conn.current_state == Disconnected()


def test_dispose_while_waiting_for_a_retry_cancels_the_timer() -> None:
    """No attempt starts after the last interest went away during a backoff wait."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-#", error=BOOM)
    conn = make(ws, s)
    handle = conn.connect()
    s.advance_to(2)  # failed at 1, retry due at 3
    handle.dispose()
    s.advance_to(50)
    assert ws.subscriptions == [subscribe(0, 1)]
    assert conn.current_state == Disconnected()


def test_close_twice_close_while_connecting_and_send_after_close() -> None:
    """close() is idempotent, completes state and messages, and then send/connect raise."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-----o")
    conn = make(ws, s)
    states = s.create_observer()
    messages = s.create_observer()
    conn.state.subscribe(states)
    conn.messages.subscribe(messages)
    s.advance_to(2)
    conn.close()
    conn.close()
    assert ws.subscriptions == [subscribe(0, 2)]
    assert states.messages[-2:] == [on_next(2, Disconnected()), on_completed(2)]
    assert messages.messages == [on_completed(2)]
    with pytest.raises(ConnectionClosedError):
        conn.send("late")
    with pytest.raises(ConnectionClosedError):
        conn.connect()
    late = s.create_observer()
    conn.state.subscribe(late)
    assert late.messages == [on_next(2, Disconnected()), on_completed(2)]
    late_messages = s.create_observer()
    conn.messages.subscribe(late_messages)
    assert late_messages.messages == [on_completed(2)]
    s.advance_to(20)
    assert ws.subscriptions == [subscribe(0, 2)]


def test_close_returns_what_was_never_accepted() -> None:
    """Nothing is lost silently: close() hands back unaccepted payloads."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o-", acks=False)
    conn = make(ws, s)
    conn.connect()
    conn.send("a")
    s.advance_to(3)
    conn.send(b"b")
    assert conn.close() == ["a", b"b"]
    assert conn.close() == []


def test_buffered_sends_flush_in_order_on_connect() -> None:
    """Payloads sent before the link opens are written first, in order, then later ones."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "---o--")
    conn = make(ws, s)
    for p in ("1", "2", b"3"):
        conn.send(p)
    conn.connect()
    s.advance_to(5)
    conn.send("4")
    assert [(w.time, w.seq, w.payload) for w in ws.writes] == [
        (3, 1, "1"),
        (3, 2, "2"),
        (3, 3, b"3"),
        (5, 4, "4"),
    ]
    assert conn.buffered == 0


def test_failed_write_keeps_the_payload_at_the_head_for_the_next_link() -> None:
    """A write that fails its link leaves the payload first in line for the next link."""
    lost = ConnectionLost("websocket", "write failed")
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o----", write_errors={0: lost})
    conn = make(ws, s)
    conn.connect()
    s.advance_to(2)
    conn.send("first")
    conn.send("second")  # buffered: the link failed on the first write
    assert conn.buffered == 2
    s.advance_to(10)
    assert [(w.link, w.seq, w.payload) for w in ws.writes] == [
        (0, 1, "first"),
        (1, 1, "first"),
        (1, 2, "second"),
    ]
    assert conn.buffered == 0


def test_unacknowledged_payloads_are_written_again_on_the_next_link() -> None:
    """Payloads a link took but never acknowledged go again, first, on the next link."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o--#", "-o----", error=BOOM, acks=False)
    conn = make(ws, s)
    conn.connect()
    s.advance_to(2)
    conn.send("a")
    conn.send("b")
    s.advance_to(10)
    assert [(w.link, w.seq, w.payload) for w in ws.writes] == [
        (0, 1, "a"),
        (0, 2, "b"),
        (1, 1, "a"),
        (1, 2, "b"),
    ]


def test_buffer_full_raises_and_counts_unaccepted_payloads() -> None:
    """max_buffer counts payloads not yet accepted; the overflow raises, nothing is dropped."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o--", acks=False)
    conn = make(ws, s, max_buffer=2)
    conn.send("a")
    conn.send("b")
    with pytest.raises(BufferFullError):
        conn.send("c")
    conn.connect()
    s.advance_to(3)  # written, but not accepted: still counted
    with pytest.raises(BufferFullError):
        conn.send("c")
    assert conn.buffered == 2


def test_outbox_survives_interest_cycles() -> None:
    """Sends made with no interest wait, across cycles, for the next link."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-----o", "-o")
    conn = make(ws, s)
    handle = conn.connect()
    conn.send("kept")
    s.advance_to(2)
    handle.dispose()  # before the link opened
    s.advance_to(10)
    conn.connect()
    s.advance_to(12)
    assert [(w.time, w.payload) for w in ws.writes] == [(11, "kept")]


def test_send_rejects_non_payloads() -> None:
    """send() takes str and bytes-like data only."""
    conn = make(FakeTransport("websocket", "-o"), TestScheduler())
    with pytest.raises(TypeError):
        conn.send(42)  # type: ignore[arg-type]
    conn.send(bytearray(b"ok"))
    assert conn.close() == [b"ok"]


def test_backoff_delays_are_exact_and_capped_in_virtual_time() -> None:
    """Delays double from initial and stop growing at max_delay."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "#", error=BOOM)
    conn = make(ws, s, backoff=Backoff(initial=1.0, factor=2.0, max_delay=5.0, jitter=0.0))
    states = s.create_observer()
    conn.state.subscribe(states)
    s.advance_to(30)
    retry_in = [m.value.value.retry_in for m in states.messages if m.value.value.kind == "errored"]
    assert retry_in[:6] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    starts = [sub.subscribe for sub in ws.subscriptions]
    assert starts[:6] == [0, 1, 3, 7, 12, 17]


def test_jitter_stays_within_its_bounds() -> None:
    """Each jittered delay lies within [1-jitter, 1+jitter] of the base delay."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "#", error=BOOM)
    backoff = Backoff(initial=1.0, factor=2.0, max_delay=8.0, jitter=0.5, rng=random.Random(7))
    conn = make(ws, s, backoff=backoff)
    states = s.create_observer()
    conn.state.subscribe(states)
    s.advance_to(200)
    errored = [m.value.value for m in states.messages if m.value.value.kind == "errored"]
    assert len(errored) > 10
    for state in errored:
        base = min(8.0, 2.0**state.attempt)
        assert 0.5 * base <= state.retry_in <= 1.5 * base
    assert len({state.retry_in for state in errored}) > 5


def test_max_attempts_gives_up_with_retries_exhausted() -> None:
    """After max_attempts failures in a row: Errored(RetriesExhausted, retry_in=None)."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-#", error=BOOM)
    conn = make(ws, s, backoff=Backoff(initial=1.0, jitter=0.0, max_attempts=3))
    states = s.create_observer()
    conn.state.subscribe(states)
    s.advance_to(100)
    last = states.messages[-1].value.value
    assert isinstance(last, Errored)
    assert isinstance(last.error, RetriesExhausted) and last.error.__cause__ is BOOM
    assert (last.attempt, last.retry_in) == (2, None)
    assert ws.subscriptions == [subscribe(0, 1), subscribe(2, 3), subscribe(5, 6)]


def test_new_interest_tries_again_after_giving_up() -> None:
    """Only new interest (or connect()) starts over after rxconn gave up."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-#", "-o", error=FATAL)
    conn = make(ws, s)
    first = conn.connect()
    s.advance_to(10)
    assert conn.current_state == Errored(FATAL, 0, None)
    conn.connect()
    s.advance_to(12)
    assert conn.current_state == Connected("websocket")
    first.dispose()
    assert ws.subscriptions == [subscribe(0, 1), subscribe(10, None)]


def test_fatal_error_is_not_retried() -> None:
    """A 404 ends in Errored(retry_in=None) at once."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "--#", error=FATAL)
    conn = make(ws, s)
    results = s.start(lambda: conn.state)
    assert results.messages[-1] == on_next(202, Errored(FATAL, 0, None))
    assert ws.subscriptions == [subscribe(200, 202)]


def test_non_rxconn_errors_are_wrapped_and_fatal() -> None:
    """A bug-like error from a custom transport surfaces as a fatal TransportError with cause."""
    bug = ValueError("bug in transport")
    s = TestScheduler()
    ws = FakeTransport("websocket", "-#", error=bug)
    conn = make(ws, s)
    conn.connect()
    s.advance_to(5)
    state = conn.current_state
    assert isinstance(state, Errored) and state.retry_in is None
    assert isinstance(state.error, TransportError) and state.error.__cause__ is bug


def test_server_advised_delay_takes_precedence() -> None:
    """retry_after on the error (Retry-After, close 1013, SSE retry:) replaces the backoff delay."""
    busy = TransportError("websocket", "busy", status=503, retry_after=7.0)
    s = TestScheduler()
    ws = FakeTransport("websocket", "-#", "-o", error=busy)
    conn = make(ws, s)
    conn.connect()
    s.advance_to(20)
    assert ws.subscriptions == [subscribe(0, 1), subscribe(8, None)]


def test_schedule_resets_only_after_a_stable_link() -> None:
    """Accept-then-drop keeps growing the delay; a link up for stable_after resets it."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o#", "o#", "o#", "o-----#", "o#", error=BOOM)
    backoff = Backoff(initial=1.0, factor=2.0, jitter=0.0, stable_after=3.0)
    conn = make(ws, s, backoff=backoff)
    states = s.create_observer()
    conn.state.subscribe(states)
    s.advance_to(40)
    errored = [m.value.value for m in states.messages if m.value.value.kind == "errored"]
    # three quick drops: 1, 2, 4; the fourth link lived 6 s: back to 1.
    assert [e.retry_in for e in errored[:5]] == [1.0, 2.0, 4.0, 1.0, 2.0]
    assert [e.attempt for e in errored[:5]] == [0, 1, 2, 0, 1]


def test_clean_close_by_peer_reconnects() -> None:
    """A link that completes is reported as lost and reconnected with backoff."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o-|", "-o--")
    conn = make(ws, s)
    states = s.create_observer()
    conn.state.subscribe(states)
    s.advance_to(10)
    kinds = [m.value.value.kind for m in states.messages]
    assert kinds == [
        "disconnected",
        "connecting",
        "connected",
        "errored",
        "connecting",
        "connected",
    ]
    err = states.messages[3].value.value.error
    assert isinstance(err, ConnectionLost) and "closed by the peer" in str(err)


def test_idle_timeout_replaces_a_silent_link() -> None:
    """No arrival for idle_timeout while connected: ConnectionLost, link replaced."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o-a-----------", "o-----")
    conn = make(ws, s, idle_timeout=4.0)
    states = s.create_observer()
    conn.state.subscribe(states)
    s.advance_to(9)
    # checks every 2 s from 0: 2 (saw a), 4 quiet, 6 quiet -> dead at 6.
    assert ws.subscriptions[0] == subscribe(0, 6)
    err = [m.value.value for m in states.messages if m.value.value.kind == "errored"][0]
    assert isinstance(err.error, ConnectionLost) and "idle" in str(err.error)
    assert ws.subscriptions[1].subscribe == 8


def test_keepalives_count_as_life() -> None:
    """ALIVE events (pongs, SSE comments) keep an otherwise quiet link."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "o-k-k-k-k-k-k-k-k-k-k")
    conn = make(ws, s, idle_timeout=4.0)
    conn.connect()
    s.advance_to(20)
    assert ws.subscriptions == [subscribe(0, None)]
    assert conn.current_state == Connected("websocket")


def test_payloads_of_one_read_arrive_each_in_order_and_count_as_life() -> None:
    """A link's Payloads (several messages of one read) reach messages one by one, in
    order, exactly like separate payloads, and keep the link alive as any arrival does."""
    s = TestScheduler()
    batch = Payloads(["a", b"b", "c"])
    ws = FakeTransport("websocket", "o-x-y---x---y---", values={"x": batch, "y": "d"})
    conn = make(ws, s, idle_timeout=5.0)
    got = s.create_observer()
    conn.messages.subscribe(got)
    s.advance_to(16)
    assert [m.value.value for m in got.messages] == ["a", b"b", "c", "d"] * 2
    assert ws.subscriptions == [subscribe(0, None)]  # never idle: every read counted


@pytest.mark.parametrize("beside", [False, True])
def test_acks_beside_the_stream_do_not_keep_a_silent_stream_alive(beside: bool) -> None:
    """An HTTP link's acknowledgements come in POST answers, beside its event stream: while
    the stream is silent they must not count as life (a dead stream would never be noticed
    while sends still succeed); a WebSocket's acknowledgements come on the link itself."""
    s = TestScheduler()
    ws = FakeTransport("http", "o" + "-" * 30, acks_prove_life=not beside)
    conn = make(ws, s, idle_timeout=4.0)
    conn.connect()
    for t in range(1, 20):
        s.schedule_absolute(float(t), lambda *_: conn.send("x") and None)
    s.advance_to(20)
    if beside:
        assert ws.subscriptions[0] == subscribe(0, 4)  # checks at 2 and 4 find nothing: dead
    else:
        assert ws.subscriptions == [subscribe(0, None)]  # each ack proved the link


def test_offline_pauses_retries_and_online_retries_at_once() -> None:
    """Offline: no attempt (state Disconnected); online: attempt 0 at once, fresh schedule."""
    s = TestScheduler()
    online = s.create_hot_observable(on_next(2, False), on_next(20, True))
    ws = FakeTransport("websocket", "-#", "-#", "-o", error=BOOM)
    conn = make(ws, s, backoff=Backoff(initial=2.0, jitter=0.0), online=online)
    states = s.create_observer()
    conn.state.subscribe(states)
    s.advance_to(30)
    # fails at 1, retry due at 3; offline at 2 cancels it; online at 20 starts attempt 0.
    assert [sub.subscribe for sub in ws.subscriptions] == [0, 20, 23]
    assert states.messages[3:5] == [
        on_next(2, Disconnected()),
        on_next(20, Connecting("websocket", 0)),
    ]
    assert conn.current_state == Connected("websocket")


def test_going_offline_keeps_an_open_link() -> None:
    """Offline only pauses retries: a working link is not torn down."""
    s = TestScheduler()
    online = s.create_hot_observable(on_next(5, False))
    ws = FakeTransport("websocket", "-o---------")
    conn = make(ws, s, online=online)
    conn.connect()
    s.advance_to(10)
    assert ws.subscriptions == [subscribe(0, None)]
    assert conn.current_state == Connected("websocket")


def test_offline_at_start_waits_for_online() -> None:
    """Interest while offline opens nothing until online says True."""
    s = TestScheduler()
    online = BehaviorSubject(False)
    ws = FakeTransport("websocket", "-o")
    conn = make(ws, s, online=online)
    conn.connect()
    s.advance_to(5)
    online.on_next(True)
    s.advance_to(10)
    assert ws.subscriptions == [subscribe(5, None)]


def test_state_has_no_repeats() -> None:
    """A second identical state is not emitted again."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o", "-o")
    conn = make(ws, s)
    states = s.create_observer()
    conn.state.subscribe(states)
    s.advance_to(3)
    values = [m.value.value for m in states.messages]
    assert all(a != b for a, b in zip(values, values[1:], strict=False))


def test_a_raising_message_observer_does_not_kill_the_link(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A user's on_next that raises is reported; the link and other observers go on."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o-a-b-")
    conn = make(ws, s)
    got: list[object] = []

    def explode(_: object) -> None:
        raise RuntimeError("user bug")

    conn.messages.subscribe(explode)
    conn.messages.subscribe(got.append)
    with caplog.at_level(logging.ERROR, logger="rxconn"):
        s.advance_to(8)
    assert got == ["a", "b"]
    assert ws.subscriptions == [subscribe(0, None)]
    assert "observer raised" in caplog.text


def test_single_message_observer_gets_every_payload_in_order() -> None:
    """The one-subscriber fast path delivers str and bytes in order."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o-a-1-b-", values={"b": b"\x00bin"})
    conn = make(ws, s)
    results = s.start(lambda: conn.messages)
    assert results.messages == [on_next(203, "a"), on_next(205, "1"), on_next(207, b"\x00bin")]


def test_without_a_scheduler_or_loop_subscribing_errors_clearly() -> None:
    """No running loop and no scheduler: the subscriber gets an RxconnError, nothing leaks."""
    conn = Connection(FakeTransport("websocket", "-o"))
    errors: list[Exception] = []
    conn.state.subscribe(on_error=errors.append)
    assert len(errors) == 1 and isinstance(errors[0], RxconnError)
    assert "event loop" in str(errors[0])
    with pytest.raises(RxconnError):
        conn.connect()


def test_transport_must_be_a_transport() -> None:
    """A clear TypeError for a non-transport."""
    with pytest.raises(TypeError):
        Connection("ws://nope")  # type: ignore[arg-type]


def test_subscriptions_are_comparable_with_reactivetest() -> None:
    """FakeTransport.subscriptions use reactivex's Subscription type."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "-o")
    Connection(ws, scheduler=s).connect()
    assert isinstance(ws.subscriptions[0], Subscription)


def test_operators_refuse_to_fall_back_to_threads() -> None:
    """Without any scheduler the core's operators error instead of using a thread timer."""
    from rxconn.operators import idle_timeout, retry_with_backoff

    errors: list[Exception] = []
    ws = FakeTransport("websocket", "-o")
    ops = [
        retry_with_backoff(Backoff()),
        idle_timeout(1.0, is_open=lambda _: True, make_error=lambda s: ConnectionLost("x", "y")),
    ]
    for op in ops:
        ws.open(TestScheduler()).pipe(op).subscribe(on_error=errors.append)
    assert len(errors) == 2 and all(isinstance(e, RxconnError) for e in errors)
    assert "needs a scheduler" in str(errors[0])
