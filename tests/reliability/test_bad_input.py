"""Bad input sweep: every kind of garbage a peer can send gets a typed error and loses nothing.

Malformed ``rxconn.v1`` frames, invalid UTF-8, garbage and broken frames on the WebSocket,
oversized messages either way, truncated and malformed SSE, wrong content types, 4xx/5xx on
every hub endpoint, and servers that accept and drop at once. For each: the state shows an
``Errored`` whose error is the right ``RxconnError`` subclass, with ``retry_in`` telling
whether rxconn goes on, and what was accepted before the bad input is delivered (what the
client had received stays received; what it had sent is delivered or handed back by
``close()``), never twice.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import rxconn
from rxconn import (
    Backoff,
    Connected,
    ConnectionLost,
    Errored,
    ProtocolError,
    RxconnError,
    SessionExpired,
    TransportError,
)
from rxconn.server import Hub, serve
from tests.helpers import Recorder, reach
from tests.proxy import FaultProxy
from tests.reliability._chaos import HubLog, StateLog, numbered, report
from tests.reliability._servers import (
    BINARY,
    PING,
    PONG,
    RawServer,
    accept_websocket,
    aiohttp_server,
    frame,
    hold,
    read_frame,
    read_hello,
    sse_response,
    text,
    until_close_frame,
    welcome,
)


pytestmark = pytest.mark.asyncio

FAST = Backoff(initial=0.05, max_delay=0.2, jitter=0.0)


def errored(states: StateLog) -> list[Errored]:
    return [s for s in states.states if isinstance(s, Errored)]


async def first_error(conn: rxconn.Connection, timeout: float = 5.0) -> Errored:
    """The first Errored state (even if a retry replaced it at once)."""
    states = Recorder(conn.state)
    try:
        await states.until(lambda items: any(isinstance(s, Errored) for s in items), timeout)
    finally:
        states.dispose()
    state = next(s for s in states.items if isinstance(s, Errored))
    assert isinstance(state.error, RxconnError)
    return state


# --------------------------------------------------------------- WebSocket frames

V1 = "rxconn.v1"
WS_CASES: dict[str, tuple[str | None, bytes]] = {
    # name: (subprotocol the server picks, what it sends after two good messages)
    "v1 unknown frame tag": (V1, text("zzz")),
    "v1 malformed ack": (V1, text("a-5")),
    "v1 empty text frame": (V1, text("")),
    "v1 hello from the server": (V1, text('h{"session": null, "last": 0}')),
    "v1 welcome that is not JSON": (V1, text("w{oops")),
    "v1 ack with 5,000 digits": (V1, text("a" + "9" * 5000)),
    "v1 invalid UTF-8 in a text frame": (V1, text(b"m caf\xc3\x28")),
    "plain invalid UTF-8 in a text frame": (None, text(b"caf\xc3\x28")),
    "plain garbage bytes": (None, b"GARBAGE\r\n\r\n\x00\xff"),
    "plain reserved opcode": (None, frame(0x3, b"x")),
    "plain continuation without a start": (None, frame(0x0, b"x")),
    "plain ping longer than 125 bytes": (None, frame(PING, b"p" * 200)),
    "plain fragmented ping": (None, frame(PING, b"p", fin=False)),
    "plain oversized text frame": (None, text("y" * 5000)),
    "plain length header of 2**62 bytes": (None, frame(BINARY, b"", length=1 << 62)),
}


def data_frame(protocol: str | None, payload: str) -> bytes:
    return text(("m" if protocol == V1 else "") + payload)


@pytest.mark.parametrize("case", list(WS_CASES))
async def test_malformed_websocket_input_is_a_protocol_error_and_loses_nothing(
    case: str,
) -> None:
    """Two good messages, then the bad input: ProtocolError, retried; the next link resumes.

    With rxconn.v1 the next hello asks for what follows message 2, so the third message
    arrives once; nothing received before the bad input is lost or repeated.
    """
    protocol, bad = WS_CASES[case]
    hellos: list[dict[str, Any]] = []

    async def script(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        await accept_websocket(reader, writer, protocol)
        if protocol == V1:
            hello = await read_hello(reader)
            hellos.append(hello)
            writer.write(welcome("s1", 0, resumed=number > 1))
        if number == 1:
            writer.write(data_frame(protocol, "one") + data_frame(protocol, "two") + bad)
        else:
            writer.write(data_frame(protocol, "three"))
        await writer.drain()
        await until_close_frame(reader, writer)

    async with RawServer(script) as server:
        conn = rxconn.Connection(
            rxconn.websocket(
                server.url + "/ws",
                hub=protocol == V1,
                heartbeat=None,
                max_message_size=1000,
                open_timeout=2.0,
            ),
            backoff=FAST,
            idle_timeout=None,
        )
        states = StateLog()
        state_sub = conn.state.subscribe(states.on_state)
        received = Recorder(conn.messages)
        failure = await first_error(conn)
        await received.until(lambda items: "three" in items)
        report(f"bad websocket input: {case}", error=repr(failure.error))
        assert isinstance(failure.error, ProtocolError), failure.error
        assert failure.retry_in is not None  # one bad message replaces the link, no more
        assert received.items == ["one", "two", "three"]
        if protocol == V1:
            assert [h["last"] for h in hellos] == [0, 2]
            assert hellos[1]["session"] == "s1"
            assert hellos[1]["key"] == "key-of-s1"  # the secret of the session it resumes
        received.dispose()
        state_sub.dispose()
        conn.close()


async def garbage_status_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"\x00\x01 this is not HTTP\r\n\r\n")


async def wrong_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n"
    )


async def bad_welcome(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await accept_websocket(reader, writer, V1)
    await read_hello(reader)
    writer.write(text('w{"session": 42}'))


async def huge_welcome(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await accept_websocket(reader, writer, V1)
    await read_hello(reader)
    writer.write(text('w{"session": "s1", "resumed": true, "last": ' + "9" * 5000 + "}"))


async def data_before_welcome(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await accept_websocket(reader, writer, V1)
    await read_hello(reader)
    writer.write(text("mhello"))


async def refusal_410(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await accept_websocket(reader, writer, V1)
    await read_hello(reader)
    writer.write(text('x{"status": 410, "reason": "who are you"}'))


async def refusal_503(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await accept_websocket(reader, writer, V1)
    await read_hello(reader)
    writer.write(text('x{"status": 503, "reason": "busy"}'))


async def dropped_before_welcome(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """A hub killed between the hello and the welcome: the TCP connection is reset."""
    await accept_websocket(reader, writer, V1)
    await read_hello(reader)
    writer.transport.abort()


async def eof_before_welcome(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A hub that goes away between the hello and the welcome without a close frame."""
    await accept_websocket(reader, writer, V1)
    await read_hello(reader)
    writer.close()


