"""Marble tests of fallback(): the catch chain, memory, probes, make-before-break upgrade."""

from __future__ import annotations

from reactivex.testing import ReactiveTest, TestScheduler

from rxconn import (
    Backoff,
    Connected,
    Connecting,
    Connection,
    ConnectionLost,
    Disconnected,
    Errored,
    OpenTimeout,
    TransportError,
    fallback,
)
from rxconn.testing import FakeTransport, timeline, virtual_connection


subscribe = ReactiveTest.subscribe

WS_DOWN = TransportError("websocket", "refused")
HTTP_LOST = ConnectionLost("http", "reset")
NO_JITTER = Backoff(initial=1.0, factor=2.0, jitter=0.0)


def run(
    ws: FakeTransport,
    http: FakeTransport,
    until: float,
    *,
    timeout: float = 2.0,
    upgrade_interval: float | None = 10.0,
    dispose_at: float | None = None,
) -> tuple[Connection, list[tuple[float, object]]]:
    s = TestScheduler()
    both = fallback(ws, http, timeout=timeout, upgrade_interval=upgrade_interval)
    conn = virtual_connection(both, s, backoff=NO_JITTER)
    return conn, timeline(conn.state, s, until, dispose_at=dispose_at)


def test_websocket_first() -> None:
    """When WebSocket opens, HTTP is never tried."""
    ws = FakeTransport("websocket", "-o--")
    http = FakeTransport("http", "-o--")
    _, states = run(ws, http, 20)
    assert states == [
        (0, Disconnected()),
        (0, Connecting("websocket", 0)),
        (1, Connected("websocket")),
    ]
    assert http.subscriptions == []


def test_refused_websocket_falls_back_without_an_errored_state() -> None:
    """Connecting(websocket) is followed by Connecting(http), not by Errored."""
    ws = FakeTransport("websocket", "-#", "------", error=WS_DOWN)
    http = FakeTransport("http", "-o------")
    _, states = run(ws, http, 5, upgrade_interval=None)
    assert states == [
        (0, Disconnected()),
        (0, Connecting("websocket", 0)),
        (1, Connecting("http", 0)),
        (2, Connected("http")),
    ]
    assert ws.subscriptions == [subscribe(0, 1)]
    assert http.subscriptions == [subscribe(1, None)]


def test_blackholed_websocket_times_out_then_http() -> None:
    """A WebSocket that never opens is abandoned after `timeout` (OpenTimeout), then HTTP."""
    ws = FakeTransport("websocket", "----------")
    http = FakeTransport("http", "-o------")
    _, states = run(ws, http, 10, timeout=3.0, upgrade_interval=None)
    assert (3, Connecting("http", 0)) in states
    assert (4, Connected("http")) in states
    assert ws.subscriptions == [subscribe(0, 3)]


def test_the_last_transport_has_no_deadline() -> None:
    """HTTP, the last transport, may take longer than `timeout` to open."""
    ws = FakeTransport("websocket", "#", error=WS_DOWN)
    http = FakeTransport("http", "-----o--")
    _, states = run(ws, http, 10, timeout=2.0, upgrade_interval=None)
    assert states[-1] == (5, Connected("http"))


def test_reconnects_remember_that_websocket_failed() -> None:
    """After falling back, a dropped HTTP link reconnects over HTTP without retrying WebSocket."""
    ws = FakeTransport("websocket", "#", error=WS_DOWN)
    http = FakeTransport("http", "o-#", "o-----", error=HTTP_LOST)
    _, states = run(ws, http, 10, upgrade_interval=None)
    assert ws.subscriptions == [subscribe(0, 0)]
    assert http.subscriptions == [subscribe(0, 2), subscribe(3, None)]
    assert (2, Errored(HTTP_LOST, 0, 1.0)) in states
    assert (3, Connecting("http", 1)) in states


