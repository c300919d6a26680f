"""The HTTP transport (SSE + POST) against the hub, custom aiohttp apps and aiohttp-sse."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web

import rxconn
from rxconn import (
    ConnectionClosedError,
    Errored,
    InvalidURL,
    MessageTooLarge,
    ProtocolError,
    TransportError,
)
from rxconn.aio import TASKS
from rxconn.server import Hub, Server, serve
from tests.helpers import (
    Recorder,
    app_server,
    connection_over,
    hub_in_app,
    is_connected,
    is_errored,
    reach,
    settle,
)


pytestmark = pytest.mark.asyncio


def connect_http(url: str, **kw: object) -> rxconn.Connection:
    options = ("hub", "event_types", "open_timeout", "max_batch", "max_message_size")
    return connection_over(rxconn.http, url, options, **kw)


async def test_echo_through_sse_and_post(hub_server: Server) -> None:
    """Text (also with CR and newlines) and binary payloads round-trip exactly, in order."""
    conn = connect_http(hub_server.url + "/events")
    rec = Recorder(conn.messages)
    sent: list[str | bytes] = ["plain", "two\nlines", "cr\r\nlf\r", b"\x00\xffbin", "", "ünï"]
    for payload in sent:
        conn.send(payload)
    assert await rec.count(len(sent)) == sent
    rec.dispose()
    conn.close()


async def test_many_concurrent_sends_keep_their_order(hub_server: Server) -> None:
    """Sends from several coroutines at once arrive in the order send() was called."""
    conn = connect_http(hub_server.url + "/events")
    rec = Recorder(conn.messages)
    order: list[str] = []

    async def producer(name: str) -> None:
        for i in range(100):
            payload = f"{name}{i}"
            order.append(payload)
            conn.send(payload)
            if i % 7 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(producer(n) for n in "abcd"))
    assert await rec.count(400) == order
    rec.dispose()
    conn.close()


async def test_many_interest_sources_make_one_hub_session(hub_server: Server) -> None:
    """Many connect()/subscribe at once: one hub session, one SSE stream."""
    sessions = Recorder(hub_server.hub.sessions)
    conn = connect_http(hub_server.url + "/events")
    handles = [conn.connect() for _ in range(10)]
    recs = [Recorder(conn.messages) for _ in range(5)]
    conn.send("x")
    await recs[0].count(1)
    assert len(sessions.items) == 1
    assert len(hub_server.hub.links) == 1
    for h in handles:
        h.dispose()
    for r in recs:
        r.dispose()
    conn.close()
    sessions.dispose()


async def test_dispose_closes_streams_and_leaves_no_task() -> None:
    """After the last dispose: no rxconn task; the hub notices the stream is gone."""
    hub = Hub(echo=True, ping_interval=0.05, session_grace=0.0)
    async with serve(hub) as server:
        conn = connect_http(server.url + "/events")
        rec = Recorder(conn.messages)
        conn.send("x")
        await rec.count(1)
        rec.dispose()
        await settle()
        assert TASKS.running() == []
        await _until(lambda: not hub.live_sessions)


async def test_close_ends_the_hub_session_promptly(hub_server: Server) -> None:
    """close() posts the end of the session: the hub forgets it at once."""
    conn = connect_http(hub_server.url + "/events")
    rec = Recorder(conn.messages)
    conn.send("x")
    await rec.count(1)
    [session] = hub_server.hub.live_sessions
    ended = Recorder(session.messages)
    conn.close()
    await ended.until(lambda _: ended.completed)
    assert hub_server.hub.live_sessions == []
    with pytest.raises(ConnectionClosedError):
        conn.send("late")


async def test_rapid_connect_dispose_cycles(hub_server: Server) -> None:
    """100 quick interest cycles: one session, never two links at once, still working after."""
    hub = hub_server.hub
    sessions = Recorder(hub.sessions)
    conn = connect_http(hub_server.url + "/events")
    peak = 0
    for i in range(100):
        handle = conn.connect()
        if i % 25 == 0:
            await reach(conn, is_connected)
        await asyncio.sleep(0)
        peak = max(peak, len(hub.links))
        handle.dispose()
    rec = Recorder(conn.messages)
    conn.send("still works")
    await rec.count(1)
    assert peak <= 1
    assert len(sessions.items) == 1
    rec.dispose()
    conn.close()
    sessions.dispose()


async def test_dispose_while_the_server_delays_the_response() -> None:
    """Disposing before the response headers arrive aborts the request cleanly."""
    entered = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        entered.set()
        await asyncio.sleep(30)
        return web.Response()

    async with app_server(lambda app: app.router.add_get("/events", slow)) as base:
        conn = connect_http(base + "/events")
        handle = conn.connect()
        await asyncio.wait_for(entered.wait(), 5)
        handle.dispose()
        await settle()
        assert TASKS.running() == []


async def test_refused_500_and_404() -> None:
    """Refused and 500 are retried with typed errors; 404 is fatal."""
    async with serve(Hub()) as server:
        port = server.port
    conn = connect_http(f"http://127.0.0.1:{port}/rx/events")
    state = await reach(conn, is_errored)
    assert isinstance(state, Errored) and isinstance(state.error, TransportError)
    assert state.retry_in is not None
    conn.close()

    async def fail(request: web.Request) -> web.StreamResponse:
        return web.Response(status=int(request.query["status"]))

    async with app_server(lambda app: app.router.add_get("/events", fail)) as base:
        for status, fatal in ((500, False), (503, False), (404, True), (401, True), (204, True)):
            conn = connect_http(f"{base}/events?status={status}")
            state = await reach(conn, is_errored)
            assert isinstance(state, Errored) and isinstance(state.error, TransportError)
            assert state.error.status == status
            assert (state.retry_in is None) is fatal, status
            conn.close()


async def test_wrong_content_type_is_a_fatal_protocol_error() -> None:
    """A 200 that is not text/event-stream is refused with ProtocolError."""

    async def page(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>", content_type="text/html")

    async with app_server(lambda app: app.router.add_get("/events", page)) as base:
        conn = connect_http(base + "/events")
        state = await reach(conn, is_errored)
        assert isinstance(state, Errored) and isinstance(state.error, ProtocolError)
        assert state.retry_in is None
        conn.close()


async def test_failed_post_keeps_payloads_and_delivers_them_after_reconnect() -> None:
    """A POST that fails (500) replaces the link; the payload stays first and arrives once."""
    hub = Hub(echo=True, ping_interval=1.0)
    failures = 1

    @web.middleware
    async def flaky(request: web.Request, handler: Callable[..., object]) -> web.StreamResponse:
        nonlocal failures
        if request.method == "POST" and failures:
            body = await request.read()
            if b'"t"' in body:
                failures -= 1
                return web.Response(status=500)
        return await handler(request)  # type: ignore[no-any-return, misc]

    async with hub_in_app(hub, web.Application(middlewares=[flaky])) as base:
        conn = connect_http(base + "/events")
        rec = Recorder(conn.messages)
        states = Recorder(conn.state)
        await reach(conn, is_connected)
        conn.send("first")
        conn.send("second")
        assert await rec.count(2) == ["first", "second"]
        assert any(isinstance(s, Errored) for s in states.items)
        states.dispose()
        rec.dispose()
        conn.close()
        await settle()


async def test_resume_after_the_stream_is_cut_has_no_gap_and_no_duplicate(
    hub_server: Server,
) -> None:
    """The hub ends the SSE stream mid-flow: the client resumes (Last-Event-ID), loses nothing."""
    hub = hub_server.hub
    conn = connect_http(hub_server.url + "/events")
    rec = Recorder(conn.messages)
    await reach(conn, is_connected)
    [session] = hub.live_sessions
    for i in range(50):
        session.send(f"n{i}")
    await rec.count(10)
    assert session.link is not None
    session.link.close(1000, "cut for the test")  # the stream ends mid-flow
    for i in range(50, 100):
        session.send(f"n{i}")
    await rec.count(100)
    assert rec.items == [f"n{i}" for i in range(100)]
    assert hub.live_sessions == [session]
    rec.dispose()
    conn.close()


async def test_retried_post_is_applied_once(hub_server: Server) -> None:
    """The same numbered batch POSTed twice is delivered once (de-duplicated by seq)."""
    hub = hub_server.hub
    conn = connect_http(hub_server.url + "/events")
    rec = Recorder(conn.messages)
    conn.send("hello")
    await rec.count(1)
    [session] = hub.live_sessions
    got = Recorder(session.messages)
    body = json.dumps(
        {"session": session.id, "key": session.key, "seq": 2, "messages": [{"t": "once"}]}
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(
                hub_server.url + "/messages",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as resp:
                assert resp.status == 200
                assert (await resp.json())["last"] == 2
    assert got.items == ["once"]
    got.dispose()
    rec.dispose()
    conn.close()


async def test_hub_rejects_bad_posts_with_clear_4xx(hub_server: Server) -> None:
    """Malformed batch 400, wrong content type 415, unknown session 410, gap 409, huge 413."""
    conn = connect_http(hub_server.url + "/events")
    rec = Recorder(conn.messages)
    conn.send("hello")
    await rec.count(1)
    [session] = hub_server.hub.live_sessions
    url = hub_server.url + "/messages"
    json_headers = {"Content-Type": "application/json"}
    cases: list[tuple[bytes, dict[str, str], int]] = [
        (b"{not json", json_headers, 400),
        (b'{"session": 5}', json_headers, 400),
        (json.dumps({"session": session.id, "messages": [{"x": 1}]}).encode(), json_headers, 400),
        (b'{"session": "s"}', {"Content-Type": "text/plain"}, 415),
        (json.dumps({"session": "nope", "seq": 1, "messages": []}).encode(), json_headers, 410),
        (
            json.dumps(
                {"session": session.id, "key": session.key, "seq": 9, "messages": [{"t": "x"}]}
            ).encode(),
            json_headers,
            409,
        ),
        (  # the right id with a wrong (or no) key is not the session: 410, nothing changes
            json.dumps({"session": session.id, "seq": 2, "messages": [{"t": "x"}]}).encode(),
            json_headers,
            410,
        ),
    ]
    async with aiohttp.ClientSession() as http:
        for body, headers, status in cases:
            async with http.post(url, data=body, headers=headers) as resp:
                assert resp.status == status, body
                assert "error" in await resp.json()
        huge = b'{"session": "s", "messages": [{"t": "' + b"x" * (17 * 1024 * 1024) + b'"}]}'
        async with http.post(url, data=io.BytesIO(huge), headers=json_headers) as resp:
            assert resp.status == 413
    conn.send("still fine")
    await rec.count(2)
    rec.dispose()
    conn.close()


async def test_send_of_a_too_large_payload_raises_at_once(hub_server: Server) -> None:
    """A payload over the transport's limit raises MessageTooLarge; nothing queues behind it."""
    conn = connect_http(hub_server.url + "/events", max_message_size=1000)
    with pytest.raises(MessageTooLarge):
        conn.send("x" * 1001)
    with pytest.raises(ValueError):
        conn.send(os.urandom(2000))
    conn.send("ok")
    assert conn.buffered == 1
    conn.close()


