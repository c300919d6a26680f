"""The SSE transport in probe mode (an upgrade's check): open only once bytes stream
through, make no hub session, deliver and remember nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from reactivex.scheduler.eventloop import AsyncIOScheduler

import rxconn
from rxconn.errors import ConnectionLost
from rxconn.server import Hub, serve
from rxconn.transport import LinkContext, Opened
from tests.helpers import Recorder, app_server


pytestmark = pytest.mark.asyncio(loop_scope="function")


def probe(transport: Any, shared: dict[str, Any] | None = None) -> Recorder:
    """Subscribe to one probe link of ``transport`` (with the connection's scratch space)."""
    scheduler = AsyncIOScheduler(asyncio.get_running_loop())
    context = LinkContext(probe=True, connection=shared if shared is not None else {})
    return Recorder(transport.open(scheduler, context))


async def test_a_probe_of_the_hub_opens_and_makes_no_session() -> None:
    """The hub answers a probe with one comment and no session; the probe opens on it."""
    hub = Hub(ping_interval=5.0)
    async with serve(hub) as server:
        links = probe(rxconn.http(server.url + "/events"))
        await links.until(lambda items: any(type(e) is Opened for e in items))
        assert hub.live_sessions == []
        assert [e for e in links.items if isinstance(e, str | bytes)] == []
        links.dispose()


async def test_a_probe_through_a_stream_that_holds_its_bytes_never_opens() -> None:
    """200 and the headers, then nothing (a proxy that buffers SSE): the probe fails
    within open_timeout instead of counting as open."""

    async def mute(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await asyncio.sleep(10)
        return resp

    async with app_server(lambda app: app.router.add_get("/events", mute)) as url:
        links = probe(rxconn.http(url + "/events", hub=False, open_timeout=0.3))
        await links.until(lambda _: bool(links.errors), timeout=5.0)
        assert not [e for e in links.items if type(e) is Opened]
        assert isinstance(links.errors[0], ConnectionLost)
        links.dispose()


async def test_a_probe_of_a_plain_sse_server_remembers_no_event_id() -> None:
    """Against any SSE server the probe opens on its first bytes but neither delivers
    the events nor moves the connection's Last-Event-ID."""
    seen: list[str] = []

    async def events(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Last-Event-ID", ""))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"id: 7\ndata: not for a probe\n\n")
        await asyncio.sleep(10)
        return resp

    async with app_server(lambda app: app.router.add_get("/events", events)) as url:
        transport = rxconn.http(url + "/events", hub=False)
        shared: dict[str, Any] = {}  # what a connection's links share (LinkContext.connection)
        links = probe(transport, shared)
        await links.until(lambda items: any(type(e) is Opened for e in items))
        assert [e for e in links.items if isinstance(e, str | bytes)] == []
        links.dispose()
        scheduler = AsyncIOScheduler(asyncio.get_running_loop())
        real = Recorder(transport.open(scheduler, LinkContext(connection=shared)))
        await real.until(lambda items: "not for a probe" in items)
        assert seen == ["", ""]  # the real link does not resume after the probe's event 7
        real.dispose()
