"""The hub on its own: limits, slow consumers, shutdown, embedding, plain clients."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

import rxconn
from rxconn import BufferFullError, wire
from rxconn.server import Hub, serve
from tests.helpers import Recorder, eventually


pytestmark = pytest.mark.asyncio


async def test_a_client_that_never_acknowledges_cannot_grow_the_hub() -> None:
    """An rxconn.v1 client that never acks: past replay_limit its session ends (1008), bounded."""
    hub = Hub(replay_limit=100, ping_interval=5.0)
    sessions = Recorder(hub.sessions)
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        async with http.ws_connect(server.url + "/ws", protocols=("rxconn.v1",)) as ws:
            await ws.send_str(wire.encode_hello(wire.Hello(None, 0)))
            welcome = await ws.receive()
            assert welcome.data.startswith("w")
            session = sessions.items[0]
            ended = Recorder(session.messages)
            for i in range(100):  # the client reads but never acknowledges
                session.send(f"m{i}")
            with pytest.raises(BufferFullError):
                session.send("one too many")  # explicit: nothing is dropped silently
            assert len(session.log) == 100
            assert hub.broadcast("to all") == 0  # a broadcast ends the lagging session instead
            await ended.until(lambda _: ended.completed)
            assert hub.live_sessions == []
            closing = None
            async for msg in ws:  # drain what was sent, then the close
                closing = msg
            assert ws.close_code == 1008
            del closing


async def test_a_stalled_plain_client_does_not_block_others() -> None:
    """One client that stops reading: broadcasts still reach the others promptly."""
    hub = Hub(replay_limit=1000, ping_interval=5.0)
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        stalled = await http.ws_connect(server.url + "/ws")  # plain frames, never read
        conn = rxconn.Connection(rxconn.websocket(server.url + "/ws"))
        rec = Recorder(conn.messages)
        await asyncio.sleep(0)
        await eventually(lambda: len(hub.live_sessions) >= 2)
        blob = "x" * 10_000
        for _ in range(200):  # ~2 MB at the stalled client: its socket buffers fill up
            hub.broadcast(blob)
        hub.broadcast("last")
        await rec.until(lambda items: "last" in items, timeout=5.0)
        rec.dispose()
        conn.close()
        await stalled.close()


async def test_shutdown_closes_websocket_links_with_1001() -> None:
    """Leaving serve() closes links at once with 1001 (going away)."""
    hub = Hub(ping_interval=5.0)
    async with aiohttp.ClientSession() as http:
        async with serve(hub) as server:
            ws = await http.ws_connect(server.url + "/ws")
            await eventually(lambda: hub.live_sessions)
        msg = await asyncio.wait_for(ws.receive(), 2.0)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001
        await ws.close()


async def test_a_hub_can_be_served_again_and_old_sessions_are_gone() -> None:
    """serve() twice with one Hub: the second run starts without the old sessions."""
    hub = Hub(ping_interval=5.0)
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.url + "/ws")
        await eventually(lambda: hub.live_sessions)
        await ws.close()
    assert hub.live_sessions == []
    async with serve(hub) as server:
        assert hub.live_sessions == []


async def test_embedding_the_hub_in_an_existing_app() -> None:
    """app.add_subapp('/rx', hub.app()) serves the hub beside the user's own routes."""
    hub = Hub(echo=True, ping_interval=5.0)
    app = web.Application()

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/health", health)
    app.add_subapp("/rx", hub.app())
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    try:
        conn = rxconn.connection(f"http://127.0.0.1:{port}/rx")
        rec = Recorder(conn.messages)
        conn.send("embedded")
        assert await rec.count(1) == ["embedded"]
        rec.dispose()
        conn.close()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/health") as r,
        ):
            assert await r.text() == "ok"
    finally:
        hub.shutdown()
        await runner.cleanup()


async def test_plain_websocket_and_eventsource_clients_are_sessions_too() -> None:
    """A plain WebSocket client and a plain SSE client each get broadcasts as sessions."""
    hub = Hub(ping_interval=5.0)
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.url + "/ws")
        sse = await http.get(server.url + "/events")
        await sse.content.readuntil(b"\n\n")  # the session event
        await eventually(lambda: len(hub.live_sessions) >= 2)
        kinds = sorted(s.kind for s in hub.live_sessions)
        assert kinds == ["eventsource", "websocket"]
        assert hub.broadcast("hello all") == 2
        msg = await asyncio.wait_for(ws.receive(), 2)
        assert msg.data == "hello all"  # plain frames: no tag, no control traffic
        event = await asyncio.wait_for(sse.content.readuntil(b"\n\n"), 2)
        assert b"data: hello all" in event
        sse.close()
        await ws.close()


async def test_sessions_observable_sees_the_first_message() -> None:
    """A messages subscriber added inside the hub.sessions callback gets the first message."""
    hub = Hub(ping_interval=5.0)
    first: list[object] = []
    hub.sessions.subscribe(lambda s: s.messages.subscribe(first.append))
    async with serve(hub) as server:
        conn = rxconn.connection(server.url)
        conn.send("very first")
        handle = conn.connect()
        await eventually(lambda: first, timeout=5)
        assert first == ["very first"]
        handle.dispose()
        conn.close()


async def test_post_answers_json_with_last() -> None:
    """A valid empty POST (ack only) answers 200 with the hub's last received number."""
    hub = Hub(ping_interval=5.0)
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        sse = await http.get(server.url + "/events", headers={"X-Rxconn": "v1"})
        raw = await sse.content.readuntil(b"\n\n")
        hello = json.loads(
            next(ln[5:] for ln in raw.decode().splitlines() if ln.startswith("data:"))
        )
        body = json.dumps(
            {"session": hello["session"], "key": hello["key"], "seq": 1, "messages": [], "ack": 0}
        )
        async with http.post(
            server.url + "/messages", data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 200 and await resp.json() == {"last": 0}
        sse.close()


async def test_a_departed_sse_client_is_noticed_at_once_under_serve() -> None:
    """serve() cancels a handler whose client left: the session's grace starts without a ping."""
    hub = Hub(ping_interval=30.0, session_grace=0.0)
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        resp = await http.get(server.url + "/events")
        await resp.content.readuntil(b"\n\n")
        [session] = hub.live_sessions
        ended = Recorder(session.messages)
        resp.close()
        await ended.until(lambda _: ended.completed, timeout=2.0)  # not 30 s
        assert hub.links == set()