async def test_browser_style_resume_with_last_event_id(hub_server: Server) -> None:
    """A plain EventSource-like client resumes its session from Last-Event-ID; unknown → fresh."""
    hub = hub_server.hub
    url = hub_server.url + "/events"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            first = await resp.content.readuntil(b"\n\n")
        hello_line = [ln for ln in first.decode().splitlines() if ln.startswith("data:")][0]
        hello = json.loads(hello_line[5:])
        session = hub.session(hello["session"])
        assert session is not None and hello["resumed"] is False
        assert hello["key"] == session.key  # a page may POST as the session with it
        event_id = [ln for ln in first.decode().splitlines() if ln.startswith("id:")][0][3:]
        assert event_id.strip() == f"{session.id}:0:{session.resume_token}"
        session.send("missed-1")
        session.send("missed-2")
        await asyncio.sleep(0)
        async with http.get(url, headers={"Last-Event-ID": event_id.strip()}) as resp:
            text = b""
            while text.count(b"\n\n") < 3:
                text += await resp.content.readany()
        assert b'"resumed": true' in text and b"missed-1" in text and b"missed-2" in text
        async with http.get(url, headers={"Last-Event-ID": "unknown:3"}) as resp:
            fresh = await resp.content.readuntil(b"\n\n")
        assert b'"resumed": false' in fresh


