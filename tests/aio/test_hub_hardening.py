"""The hub against broken and hostile peers: no acknowledged loss, no orphans, no stuck
writers, bounded batches and replay, refused unencodable payloads, and session secrets.

Each test here failed on the hub before the hardening issue (#11) was fixed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

import aiohttp
import pytest

import rxconn
from rxconn.errors import BufferFullError
from rxconn.server import Hub, Session, serve
from tests.helpers import FAST, Recorder, eventually, reach


pytestmark = pytest.mark.asyncio(loop_scope="function")


async def open_sse(
    http: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[aiohttp.ClientResponse, dict[str, Any], str]:
    """GET /events; return the response, the session event's JSON and its event id."""
    resp = await http.get(url + "/events", headers=headers)
    first = (await resp.content.readuntil(b"\n\n")).decode()
    data = next(line[5:] for line in first.splitlines() if line.startswith("data:"))
    event_id = next(line[3:].strip() for line in first.splitlines() if line.startswith("id:"))
    return resp, json.loads(data), event_id


def batch(session: Session, seq: int, texts: list[str], **extra: Any) -> bytes:
    body = {"session": session.id, "key": session.key, "seq": seq, **extra}
    body["messages"] = [{"t": text} for text in texts]
    return json.dumps(body).encode()


JSON = {"Content-Type": "application/json"}


# ------------------------------------------------------------- data loss (1)


async def test_a_post_never_acknowledges_what_an_ended_session_did_not_deliver() -> None:
    """A session that ends part-way through a POST (its replay log overflows with echoes)
    acknowledges only what the app received; the rest is answered 410 and resent."""
    hub = Hub(echo=True, replay_limit=5, ping_interval=5.0)
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        sse, hello, _ = await open_sse(http, server.url, **{"X-Rxconn": "v1"})
        [session] = hub.live_sessions
        got = Recorder(session.messages)
        texts = [f"c{i}" for i in range(1, 11)]
        async with http.post(
            server.url + "/messages", data=batch(session, 1, texts), headers=JSON
        ) as resp:
            assert resp.status == 200
            last = (await resp.json())["last"]
        assert got.items == texts[:last]  # the ack covers exactly what the app got
        assert last < 10 and session.ended
        rest = batch(session, last + 1, texts[last:])
        async with http.post(server.url + "/messages", data=rest, headers=JSON) as resp:
            assert resp.status == 410
        got.dispose()
        sse.close()


async def test_an_rxconn_client_loses_nothing_when_its_session_overflows_mid_batch() -> None:
    """End to end over HTTP: c1..c10 in one batch to a hub whose replay holds 5 echoes;
    every message reaches the app (some in a new session), none twice."""
    hub = Hub(echo=True, replay_limit=5, ping_interval=5.0, session_grace=5.0)
    delivered: list[str | bytes] = []
    hub.sessions.subscribe(lambda s: s.messages.subscribe(delivered.append))
    async with serve(hub) as server:
        conn = rxconn.Connection(rxconn.http(server.url + "/events"), backoff=FAST)
        handle = conn.connect()
        await reach(conn, lambda s: s.kind == "connected")
        for i in range(1, 11):
            conn.send(f"c{i}")
        await eventually(lambda: len(delivered) >= 10 and conn.buffered == 0, timeout=10.0)
        assert delivered == [f"c{i}" for i in range(1, 11)]
        handle.dispose()
        conn.close()


# --------------------------------------------------------- orphan sessions (2)


def _rst(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a client that vanishes does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_clients_that_leave_at_once_leave_no_session_behind() -> None:
    """200 GET /events that reset right away: no session outlives its grace, no link stays."""
    hub = Hub(ping_interval=5.0, session_grace=0.0)
    async with serve(hub) as server:
        loop = asyncio.get_running_loop()
        request = f"GET {server.prefix}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        for _ in range(200):
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, (server.host, server.port))
            await loop.sock_sendall(sock, request)
            _rst(sock)
        await eventually(lambda: not hub.live_sessions and not hub.links)


# ------------------------------------------------------ readers that stall (3)