HANDSHAKE_CASES: dict[str, tuple[Callable[..., Awaitable[None]], type[Exception], bool]] = {
    # name: (script, expected error class, fatal?)
    "garbage instead of an HTTP answer": (garbage_status_line, TransportError, False),
    "101 with a wrong Sec-WebSocket-Accept": (wrong_accept, ProtocolError, True),
    # A welcome we cannot read comes from a broken hub: retried with backoff, not fatal.
    "v1 welcome with a bad session": (bad_welcome, ProtocolError, False),
    "v1 welcome with a 5,000-digit number": (huge_welcome, ProtocolError, False),
    "v1 data before the welcome": (data_before_welcome, ProtocolError, True),
    "v1 refusal 410": (refusal_410, SessionExpired, False),
    "v1 refusal 503": (refusal_503, TransportError, False),
    # A link lost before the welcome is retried (a hub killed mid-handshake), never fatal.
    "v1 connection reset before the welcome": (dropped_before_welcome, ConnectionLost, False),
    "v1 connection closed before the welcome": (eof_before_welcome, ConnectionLost, False),
}


def handshake_client(server: RawServer) -> rxconn.Connection:
    """A client of ``server``'s scripted WebSocket, with no heartbeat and a short open."""
    return rxconn.Connection(
        rxconn.websocket(server.url + "/ws", heartbeat=None, open_timeout=2.0), backoff=FAST
    )


@pytest.mark.parametrize("case", list(HANDSHAKE_CASES))
async def test_broken_websocket_handshakes_get_typed_errors(case: str) -> None:
    """A broken upgrade or hello/welcome: the right error; fatal ones stop, the rest retry.

    A payload sent meanwhile is never lost: close() hands it back.
    """
    script, expected, fatal = HANDSHAKE_CASES[case]

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await script(reader, writer)
        if writer.is_closing():
            return  # the script dropped the connection
        await writer.drain()
        await until_close_frame(reader, writer)

    async with RawServer(run) as server:
        conn = handshake_client(server)
        conn.send("kept")
        failure = await first_error(conn)
        report(f"bad websocket handshake: {case}", error=repr(failure.error))
        assert isinstance(failure.error, expected), failure.error
        assert (failure.retry_in is None) is fatal
        if not fatal:
            await reach(conn, lambda s: isinstance(s, rxconn.Connecting) and s.attempt >= 2)
        assert conn.close() == ["kept"]


async def test_a_ping_before_the_welcome_is_answered_and_the_link_opens() -> None:
    """A busy hub's heartbeat may ping before its welcome (its Redis claim is slow): the
    client answers the ping and keeps waiting for the welcome; it is no protocol error."""
    pongs: list[tuple[int, bytes]] = []

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await accept_websocket(reader, writer, V1)
        await read_hello(reader)
        writer.write(frame(PING, b"busy"))
        await writer.drain()
        pongs.append(await read_frame(reader))
        writer.write(welcome())
        await writer.drain()
        await until_close_frame(reader, writer)

    async with RawServer(run) as server:
        conn = handshake_client(server)
        await reach(conn, lambda s: isinstance(s, Connected))
        assert pongs == [(PONG, b"busy")]
        conn.close()


# --------------------------------------------------------------------------- SSE


class SseScript:
    """An SSE endpoint (and a hub-like POST endpoint) whose answers a test scripts per request."""

    def __init__(self, *answers: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.answers = answers
        self.last_event_ids: list[str] = []

    async def events(self, request: web.Request) -> web.StreamResponse:
        self.last_event_ids.append(request.headers.get("Last-Event-ID", ""))
        number = min(len(self.last_event_ids), len(self.answers)) - 1
        return await self.answers[number](request)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"last": 0})

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/events", self.events)
        app.router.add_post("/messages", self.messages)


def stream(*chunks: bytes, end: bool = False, **headers: str) -> Callable[..., Any]:
    """An answer writing ``chunks`` as text/event-stream, then ending (end) or holding."""

    async def answer(request: web.Request) -> web.StreamResponse:
        resp = await sse_response(request, **headers)
        for chunk in chunks:
            await resp.write(chunk)
        if not end:
            await hold(resp)
        return resp

    return answer


HUB = {"X-Rxconn": "v1"}


