"""Credentials that change: ``headers=`` as a callable, and one immediate retry on a 401.

Against a real hub on 127.0.0.1 behind an aiohttp middleware that accepts
exactly one bearer token at a time and rotates it (every 0.2 s here, a much
shorter period than a real token's, bounded by a fixed number of rotations).
The retry rule itself is also proven in virtual time (no sockets) at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from reactivex.testing import ReactiveTest, TestScheduler

import rxconn
from rxconn import Backoff, Connected, Connecting, Disconnected, Errored, TransportError
from rxconn.server import Hub, Session
from rxconn.testing import FakeTransport
from tests.helpers import Recorder, hub_in_app, reach, settle


subscribe = ReactiveTest.subscribe

ROTATIONS = 20
PERIOD = 0.2
"""Seconds between rotations of the accepted token (a real one lives much longer)."""
QUICK = Backoff(initial=0.02, factor=2.0, max_delay=0.05, jitter=0.0)


@dataclass
class Tokens:
    """The one token the test hub accepts now, and what its middleware saw."""

    rotation: int = 0
    accepted: list[tuple[int, str]] = field(default_factory=list)
    """(rotation, endpoint) of each request let through (endpoint: ws, events, messages)."""
    refused: list[str] = field(default_factory=list)
    """The endpoint of each request answered 401."""
    calls: int = 0
    """How many times a client's headers callable was called."""
    refuse_posts: int = 0
    """Answer this many POSTs 401 although their token is good (stale credentials in flight)."""

    @property
    def current(self) -> str:
        return f"token-{self.rotation}"

    def headers(self) -> dict[str, str]:
        """The client's sync callable: always the token of the moment."""
        self.calls += 1
        return {"Authorization": f"Bearer {self.current}"}

    async def aheaders(self) -> dict[str, str]:
        """The client's async callable (a refresh that awaits something)."""
        await asyncio.sleep(0)
        return self.headers()


@asynccontextmanager
async def guarded_hub(tokens: Tokens, hub: Hub) -> AsyncIterator[str]:
    """Serve ``hub`` under /rx behind a bearer-token check; yields the base URL."""

    @web.middleware
    async def check(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        endpoint = request.path.rsplit("/", 1)[-1]
        good = request.headers.get("Authorization") == f"Bearer {tokens.current}"
        if endpoint == "messages" and good and tokens.refuse_posts:
            tokens.refuse_posts -= 1
            good = False
        if not good:
            tokens.refused.append(endpoint)
            return web.Response(status=401, text="invalid token")
        tokens.accepted.append((tokens.rotation, endpoint))
        return await handler(request)

    app = web.Application(middlewares=[check])
    async with hub_in_app(hub, app, shutdown_timeout=0.5) as base:
        yield base


class Traffic:
    """Numbered messages both ways: the hub's first session sends h0.., the client c0.."""

    def __init__(self, hub: Hub) -> None:
        self.sessions: list[Session] = []
        self.at_hub: list[object] = []
        self._subs = [hub.sessions.subscribe(self._on_session)]

    def _on_session(self, session: Session) -> None:
        self.sessions.append(session)
        self._subs.append(session.messages.subscribe(self.at_hub.append))

    async def run(self, conn: rxconn.Connection, count: int, duration: float) -> None:
        """Send ``count`` numbered messages each way, spread over ``duration`` seconds."""
        step = duration / count
        for i in range(count):
            conn.send(f"c{i}")
            if self.sessions:
                self.sessions[0].send(f"h{i}")
            await asyncio.sleep(step)

    def dispose(self) -> None:
        for sub in self._subs:
            sub.dispose()


async def rotate(tokens: Tokens, hub: Hub, *, kick: bool) -> None:
    """Rotate the accepted token ``ROTATIONS`` times; with ``kick``, close every open link
    at each rotation, as a server does when the token a link was opened with expires."""
    for _ in range(ROTATIONS):
        await asyncio.sleep(PERIOD)
        tokens.rotation += 1
        if kick:
            for link in list(hub.links):
                link.close(1008, "token expired")  # type: ignore[attr-defined]


def gave_up(states: Recorder) -> list[Errored]:
    return [s for s in states.items if isinstance(s, Errored) and s.retry_in is None]


# ------------------------------------------------------- rotation: 0 lost, 0 dup


@pytest.mark.asyncio
async def test_http_link_stays_connected_across_20_rotations() -> None:
    """SSE held open for 20 rotations: every POST carries the token of its moment (the
    callable is called per request), nothing is lost or repeated, the state never moves."""
    tokens = Tokens()
    hub = Hub(ping_interval=1.0, session_grace=5.0)
    async with guarded_hub(tokens, hub) as base:
        traffic = Traffic(hub)
        conn = rxconn.Connection(
            rxconn.http(base + "/events", headers=tokens.headers), backoff=QUICK, idle_timeout=5.0
        )
        states = Recorder(conn.state)
        received = Recorder(conn.messages)
        await reach(conn, lambda s: isinstance(s, Connected))
        count = 200
        rotating = asyncio.ensure_future(rotate(tokens, hub, kick=False))
        await traffic.run(conn, count, ROTATIONS * PERIOD)
        await rotating
        await received.count(count)
        await conn.flush(timeout=10)
        assert tokens.rotation == ROTATIONS
        assert traffic.at_hub == [f"c{i}" for i in range(count)]  # 0 lost, 0 duplicated
        assert received.items == [f"h{i}" for i in range(count)]
        assert len(traffic.sessions) == 1
        posted_under = {
            rotation for rotation, endpoint in tokens.accepted if endpoint == "messages"
        }
        assert len(posted_under) >= ROTATIONS  # POSTs went out under (nearly) every token
        assert states.items == [Disconnected(), Connecting("http", 0), Connected("http")]
        assert tokens.refused.count("events") == 0
        traffic.dispose()
        states.dispose()
        received.dispose()
        conn.close()
        await settle()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["websocket", "http", "longpoll"])