async def test_origin_policy_and_cors(hub_server: Server) -> None:
    """Same-origin and listed origins pass (with CORS headers); other origins get 403."""
    hub = Hub(allowed_origins=["https://app.example"])
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        url = server.url + "/messages"
        async with http.options(url, headers={"Origin": "https://app.example"}) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
        async with http.options(url, headers={"Origin": "https://evil.example"}) as resp:
            assert resp.status == 403
        async with http.get(server.url + "/ws", headers={"Origin": "https://evil.example"}) as resp:
            assert resp.status == 403


async def test_invalid_url_raises() -> None:
    """A non-HTTP URL is refused when the transport is built."""
    with pytest.raises(InvalidURL):
        rxconn.http("ws://host/rx/events")


# ----------------------------------------------------- third-party SSE server


async def test_receive_only_from_aiohttp_sse_with_crlf_comments_retry_and_resume() -> None:
    """Against aiohttp-sse: CRLF lines, comments, retry:, event types, Last-Event-ID resume."""
    from aiohttp_sse import sse_response

    seen_last_ids: list[str | None] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        seen_last_ids.append(request.headers.get("Last-Event-ID"))
        start = int(request.headers.get("Last-Event-ID") or 0)
        async with sse_response(request, sep="\r\n") as resp:
            await resp.send("", retry=50)
            for i in range(start + 1, start + 4):
                await resp.send(f"line {i}", id=str(i))
                await resp.write(b": keep-alive comment\r\n\r\n")
                await resp.send(f"other {i}", event="other")
        return resp

    async with app_server(lambda app: app.router.add_get("/events", stream)) as base:
        conn = connect_http(base + "/events", hub=False)
        rec = Recorder(conn.messages)
        states = Recorder(conn.state)
        conn.send("kept")  # receive-only: buffered, never acknowledged
        # each connection starts with the retry event, whose data is "" (dispatched, per spec)
        await rec.until(lambda items: sum(1 for m in items if m) >= 6)
        assert [m for m in rec.items if m][:6] == [f"line {i}" for i in range(1, 7)]
        assert seen_last_ids[:2] == [None, "3"]
        errored = [s for s in states.items if isinstance(s, Errored)]
        assert errored and errored[0].retry_in == 0.05  # the server's retry: 50 ms
        assert conn.buffered == 1
        states.dispose()
        rec.dispose()
        assert conn.close() == ["kept"]


