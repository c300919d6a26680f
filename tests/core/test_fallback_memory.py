"""What a fallback remembers for one period of interest, and when reconnects skip transports.

The rule (issue 15, after phoenixframework/phoenix#5741): a reconnect skips
the transports before the one that last worked only while the preferred
(first) transport has *never opened* during the current interest; once it has
opened, a reconnect starts from the top of the chain. Upgrade probes keep
running while on a later transport in both branches.
"""

from __future__ import annotations

from reactivex.testing import ReactiveTest, TestScheduler

from rxconn import (
    Backoff,
    Connected,
    Connecting,
    Connection,
    ConnectionLost,
    Errored,
    SessionExpired,
    State,
    TransportError,
    fallback,
)
from rxconn._core._memory import FallbackMemory
from rxconn.testing import FakeTransport, timeline, virtual_connection
from rxconn.transport import LinkContext


subscribe = ReactiveTest.subscribe

WS_DOWN = TransportError("websocket", "refused")
WS_LOST = ConnectionLost("websocket", "reset")
SSE_DOWN = TransportError("sse", "refused")
LINK_LOST = ConnectionLost("link", "reset")
NO_JITTER = Backoff(initial=1.0, factor=2.0, jitter=0.0)
FOREVER = "o" + "-" * 80


def run(
    *transports: FakeTransport, until: float, upgrade_interval: float | None = 10.0
) -> tuple[Connection, list[tuple[float, State]]]:
    """Connect over ``fallback(*transports)`` at 0; every state with its tick until ``until``."""
    s = TestScheduler()
    chain = fallback(*transports, timeout=2.0, upgrade_interval=upgrade_interval)
    conn = virtual_connection(chain, s, backoff=NO_JITTER)
    return conn, timeline(conn.state, s, until)


def starts(transport: FakeTransport) -> list[float]:
    return [sub.subscribe for sub in transport.subscriptions]


# ------------------------------------------------------------ the dataclass


def test_memory_skips_only_while_the_preferred_transport_never_opened() -> None:
    """The next start follows the last transport that opened, until the first opens once."""
    memory = FallbackMemory()
    assert memory.next_start() == 0
    memory.opened(2)
    assert memory.next_start() == 2
    memory.opened(1)
    assert memory.next_start() == 1
    memory.exhausted()
    assert memory.next_start() == 0
    memory.opened(2)
    memory.opened(0)
    assert memory.preferred_opened
    memory.opened(2)
    assert memory.next_start() == 0  # it worked once: from the top, whatever opened since


def test_memory_retries_once_where_the_session_expired() -> None:
    """After SessionExpired on transport 1, the next pass (only) starts there."""
    memory = FallbackMemory()
    memory.opened(0)
    memory.session_expired(1)
    assert memory.next_start() == 1
    assert memory.next_start() == 0


def test_memory_probe_interval_doubles_per_setback_after_the_first() -> None:
    """No setback or one: the base interval; then doubling, capped; settled: base again."""
    memory = FallbackMemory()
    assert memory.probe_interval(10.0, 40.0) == 10.0
    memory.setback()
    assert memory.probe_interval(10.0, 40.0) == 10.0
    memory.setback()
    assert memory.probe_interval(10.0, 40.0) == 20.0
    memory.setback()
    memory.setback()
    assert memory.probe_interval(10.0, 40.0) == 40.0
    memory.settled()
    assert memory.probe_interval(10.0, 40.0) == 10.0


def test_memory_is_kept_per_period_of_interest_and_per_fallback() -> None:
    """``of`` creates the memory once per context and key; a new context starts fresh."""
    context = LinkContext()
    memory = FallbackMemory.of(context, "fallback:1")
    assert FallbackMemory.of(context, "fallback:1") is memory
    assert FallbackMemory.of(context, "fallback:2") is not memory
    assert FallbackMemory.of(LinkContext(), "fallback:1") == FallbackMemory()


# ----------------------------------------------- a 410 retries where the hub answered


