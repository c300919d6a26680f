"""Marble tests of upgrades in a chain of three (WebSocket → SSE → long polling).

A probe round probes the transports preferred to the active one, best first,
one probe link at a time; the first one verified gets a make-before-break
switch. From long polling that is WebSocket, or SSE while WebSocket fails;
from SSE, only WebSocket.
"""

from __future__ import annotations

from typing import Any

from reactivex import Observer
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.marbles import marbles_testing

from rxconn import (
    Backoff,
    Connected,
    Connecting,
    Connection,
    ConnectionLost,
    Disconnected,
    Errored,
    SessionExpired,
    State,
    TransportError,
    fallback,
)
from rxconn._core._chain import one_pass_
from rxconn._core._memory import FallbackMemory
from rxconn._core._upgrade import Phase, Upgrades
from rxconn.diagnostics import Diagnostic
from rxconn.testing import FakeTransport, timeline, virtual_connection
from rxconn.transport import LinkContext, LinkEvent


subscribe = ReactiveTest.subscribe

WS_DOWN = TransportError("websocket", "refused")
SSE_DOWN = TransportError("sse", "refused")
POLL_LOST = ConnectionLost("longpoll", "reset")
NO_JITTER = Backoff(initial=1.0, factor=2.0, jitter=0.0)
FOREVER = "o" + "-" * 80


def run(
    ws: FakeTransport,
    sse: FakeTransport,
    poll: FakeTransport,
    until: float,
    *,
    timeout: float = 2.0,
    upgrade_interval: float = 10.0,
    max_upgrade_interval: float = 300.0,
) -> tuple[Connection, list[tuple[float, State]]]:
    """Connect over ``fallback(ws, sse, poll)`` at 0; every state with its tick until ``until``."""
    s = TestScheduler()
    chain = fallback(
        ws,
        sse,
        poll,
        timeout=timeout,
        upgrade_interval=upgrade_interval,
        max_upgrade_interval=max_upgrade_interval,
    )
    conn = virtual_connection(chain, s, backoff=NO_JITTER)
    return conn, timeline(conn.state, s, until)


def open_at_once(*transports: FakeTransport) -> list[tuple[float, float]]:
    """The spans of probe links that another probe link started during (none: one at a time)."""
    spans = [
        (sub.subscribe, sub.unsubscribe)
        for t in transports
        for ctx, sub in zip(t.contexts, t.subscriptions, strict=True)
        if ctx.probe
    ]
    return [a for a in spans for b in spans if a is not b and a[0] < b[0] < a[1]]


S = {
    "d": Disconnected(),
    "w": Connecting("websocket", 0),
    "s": Connecting("sse", 0),
    "p": Connecting("longpoll", 0),
    "P": Connected("longpoll"),
    "W": Connected("websocket"),
}


def test_fall_from_the_first_to_the_third_probe_and_upgrade_to_the_first() -> None:
    """WebSocket and SSE refused: long polling. The round at 10 probes WebSocket (verified
    at 11, SSE is not probed); its real link opens at 12 while long polling still runs."""
    with marbles_testing(timespan=1.0) as (start, _cold, _hot, exp):
        ws = FakeTransport("websocket", "#", "-o", "-o", error=WS_DOWN)
        sse = FakeTransport("sse", "#", error=SSE_DOWN)
        poll = FakeTransport("longpoll", FOREVER)
        conn = Connection(
            fallback(ws, sse, poll, timeout=2.0, upgrade_interval=10.0),
            backoff=NO_JITTER,
            idle_timeout=None,
        )
        expected = exp("(d,w,s,p,P)-W", S, None)
        "               0123456789012"
        states = start(conn.state)
    assert expected == states
    assert ws.subscriptions == [subscribe(200, 200), subscribe(210, 211), subscribe(211, 1000)]
    assert [ctx.probe for ctx in ws.contexts] == [False, True, False]
    assert sse.subscriptions == [subscribe(200, 200)]
    assert poll.subscriptions == [subscribe(200, 212)]  # closed once WebSocket was open


def test_from_the_third_the_second_is_probed_when_the_first_fails() -> None:
    """Round at 10: WebSocket's probe fails at 11, SSE's is verified at 12, SSE's real link
    opens at 13 and replaces long polling. From SSE only WebSocket is probed (a setback:
    20 s later), and the upgrade to WebSocket follows."""
    ws = FakeTransport("websocket", "#", "-#", "-o", "-o", error=WS_DOWN)
    sse = FakeTransport("sse", "#", "-o", "-" + FOREVER, error=SSE_DOWN)
    poll = FakeTransport("longpoll", FOREVER)
    conn, states = run(ws, sse, poll, 40)
    assert ws.subscriptions == [
        subscribe(0, 0),
        subscribe(10, 11),
        subscribe(33, 34),
        subscribe(34, None),
    ]
    assert sse.subscriptions == [subscribe(0, 0), subscribe(11, 12), subscribe(12, 35)]
    assert [ctx.probe for ctx in sse.contexts] == [False, True, False]
    assert poll.subscriptions == [subscribe(0, 13)]
    assert [(t, st) for t, st in states if isinstance(st, Connected)] == [
        (0, Connected("longpoll")),
        (13, Connected("sse")),
        (35, Connected("websocket")),
    ]
    assert open_at_once(ws, sse, poll) == []
    assert conn.current_state == Connected("websocket")