def session_event(resumed: bool = False, post: str = "/messages") -> bytes:
    hello: dict[str, Any] = {"session": "s1", "post": post, "last": 0, "resumed": resumed}
    if not resumed:
        hello["key"] = "key-of-s1"
    return f"event: session\nid: s1:0\ndata: {json.dumps(hello)}\n\n".encode()


GOOD_HUB_START = session_event() + b"id: s1:1\ndata: one\n\nid: s1:2\ndata: two\n\n"
RESUME = stream(session_event(resumed=True), b"id: s1:3\ndata: three\n\n", **HUB)

SSE_CASES: dict[str, tuple[bytes, type[Exception]]] = {
    # name: (what the hub-like server sends after messages 1 and 2, expected error)
    "event stream truncated mid-event": (b"id: s1:3\ndata: thr", ConnectionLost),
    "event id of another session": (b"id: s2:3\ndata: x\n\n", ProtocolError),
    "event id that is not a hub id": (b"id: 3\ndata: x\n\n", ProtocolError),
    "gap in the event ids": (b"id: s1:5\ndata: x\n\n", ProtocolError),
    "malformed base64 in a binary event": (
        b"event: rxconn.binary\nid: s1:3\ndata: %%%\n\n",
        ProtocolError,
    ),
    "malformed JSON in a text event": (b"event: rxconn.text\nid: s1:3\ndata: {\n\n", ProtocolError),
    "invalid UTF-8 in an event id": (b"id: s1:\xff3\ndata: x\n\n", ProtocolError),
    "event id with 5,000 digits": (b"id: s1:" + b"9" * 5000 + b"\ndata: x\n\n", ProtocolError),
}


@pytest.mark.parametrize("case", list(SSE_CASES))
async def test_bad_hub_event_stream_fails_the_link_and_resumes_without_loss(case: str) -> None:
    """Hub mode (X-Rxconn: v1): messages 1, 2, then the bad input: typed error, retried;
    the next GET resumes with Last-Event-ID s1:2 and message 3 arrives once."""
    bad, expected = SSE_CASES[case]
    script = SseScript(stream(GOOD_HUB_START, bad, end=True, **HUB), RESUME)
    async with aiohttp_server(script.routes) as base:
        conn = rxconn.Connection(
            rxconn.http(base + "/events", open_timeout=2.0), backoff=FAST, idle_timeout=None
        )
        received = Recorder(conn.messages)
        failure = await first_error(conn)
        try:
            await received.until(lambda items: "three" in items, timeout=3.0)
        finally:
            report(
                f"bad event stream: {case}",
                error=repr(failure.error),
                received=received.items,
                last_event_ids=script.last_event_ids,
            )
            received.dispose()
            conn.close()
        assert isinstance(failure.error, expected), failure.error
        assert failure.retry_in is not None
        assert received.items == ["one", "two", "three"]
        assert script.last_event_ids == ["", "s1:2"]


HANDSHAKE_SSE_CASES: dict[str, tuple[Callable[..., Any], bool]] = {
    # name: (the server's answer, fatal?)
    "hub stream whose first event is not the session": (
        stream(b"id: s1:1\ndata: one\n\n", **HUB),
        True,
    ),
    "hub session event naming a POST URL on another origin": (
        stream(session_event(post="http://other.example/messages"), **HUB),
        True,
    ),
    "content type text/html": (stream(b"<html></html>", content_type="text/html"), True),
    "content type application/json": (stream(b"{}", content_type="application/json"), True),
    "content type text/plain": (stream(b"data: x\n\n", content_type="text/plain"), True),
    # A greeting that cannot be read (absurd numbers included) comes from a broken hub:
    # retried with backoff, never a permanent stop that freezes the outbox.
    "hub session event that is not JSON": (
        stream(b"event: session\ndata: {oops\n\n", **HUB),
        False,
    ),
    "hub session event without a post URL": (
        stream(b'event: session\ndata: {"session": "s1", "last": 0}\n\n', **HUB),
        False,
    ),
    "hub session event with a 5,000-digit number": (
        stream(
            b'event: session\ndata: {"session": "s1", "post": "/messages", "resumed": true, '
            b'"last": ' + b"9" * 5000 + b"}\n\n",
            **HUB,
        ),
        False,
    ),
}


@pytest.mark.parametrize("case", list(HANDSHAKE_SSE_CASES))
async def test_wrong_content_type_or_session_event_is_a_protocol_error(case: str) -> None:
    """Not an event stream, or not the hub's greeting: ProtocolError, not retried (a
    protocol mismatch); a greeting that cannot be read: retried. Either way what was sent
    meanwhile is handed back by close()."""
    answer, fatal = HANDSHAKE_SSE_CASES[case]
    script = SseScript(answer)
    async with aiohttp_server(script.routes) as base:
        conn = rxconn.Connection(rxconn.http(base + "/events", open_timeout=2.0), backoff=FAST)
        conn.send("kept")
        failure = await first_error(conn)
        report(f"bad event stream start: {case}", error=repr(failure.error))
        assert isinstance(failure.error, ProtocolError), failure.error
        assert (failure.retry_in is None) is fatal
        if fatal:
            assert len(script.last_event_ids) == 1  # no retry
        else:
            await reach(conn, lambda s: isinstance(s, rxconn.Connecting) and s.attempt >= 2)
        assert conn.close() == ["kept"]