def test_session_expired_retries_on_the_transport_that_reached_the_hub() -> None:
    """WebSocket worked, then HTTP took over; the hub forgot the session (410 on HTTP, before
    and after the link opened): the new session is opened over HTTP at once, WebSocket is
    not tried first (the hub was reachable there; only the session was gone)."""
    gone = SessionExpired("http", "session unknown", status=410, retry_after=0)
    ws = FakeTransport("websocket", "o-#", "#", error=WS_LOST)
    http = FakeTransport("http", "o---#", "#", FOREVER, error=gone)
    _, states = run(ws, http, until=12, upgrade_interval=None)
    # 0-2 WebSocket; 3 from the top: WebSocket refused, HTTP opens; 7 its session is gone
    assert ws.subscriptions == [subscribe(0, 2), subscribe(3, 3)]
    # 7: 410 after open -> retry on HTTP at once; 410 before open -> on HTTP again after
    # the backoff (a second 410 in a row waits); then it opens
    assert http.subscriptions == [subscribe(3, 7), subscribe(7, 7), subscribe(9, None)]
    assert [(t, st) for t, st in states if t >= 7] == [
        (7, Errored(gone, 0, 0.0)),
        (7, Connecting("http", 1)),
        (7, Errored(gone, 1, 2.0)),
        (9, Connecting("http", 2)),
        (9, Connected("http")),
    ]


# ------------------------------------------- branch 1: the preferred never opened


def test_preferred_never_opened_reconnects_skip_it_and_probes_keep_running() -> None:
    """WebSocket refused (a proxy): a cut HTTP link reconnects straight to HTTP, and
    probes of WebSocket go on from the new link (10 s, then 20 s after a failed probe)."""
    ws = FakeTransport("websocket", "#", "-#", error=WS_DOWN)
    http = FakeTransport("http", "o----#", FOREVER, error=LINK_LOST)
    conn, states = run(ws, http, until=40)
    assert ws.subscriptions == [subscribe(0, 0), subscribe(16, 17), subscribe(37, 38)]
    assert ws.contexts[1].probe and ws.contexts[2].probe
    assert http.subscriptions == [subscribe(0, 5), subscribe(6, None)]
    assert states[-3:] == [
        (5, Errored(LINK_LOST, 0, 1.0)),
        (6, Connecting("http", 1)),
        (6, Connected("http")),
    ]
    assert conn.current_state == Connected("http")


def test_preferred_never_opened_with_three_reconnects_resume_at_the_last_that_worked() -> None:
    """WebSocket and SSE refused, long polling cut: reconnect straight to long polling.
    After an upgrade to SSE (WebSocket still refused), an SSE cut reconnects to SSE."""
    ws = FakeTransport("websocket", "#", "-#", error=WS_DOWN)
    #                        attempt 0  probe  candidate   reconnect
    sse = FakeTransport("sse", "#", "-o", "-o---#", FOREVER, error=SSE_DOWN)
    poll = FakeTransport("longpoll", "o---#", FOREVER, error=LINK_LOST)
    _, states = run(ws, sse, poll, until=30)
    # 0: fell to long polling; 4: cut; 5: straight back to long polling (nothing else tried)
    assert poll.subscriptions == [subscribe(0, 4), subscribe(5, 18)]
    # 15: probe WebSocket (fails at 16), then SSE (verified at 17); its real link opens at 18
    assert ws.subscriptions == [subscribe(0, 0), subscribe(15, 16)]
    # 22: the SSE link is cut; 23: reconnect straight to SSE
    assert sse.subscriptions == [
        subscribe(0, 0),
        subscribe(16, 17),
        subscribe(17, 22),
        subscribe(23, None),
    ]
    assert (5, Connecting("longpoll", 1)) in states
    assert (18, Connected("sse")) in states
    assert states[-2:] == [(23, Connecting("sse", 1)), (23, Connected("sse"))]


# --------------------------------------------- branch 2: the preferred opened once