def test_new_interest_starts_from_websocket_again() -> None:
    """Memory lasts one period of interest: new interest tries WebSocket first."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "#", "-o", error=WS_DOWN)
    http = FakeTransport("http", "o---")
    conn = Connection(
        fallback(ws, http, upgrade_interval=None), backoff=NO_JITTER, idle_timeout=None, scheduler=s
    )
    first = conn.connect()
    s.advance_to(3)
    first.dispose()
    conn.connect()
    s.advance_to(6)
    assert ws.subscriptions == [subscribe(0, 0), subscribe(3, None)]
    assert conn.current_state == Connected("websocket")


def test_everything_failing_is_an_errored_attempt_and_the_next_walks_the_chain() -> None:
    """When the last transport fails too, the attempt fails; the retry starts at WebSocket."""
    ws = FakeTransport("websocket", "#", "#", "-o", error=WS_DOWN)
    http = FakeTransport("http", "-#", error=HTTP_LOST)
    _, states = run(ws, http, 10, upgrade_interval=None)
    assert (1, Errored(HTTP_LOST, 0, 1.0)) in states
    assert [sub.subscribe for sub in ws.subscriptions][:2] == [0, 2]


def test_upgrade_is_verified_and_make_before_break() -> None:
    """On HTTP, a probe round trip, then a new WebSocket link opens before HTTP is closed."""
    ws = FakeTransport("websocket", "#", "-o", "-o", error=WS_DOWN)
    #                            attempt  probe  candidate
    http = FakeTransport("http", "o--------------------")
    conn, states = run(ws, http, 20, upgrade_interval=10.0)
    # fell back at 0; probe at 10 opens at 11 (verified); candidate from 11 opens at 12.
    assert ws.subscriptions == [subscribe(0, 0), subscribe(10, 11), subscribe(11, None)]
    assert http.subscriptions == [subscribe(0, 12)]
    assert states[-2:] == [(0, Connected("http")), (12, Connected("websocket"))]
    assert ws.contexts[1].probe and not ws.contexts[2].probe
    assert conn.current_state == Connected("websocket")


def test_a_probe_carries_no_messages() -> None:
    """Sends while on HTTP go to HTTP; the probe link is never written to."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "#", "-o", "-o", error=WS_DOWN)
    http = FakeTransport("http", "o--------------------", acks=False)
    conn = Connection(
        fallback(ws, http, upgrade_interval=10.0), backoff=NO_JITTER, idle_timeout=None, scheduler=s
    )
    conn.connect()
    s.advance_to(5)
    conn.send("a")
    s.advance_to(11.5)  # probe verified at 11, candidate pending until 12
    conn.send("b")
    s.advance_to(20)
    assert [(w.link, w.payload) for w in http.writes] == [(0, "a"), (0, "b")]
    # unacknowledged by HTTP: both go again, in order, on the new WebSocket link (index 2)
    assert [(w.link, w.payload) for w in ws.writes] == [(2, "a"), (2, "b")]
    assert all(w.link != 1 for w in ws.writes)


def test_failed_probes_back_off() -> None:
    """Each failed probe doubles the wait before the next, up to the cap."""
    ws = FakeTransport("websocket", "#", error=WS_DOWN)
    http = FakeTransport("http", "o" + "-" * 200)
    s = TestScheduler()
    conn = Connection(
        fallback(ws, http, upgrade_interval=10.0, max_upgrade_interval=40.0),
        backoff=NO_JITTER,
        idle_timeout=None,
        scheduler=s,
    )
    conn.connect()
    s.advance_to(200)
    starts = [sub.subscribe for sub in ws.subscriptions]
    # attempt at 0, then probes at 10, 10+20, 30+40, 70+40, 110+40, 150+40
    assert starts == [0, 10, 30, 70, 110, 150, 190]
    assert conn.current_state == Connected("http")


