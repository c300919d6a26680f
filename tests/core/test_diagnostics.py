"""Marble tests of ``Connection.diagnostics``: each kind, emitted exactly when it happens.

Every test records ``(virtual time, item)`` for the diagnostics and, where it
helps, the states, so that a diagnostic is pinned to the tick of the event it
reports (the retry timer armed, the probe subscribed, the switch made, ...).
"""

from __future__ import annotations

from typing import Any

import reactivex as rx
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.subscription import Subscription

from rxconn import (
    Backoff,
    Connected,
    Connecting,
    ConnectionLost,
    Diagnostic,
    Errored,
    OpenTimeout,
    SessionExpired,
    TransportError,
    fallback,
)
from rxconn.diagnostics import DIAGNOSTIC_KINDS, diagnostic
from rxconn.testing import FakeTransport, virtual_connection
from rxconn.transport import LinkContext, LinkEvent, Opened


subscribe = ReactiveTest.subscribe

REFUSED = TransportError("websocket", "refused")
WS_DOWN = TransportError("websocket", "refused")
NO_JITTER = Backoff(initial=2.0, factor=2.0, jitter=0.0)
QUIET = "-" * 80


class Run:
    """A connection under a TestScheduler, with its diagnostics and states recorded."""

    def __init__(self, transport: Any, **options: Any) -> None:
        self.scheduler = TestScheduler()
        options.setdefault("backoff", NO_JITTER)
        self.conn = virtual_connection(transport, self.scheduler, **options)
        self.diagnostics: list[tuple[float, Diagnostic]] = []
        self.states: list[tuple[float, object]] = []
        self.completed: list[float] = []
        self.conn.diagnostics.subscribe(
            lambda d: self.diagnostics.append((self.scheduler.clock, d)),
            on_completed=lambda: self.completed.append(self.scheduler.clock),
        )

    def connect(self, until: float) -> Run:
        self.conn.state.subscribe(lambda s: self.states.append((self.scheduler.clock, s)))
        self.scheduler.advance_to(until)
        return self

    def kinds(self) -> list[tuple[float, str]]:
        return [(t, d.kind) for t, d in self.diagnostics]

    def at(self, time: float, thing: object) -> bool:
        return (time, thing) in self.states or (time, thing) in self.diagnostics


def retry(attempt: int, delay: float, error: Exception) -> Diagnostic:
    return Diagnostic(
        "retry_scheduled", "websocket", {"attempt": attempt, "delay": delay, "error": error}
    )


# ------------------------------------------------------------------- the stream


def test_kinds_are_the_contracts() -> None:
    """Exactly the nine kinds DESIGN.md lists."""
    assert DIAGNOSTIC_KINDS == {
        "retry_scheduled",
        "probe_started",
        "probe_failed",
        "upgraded",
        "fell_back",
        "session_reset",
        "dropped",
        "expired",
        "server_advice",
    }


def test_subscribing_is_not_interest_and_the_stream_completes_on_close() -> None:
    """diagnostics opens no link; close() completes it; later subscribers complete at once."""
    ws = FakeTransport("websocket", "-#", error=REFUSED)
    run = Run(ws)
    run.scheduler.advance_to(10)
    assert ws.subscriptions == []
    assert run.diagnostics == []
    run.conn.close()
    assert run.completed == [10]
    late: list[str] = []
    run.conn.diagnostics.subscribe(on_completed=lambda: late.append("done"))
    assert late == ["done"]


def test_the_stream_is_hot() -> None:
    """A late subscriber sees only what happens after it subscribed."""
    ws = FakeTransport("websocket", "-#", error=REFUSED)
    run = Run(ws).connect(until=2)
    late: list[tuple[float, str]] = []
    run.conn.diagnostics.subscribe(lambda d: late.append((run.scheduler.clock, d.kind)))
    run.scheduler.advance_to(4)
    assert run.kinds() == [(1, "retry_scheduled"), (4, "retry_scheduled")]
    assert late == [(4, "retry_scheduled")]