async def test_links_reopened_at_every_rotation_present_the_fresh_token(kind: str) -> None:
    """The hub drops every link as its token expires, 20 times: each new link (and every
    poll) asks the callable (async for websocket, sync for the others) again and opens;
    one session, 0 lost, 0 dup."""
    tokens = Tokens()
    hub = Hub(ping_interval=1.0, session_grace=5.0)
    async with guarded_hub(tokens, hub) as base:
        traffic = Traffic(hub)
        if kind == "websocket":
            transport: rxconn.Transport = rxconn.websocket(base + "/ws", headers=tokens.aheaders)
        elif kind == "http":
            transport = rxconn.http(base + "/events", headers=tokens.headers)
        else:
            transport = rxconn.longpoll(base + "/poll", headers=tokens.headers, hold=0.5)
        conn = rxconn.Connection(transport, backoff=QUICK, idle_timeout=5.0)
        states = Recorder(conn.state)
        received = Recorder(conn.messages)
        await reach(conn, lambda s: isinstance(s, Connected))
        count = 200
        rotating = asyncio.ensure_future(rotate(tokens, hub, kick=True))
        await traffic.run(conn, count, ROTATIONS * PERIOD)
        await rotating
        await received.count(count)
        await conn.flush(timeout=10)
        assert traffic.at_hub == [f"c{i}" for i in range(count)]  # 0 lost, 0 duplicated
        assert received.items == [f"h{i}" for i in range(count)]
        assert len(traffic.sessions) == 1  # every link resumed the one session
        endpoint = {"websocket": "ws", "http": "events", "longpoll": "poll"}[kind]
        opens = [rotation for rotation, e in tokens.accepted if e == endpoint]
        assert set(range(1, ROTATIONS + 1)) <= set(opens)  # a link opened under every new token
        assert gave_up(states) == []
        # A 401 can only come from a rotation racing a request in flight; each one had
        # its immediate retry with a fresh token and the connection went on. (Long
        # polling has a poll and a POST in flight at almost any time: each may race.)
        races = 2 * ROTATIONS if kind == "longpoll" else 2
        assert len(tokens.refused) <= races, tokens.refused
        assert conn.session_resets == 0
        traffic.dispose()
        states.dispose()
        received.dispose()
        conn.close()
        await settle()


# ------------------------------------------------ a stale token: exactly 2 tries


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["websocket", "http"])
@pytest.mark.parametrize("how", ["mapping", "callable"])
async def test_a_stale_token_stops_after_exactly_two_tries(kind: str, how: str) -> None:
    """401, one immediate retry (the callable asked again), 401: a fatal TransportError(401)."""
    tokens = Tokens()
    calls = 0

    def stale() -> dict[str, str]:
        nonlocal calls
        calls += 1
        return {"Authorization": "Bearer stale-secret"}

    headers = stale() if how == "mapping" else stale
    calls = 0
    async with guarded_hub(tokens, Hub(ping_interval=1.0)) as base:
        if kind == "websocket":
            transport: rxconn.Transport = rxconn.websocket(base + "/ws", headers=headers)
        else:
            transport = rxconn.http(base + "/events", headers=headers)
        conn = rxconn.Connection(transport, backoff=QUICK, idle_timeout=5.0)
        states = Recorder(conn.state)
        await states.until(lambda items: bool(gave_up(states)))
        endpoint = "ws" if kind == "websocket" else "events"
        assert tokens.refused == [endpoint, endpoint]
        assert calls == (2 if how == "callable" else 0)
        first, last = [s for s in states.items if isinstance(s, Errored)]
        assert (first.attempt, first.retry_in) == (0, 0.0)  # at once
        assert (last.attempt, last.retry_in) == (1, None)  # fatal
        assert isinstance(last.error, TransportError) and last.error.status == 401
        assert "stale-secret" not in f"{last.error} {last.error!r} {transport!r}"
        assert [s for s in states.items if isinstance(s, Connecting)] == [
            Connecting(kind, 0),
            Connecting(kind, 1),
        ]
        await settle()
        # Nothing is scheduled once it gave up; prove no third try within many backoff delays.
        await asyncio.sleep(10 * QUICK.max_delay)
        assert tokens.refused == [endpoint, endpoint]
        states.dispose()
        conn.close()
        await settle()


