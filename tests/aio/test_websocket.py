"""The WebSocket transport against loopback servers: the hub, custom aiohttp apps, websockets."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

import rxconn
from rxconn import (
    Connected,
    ConnectionClosedError,
    ConnectionLost,
    Errored,
    InvalidURL,
    OpenTimeout,
    ProtocolError,
    TransportError,
)
from rxconn.aio import TASKS, drain
from rxconn.server import Hub, Server, serve
from tests.helpers import (
    FAST,
    Recorder,
    app_server,
    connection_over,
    is_connected,
    is_errored,
    reach,
    settle,
)


pytestmark = pytest.mark.asyncio


def connect_ws(url: str, **kw: object) -> rxconn.Connection:
    options = ("hub", "heartbeat", "open_timeout", "max_message_size", "headers")
    return connection_over(rxconn.websocket, url, options, **kw)


def ws_route(
    handler: Callable[[web.WebSocketResponse, web.Request], Awaitable[None]], **ws_kw: object
) -> Callable[[web.Application], None]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(**ws_kw)  # type: ignore[arg-type]
        await ws.prepare(request)
        try:
            await handler(ws, request)
        finally:
            await ws.close()
        return ws

    def routes(app: web.Application) -> None:
        app.router.add_get("/ws", endpoint)

    return routes


# ------------------------------------------------------------------ the hub


async def test_echo_text_and_binary_in_order(hub_server: Server) -> None:
    """Text arrives as str, binary as bytes, in send order, through the hub's echo."""
    conn = connect_ws(hub_server.url + "/ws")
    rec = Recorder(conn.messages)
    sent: list[str | bytes] = [f"m{i}" if i % 3 else bytes([i % 256]) * 10 for i in range(200)]
    for payload in sent:
        conn.send(payload)
    assert await rec.count(200) == sent
    rec.dispose()
    conn.close()


async def test_many_interest_sources_make_one_hub_session(hub_server: Server) -> None:
    """Many connect()/subscribe at once: the hub sees exactly one session and one link."""
    hub = hub_server.hub
    sessions = Recorder(hub.sessions)
    conn = connect_ws(hub_server.url + "/ws")
    handles = [conn.connect() for _ in range(20)]
    recs = [Recorder(conn.messages) for _ in range(5)] + [Recorder(conn.state) for _ in range(5)]
    await reach(conn, is_connected)
    conn.send("ping")
    await recs[0].count(1)
    assert len(sessions.items) == 1
    assert len(hub.links) == 1
    for h in handles:
        h.dispose()
    for r in recs:
        r.dispose()
    conn.close()
    sessions.dispose()


async def test_dispose_releases_every_task_and_plain_session_ends(hub_server: Server) -> None:
    """After the last dispose no rxconn task is left and the plain hub session is gone."""
    conn = connect_ws(hub_server.url + "/ws", hub=False)
    rec = Recorder(conn.messages)
    conn.send("x")
    await rec.count(1)
    assert len(hub_server.hub.live_sessions) == 1
    rec.dispose()
    await settle()
    assert TASKS.running() == []
    await _until(lambda: not hub_server.hub.live_sessions)
    assert conn.current_state == rxconn.Disconnected()


async def test_close_ends_the_hub_session_promptly(hub_server: Server) -> None:
    """close() on the client ends its rxconn.v1 session on the hub, without waiting for grace."""
    conn = connect_ws(hub_server.url + "/ws")
    rec = Recorder(conn.messages)
    conn.send("x")
    await rec.count(1)
    [session] = hub_server.hub.live_sessions
    ended = Recorder(session.messages)
    conn.close()
    await ended.until(lambda _: ended.completed)
    assert hub_server.hub.live_sessions == []