async def test_an_sse_reader_that_stops_reading_is_cut_and_freed() -> None:
    """A client that never reads: the blocked write is bounded (ping_interval), the link
    is aborted, the session starts its grace; a broadcast meanwhile does not block."""
    hub = Hub(ping_interval=0.3, session_grace=30.0)
    async with serve(hub) as server:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, (server.host, server.port))
        request = f"GET {server.prefix}/events HTTP/1.1\r\nHost: x\r\nX-Rxconn: v1\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        await eventually(lambda: len(hub.links) == 1)
        [session] = hub.live_sessions
        chunk = "x" * 100_000
        for _ in range(60):  # ~6 MB, far beyond what the socket buffers hold
            session.send(chunk)
        await eventually(lambda: session.link is None and not hub.links, timeout=5.0)
        assert not session.ended  # within its grace, it may still be resumed
        sock.close()


# ----------------------------------------------------------- POST batches (4)


async def test_a_batch_over_max_batch_gets_413_and_the_client_splits_it() -> None:
    """Hub(max_batch=10): a raw batch of 11 gets 413 with a reason; an rxconn client that
    sends 100 at once gets them all through (it splits its batch on 413)."""
    hub = Hub(echo=False, max_batch=10, ping_interval=5.0)
    delivered: list[str | bytes] = []
    hub.sessions.subscribe(lambda s: s.messages.subscribe(delivered.append))
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        sse, _, _ = await open_sse(http, server.url, **{"X-Rxconn": "v1"})
        [session] = hub.live_sessions
        texts = [str(i) for i in range(11)]
        async with http.post(
            server.url + "/messages", data=batch(session, 1, texts), headers=JSON
        ) as resp:
            assert resp.status == 413
            assert "at most 10 messages" in (await resp.json())["error"]
        assert delivered == []
        sse.close()
        conn = rxconn.Connection(rxconn.http(server.url + "/events"), backoff=FAST)
        handle = conn.connect()
        for i in range(100):
            conn.send(f"m{i}")
        await eventually(lambda: len(delivered) >= 100 and conn.buffered == 0, timeout=10.0)
        assert delivered == [f"m{i}" for i in range(100)]
        handle.dispose()
        conn.close()


async def test_crafted_json_gets_400_not_500() -> None:
    """Deeply nested JSON (RecursionError) and a lone surrogate in a message: 400."""
    hub = Hub(ping_interval=5.0)
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        sse, _, _ = await open_sse(http, server.url, **{"X-Rxconn": "v1"})
        [session] = hub.live_sessions
        nested = b'{"session": ' + b"[" * 5000 + b"]" * 5000 + b"}"  # deeper than recursion
        surrogate = batch(session, 1, ["ok"]).replace(b'"ok"', b'"\\ud800"')
        for body in (nested, surrogate):
            async with http.post(server.url + "/messages", data=body, headers=JSON) as resp:
                assert resp.status == 400, body[:40]
        async with http.ws_connect(server.url + "/ws", protocols=("rxconn.v1",)) as ws:
            await ws.send_str("h" + "[" * 100_000 + "]" * 100_000)
            await ws.receive()
            assert ws.close_code == 1002
        assert session.inbound.received == 0 and not session.ended
        sse.close()


# ------------------------------------------------------------- replay bytes (5)


async def test_replay_is_bounded_in_bytes_too() -> None:
    """Hub(replay_bytes=...) refuses a send that would keep more bytes than that."""
    hub = Hub(replay_bytes=1000, ping_interval=5.0)
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        sse, _, _ = await open_sse(http, server.url, **{"X-Rxconn": "v1"})
        [session] = hub.live_sessions
        session.send("a" * 600)
        with pytest.raises(BufferFullError):
            session.send("b" * 600)
        assert len(session.log) == 1 and session.log.bytes == 600
        session.log.ack(1)
        session.send("b" * 600)  # acknowledged bytes are free again
        sse.close()


# ------------------------------------------------------- unencodable text (6)