def test_probes_never_see_the_connections_hub_session() -> None:
    """Probe links get a context without the session (real links share the connection's),
    so a transport that ignored probe mode could not take the session over."""
    ws = FakeTransport("websocket", "#", "-#", error=WS_DOWN)
    sse = FakeTransport("sse", "#", "-o", "-" + FOREVER, error=SSE_DOWN)
    poll = FakeTransport("longpoll", FOREVER)
    conn, _ = run(ws, sse, poll, 15)
    session = poll.contexts[0].session
    assert session is not None
    assert [(ctx.probe, ctx.session is session) for ctx in ws.contexts + sse.contexts] == [
        (False, True),  # WebSocket in the pass
        (True, False),  # WebSocket probe at 10
        (False, True),  # SSE in the pass
        (True, False),  # SSE probe at 11
        (False, True),  # SSE's real link at 12
    ]
    assert [ctx.session for ctx in ws.contexts + sse.contexts if ctx.probe] == [None, None]
    memory = poll.contexts[0].memory  # probes share the period's memory all the same
    assert all(ctx.memory is memory for ctx in ws.contexts + sse.contexts)
    assert conn.current_state == Connected("sse")


def test_a_round_that_reaches_nothing_backs_off() -> None:
    """Both probes fail: one probe link at a time, then 10, 20, 40 s (the cap) between rounds."""
    ws = FakeTransport("websocket", "#", "-#", error=WS_DOWN)
    sse = FakeTransport("sse", "#", "-#", error=SSE_DOWN)
    poll = FakeTransport("longpoll", "o" + "-" * 200)
    conn, _ = run(ws, sse, poll, 130, max_upgrade_interval=40.0)
    # rounds at 10, 12+20, 34+40, 76+40; each: WebSocket for 1 s, then SSE for 1 s
    assert [sub.subscribe for sub in ws.subscriptions] == [0, 10, 32, 74, 116]
    assert [sub.subscribe for sub in sse.subscriptions] == [0, 11, 33, 75, 117]
    assert open_at_once(ws, sse) == []
    assert poll.subscriptions == [subscribe(0, None)]
    assert conn.current_state == Connected("longpoll")


def test_a_failed_switch_to_the_second_keeps_the_third() -> None:
    """SSE's probe is verified but its real link fails to open: long polling stays,
    no Errored, and the next round starts with WebSocket again."""
    ws = FakeTransport("websocket", "#", "-#", "-#", error=WS_DOWN)
    sse = FakeTransport("sse", "#", "-o", "-#", "-#", error=SSE_DOWN)
    poll = FakeTransport("longpoll", FOREVER)
    _, states = run(ws, sse, poll, 40)
    # 10 WebSocket probe; 11 SSE probe, verified 12; real SSE link 12, fails 13 (a setback)
    assert sse.subscriptions[:3] == [subscribe(0, 0), subscribe(11, 12), subscribe(12, 13)]
    assert [sub.subscribe for sub in ws.subscriptions] == [0, 10, 33]  # 13 + 20
    assert poll.subscriptions == [subscribe(0, None)]
    assert not any(isinstance(st, Errored) for _, st in states)


def test_the_third_links_error_during_a_switch_to_the_second_is_held_and_dropped() -> None:
    """Long polling dies while SSE's real link is opening: the error is not a failure."""
    ws = FakeTransport("websocket", "#", "-#", error=WS_DOWN)
    sse = FakeTransport("sse", "#", "-o", "--o" + "-" * 40, error=SSE_DOWN)
    poll = FakeTransport("longpoll", "o------------#", error=POLL_LOST)  # dies at 13
    _, states = run(ws, sse, poll, 20, timeout=5.0)
    assert poll.subscriptions == [subscribe(0, 13)]
    assert sse.subscriptions[2] == subscribe(12, None)  # opens at 14
    assert states[-1] == (14, Connected("sse"))
    assert not any(isinstance(st, Errored) for _, st in states)


def test_an_upgraded_links_session_expired_retries_on_its_transport() -> None:
    """WebSocket worked once, so reconnects start from the top; but when the SSE link that
    an upgrade adopted gets 410, the new session is opened over SSE at once."""
    gone = SessionExpired("sse", "session unknown", status=410, retry_after=0)
    ws = FakeTransport("websocket", "o-#", "#", "-#", error=WS_DOWN)
    #                  chain at 3 times out; probe 16; real link 17-21; retry at 21
    sse = FakeTransport("sse", "----", "-o", "-o--#", FOREVER, error=gone)
    poll = FakeTransport("longpoll", FOREVER)
    _, states = run(ws, sse, poll, 25)
    assert ws.subscriptions == [subscribe(0, 2), subscribe(3, 3), subscribe(15, 16)]
    assert sse.subscriptions == [
        subscribe(3, 5),
        subscribe(16, 17),
        subscribe(17, 21),
        subscribe(21, None),
    ]
    assert poll.subscriptions == [subscribe(5, 18)]
    assert [(t, st) for t, st in states if t >= 18] == [
        (18, Connected("sse")),
        (21, Errored(gone, 0, 0.0)),
        (21, Connecting("sse", 1)),
        (21, Connected("sse")),
    ]