@pytest.mark.asyncio
async def test_a_stale_token_through_a_fallback_stops_after_two_passes() -> None:
    """fallback(ws, http): each pass tries both (a 401 moves the pass on), then gives up."""
    tokens = Tokens()
    async with guarded_hub(tokens, Hub(ping_interval=1.0)) as base:
        stale = {"Authorization": "Bearer stale"}
        both = rxconn.fallback(
            rxconn.websocket(base + "/ws", headers=stale),
            rxconn.http(base + "/events", headers=stale),
            timeout=2.0,
            upgrade_interval=None,
        )
        conn = rxconn.Connection(both, backoff=QUICK, idle_timeout=5.0)
        states = Recorder(conn.state)
        await states.until(lambda items: bool(gave_up(states)))
        assert tokens.refused == ["ws", "events", "ws", "events"]
        [final] = gave_up(states)
        assert isinstance(final.error, TransportError) and final.error.status == 401
        states.dispose()
        conn.close()
        await settle()


# ------------------------------------------------------------------- POSTs


@pytest.mark.asyncio
async def test_a_post_refused_401_once_is_sent_again_at_once_with_fresh_headers() -> None:
    """The POST is retried in place (the link stays): delivered once, no Errored state."""
    tokens = Tokens()
    async with guarded_hub(tokens, Hub(ping_interval=1.0)) as base:
        conn = rxconn.Connection(
            rxconn.http(base + "/events", headers=tokens.headers), backoff=QUICK, idle_timeout=5.0
        )
        states = Recorder(conn.state)
        await reach(conn, lambda s: isinstance(s, Connected))
        tokens.refuse_posts = 1
        calls_before = tokens.calls
        receipt = conn.send("once")
        delivered = await asyncio.wait_for(asyncio.ensure_future(_await(receipt)), 10)
        assert delivered.acknowledged
        assert tokens.refused == ["messages"]
        assert tokens.calls - calls_before == 2  # the first POST and its retry asked afresh
        assert not any(isinstance(s, Errored) for s in states.items)
        states.dispose()
        conn.close()
        await settle()


@pytest.mark.asyncio
async def test_a_post_refused_401_twice_in_a_row_is_fatal() -> None:
    """Two 401s in a row on the POST: the link fails with a fatal TransportError(401)."""
    tokens = Tokens()
    async with guarded_hub(tokens, Hub(ping_interval=1.0)) as base:
        conn = rxconn.Connection(
            rxconn.http(base + "/events", headers=tokens.headers), backoff=QUICK, idle_timeout=5.0
        )
        states = Recorder(conn.state)
        await reach(conn, lambda s: isinstance(s, Connected))
        tokens.refuse_posts = 2
        conn.send("never")
        await states.until(lambda items: bool(gave_up(states)))
        [final] = gave_up(states)
        assert isinstance(final.error, TransportError) and final.error.status == 401
        assert tokens.refused == ["messages", "messages"]
        states.dispose()
        assert conn.close() == ["never"]  # handed back, not lost
        await settle()


async def _await(receipt: rxconn.Receipt) -> rxconn.Delivered:
    return await receipt


# ------------------------------------------------------- the callable's failures