def test_a_diagnostic_is_a_value_safe_to_log() -> None:
    """Frozen, comparable with a plain dict detail, and readable as one line."""
    item = diagnostic("retry_scheduled", "websocket", attempt=0, delay=2.0)
    assert item == Diagnostic("retry_scheduled", "websocket", {"attempt": 0, "delay": 2.0})
    assert str(item) == "retry_scheduled (websocket) attempt=0 delay=2.0"
    assert hash(item) == hash(Diagnostic("retry_scheduled", "websocket", {}))


# ------------------------------------------------------------- retry and advice


def test_retry_scheduled_with_its_delay_when_the_timer_is_armed() -> None:
    """Each failed attempt: retry_scheduled at the failure's tick, with attempt, delay, error."""
    ws = FakeTransport("websocket", "-#", error=REFUSED)
    run = Run(ws).connect(until=8)
    assert run.diagnostics == [(1, retry(0, 2.0, REFUSED)), (4, retry(1, 4.0, REFUSED))]
    assert run.at(1, Errored(REFUSED, 0, 2.0)) and run.at(4, Errored(REFUSED, 1, 4.0))
    assert ws.subscriptions == [subscribe(0, 1), subscribe(3, 4), Subscription(8)]


def test_server_advice_honoured_comes_with_the_retry_it_lengthened() -> None:
    """Retry-After 5 s over a 2 s backoff: server_advice then retry_scheduled, both at 1."""
    busy = TransportError("websocket", "busy", status=503, retry_after=5.0)
    ws = FakeTransport("websocket", "-#", "------", error=busy)
    run = Run(ws).connect(until=10)
    assert run.diagnostics == [
        (1, Diagnostic("server_advice", "websocket", {"advised": 5.0, "delay": 5.0})),
        (1, retry(0, 5.0, busy)),
    ]
    assert ws.subscriptions == [subscribe(0, 1), Subscription(6)]


def test_advice_shorter_than_the_backoff_is_not_reported_as_honoured() -> None:
    """SSE retry: 0.5 s under a 2 s backoff: the backoff wins, so no server_advice."""
    lost = ConnectionLost("http", "stream ended", retry_after=0.5)
    sse = FakeTransport("http", "-#", "------", error=lost)
    run = Run(sse).connect(until=5)
    assert run.kinds() == [(1, "retry_scheduled")]
    assert run.diagnostics[0][1].detail["delay"] == 2.0


def test_a_fatal_error_schedules_no_retry() -> None:
    """A 403 gives up: no retry_scheduled at all."""
    denied = TransportError("websocket", "forbidden", status=403)
    run = Run(FakeTransport("websocket", "-#", error=denied)).connect(until=5)
    assert run.diagnostics == []
    assert run.at(1, Errored(denied, 0, None))


# ----------------------------------------------------------------- the fallback


def test_fell_back_when_the_pass_moves_on() -> None:
    """WebSocket refused at 1: fell_back (to http, from websocket, why) just before
    Connecting(http)."""
    ws = FakeTransport("websocket", "-#", error=WS_DOWN)
    http = FakeTransport("http", "-o" + QUIET)
    run = Run(fallback(ws, http, upgrade_interval=None)).connect(until=10)
    assert run.diagnostics == [
        (1, Diagnostic("fell_back", "http", {"previous": "websocket", "error": WS_DOWN})),
    ]
    assert run.states[2:] == [(1, Connecting("http", 0)), (2, Connected("http"))]


def test_fell_back_after_the_open_deadline() -> None:
    """A WebSocket that never opens: fell_back at the fallback timeout, with an OpenTimeout."""
    ws = FakeTransport("websocket", QUIET)
    http = FakeTransport("http", "o" + QUIET)
    run = Run(fallback(ws, http, timeout=3.0, upgrade_interval=None)).connect(until=10)
    [(time, item)] = run.diagnostics
    assert (time, item.kind, item.transport) == (3, "fell_back", "http")
    assert isinstance(item.detail["error"], OpenTimeout)


def test_no_fell_back_when_the_first_transport_opens_or_the_last_fails() -> None:
    """Only a move along the chain is a fall-back; the last transport failing is a retry."""
    ws = FakeTransport("websocket", "-#", error=WS_DOWN)
    down = ConnectionLost("http", "refused")
    http = FakeTransport("http", "-#", error=down)
    run = Run(fallback(ws, http, upgrade_interval=None)).connect(until=3)
    assert run.kinds() == [(1, "fell_back"), (2, "retry_scheduled")]
    assert run.diagnostics[1][1].transport == "http"