async def test_session_survives_interest_cycles_within_grace(hub_server: Server) -> None:
    """A connection that loses interest and regains it keeps its hub session."""
    hub = hub_server.hub
    conn = connect_ws(hub_server.url + "/ws")
    rec = Recorder(conn.messages)
    conn.send("a")
    await rec.count(1)
    [session] = hub.live_sessions
    rec.dispose()
    await settle()
    session.send("while away")  # kept in the replay log for the client
    rec = Recorder(conn.messages)
    conn.send("b")
    await rec.count(2)
    assert rec.items == ["while away", "b"]
    assert hub.live_sessions == [session]
    rec.dispose()
    conn.close()


async def test_rapid_connect_dispose_cycles_never_overlap_links(hub_server: Server) -> None:
    """200 connect/dispose cycles: the hub never sees two links of the client at once."""
    hub = hub_server.hub
    peak = 0
    sessions = Recorder(hub.sessions)

    def watch(_: object) -> None:
        nonlocal peak
        peak = max(peak, len(hub.links))

    conn = connect_ws(hub_server.url + "/ws")
    state = Recorder(conn.state)
    state.dispose()
    for i in range(200):
        handle = conn.connect()
        if i % 20 == 0:
            await reach(conn, is_connected)
        watch(None)
        await asyncio.sleep(0)
        handle.dispose()
        watch(None)
    rec = Recorder(conn.messages)
    conn.send("still works")
    await rec.count(1)
    watch(None)
    assert peak <= 1
    assert len(sessions.items) == 1
    rec.dispose()
    conn.close()
    sessions.dispose()