@pytest.mark.asyncio
async def test_a_callable_that_raises_is_a_retryable_error_with_its_cause() -> None:
    """A token service down: Errored(TransportError) with the exception as __cause__,
    retried with the backoff; the next call's token opens the link."""
    tokens = Tokens()
    failures = [RuntimeError("vault unreachable")]

    def flaky() -> dict[str, str]:
        if failures:
            raise failures.pop()
        return tokens.headers()

    async with guarded_hub(tokens, Hub(ping_interval=1.0)) as base:
        conn = rxconn.Connection(
            rxconn.websocket(base + "/ws", headers=flaky), backoff=QUICK, idle_timeout=5.0
        )
        states = Recorder(conn.state)
        await reach(conn, lambda s: isinstance(s, Connected))
        [errored] = [s for s in states.items if isinstance(s, Errored)]
        assert isinstance(errored.error, TransportError)
        assert isinstance(errored.error.__cause__, RuntimeError)
        assert errored.retry_in is not None and errored.retry_in > 0  # the backoff's
        assert tokens.refused == []  # nothing was sent without credentials
        states.dispose()
        conn.close()
        await settle()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "result",
    [
        TransportError("websocket", "login required", fatal=True),
        "not a mapping",
        {"Authorization": 42},
    ],
    ids=["raises-fatal", "not-a-mapping", "not-strings"],
)
async def test_a_callable_can_stop_the_connection_and_a_bad_result_is_fatal(
    result: object,
) -> None:
    """An RxconnError raised by the callable goes on as is; a wrong result type is fatal."""

    def headers() -> object:
        if isinstance(result, Exception):
            raise result
        return result

    async with guarded_hub(Tokens(), Hub(ping_interval=1.0)) as base:
        transport = rxconn.websocket(base + "/ws", headers=headers)  # type: ignore[arg-type]
        conn = rxconn.Connection(transport, backoff=QUICK, idle_timeout=5.0)
        states = Recorder(conn.state)
        await states.until(lambda items: bool(gave_up(states)))
        [final] = gave_up(states)
        assert final.attempt == 0
        if isinstance(result, Exception):
            assert final.error is result
        else:
            assert isinstance(final.error, TransportError) and final.error.fatal
        states.dispose()
        conn.close()
        await settle()


def test_headers_must_be_a_mapping_or_a_callable() -> None:
    """Anything else is refused when the transport is built."""
    with pytest.raises(TypeError):
        rxconn.websocket("ws://127.0.0.1:1/rx/ws", headers=42)  # type: ignore[arg-type]


def test_every_transport_takes_a_callable() -> None:
    """websocket, http and longpoll resolve their headers per request (connection() too)."""
    for make in (rxconn.websocket, rxconn.http, rxconn.longpoll):
        transport = make("http://127.0.0.1:1/rx/x", headers=lambda: {"A": "b"})
        assert transport.header_factory is not None and transport.headers == {}
    rxconn.connection("http://127.0.0.1:1/rx", headers=lambda: {"A": "b"}).close()


# ------------------------------------------------ the retry rule, in virtual time

UNAUTHORIZED = TransportError("websocket", "answered 401", status=401)


def states_of(transport: FakeTransport, until: float) -> list[tuple[float, object]]:
    s = TestScheduler()
    conn = rxconn.Connection(
        transport, backoff=Backoff(initial=2.0, jitter=0.0), idle_timeout=None, scheduler=s
    )
    seen: list[tuple[float, object]] = []
    conn.state.subscribe(lambda state: seen.append((s.clock, state)))
    s.advance_to(until)
    return seen


def test_a_401_is_retried_at_once_and_a_second_in_a_row_is_fatal() -> None:
    """-# then -#: Errored(retry_in=0) and a new attempt at 1, Errored(retry_in=None) at 2."""
    ws = FakeTransport("websocket", "-#", error=UNAUTHORIZED)
    assert states_of(ws, 20) == [
        (0, Disconnected()),
        (0, Connecting("websocket", 0)),
        (1, Errored(UNAUTHORIZED, 0, 0.0)),
        (1, Connecting("websocket", 1)),
        (2, Errored(UNAUTHORIZED, 1, None)),
    ]
    assert ws.subscriptions == [subscribe(0, 1), subscribe(1, 2)]


def test_the_immediate_401_retry_is_granted_again_once_a_link_opened() -> None:
    """401 at 1 (at once); the next link opens at 2 and fails at 3: a link opened since the
    last renewal, so at once again; the 401 at 4 is the second in a row: fatal."""
    ws = FakeTransport("websocket", "-#", "-o#", "-#", error=UNAUTHORIZED)
    seen = states_of(ws, 20)
    errored = [(t, s.attempt, s.retry_in) for t, s in seen if isinstance(s, Errored)]
    assert errored == [(1, 0, 0.0), (3, 1, 0.0), (4, 2, None)]
    assert ws.subscriptions == [subscribe(0, 1), subscribe(1, 3), subscribe(3, 4)]


