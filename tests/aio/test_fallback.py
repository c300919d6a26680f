"""Fallback and upgrade against the real hub: WebSocket missing, refused, blackholed, restored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from aiohttp import web

import rxconn
from rxconn import Backoff, Connected, Errored
from rxconn.server import Hub, Session
from tests.helpers import Recorder, hub_in_app, reach


pytestmark = pytest.mark.asyncio

FAST = Backoff(initial=0.05, max_delay=0.5, jitter=0.0)


@dataclass
class Gate:
    """What the hub's WebSocket route does: serve ("open"), 404, or hang forever ("hang")."""

    mode: str = "open"


@asynccontextmanager
async def gated_hub(gate: Gate, hub: Hub) -> AsyncIterator[str]:
    """Serve ``hub`` under /rx with a gate in front of its WebSocket route; yields the base URL."""

    @web.middleware
    async def gatekeeper(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.endswith("/ws") and gate.mode != "open":
            if gate.mode == "404":
                return web.Response(status=404)
            await asyncio.sleep(3600)  # blackhole: TCP accepted, the upgrade never answered
        return await handler(request)

    async with hub_in_app(
        hub, web.Application(middlewares=[gatekeeper]), shutdown_timeout=0.5
    ) as base:
        yield base


def states_of(rec: Recorder) -> list[str]:
    return [f"{s.kind}:{getattr(s, 'transport', '')}" for s in rec.items]


@pytest.mark.parametrize("mode", ["404", "hang"])
async def test_websocket_missing_or_blackholed_falls_back_to_http(mode: str) -> None:
    """No WebSocket (404 route, or accepted but never upgraded): Connected("http"), no Errored."""
    gate = Gate(mode)
    async with gated_hub(gate, Hub(echo=True, ping_interval=1.0)) as base:
        conn = rxconn.connection(base, timeout=0.3, upgrade_interval=None, backoff=FAST)
        states = Recorder(conn.state)
        rec = Recorder(conn.messages)
        await reach(conn, lambda s: isinstance(s, Connected))
        assert conn.current_state == Connected("http")
        assert not any(isinstance(s, Errored) for s in states.items)
        assert states_of(states)[1:3] == ["connecting:websocket", "connecting:http"]
        conn.send("over http")
        assert await rec.count(1) == ["over http"]
        states.dispose()
        rec.dispose()
        conn.close()


async def test_websocket_port_refusing_falls_back_to_http() -> None:
    """WebSocket pointed at a closed port: straight to HTTP, quickly."""
    async with gated_hub(Gate(), Hub(echo=True, ping_interval=1.0)) as base:
        closed = Hub()
        from rxconn.server import serve

        async with serve(closed) as dead:
            dead_url = dead.url
        both = rxconn.fallback(
            rxconn.websocket(dead_url + "/ws"), rxconn.http(base + "/events"), timeout=1.0
        )
        conn = rxconn.Connection(both, backoff=FAST)
        loop = asyncio.get_running_loop()
        started = loop.time()
        state = await reach(conn, lambda s: isinstance(s, Connected))
        assert state == Connected("http")
        assert loop.time() - started < 1.0  # no timeout paid: the refusal is immediate
        conn.close()


async def test_upgrade_back_to_websocket_loses_and_repeats_nothing() -> None:
    """WebSocket restored mid-stream: upgrade; numbered streams both ways complete, in order."""
    gate = Gate("404")
    hub = Hub(ping_interval=1.0)
    sessions = Recorder(hub.sessions)
    async with gated_hub(gate, hub) as base:
        conn = rxconn.connection(base, timeout=0.5, upgrade_interval=0.3, backoff=FAST)
        states = Recorder(conn.state)
        received = Recorder(conn.messages)
        await reach(conn, lambda s: s == Connected("http"))
        session: Session = sessions.items[0]
        at_hub = Recorder(session.messages)
        count = 300

        async def client_side() -> None:
            for i in range(count):
                conn.send(f"c{i}")
                if i % 10 == 0:
                    await asyncio.sleep(0.005)

        async def hub_side() -> None:
            for i in range(count):
                session.send(f"h{i}")
                if i % 10 == 0:
                    await asyncio.sleep(0.005)

        async def restore() -> None:
            await asyncio.sleep(0.05)
            gate.mode = "open"

        await asyncio.gather(client_side(), hub_side(), restore())
        await reach(conn, lambda s: s == Connected("websocket"))
        await at_hub.count(count)
        await received.count(count)
        assert at_hub.items == [f"c{i}" for i in range(count)]
        assert received.items == [f"h{i}" for i in range(count)]
        assert len(sessions.items) == 1
        assert session.transport == "websocket"
        seen = states_of(states)
        assert seen.index("connected:websocket") > seen.index("connected:http")
        assert not any(isinstance(s, Errored) for s in states.items)
        for r in (states, received, at_hub, sessions):
            r.dispose()
        conn.close()


async def test_probes_do_not_create_hub_sessions() -> None:
    """While WebSocket is blackholed then restored, the hub sees exactly one session."""
    gate = Gate("hang")
    hub = Hub(ping_interval=1.0)
    sessions = Recorder(hub.sessions)
    async with gated_hub(gate, hub) as base:
        conn = rxconn.connection(base, timeout=0.3, upgrade_interval=0.2, backoff=FAST)
        await reach(conn, lambda s: s == Connected("http"))
        gate.mode = "open"
        await reach(conn, lambda s: s == Connected("websocket"))
        assert len(sessions.items) == 1
        sessions.dispose()
        conn.close()


async def test_hub_websocket_switch_drives_fallback_and_upgrade() -> None:
    """hub.websocket_enabled = False moves clients to HTTP; True brings them back."""
    from rxconn.server import serve

    hub = Hub(echo=True, ping_interval=1.0)
    async with serve(hub) as server:
        conn = rxconn.connection(server.url, timeout=0.3, upgrade_interval=0.2, backoff=FAST)
        rec = Recorder(conn.messages)
        await reach(conn, lambda s: s == Connected("websocket"))
        hub.websocket_enabled = False
        await reach(conn, lambda s: s == Connected("http"))
        conn.send("via http")
        await rec.count(1)
        hub.websocket_enabled = True
        await reach(conn, lambda s: s == Connected("websocket"))
        conn.send("via websocket")
        assert await rec.count(2) == ["via http", "via websocket"]
        rec.dispose()
        conn.close()