def test_preferred_opened_once_reconnects_start_from_the_top() -> None:
    """WebSocket worked, then was cut and refused: HTTP. When HTTP is cut, the reconnect
    tries WebSocket again first (it worked: the cut was probably transient)."""
    ws = FakeTransport("websocket", "o---#", "#", "#", "-o", "-o", error=WS_LOST)
    #                            0-4 open  5   10  probe 30 real link 31
    http = FakeTransport("http", "o---#", FOREVER, error=LINK_LOST)
    conn, states = run(ws, http, until=40)
    assert ws.subscriptions == [
        subscribe(0, 4),
        subscribe(5, 5),  # reconnect from the top: refused, so HTTP
        subscribe(10, 10),  # HTTP cut at 9: from the top again, not straight to HTTP
        subscribe(30, 31),  # probes keep running: two fall-backs, so 20 s after 10
        subscribe(31, None),
    ]
    assert http.subscriptions == [subscribe(5, 9), subscribe(10, 32)]
    assert [st for t, st in states if t == 10] == [
        Connecting("websocket", 1),  # the attempt count starts over after a stable link
        Connecting("http", 1),
        Connected("http"),
    ]
    assert conn.current_state == Connected("websocket")


def test_an_upgrade_counts_as_the_preferred_having_opened() -> None:
    """WebSocket never opened in a pass, but an upgrade to it did: after a later
    fall-back, an HTTP cut reconnects from the top."""
    ws = FakeTransport("websocket", "#", "-o", "-o---#", "#", "#", error=WS_DOWN)
    #                          attempt probe  real link  17 22
    http = FakeTransport("http", FOREVER[:20], "o---#", FOREVER, error=LINK_LOST)
    _, states = run(ws, http, until=25)
    # 10 probe, 11 real link, 12 upgraded; 16 the WebSocket link is lost; 17 from the top
    assert ws.subscriptions == [
        subscribe(0, 0),
        subscribe(10, 11),
        subscribe(11, 16),
        subscribe(17, 17),
        subscribe(22, 22),  # HTTP cut at 21: WebSocket first again
    ]
    assert http.subscriptions == [subscribe(0, 12), subscribe(17, 21), subscribe(22, None)]
    assert states[-3:] == [
        (22, Connecting("websocket", 1)),
        (22, Connecting("http", 1)),
        (22, Connected("http")),
    ]


def test_preferred_opened_once_with_three_every_reconnect_walks_the_chain() -> None:
    """WebSocket worked once; later cuts of long polling walk WebSocket, SSE, long polling."""
    ws = FakeTransport("websocket", "o-#", "#", error=WS_LOST)
    sse = FakeTransport("sse", "#", error=SSE_DOWN)
    poll = FakeTransport("longpoll", "o--#", error=LINK_LOST)
    _, states = run(ws, sse, poll, until=14, upgrade_interval=None)
    # 0-2 WebSocket; 3: all three tried, long polling opens; cut at 6, 10: the same again
    assert starts(ws) == [0, 3, 7, 11]
    assert starts(sse) == [3, 7, 11]
    assert poll.subscriptions == [subscribe(3, 6), subscribe(7, 10), subscribe(11, 14)]
    assert [st.transport for _, st in states if isinstance(st, Connecting)] == [
        "websocket",
        *["websocket", "sse", "longpoll"] * 3,
    ]


def test_new_interest_forgets_that_the_preferred_never_opened() -> None:
    """Memory lasts one period of interest: after re-interest WebSocket is tried first."""
    s = TestScheduler()
    ws = FakeTransport("websocket", "#", "-o", error=WS_DOWN)
    http = FakeTransport("http", "o-#", FOREVER, error=LINK_LOST)
    conn = Connection(
        fallback(ws, http, upgrade_interval=None),
        backoff=NO_JITTER,
        idle_timeout=None,
        scheduler=s,
    )
    first = conn.connect()
    s.advance_to(5)  # 0: HTTP; 2: cut; 3: straight back to HTTP
    first.dispose()
    conn.connect()
    s.advance_to(8)
    assert ws.subscriptions == [subscribe(0, 0), subscribe(5, None)]
    assert http.subscriptions == [subscribe(0, 2), subscribe(3, 5)]
    assert conn.current_state == Connected("websocket")