def test_a_401_marked_fatal_is_not_retried() -> None:
    """A POST's second 401 (fatal) already had its renewal: no immediate retry."""
    refused = TransportError("http", "POST answered 401", status=401, fatal=True)
    seen = states_of(FakeTransport("http", "-#", error=refused), 10)
    assert seen[-1] == (1, Errored(refused, 0, None))


# --------------------------------------- diagnostics against the real hub (loopback)
# (Here rather than in a file of their own: they also show what a 401 looks like there.)


def kinds(rec: Recorder) -> list[str]:
    return [item.kind for item in rec.items]


@pytest.mark.asyncio
async def test_diagnostics_of_a_stale_token_one_immediate_retry_then_nothing() -> None:
    """Two tries: one retry_scheduled (attempt 0, delay 0), and none for the fatal second."""
    async with guarded_hub(Tokens(), Hub(ping_interval=1.0)) as base:
        transport = rxconn.websocket(base + "/ws", headers={"Authorization": "Bearer stale"})
        conn = rxconn.Connection(transport, backoff=QUICK, idle_timeout=5.0)
        diagnostics = Recorder(conn.diagnostics)
        states = Recorder(conn.state)
        await states.until(lambda items: bool(gave_up(states)))
        [retry] = diagnostics.items
        assert (retry.kind, retry.transport) == ("retry_scheduled", "websocket")
        assert (retry.detail["attempt"], retry.detail["delay"]) == (0, 0.0)
        assert retry.detail["error"].status == 401
        assert "stale" not in str(retry)
        states.dispose()
        conn.close()
        assert diagnostics.completed
        await settle()


@pytest.mark.asyncio
async def test_session_reset_is_reported_when_the_hub_forgot_the_session() -> None:
    """The hub ends the session: the resume is refused (410), a new session starts: one
    session_reset (resets=1), and the retry after the 410 is at once."""
    hub = Hub(ping_interval=1.0, session_grace=5.0)
    async with hub_in_app(hub, shutdown_timeout=0.5) as base:
        conn = rxconn.Connection(rxconn.websocket(base + "/ws"), backoff=QUICK, idle_timeout=5.0)
        diagnostics = Recorder(conn.diagnostics)
        handle = conn.connect()  # interest (diagnostics is none)
        await reach(conn, lambda s: isinstance(s, Connected))
        assert diagnostics.items == []
        hub.live_sessions[0].end("kicked by the test")
        await diagnostics.until(lambda items: "session_reset" in kinds(diagnostics))
        await reach(conn, lambda s: isinstance(s, Connected))
        resets = [item for item in diagnostics.items if item.kind == "session_reset"]
        assert resets == [rxconn.Diagnostic("session_reset", "websocket", {"resets": 1})]
        assert conn.session_resets == 1
        after = kinds(diagnostics)[kinds(diagnostics).index("session_reset") + 1 :]
        assert after[:1] == ["retry_scheduled"]
        assert diagnostics.items[-1].detail["delay"] == 0.0  # the hub answered: at once
        handle.dispose()
        diagnostics.dispose()
        conn.close()
        await settle()


@pytest.mark.asyncio
async def test_fell_back_probes_and_upgraded_against_the_hub() -> None:
    """WebSocket off: fell_back to http; probes fail while it is off; on again: upgraded."""
    hub = Hub(echo=True, ping_interval=1.0)
    hub.websocket_enabled = False
    async with hub_in_app(hub, shutdown_timeout=0.5) as base:
        both = rxconn.fallback(
            rxconn.websocket(base + "/ws"),
            rxconn.http(base + "/events"),
            timeout=0.5,
            upgrade_interval=0.1,
            max_upgrade_interval=0.1,
        )
        conn = rxconn.Connection(both, backoff=QUICK, idle_timeout=5.0)
        diagnostics = Recorder(conn.diagnostics)
        handle = conn.connect()  # interest (diagnostics is none)
        await reach(conn, lambda s: s == Connected("http"))
        assert kinds(diagnostics)[0] == "fell_back"
        assert diagnostics.items[0].transport == "http"
        assert diagnostics.items[0].detail["previous"] == "websocket"
        await diagnostics.until(lambda items: "probe_failed" in kinds(diagnostics))
        hub.websocket_enabled = True
        await diagnostics.until(lambda items: "upgraded" in kinds(diagnostics))
        assert conn.current_state == Connected("websocket")
        upgraded = diagnostics.items[-1]
        assert upgraded == rxconn.Diagnostic("upgraded", "websocket", {"previous": "http"})
        probes = [k for k in kinds(diagnostics) if k.startswith("probe_")]
        assert probes[-1] == "probe_started" and "probe_failed" in probes
        handle.dispose()
        diagnostics.dispose()
        conn.close()
        await settle()