# ------------------------------------------------------------- probes, upgrade


def test_probe_started_failed_and_upgraded_at_their_ticks() -> None:
    """On HTTP since 0: probe at 10 fails at 11; the next round's probe (at 31) is verified
    at 32, the real link opens at 33: upgraded then, after Connected(websocket)."""
    ws = FakeTransport("websocket", "#", "-#", "-o", "-o" + QUIET, error=WS_DOWN)
    http = FakeTransport("http", "o" + QUIET)
    run = Run(fallback(ws, http, timeout=2.0, upgrade_interval=10.0)).connect(until=60)
    assert run.diagnostics == [
        (0, Diagnostic("fell_back", "http", {"previous": "websocket", "error": WS_DOWN})),
        (10, Diagnostic("probe_started", "websocket", {"active": "http"})),
        (11, Diagnostic("probe_failed", "websocket", {"error": WS_DOWN, "stage": "probe"})),
        (31, Diagnostic("probe_started", "websocket", {"active": "http"})),
        (33, Diagnostic("upgraded", "websocket", {"previous": "http"})),
    ]
    assert ws.subscriptions == [
        subscribe(0, 0),
        subscribe(10, 11),  # the first probe
        subscribe(31, 32),  # the second probe, closed once verified
        Subscription(32),  # the real link, adopted at 33
    ]
    assert http.subscriptions == [subscribe(0, 33)]
    upgraded = run.states.index((33, Connected("websocket")))
    assert run.states[upgraded - 1] != (33, Connected("websocket"))


def test_a_candidate_that_fails_to_open_is_a_failed_probe_at_the_switch() -> None:
    """The probe is verified at 11, its real link fails at 12: probe_failed(stage=switch)."""
    ws = FakeTransport("websocket", "#", "-o", "-#", QUIET, error=WS_DOWN)
    http = FakeTransport("http", "o" + QUIET)
    run = Run(fallback(ws, http, timeout=2.0, upgrade_interval=10.0)).connect(until=20)
    assert run.diagnostics[1:] == [
        (10, Diagnostic("probe_started", "websocket", {"active": "http"})),
        (12, Diagnostic("probe_failed", "websocket", {"error": WS_DOWN, "stage": "switch"})),
    ]
    assert run.conn.current_state == Connected("http")


def test_a_probe_that_closes_unverified_failed_with_connection_lost() -> None:
    """A probe link that completes before it opened: probe_failed with a ConnectionLost."""
    ws = FakeTransport("websocket", "#", "-|", QUIET, error=WS_DOWN)
    http = FakeTransport("http", "o" + QUIET)
    run = Run(fallback(ws, http, timeout=2.0, upgrade_interval=10.0)).connect(until=12)
    time, failed = run.diagnostics[-1]
    assert (time, failed.kind, failed.detail["stage"]) == (11, "probe_failed", "probe")
    assert isinstance(failed.detail["error"], ConnectionLost)


def test_upgrade_reports_are_not_proof_that_the_active_link_lives() -> None:
    """A silent HTTP link dies at its idle timeout although probes report all along."""
    ws = FakeTransport("websocket", "#", "-#", error=WS_DOWN)
    http = FakeTransport("http", "o" + QUIET)
    run = Run(
        fallback(ws, http, timeout=2.0, upgrade_interval=1.0, max_upgrade_interval=1.0),
        idle_timeout=4.0,
    ).connect(until=7)
    assert run.kinds()[1:3] == [(1, "probe_started"), (2, "probe_failed")]  # before it died
    lost = [(t, s) for t, s in run.states if isinstance(s, Errored)]
    assert lost and lost[0][0] == 4  # two quiet checks of 2 s: dead at 4, as without probes
    assert isinstance(lost[0][1].error, ConnectionLost)


# ------------------------------------------------------------ the hub session