async def test_dispose_during_the_handshake_cancels_cleanly() -> None:
    """A server that delays the upgrade: disposing mid-handshake leaves nothing behind."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        entered.set()
        await release.wait()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close()
        return ws

    def routes(app: web.Application) -> None:
        app.router.add_get("/ws", slow)

    async with app_server(routes) as base:
        conn = connect_ws(base + "/ws")
        handle = conn.connect()
        await asyncio.wait_for(entered.wait(), 5)
        handle.dispose()
        await settle()
        assert TASKS.running() == []
        assert conn.current_state == rxconn.Disconnected()
        release.set()


async def test_send_while_down_is_delivered_after_the_server_comes_back() -> None:
    """Buffered sends (server down) are delivered, in order, once the hub is reachable again."""
    hub = Hub(echo=True, ping_interval=1.0)
    async with serve(hub) as server:
        port = server.port
    conn = connect_ws(f"http://127.0.0.1:{port}/rx/ws")
    rec = Recorder(conn.messages)
    await reach(conn, is_errored)
    for i in range(5):
        conn.send(f"p{i}")
    async with serve(hub, port=port):
        assert await rec.count(5) == [f"p{i}" for i in range(5)]
    rec.dispose()
    conn.close()


async def test_hub_restart_reconnects_and_delivers_buffered_sends_in_order() -> None:
    """The hub restarts on the same port: the client reconnects (new session) and loses nothing."""
    hub = Hub(echo=True, ping_interval=1.0)
    async with serve(hub) as server:
        port = server.port
        conn = connect_ws(server.url + "/ws")
        rec = Recorder(conn.messages)
        conn.send("before")
        await rec.count(1)
    await reach(conn, lambda s: not isinstance(s, Connected))
    for i in range(3):
        conn.send(f"during{i}")
    async with serve(hub, port=port):
        await rec.count(4)
        conn.send("after")
        await rec.count(5)
    assert rec.items == ["before", "during0", "during1", "during2", "after"]
    assert conn.session_resets == 1  # the restarted hub could not resume the session
    rec.dispose()
    conn.close()


async def test_one_megabyte_message_round_trips(hub_server: Server) -> None:
    """A 1 MB text and a 1 MB binary message arrive intact."""
    conn = connect_ws(hub_server.url + "/ws")
    rec = Recorder(conn.messages)
    text = "x" * 1_000_000
    blob = os.urandom(1_000_000)
    conn.send(text)
    conn.send(blob)
    assert await rec.count(2) == [text, blob]
    rec.dispose()
    conn.close()


async def test_oversized_inbound_message_is_a_protocol_error_and_nothing_else_is_lost(
    hub_server: Server,
) -> None:
    """A message over max_message_size replaces the link; messages before and after arrive."""
    conn = connect_ws(hub_server.url + "/ws", max_message_size=1000, hub=False)
    rec = Recorder(conn.messages)
    states = Recorder(conn.state)
    await reach(conn, is_connected)
    conn.send("small")
    await rec.count(1)
    conn.send("y" * 5000)  # echoed back too big for us: ProtocolError, link replaced
    await states.until(lambda items: any(isinstance(s, Errored) for s in items))
    err = next(s for s in states.items if isinstance(s, Errored)).error
    assert isinstance(err, ProtocolError)
    await reach(conn, is_connected)
    conn.send("after")
    await rec.until(lambda items: "after" in items)
    assert "small" in rec.items
    states.dispose()
    rec.dispose()
    conn.close()


async def test_close_is_idempotent_and_send_after_close_raises(hub_server: Server) -> None:
    """close() twice is safe; send() and connect() then raise ConnectionClosedError."""
    conn = connect_ws(hub_server.url + "/ws")
    await reach(conn, is_connected)
    conn.close()
    conn.close()
    with pytest.raises(ConnectionClosedError):
        conn.send("x")
    with pytest.raises(ConnectionClosedError):
        conn.connect()
    await settle()


async def test_refused_port_retries_with_typed_error() -> None:
    """An unreachable host gives Errored(TransportError) with a retry, never a raw OSError."""
    async with serve(Hub()) as server:
        port = server.port
    conn = connect_ws(f"ws://127.0.0.1:{port}/rx/ws")
    state = await reach(conn, is_errored)
    assert isinstance(state, Errored)
    assert isinstance(state.error, TransportError) and state.retry_in is not None
    assert "cannot connect" in str(state.error)
    conn.close()


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_handshake_refusals_are_fatal(status: int) -> None:
    """403/404 on the upgrade end in Errored(retry_in=None): no retry. A 401 gets one
    immediate retry (the credentials may have been refreshed); the second is fatal."""
    calls = 0

    async def refuse(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return web.Response(status=status)

    async with app_server(lambda app: app.router.add_get("/ws", refuse)) as base:
        conn = connect_ws(base + "/ws")
        state = await reach(conn, lambda s: is_errored(s) and s.retry_in is None)
        assert isinstance(state, Errored) and state.retry_in is None
        assert isinstance(state.error, TransportError) and state.error.status == status
        await asyncio.sleep(0.1)
        assert calls == (2 if status == 401 else 1)
        conn.close()


async def test_503_with_retry_after_is_honoured() -> None:
    """429/503 with Retry-After: the next attempt waits the advised delay."""

    async def busy(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, headers={"Retry-After": "7"})

    async with app_server(lambda app: app.router.add_get("/ws", busy)) as base:
        conn = connect_ws(base + "/ws")
        state = await reach(conn, is_errored)
        assert isinstance(state, Errored) and state.retry_in == 7.0
        conn.close()


async def test_500_is_retried() -> None:
    """A 5xx answer is retried with backoff."""
    calls = 0

    async def broken(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return web.Response(status=500)

    async with app_server(lambda app: app.router.add_get("/ws", broken)) as base:
        conn = connect_ws(base + "/ws")
        rec = Recorder(conn.state)
        await rec.until(lambda items: sum(isinstance(s, Errored) for s in items) >= 3)
        assert all(s.retry_in is not None for s in rec.items if isinstance(s, Errored))
        rec.dispose()
        conn.close()
    assert calls >= 3


async def test_not_a_websocket_endpoint_is_a_fatal_protocol_error() -> None:
    """A plain 200 answer to the upgrade is a protocol mismatch: fatal ProtocolError."""

    async def page(request: web.Request) -> web.StreamResponse:
        return web.Response(text="hello")

    async with app_server(lambda app: app.router.add_get("/ws", page)) as base:
        conn = connect_ws(base + "/ws")
        state = await reach(conn, is_errored)
        assert isinstance(state, Errored) and state.retry_in is None
        assert isinstance(state.error, ProtocolError)
        conn.close()


@pytest.mark.parametrize(("code", "delay"), [(1012, 2.0), (1013, 5.0)])
async def test_close_1012_1013_reconnects_after_the_advised_delay(code: int, delay: float) -> None:
    """The server closing with 1012/1013 advises a delay before reconnecting."""

    async def close_now(ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.close(code=code)

    async with app_server(ws_route(close_now)) as base:
        conn = connect_ws(base + "/ws", hub=False)
        state = await reach(conn, is_errored)
        assert isinstance(state, Errored) and state.retry_in == delay
        assert isinstance(state.error, ConnectionLost)
        conn.close()


async def test_close_1000_reconnects_with_backoff() -> None:
    """A clean close by the server is a lost link: reconnect (with backoff)."""
    opened = 0

    async def close_now(ws: web.WebSocketResponse, request: web.Request) -> None:
        nonlocal opened
        opened += 1
        await ws.close(code=1000)

    async with app_server(ws_route(close_now)) as base:
        conn = connect_ws(base + "/ws", hub=False)
        rec = Recorder(conn.state)
        await rec.until(lambda items: sum(isinstance(s, Connected) for s in items) >= 3)
        rec.dispose()
        conn.close()
    assert opened >= 3


async def test_server_close_1009_is_a_protocol_error() -> None:
    """A server closing with 1009 (message too big) surfaces as ProtocolError."""

    async def too_big(ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.close(code=1009)

    async with app_server(ws_route(too_big)) as base:
        conn = connect_ws(base + "/ws", hub=False)
        state = await reach(conn, is_errored)
        assert isinstance(state, Errored) and isinstance(state.error, ProtocolError)
        conn.close()


async def test_missing_pong_is_a_lost_link() -> None:
    """A server that never answers pings: the heartbeat declares the link dead."""

    async def deaf(ws: web.WebSocketResponse, request: web.Request) -> None:
        await asyncio.sleep(30)

    async with app_server(ws_route(deaf, autoping=False)) as base:
        conn = connect_ws(base + "/ws", hub=False, heartbeat=0.2)
        state = await reach(conn, is_errored)
        assert isinstance(state, Errored) and isinstance(state.error, ConnectionLost)
        assert "pong" in str(state.error)
        conn.close()


async def test_open_timeout_bounds_the_handshake() -> None:
    """A server that never completes the upgrade: OpenTimeout, retried."""

    async def never(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)
        return web.Response()

    async with app_server(lambda app: app.router.add_get("/ws", never)) as base:
        conn = connect_ws(base + "/ws", open_timeout=0.2)
        state = await reach(conn, is_errored)
        assert isinstance(state, Errored) and isinstance(state.error, OpenTimeout)
        assert state.retry_in is not None
        conn.close()


async def test_malformed_control_frame_from_a_v1_server_is_a_protocol_error() -> None:
    """Garbage where rxconn.v1 expects a tagged frame fails the link with ProtocolError."""

    async def garbage(ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.receive()  # the hello
        await ws.send_str('w{"session": "s1", "last": 0, "resumed": false}')
        await ws.send_str("zzz not a frame")
        await asyncio.sleep(5)

    async with app_server(ws_route(garbage, protocols=("rxconn.v1",))) as base:
        conn = connect_ws(base + "/ws")
        state = await reach(conn, is_errored)
        assert isinstance(state, Errored) and isinstance(state.error, ProtocolError)
        conn.close()


async def test_a_raising_subscriber_does_not_break_the_link(hub_server: Server) -> None:
    """A user's on_next that raises is reported to the loop; the link and others go on."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    try:
        conn = connect_ws(hub_server.url + "/ws")

        def explode(_: object) -> None:
            raise RuntimeError("user bug")

        bad = conn.messages.subscribe(explode)
        rec = Recorder(conn.messages)
        conn.send("a")
        conn.send("b")
        await rec.count(2)
        assert reported and isinstance(reported[0]["exception"], RuntimeError)
        assert isinstance(conn.current_state, Connected)
        bad.dispose()
        rec.dispose()
        conn.close()
    finally:
        loop.set_exception_handler(None)