def test_dispose_in_every_phase_of_a_chain_of_three_releases_every_link() -> None:
    """On long polling, probing WebSocket, probing SSE, switching to SSE: all torn down."""
    # Interest starts at 1: reactivex's Subscription cannot record an end at tick 0.
    phases = {"on longpoll": 6, "probing websocket": 11.5, "probing sse": 12.5, "switching": 15}
    for name, at in phases.items():
        s = TestScheduler()
        ws = FakeTransport("websocket", "#", "-#", error=WS_DOWN)
        sse = FakeTransport("sse", "#", "-o", "----o", error=SSE_DOWN)
        poll = FakeTransport("longpoll", FOREVER)
        conn = Connection(
            fallback(ws, sse, poll, timeout=5.0, upgrade_interval=10.0),
            backoff=NO_JITTER,
            idle_timeout=None,
            scheduler=s,
        )
        handle: list[Any] = []
        s.schedule_absolute(1, lambda *_, c=conn, h=handle: h.append(c.connect()))
        s.schedule_absolute(at, lambda *_, h=handle: h[0].dispose())
        s.advance_to(40)
        subscriptions = ws.subscriptions + sse.subscriptions + poll.subscriptions
        for sub in subscriptions:
            assert sub.unsubscribe <= at, (name, sub)
        assert len(subscriptions) == {6: 3, 11.5: 4, 12.5: 5, 15: 6}[at], name
        assert conn.current_state == Disconnected()


def test_the_upgrade_loop_goes_through_its_phases() -> None:
    """IDLE until a later transport opened, WAITING, PROBING each target, SWITCHING, IDLE on
    the preferred transport, STOPPED once disposed."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "#", "-#", "-o", "-o", error=WS_DOWN)
    sse = FakeTransport("sse", "#", "-o", "-" + FOREVER, error=SSE_DOWN)
    poll = FakeTransport("longpoll", FOREVER)
    transports = (ws, sse, poll)
    context = LinkContext()
    memory = FallbackMemory.of(context, "fallback")
    events: list[tuple[float, LinkEvent]] = []
    upgrades = Upgrades(
        transports,
        timeout=2.0,
        interval=10.0,
        max_interval=300.0,
        scheduler=s,
        context=context,
        memory=memory,
        observer=Observer(lambda event: events.append((s.clock, event))),
    )
    first = one_pass_(
        transports,
        0,
        timeout=2.0,
        scheduler=s,
        context=context,
        on_opened=upgrades.activate,
        on_exhausted=memory.exhausted,
        on_expired=memory.session_expired,
    )
    seen: list[tuple[float, Phase, int | None]] = []

    def watch(*_: object) -> None:
        seen.append((s.clock, upgrades.phase, upgrades.active))

    for tick in (0.5, 10.5, 11.5, 12.5, 20, 23.5, 24.5, 30):
        s.schedule_absolute(tick, watch)
    subscription = upgrades.run(first)
    s.advance_to(30)
    subscription.dispose()
    watch()
    assert seen == [
        (0.5, Phase.WAITING, 2),  # long polling opened at 0: round at 10
        (10.5, Phase.PROBING, 2),  # WebSocket
        (11.5, Phase.PROBING, 2),  # SSE
        (12.5, Phase.SWITCHING, 2),  # SSE's real link opens at 13
        (20, Phase.WAITING, 1),  # on SSE (one setback: the round missed WebSocket)
        (23.5, Phase.PROBING, 1),  # WebSocket only
        (24.5, Phase.SWITCHING, 1),  # WebSocket's real link opens at 25
        (30, Phase.IDLE, 0),  # on the preferred transport: nothing to probe
        (30, Phase.STOPPED, 0),
    ]
    assert memory == FallbackMemory(preferred_opened=True, resume_at=0, setbacks=1)
    assert ws.subscriptions == [
        subscribe(0, 0),
        subscribe(10, 11),
        subscribe(23, 24),
        subscribe(24, 30),
    ]
    assert sse.subscriptions == [subscribe(0, 0), subscribe(11, 12), subscribe(12, 25)]
    assert poll.subscriptions == [subscribe(0, 13)]
    assert [  # the link events (diagnostics are asserted in test_diagnostics.py)
        (t, type(event).__name__, getattr(event, "transport", None))
        for t, event in events
        if not isinstance(event, Diagnostic)
    ] == [
        (0, "Trying", "websocket"),
        (0, "Trying", "sse"),
        (0, "Trying", "longpoll"),
        (0, "Opened", "longpoll"),
        (13, "Opened", "sse"),
        (25, "Opened", "websocket"),
    ]