async def test_sse_retry_with_400_digits_is_capped_advice_not_a_crash() -> None:
    """``retry:`` with 400 digits (OverflowError as a float) is capped server advice: the
    lost stream is retried (after at most an hour), it does not stop the connection."""
    script = SseScript(stream(b"retry: " + b"9" * 400 + b"\n\ndata: one\n\n", end=True))
    async with aiohttp_server(script.routes) as base:
        conn = rxconn.Connection(rxconn.http(base + "/events", hub=False), backoff=FAST)
        received = Recorder(conn.messages)
        failure = await first_error(conn)
        report("sse retry: 400 digits", error=repr(failure.error), retry_in=failure.retry_in)
        assert isinstance(failure.error, ConnectionLost), failure.error
        assert failure.retry_in == 3600.0
        assert received.items == ["one"]
        received.dispose()
        conn.close()


async def test_sse_ping_comments_are_not_message_bytes() -> None:
    """A quiet healthy stream of ping comments (far more bytes than max_message_size in all)
    never fails as "event too large": comments belong to no event."""
    pings = b": ping\n\n" * 2000  # 16,000 bytes of comments, max_message_size is 1,000
    script = SseScript(stream(pings, b"data: after\n\n"))
    async with aiohttp_server(script.routes) as base:
        conn = rxconn.Connection(
            rxconn.http(base + "/events", hub=False, max_message_size=1000), backoff=FAST
        )
        states = StateLog()
        state_sub = conn.state.subscribe(states.on_state)
        received = Recorder(conn.messages)
        await received.count(1)
        assert received.items == ["after"]
        assert errored(states) == []
        received.dispose()
        state_sub.dispose()
        conn.close()


async def test_plain_sse_truncated_event_is_never_dispatched_and_resumes() -> None:
    """Any SSE server: an event cut before its blank line is dropped, the link is lost
    (ConnectionLost, retried) and the next GET sends Last-Event-ID of the last full event."""
    script = SseScript(
        stream(b"id: 1\ndata: e1\n\nid: 2\ndata: e2\n\nid: 3\ndata: par", end=True),
        stream(b"id: 3\ndata: e3\n\n"),
    )
    async with aiohttp_server(script.routes) as base:
        conn = rxconn.Connection(rxconn.http(base + "/events", hub=False), backoff=FAST)
        received = Recorder(conn.messages)
        failure = await first_error(conn)
        await received.until(lambda items: "e3" in items)
        assert isinstance(failure.error, ConnectionLost)
        assert failure.retry_in is not None
        assert received.items == ["e1", "e2", "e3"]
        assert script.last_event_ids == ["", "2"]
        received.dispose()
        conn.close()


async def test_invalid_utf8_in_sse_is_replaced_not_fatal() -> None:
    """DESIGN.md's SSE rules: invalid UTF-8 is replaced (U+FFFD); the link stays up."""
    script = SseScript(stream(b"data: caf\xc3\x28\n\ndata: \xff\xfeok\n\ndata: after\n\n"))
    async with aiohttp_server(script.routes) as base:
        conn = rxconn.Connection(rxconn.http(base + "/events", hub=False), backoff=FAST)
        states = StateLog()
        state_sub = conn.state.subscribe(states.on_state)
        received = Recorder(conn.messages)
        await received.count(3)
        assert received.items == ["caf\ufffd(", "\ufffd\ufffdok", "after"]
        assert errored(states) == []
        assert isinstance(conn.current_state, Connected)
        received.dispose()
        state_sub.dispose()
        conn.close()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"data: " + b"y" * 100_000 + b"\n\n", id="one 100 kB event"),
        pytest.param(b"data: " + b"z" * 2_000_000, id="2 MB event that never ends"),
        pytest.param(b"data: a\n" * 1000 + b"\n", id="1,000 short data lines, one event"),
    ],
)
async def test_oversized_sse_event_is_a_protocol_error(body: bytes) -> None:
    """An event larger than http(max_message_size) fails the link with ProtocolError, as an
    oversized WebSocket message does, before it is buffered whole; what came before stays."""
    script = SseScript(stream(b"data: ok\n\n", body))
    async with aiohttp_server(script.routes) as base:
        conn = rxconn.Connection(
            rxconn.http(base + "/events", hub=False, max_message_size=1000), backoff=FAST
        )
        received = Recorder(conn.messages)
        try:
            failure = await first_error(conn, timeout=2.0)
            report("oversized event stream", error=repr(failure.error))
            assert isinstance(failure.error, ProtocolError)
            assert received.items[:1] == ["ok"]
            assert all(len(item) <= 1000 for item in received.items)
        finally:
            received.dispose()
            conn.close()


# ------------------------------------------------ truncation by the network, real hub


@pytest.mark.parametrize("kind", ["websocket", "http"])
async def test_streams_truncated_mid_message_lose_nothing(
    kind: str, hub: Hub, proxy: FaultProxy
) -> None:
    """The proxy resets every connection after 1,500 bytes to the client, mid-frame or
    mid-event: each link dies truncated, yet the hub session delivers all, once, in order."""
    count = 300
    log = HubLog(hub)
    transport: Any = (
        rxconn.websocket(proxy.url("ws", "/rx/ws"), heartbeat=None)
        if kind == "websocket"
        else rxconn.http(proxy.url("http", "/rx/events"))
    )
    backoff = Backoff(initial=0.01, max_delay=0.05, jitter=0.0)
    conn = rxconn.Connection(transport, backoff=backoff, idle_timeout=None)
    states = StateLog()
    state_sub = conn.state.subscribe(states.on_state)
    received = Recorder(conn.messages)
    await reach(conn, lambda s: isinstance(s, Connected))
    await log.until(lambda: bool(log.sessions), 5.0)
    proxy.drop_after(1500)
    for payload in numbered("h", count):
        log.sessions[0].send(payload + "-" + "x" * 40)
    for payload in numbered("c", count):
        conn.send(payload)
    await received.count(count, timeout=30.0)
    await log.until(lambda: len(log.received) >= count, 30.0)
    report(
        f"truncated {kind}",
        messages_each_way=count,
        reconnects=states.reconnects,
        errors=dict(states.errors),
    )
    assert received.items == [p + "-" + "x" * 40 for p in numbered("h", count)]
    assert log.payloads == numbered("c", count)
    assert len(log.sessions) == 1
    assert states.reconnects >= 5
    received.dispose()
    state_sub.dispose()
    log.dispose()
    conn.close()