async def test_event_types_none_delivers_every_event() -> None:
    """event_types=None delivers the data of every dispatched event."""

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"event: a\ndata: 1\n\ndata: 2\n\n: comment\n\nevent: b\ndata: 3\n\n")
        await asyncio.sleep(30)
        return resp

    async with app_server(lambda app: app.router.add_get("/events", stream)) as base:
        conn = connect_http(base + "/events", hub=False, event_types=None)
        rec = Recorder(conn.messages)
        assert await rec.count(3) == ["1", "2", "3"]
        rec.dispose()
        conn.close()


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll the hub's registry (another component's view), bounded."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_big_batches_are_split_when_the_server_limits_bodies() -> None:
    """A hub embedded with a 64 KiB body limit: batches split on 413, nothing is lost."""
    hub = Hub(echo=True, ping_interval=1.0)
    async with hub_in_app(hub, web.Application(client_max_size=64 * 1024)) as base:
        conn = connect_http(base + "/events")
        rec = Recorder(conn.messages)
        states = Recorder(conn.state)
        await reach(conn, is_connected)
        sent = [f"{i:05d}" + "x" * 1000 for i in range(300)]  # ~300 KB in one burst
        for payload in sent:
            conn.send(payload)
        assert await rec.count(300) == sent
        assert not any(isinstance(s, Errored) for s in states.items)
        states.dispose()
        rec.dispose()
        conn.close()


async def test_a_two_megabyte_message_posts_under_serve(hub_server: Server) -> None:
    """serve() gives the hub its own body limit (16 MiB), not aiohttp's 1 MiB default."""
    conn = connect_http(hub_server.url + "/events")
    rec = Recorder(conn.messages)
    big = "y" * (2 * 1024 * 1024)
    conn.send(big)
    assert await rec.count(1) == [big]
    rec.dispose()
    conn.close()


async def test_transport_reprs_hide_credentials() -> None:
    """repr() of a transport names the endpoint without user info or query."""
    assert repr(rxconn.http("http://u:p@h/e?t=1")) == "http('http://h/e')"
    assert repr(rxconn.websocket("ws://u:p@h/ws?k=2")) == "websocket('ws://h/ws')"
    both = rxconn.fallback(rxconn.websocket("ws://h/ws"), rxconn.http("http://h/e"))
    assert "fallback(websocket('ws://h/ws'), http('http://h/e')" in repr(both)