class HubSessions:
    """A transport whose links each start a hub session named in ``ids`` as they open.

    A ``"410"`` in ``ids`` makes that link forget the session (the hub no longer
    knows it) and fail with ``SessionExpired`` instead, as the real transports do.
    """

    name = "websocket"

    def __init__(self, ids: list[str], script: str = "-o-#") -> None:
        self.ids = iter(ids)
        self.fake = FakeTransport("websocket", script, error=ConnectionLost("websocket", "cut"))

    def open(
        self, scheduler: abc.SchedulerBase, context: LinkContext | None = None
    ) -> Observable[LinkEvent]:
        ctx = context if context is not None else LinkContext()

        def link(_: abc.SchedulerBase) -> Observable[LinkEvent]:
            session_id = next(self.ids)  # one per subscription: per link

            def on_open(event: LinkEvent) -> None:
                if isinstance(event, Opened):
                    assert ctx.session is not None
                    if session_id == "410":
                        ctx.session.forget()
                        raise SessionExpired("websocket", "unknown", status=410, retry_after=0)
                    ctx.session.start(session_id, resumed=False)

            return self.fake.open(scheduler, ctx).pipe(ops.do_action(on_open))

        return rx.defer(link)


def test_session_reset_when_the_hub_hands_out_a_new_session() -> None:
    """The first session is no reset; the second link's new session is (resets=1), at 5."""
    run = Run(HubSessions(["s0", "s1"]), backoff=Backoff(initial=1.0, jitter=0.0))
    run.connect(until=6)
    assert run.kinds() == [(3, "retry_scheduled"), (5, "session_reset")]
    assert run.diagnostics[1][1] == Diagnostic("session_reset", "websocket", {"resets": 1})
    assert run.conn.session_resets == 1


def test_session_reset_when_the_hub_forgot_the_session_once_only() -> None:
    """A 410 forgets the session (reset at 5); the fresh session after it is not a second one."""
    run = Run(HubSessions(["s0", "410", "s1"]), backoff=Backoff(initial=1.0, jitter=0.0))
    run.connect(until=7)
    assert run.kinds() == [
        (3, "retry_scheduled"),
        (5, "session_reset"),
        (5, "retry_scheduled"),  # at once: the hub answered
    ]
    assert run.conn.session_resets == 1
    assert run.at(6, Connected("websocket"))


# --------------------------------------------------------------- the outbox


def send_at(run: Run, sends: dict[float, str]) -> None:
    """Schedule ``run.conn.send(payload)`` at each virtual time."""

    def send(_: abc.SchedulerBase, payload: Any) -> None:
        run.conn.send(payload)

    for time, payload in sends.items():
        run.scheduler.schedule_absolute(time, send, payload)


def test_dropped_when_the_overflow_policy_drops() -> None:
    """drop_newest and drop_oldest: one `dropped` per payload, at the send() that dropped it."""
    for policy in ("drop_newest", "drop_oldest"):
        ws = FakeTransport("websocket", QUIET)
        run = Run(ws, max_buffer=1, overflow=policy)
        send_at(run, {2: "a", 3: "b", 4: "c"})
        run.scheduler.advance_to(5)
        item = Diagnostic("dropped", "websocket", {"policy": policy})
        assert run.diagnostics == [(3, item), (4, item)], policy
        assert ws.subscriptions == []  # sending is not interest either


def test_expired_when_the_ttl_runs_out() -> None:
    """ttl=2: payloads sent at 1 and 2 expire at 3 and 4, each with its own diagnostic."""
    ws = FakeTransport("websocket", QUIET)
    run = Run(ws, ttl=2.0)
    send_at(run, {1: "a", 2: "b"})
    run.scheduler.advance_to(10)
    item = Diagnostic("expired", "websocket", {"ttl": 2.0})
    assert run.diagnostics == [(3, item), (4, item)]


def test_payloads_delivered_produce_no_diagnostics() -> None:
    """Messages both ways, acknowledged: the stream stays silent (nothing per message)."""
    ws = FakeTransport("websocket", "o-a-b-c" + QUIET)
    run = Run(ws)
    received: list[object] = []
    run.conn.messages.subscribe(received.append)
    send_at(run, {1: "x", 2: "y", 3: "z"})
    run.scheduler.advance_to(10)
    assert received == ["a", "b", "c"]
    assert run.diagnostics == []