async def test_invalid_urls_raise_typed_errors() -> None:
    """Bad URLs are refused when the transport is built, with InvalidURL (a ValueError)."""
    for url in ("ftp://host/x", "ws:///nohost", "not a url"):
        with pytest.raises(InvalidURL):
            rxconn.websocket(url)
    assert rxconn.websocket("https://example.com/rx/ws").url == "wss://example.com/rx/ws"


async def test_credentials_never_appear_in_errors() -> None:
    """User info and query strings are stripped from error messages."""
    async with serve(Hub()) as server:
        port = server.port
    conn = connect_ws(f"ws://user:secret@127.0.0.1:{port}/rx/ws?token=hunter2")
    state = await reach(conn, is_errored)
    assert isinstance(state, Errored)
    text = str(state.error) + repr(state.error)
    assert "secret" not in text and "hunter2" not in text
    conn.close()


async def test_user_supplied_session_is_never_closed(hub_server: Server) -> None:
    """rxconn uses but never closes an aiohttp.ClientSession the user passed in."""
    async with aiohttp.ClientSession() as http:
        conn = rxconn.Connection(
            rxconn.websocket(hub_server.url + "/ws", session=http), backoff=FAST
        )
        rec = Recorder(conn.messages)
        conn.send("x")
        await rec.count(1)
        rec.dispose()
        conn.close()
        await drain()
        assert not http.closed