async def test_unencodable_text_is_refused_at_send_and_broadcast() -> None:
    """A str with a lone surrogate is a ValueError at send()/broadcast(), and nothing is
    queued: before, it jammed the session (replayed forever, never writable)."""
    hub = Hub(ping_interval=5.0)
    async with serve(hub) as server:
        conn = rxconn.Connection(rxconn.websocket(server.url + "/ws"), backoff=FAST)
        received = Recorder(conn.messages)
        await eventually(lambda: len(hub.live_sessions) == 1)
        [session] = hub.live_sessions
        with pytest.raises(ValueError, match="surrogate"):
            session.send("bad \ud800")
        with pytest.raises(ValueError, match="surrogate"):
            hub.broadcast("bad \udfff")
        assert len(session.log) == 0
        session.send("good")
        assert await received.count(1) == ["good"]
        received.dispose()
        conn.close()


# ------------------------------------------------------------ session secrets


async def test_the_session_id_alone_cannot_take_over_a_websocket_session() -> None:
    """A hello naming a live session without its key is refused (410) and the client's
    link, inbound count and queued messages stay as they were."""
    hub = Hub(echo=True, ping_interval=5.0)
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        conn = rxconn.Connection(rxconn.websocket(server.url + "/ws"), backoff=FAST)
        received = Recorder(conn.messages)
        conn.send("one")
        await received.count(1)
        [session] = hub.live_sessions
        link = session.link
        for hello in (
            {"session": session.id, "last": 0},
            {"session": session.id, "key": "guess", "last": 0},
            {"session": session.id, "key": "guess", "last": 999},  # would end it, if owned
        ):
            async with http.ws_connect(server.url + "/ws", protocols=("rxconn.v1",)) as ws:
                await ws.send_str("h" + json.dumps(hello))
                refusal = await ws.receive()
                assert json.loads(refusal.data[1:])["status"] == 410
        assert session.link is link and not session.ended
        conn.send("two")
        assert await received.count(2) == ["one", "two"]
        received.dispose()
        conn.close()


async def test_an_rxconn_sse_session_resumes_only_with_its_key() -> None:
    """Last-Event-ID naming an rxconn session resumes it only with X-Rxconn-Key; without
    it the request gets a fresh session and the original is untouched."""
    hub = Hub(ping_interval=5.0)
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        sse, hello, event_id = await open_sse(http, server.url, **{"X-Rxconn": "v1"})
        assert event_id == f"{hello['session']}:0"  # no secret in an rxconn client's ids
        session = hub.session(hello["session"])
        assert session is not None and hello["key"] == session.key
        sse.close()
        await eventually(lambda: session.link is None)
        session.send("queued")
        thief, stolen, _ = await open_sse(http, server.url, **{"Last-Event-ID": event_id})
        assert stolen["resumed"] is False and stolen["session"] != session.id
        assert "queued" not in (await thief.content.readany()).decode(errors="replace")
        thief.close()
        owner, resumed, _ = await open_sse(
            http, server.url, **{"Last-Event-ID": event_id, "X-Rxconn-Key": session.key}
        )
        assert resumed["resumed"] is True and "key" not in resumed
        text = b""
        while b"queued" not in text:
            text += await owner.content.readany()
        owner.close()


async def test_a_browser_session_resumes_with_its_event_ids_resume_token() -> None:
    """An EventSource (no headers of its own) resumes with the id it last saw, which
    carries the resume token; the session id with a wrong token gets a fresh session."""
    hub = Hub(ping_interval=5.0)
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        sse, hello, event_id = await open_sse(http, server.url)
        session = hub.session(hello["session"])
        assert session is not None and session.kind == "eventsource"
        assert event_id == f"{session.id}:0:{session.resume_token}"
        sse.close()
        await eventually(lambda: session.link is None)
        session.send("missed")
        forged, fresh, _ = await open_sse(
            http, server.url, **{"Last-Event-ID": f"{session.id}:0:forged"}
        )
        assert fresh["resumed"] is False
        forged.close()
        # The token resumes the stream but cannot end the session: a number it never
        # got (which, with the key, would end the session) only gets a fresh one.
        absurd_id = f"{session.id}:999:{session.resume_token}"
        absurd, fresh_again, _ = await open_sse(http, server.url, **{"Last-Event-ID": absurd_id})
        assert fresh_again["resumed"] is False and not session.ended
        absurd.close()
        back, again, _ = await open_sse(http, server.url, **{"Last-Event-ID": event_id})
        assert again["resumed"] is True and again["session"] == session.id
        text = b""
        while b"missed" not in text:
            text += await back.content.readany()
        back.close()