def test_a_candidate_that_fails_keeps_the_old_link() -> None:
    """Probe verified but the real WebSocket link fails to open: stay on HTTP, back off."""
    ws = FakeTransport("websocket", "#", "-o", "-#", "-o", "-o", error=WS_DOWN)
    http = FakeTransport("http", "o" + "-" * 60)
    conn, states = run(ws, http, 45, upgrade_interval=10.0)
    assert http.subscriptions == [subscribe(0, 34)]
    assert states[-1] == (34, Connected("websocket"))
    assert not any(isinstance(st, Errored) for _, st in states)


def test_old_link_error_during_the_switch_is_held_and_dropped() -> None:
    """The hub closes the old link as the new one takes over: that error is not a failure."""
    ws = FakeTransport("websocket", "#", "-o", "---o", error=WS_DOWN)
    http = FakeTransport("http", "o-----------#", error=HTTP_LOST)  # dies at 12, mid-switch
    conn, states = run(ws, http, 20, timeout=5.0, upgrade_interval=10.0)
    assert not any(isinstance(st, Errored) for _, st in states)
    assert states[-1] == (14, Connected("websocket"))
    assert http.subscriptions == [subscribe(0, 12)]


def test_old_link_error_surfaces_if_the_switch_fails() -> None:
    """If the candidate fails after the old link died, the attempt fails with the old error."""
    ws = FakeTransport("websocket", "#", "-o", "---#", "#", error=WS_DOWN)
    http = FakeTransport("http", "o-----------#", "o-----", error=HTTP_LOST)
    conn, states = run(ws, http, 20, timeout=5.0, upgrade_interval=10.0)
    assert (14, Errored(HTTP_LOST, 0, 1.0)) in states


def test_dispose_in_every_phase_releases_every_link_and_probe() -> None:
    """Trying WebSocket, waiting its timeout, on HTTP, probing, switching: all torn down."""
    # Interest starts at 1: reactivex's Subscription cannot record an end at tick 0.
    phases = {
        "trying websocket": (2, "-------"),
        "on http": (6, "#"),
        "probing": (11.5, "#"),
        "switching": (13, "#"),
    }
    for name, (at, first) in phases.items():
        s = TestScheduler()
        ws = FakeTransport("websocket", first, "-o", "----o", error=WS_DOWN)
        http = FakeTransport("http", "o" + "-" * 40)
        conn = Connection(
            fallback(ws, http, timeout=5.0, upgrade_interval=10.0),
            backoff=NO_JITTER,
            idle_timeout=None,
            scheduler=s,
        )
        s.schedule_absolute(1, lambda *_, c=conn: setattr(c, "_test_handle", c.connect()))
        s.schedule_absolute(at, lambda *_, c=conn: c._test_handle.dispose())  # type: ignore[attr-defined]
        s.advance_to(40)
        assert ws.subscriptions and http.subscriptions or name == "trying websocket"
        for sub in ws.subscriptions + http.subscriptions:
            assert sub.unsubscribe <= at, (name, sub)
        assert conn.current_state == Disconnected()


def test_state_names_the_active_transport_and_timeout_error_type() -> None:
    """A timed-out WebSocket is an OpenTimeout inside the chain, invisible in state."""
    ws = FakeTransport("websocket", "---")
    http = FakeTransport("http", "#", error=HTTP_LOST)
    _, states = run(ws, http, 2.5, timeout=2.0, upgrade_interval=None)
    assert (2, Errored(HTTP_LOST, 0, 1.0)) in states
    assert not any(
        isinstance(st, Errored) and isinstance(st.error, OpenTimeout) for _, st in states
    )


def test_a_clean_close_of_the_active_link_ends_the_attempt() -> None:
    """A link that completes (peer closed cleanly) is reported and reconnected, via fallback too."""
    ws = FakeTransport("websocket", "o--|", "o-----")
    http = FakeTransport("http", "o---")
    _, states = run(ws, http, 10, upgrade_interval=None)
    kinds = [st.kind for _, st in states]
    assert kinds == [
        "disconnected",
        "connecting",
        "connected",
        "errored",
        "connecting",
        "connected",
    ]
    assert ws.subscriptions == [subscribe(0, 3), subscribe(4, None)]
    assert http.subscriptions == []