# ----------------------------------------------------- 4xx/5xx on every endpoint


async def test_every_hub_endpoint_answers_bad_requests_with_a_clear_4xx(hub: Hub) -> None:
    """Raw requests against the hub: each kind of bad input gets its 4xx; a client with a
    live session meanwhile keeps exactly-once delivery (bad input never affects others)."""
    hub.echo = True
    hub.max_message_size = 1000
    hub.max_body_size = 20_000
    hub.max_batch = 50
    async with serve(hub, "127.0.0.1", 0) as server:
        conn = rxconn.Connection(rxconn.http(server.url + "/events"), backoff=FAST)
        received = Recorder(conn.messages)
        conn.send("before")
        await received.count(1)
        [victim] = hub.live_sessions
        base = server.url
        answers: dict[str, int] = {}
        async with aiohttp.ClientSession() as http:

            async def post(name: str, body: Any, **kw: Any) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                kw.setdefault("headers", {"Content-Type": "application/json"})
                async with http.post(base + "/messages", data=data, **kw) as resp:
                    answers[name] = resp.status
                    if resp.status != 413:
                        assert resp.content_type == "application/json"
                        assert "error" in await resp.json()

            async def get(name: str, path: str, **kw: Any) -> None:
                async with http.get(base + path, **kw) as resp:
                    answers[name] = resp.status

            sid, key = victim.id, victim.key
            victim_link = victim.link
            await post("not JSON", b"{oops")
            await post("JSON but not an object", [1, 2])
            await post("no session", {"seq": 1, "messages": []})
            await post("bad message item", {"session": sid, "seq": 9, "messages": [{"t": 1}]})
            await post("bad base64", {"session": sid, "seq": 9, "messages": [{"b": "%%"}]})
            await post("negative seq", {"session": sid, "seq": -1, "messages": []})
            await post("wrong content type", b"{}", headers={"Content-Type": "text/plain"})
            await post("unknown session", {"session": "nope", "seq": 1, "messages": []})
            await post(
                "gap in sequence",
                {"session": sid, "key": key, "seq": 99, "messages": [{"t": "x"}]},
            )
            await post(
                "message too large",
                {"session": sid, "key": key, "seq": 2, "messages": [{"t": "y" * 2000}]},
            )
            # The public id is not enough to act as the session: each of these would
            # deliver, acknowledge away or end the victim's messages if it were.
            await post("id without key", {"session": sid, "seq": 2, "messages": [{"t": "x"}]})
            await post("id with a wrong key", {"session": sid, "key": "guess", "seq": 2, "ack": 99})
            await post("id, no key, close", {"session": sid, "seq": 2, "close": True})
            await post("close as a string", {"session": sid, "key": key, "close": "false"})
            await post(
                "lone surrogate in a message",
                b'{"session": "%s", "key": "%s", "seq": 2, "messages": [{"t": "\\ud800"}]}'
                % (sid.encode(), key.encode()),
            )
            await post("deeply nested JSON", b'{"session": ' + b"[" * 5000 + b"]" * 5000 + b"}")
            await post(
                "seq with 5,000 digits",
                b'{"session": "s", "seq": ' + b"9" * 5000 + b', "messages": []}',
            )
            await post(
                "more messages than max_batch",
                {"session": sid, "key": key, "seq": 2, "messages": [{"t": "m"}] * 51},
            )
            await post("body too large", b"x" * 30_000)
            await get("GET /ws without upgrade", "/ws")
            await get("GET /messages", "/messages")
            await get("unknown path", "/nope")
            for name, last_event_id in (
                ("Last-Event-ID with 5,000 digits", f"{sid}:" + "9" * 5000),
                ("Last-Event-ID of the victim without its key", f"{sid}:0"),
                ("Last-Event-ID of the victim, absurd seq", f"{sid}:77"),
            ):
                async with http.get(
                    base + "/events", headers={"Last-Event-ID": last_event_id, "X-Rxconn": "v1"}
                ) as resp:
                    first = await resp.content.readuntil(b"\n\n")
                    fresh = b'"resumed": false' in first and sid.encode() not in first
                    answers[name] = resp.status if fresh else -1
            await get(
                "cross-origin GET /events", "/events", headers={"Origin": "https://evil.example"}
            )
            async with http.options(
                base + "/messages", headers={"Origin": "https://evil.example"}
            ) as resp:
                answers["cross-origin preflight"] = resp.status
            hub.websocket_enabled = False
            async with http.get(
                base + "/ws",
                headers={
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                },
            ) as resp:
                answers["WebSocket disabled"] = resp.status
            hub.websocket_enabled = True
            async with http.ws_connect(base + "/ws", protocols=("rxconn.v1",)) as ws:
                await ws.send_str('h{"session": "nope", "last": 0}')
                refusal = await ws.receive()
                closing = await ws.receive()
                answers["v1 hello for an unknown session"] = json.loads(refusal.data[1:])["status"]
                answers["  ...then close code"] = ws.close_code or 0
                assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            async with http.ws_connect(base + "/ws", protocols=("rxconn.v1",)) as ws:
                await ws.send_str("not a hello")
                await ws.receive()
                answers["v1 garbage hello: close code"] = ws.close_code or 0
            for name, hello in (
                ("v1 hello for the victim without its key", {"session": sid, "last": 0}),
                ("v1 hello for the victim, wrong key", {"session": sid, "key": "x", "last": 77}),
            ):
                async with http.ws_connect(base + "/ws", protocols=("rxconn.v1",)) as ws:
                    await ws.send_str("h" + json.dumps(hello))
                    refusal = await ws.receive()
                    answers[name] = json.loads(refusal.data[1:])["status"]
            async with http.ws_connect(base + "/ws", protocols=("rxconn.v1",)) as ws:
                await ws.send_str('h{"session": null, "last": 0}')
                await ws.receive()  # the welcome
                await ws.send_str("a" + "9" * 990)  # max_message_size is 1,000 here
                while (await ws.receive()).type is aiohttp.WSMsgType.TEXT:
                    pass  # a final ack may precede the close
                answers["v1 ack with 990 digits: close code"] = ws.close_code or 0
        report(
            "hub answers to bad requests", **{k.replace(" ", "_"): v for k, v in answers.items()}
        )
        assert answers == {
            "not JSON": 400,
            "JSON but not an object": 400,
            "no session": 400,
            "bad message item": 400,
            "bad base64": 400,
            "negative seq": 400,
            "wrong content type": 415,
            "unknown session": 410,
            "gap in sequence": 409,
            "message too large": 413,
            "id without key": 410,
            "id with a wrong key": 410,
            "id, no key, close": 410,
            "close as a string": 400,
            "lone surrogate in a message": 400,
            "deeply nested JSON": 413,  # more JSON elements than 50 messages can have
            "seq with 5,000 digits": 400,
            "more messages than max_batch": 413,
            "Last-Event-ID with 5,000 digits": 200,
            "Last-Event-ID of the victim without its key": 200,
            "Last-Event-ID of the victim, absurd seq": 200,
            "body too large": 413,
            "GET /ws without upgrade": 400,
            "GET /messages": 405,
            "unknown path": 404,
            "cross-origin GET /events": 403,
            "cross-origin preflight": 403,
            "WebSocket disabled": 503,
            "v1 hello for an unknown session": 410,
            "  ...then close code": 4410,
            "v1 garbage hello: close code": 1002,
            "v1 hello for the victim without its key": 410,
            "v1 hello for the victim, wrong key": 410,
            "v1 ack with 990 digits: close code": 1002,
        }
        conn.send("after")
        await received.count(2)
        assert received.items == ["before", "after"]  # the victim's session is unharmed
        assert victim in hub.live_sessions and not victim.ended
        assert victim.link is victim_link  # nobody took its link over
        received.dispose()
        conn.close()