# ----------------------------------------------- another implementation


async def test_interop_with_the_websockets_package() -> None:
    """Echo, keepalive pings and a server-initiated close against a `websockets` server."""
    from websockets.asyncio.server import ServerConnection
    from websockets.asyncio.server import serve as ws_serve

    closes = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal closes
        async for message in ws:
            if message == "bye":
                closes += 1
                await ws.close(1001, "going away")
                return
            await ws.send(message)

    async with ws_serve(handler, "127.0.0.1", 0, ping_interval=0.1, ping_timeout=0.5) as server:
        port = server.sockets[0].getsockname()[1]
        conn = connect_ws(f"ws://127.0.0.1:{port}/", hub=False, heartbeat=0.1)
        rec = Recorder(conn.messages)
        states = Recorder(conn.state)
        conn.send("hello")
        conn.send(b"\x00\x01")
        assert await rec.count(2) == ["hello", b"\x00\x01"]
        await asyncio.sleep(0.5)  # several server pings answered, several of ours ponged
        assert isinstance(conn.current_state, Connected)
        conn.send("bye")
        await states.until(lambda items: sum(isinstance(s, Connected) for s in items) >= 2)
        conn.send("again")
        await rec.until(lambda items: "again" in items)
        assert closes == 1
        rec.dispose()
        states.dispose()
        conn.close()
        await drain()


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition of another process's view (the hub's registry), bounded."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_two_connections_can_share_one_transport(hub_server: Server) -> None:
    """A transport is a description: two connections built on one both connect and work."""
    shared = rxconn.websocket(hub_server.url + "/ws")
    one, two = rxconn.Connection(shared, backoff=FAST), rxconn.Connection(shared, backoff=FAST)
    rec_one, rec_two = Recorder(one.messages), Recorder(two.messages)
    one.send("to one")
    two.send("to two")
    assert await rec_one.count(1) == ["to one"]
    assert await rec_two.count(1) == ["to two"]
    assert len(hub_server.hub.live_sessions) == 2
    for r in (rec_one, rec_two):
        r.dispose()
    one.close()
    two.close()