@asynccontextmanager
async def gated_hub(hub: Hub, endpoint: str, status: int, times: int) -> AsyncIterator[str]:
    """Serve ``hub`` under /rx; its first ``times`` requests to ``endpoint`` get ``status``."""
    left = times

    @web.middleware
    async def gate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        nonlocal left
        if request.path.rsplit("/", 1)[-1] == endpoint and left > 0:
            left -= 1
            return web.json_response({"error": "injected"}, status=status)
        return await handler(request)

    root = web.Application(middlewares=[gate])
    root.add_subapp("/rx", hub.app())
    runner = web.AppRunner(root, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    try:
        yield f"http://127.0.0.1:{port}/rx"
    finally:
        hub.shutdown()
        await runner.cleanup()


STATUSES = [400, 401, 403, 404, 408, 410, 429, 500, 502, 503]
FATAL = {
    "ws": {401, 403, 404},
    "events": {401, 403, 404},
    "messages": {400, 401, 403, 404},
}
ERROR_CLASS = {410: SessionExpired}


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("endpoint", ["ws", "events", "messages"])
async def test_error_status_on_every_endpoint_is_typed_and_loses_nothing(
    endpoint: str, status: int
) -> None:
    """The first 3 requests to one hub endpoint get ``status``. Retryable statuses: typed
    TransportError (status kept), then exactly once in order both ways. Fatal ones
    (401/403/404, and 4xx on a POST): Errored(retry_in=None); close() hands back the rest."""
    hub = Hub(ping_interval=0.5)
    log = HubLog(hub)
    count = 20
    async with gated_hub(hub, endpoint, status, times=3) as base:
        transport: Any = (
            rxconn.websocket(base + "/ws", heartbeat=None)
            if endpoint == "ws"
            else rxconn.http(base + "/events")
        )
        conn = rxconn.Connection(transport, backoff=FAST)
        states = StateLog()
        state_sub = conn.state.subscribe(states.on_state)
        received = Recorder(conn.messages)
        client_out = numbered("c", count)
        for payload in client_out:
            conn.send(payload)
        failure = await first_error(conn)
        expected = ERROR_CLASS.get(status, TransportError)
        assert isinstance(failure.error, expected), failure.error
        assert failure.error.status == status
        if status == 401 and endpoint != "messages":
            # A 401 at open gets one immediate retry (refreshed credentials); here the
            # gate refuses 3 times, so the second 401 in a row is fatal.
            assert failure.retry_in == 0.0
            failure = await reach(conn, lambda s: isinstance(s, Errored) and s.retry_in is None)
            assert isinstance(failure, Errored)
        if status in FATAL[endpoint]:
            assert failure.retry_in is None
            await asyncio.sleep(0.2)
            unsent = conn.close()
            assert log.payloads + unsent == client_out  # delivered or handed back, once
        else:
            assert failure.retry_in is not None
            await log.until(lambda: len(log.payloads) >= count, 10.0)
            session = hub.live_sessions[0]
            for payload in numbered("h", count):
                session.send(payload)
            await received.count(count)
            assert log.payloads == client_out
            assert received.items == numbered("h", count)
            assert not states.gave_up
            conn.close()
        report(
            f"status {status} on {endpoint}",
            error=type(failure.error).__name__,
            retry_in=failure.retry_in,
            errors=len(errored(states)),
            sessions=len(log.sessions),
        )
        received.dispose()
        state_sub.dispose()
        log.dispose()


# ------------------------------------------------------ oversized sends, either way


async def test_oversized_send_over_http_is_typed_and_hands_everything_back() -> None:
    """A payload over the hub's limit (but within the client's): the POST gets 413, a fatal
    ProtocolError; nothing is dropped silently: close() hands back what the hub refused."""
    hub = Hub(max_message_size=1000, ping_interval=0.5)
    log = HubLog(hub)
    async with serve(hub, "127.0.0.1", 0) as server:
        conn = rxconn.Connection(rxconn.http(server.url + "/events"), backoff=FAST)
        handle = conn.connect()
        conn.send("first")
        await log.until(lambda: log.payloads == ["first"], 5.0)
        sent = ["second", "y" * 5000, "third"]
        for payload in sent:
            conn.send(payload)
        failure = await first_error(conn)
        assert isinstance(failure.error, ProtocolError) and failure.retry_in is None
        unsent = conn.close()
        handle.dispose()
        assert log.payloads[1:] + unsent == sent
        log.dispose()


async def test_send_over_the_transport_limit_raises_message_too_large() -> None:
    """http(max_message_size=...) refuses at send() with MessageTooLarge; the rest flows."""
    hub = Hub(echo=True, ping_interval=0.5)
    async with serve(hub, "127.0.0.1", 0) as server:
        for conn in (
            rxconn.Connection(rxconn.http(server.url + "/events", max_message_size=1000)),
            rxconn.connection(server.url, max_message_size=1000),
        ):
            received = Recorder(conn.messages)
            conn.send("ok1")
            with pytest.raises(rxconn.MessageTooLarge):
                conn.send("z" * 1001)
            conn.send("ok2")
            await received.count(2)
            assert received.items == ["ok1", "ok2"]
            received.dispose()
            conn.close()


async def test_oversized_send_over_websocket_does_not_wedge_the_connection() -> None:
    """A payload over the hub's limit (websocket() alone cannot know it): the hub closes
    with 1009, a fatal ProtocolError, as HTTP's 413. Nothing is dropped silently: what the
    hub did not deliver is handed back by close(). (A payload the hub delivered but had not
    acknowledged yet when the socket closed is handed back too: at least once.)"""
    hub = Hub(max_message_size=1000, ping_interval=0.5)
    log = HubLog(hub)
    async with serve(hub, "127.0.0.1", 0) as server:
        conn = rxconn.Connection(rxconn.websocket(server.url + "/ws"), backoff=FAST)
        states = StateLog()
        state_sub = conn.state.subscribe(states.on_state)
        await reach(conn, lambda s: isinstance(s, Connected))
        sent = ["first", "y" * 5000, "after"]
        for payload in sent:
            conn.send(payload)
        failure = await first_error(conn)
        await asyncio.sleep(0.3)  # no reconnect follows (it would resend the same payload)
        state_sub.dispose()
        unsent = conn.close()
        log.dispose()
        report(
            "oversized send over websocket",
            error=repr(failure.error),
            retry_in=failure.retry_in,
            delivered=[p[:5] for p in log.payloads],
            handed_back=[p[:5] for p in unsent],
        )
        assert isinstance(failure.error, ProtocolError)
        assert failure.retry_in is None
        assert len(errored(states)) == 1
        assert log.payloads == ["first"]
        assert unsent[-2:] == sent[1:]  # the oversized payload and everything after it
        assert set(sent) <= set(log.payloads) | set(unsent)


# ------------------------------------------- servers that accept and drop at once

SCHEDULE = Backoff(initial=0.1, factor=2.0, jitter=0.0, stable_after=2.0)
"""Attempts at 0, 0.1, 0.3, 0.7, 1.5, 3.1 s: five within the first two seconds."""
WINDOW = 2.0


async def raw_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    writer.close()


async def raw_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    writer.transport.abort()


async def ws_open_then_close(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
) -> None:
    await accept_websocket(reader, writer, None)
    writer.write(frame(0x8, (1000).to_bytes(2, "big")))  # close 1000 at once
    await writer.drain()


async def v1_welcome_then_drop(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
) -> None:
    await accept_websocket(reader, writer, V1)
    await read_hello(reader)
    writer.write(welcome("s1", 0, resumed=number > 1))
    await writer.drain()
    writer.transport.abort()


async def sse_open_then_end(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 12\r\n\r\n"
        b": welcome\n\n\n"
    )
    await writer.drain()


async def hub_sse_open_then_end(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
) -> None:
    await reader.readuntil(b"\r\n\r\n")
    body = session_event()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Rxconn: v1\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()


DROP_CASES: dict[str, tuple[str, Callable[..., Awaitable[None]], bool]] = {
    # name: (transport, server script, does the link open before it drops?)
    "websocket: TCP accepted then closed": ("websocket", raw_close, False),
    "websocket: TCP accepted then reset": ("websocket", raw_reset, False),
    "websocket: upgraded then close 1000": ("plain websocket", ws_open_then_close, True),
    "websocket: v1 welcome then reset": ("websocket", v1_welcome_then_drop, True),
    "http: TCP accepted then closed": ("http", raw_close, False),
    "http: 200 event stream then end": ("plain http", sse_open_then_end, True),
    "http: hub session event then end": ("http", hub_sse_open_then_end, True),
}


def drop_transport(kind: str, url: str) -> Any:
    if kind.endswith("websocket"):
        return rxconn.websocket(url + "/ws", hub=kind == "websocket", heartbeat=None)
    return rxconn.http(url + "/events", hub=kind == "http")


@pytest.mark.parametrize("case", list(DROP_CASES))
async def test_server_that_accepts_and_drops_gets_backoff_not_a_storm(case: str) -> None:
    """Attempts follow the backoff (0.1, 0.2, 0.4, 0.8 s apart): five in two seconds, even
    when each link opens before it drops (the schedule resets only after stable_after).

    An attempt is a Connecting state; aiohttp retries a GET once by itself when a fresh
    connection closes before any answer (RFC 9112 retry of idempotent requests), so the
    server may see up to two TCP connections per attempt.
    """
    kind, script, opens = DROP_CASES[case]
    loop = asyncio.get_running_loop()
    attempts: list[float] = []

    def on_state(state: Any) -> None:
        states.on_state(state)
        if isinstance(state, rxconn.Connecting):
            attempts.append(loop.time())

    async with RawServer(script) as server:
        conn = rxconn.Connection(drop_transport(kind, server.url), backoff=SCHEDULE)
        states = StateLog()
        state_sub = conn.state.subscribe(on_state)
        await asyncio.sleep(WINDOW + 0.05)
        state_sub.dispose()
        conn.close()
    in_window = [t - attempts[0] for t in attempts if t - attempts[0] < WINDOW]
    gaps = [round(b - a, 3) for a, b in zip(in_window, in_window[1:], strict=False)]
    delays = [s.retry_in for s in errored(states)]
    accepted = [t for t in server.accepted if t - attempts[0] < WINDOW]
    report(
        f"accept-and-drop {case}",
        attempts_in_2s=len(in_window),
        tcp_accepts_in_2s=len(accepted),
        gaps_s=gaps,
    )
    assert 4 <= len(in_window) <= 6
    assert len(accepted) <= 2 * len(in_window)
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    for n, gap in enumerate(gaps):
        assert gap >= 0.9 * SCHEDULE.base_delay(n)
    assert all(isinstance(s.error, TransportError) for s in errored(states))
    assert (states.connects["websocket"] + states.connects["http"] > 0) is opens


async def sse_retry_zero(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 10\r\n\r\n"
        b"retry: 0\n\n"
    )
    await writer.drain()


async def busy_retry_after_zero(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 503 Busy\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()


def ws_close_with_reason(code: int, reason: bytes) -> Callable[..., Awaitable[None]]:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await accept_websocket(reader, writer, None)
        writer.write(frame(0x8, code.to_bytes(2, "big") + reason))
        await writer.drain()
        await until_close_frame(reader, writer)

    return script


async def refuse_every_hello(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
) -> None:
    await accept_websocket(reader, writer, V1)
    await read_hello(reader)
    writer.write(text('x{"status": 410, "reason": "unknown session"}'))
    await writer.drain()
    await until_close_frame(reader, writer)


ADVICE_CASES: dict[str, tuple[str, Callable[..., Awaitable[None]]]] = {
    "SSE retry: 0, then the stream ends": ("plain http", sse_retry_zero),
    "503 with Retry-After: 0 (event stream)": ("http", busy_retry_after_zero),
    "503 with Retry-After: 0 (WebSocket upgrade)": ("websocket", busy_retry_after_zero),
    "close 1013 with reason '0'": ("plain websocket", ws_close_with_reason(1013, b"0")),
    "close 1012 with reason '-1'": ("plain websocket", ws_close_with_reason(1012, b"-1")),
    "410 refusal to every hello": ("websocket", refuse_every_hello),
}


@pytest.mark.parametrize("case", list(ADVICE_CASES))
async def test_server_advice_cannot_cause_a_reconnect_storm(case: str) -> None:
    """Advice of 0 from a server that keeps dropping must not beat the backoff: the schedule
    allows 4 attempts in the first second (0, 0.1, 0.3, 0.7 s); at most 8 TCP connections.
    (Found by this suite: advice used to replace the backoff, over 1,000 attempts/s.)"""
    kind, script = ADVICE_CASES[case]
    async with RawServer(script) as server:
        conn = rxconn.Connection(drop_transport(kind, server.url), backoff=SCHEDULE)
        handle = conn.connect()
        await asyncio.sleep(1.0)
        handle.dispose()
        conn.close()
    report(f"advice {case}", tcp_connections_in_1s=len(server.accepted))
    assert len(server.accepted) <= 8


@pytest.mark.parametrize("reason", [b"nan", b"inf", b"-1"])
async def test_close_reason_advice_is_a_sane_delay(reason: bytes) -> None:
    """Whatever a close 1012 reason says, retry_in is a finite delay >= 0.
    (Found by this suite: 'nan'/'inf' used to stall the connection for good, '-1' storm.)"""
    async with RawServer(ws_close_with_reason(1012, reason)) as server:
        conn = rxconn.Connection(drop_transport("plain websocket", server.url), backoff=SCHEDULE)
        failure = await first_error(conn)
        conn.close()
    assert isinstance(failure.error, ConnectionLost)
    assert failure.retry_in is not None
    assert math.isfinite(failure.retry_in) and failure.retry_in >= 0
