"""Hubs sharing sessions in a real Redis (issue 13): any hub serves any session, a hub that
goes away loses nothing, sends and broadcasts reach sessions wherever their link is.

The hubs run in this process, each served on its own port, behind a round-robin proxy
(no stickiness: every new connection goes to the next hub); the kill -9 tests of hub
processes are in tests/reliability/test_cluster_kill.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import redis.asyncio as aioredis

import rxconn
from rxconn import Connected
from rxconn.server import Hub, serve
from tests.cluster import RoundRobinProxy
from tests.helpers import Recorder, reach
from tests.redis_server import RedisServer
from tests.reliability.conftest import LONG


pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(60)]

FAST = rxconn.Backoff(initial=0.05, max_delay=0.2, jitter=0.0)


class Cluster:
    """``n`` hubs on one Redis, each served, behind a round-robin proxy; hubs can be stopped."""

    def __init__(self, redis_url: str, n: int, **hub: Any) -> None:
        self.hubs = [Hub(backplane=redis_url, **hub) for _ in range(n)]
        self._stacks = [contextlib.AsyncExitStack() for _ in range(n)]
        self.proxy: RoundRobinProxy | None = None

    async def __aenter__(self) -> Cluster:
        upstreams = []
        for hub, stack in zip(self.hubs, self._stacks, strict=True):
            server = await stack.enter_async_context(serve(hub, "127.0.0.1", 0))
            upstreams.append(("127.0.0.1", server.port))
        self.proxy = await RoundRobinProxy(upstreams).__aenter__()
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.proxy is not None
        await self.proxy.__aexit__()
        for stack in self._stacks:
            await stack.aclose()

    def url(self, scheme: str, path: str) -> str:
        assert self.proxy is not None
        return self.proxy.url(scheme, "/rx" + path)

    def holder(self) -> int:
        """Index of the hub whose view of a session has a link."""
        for i, hub in enumerate(self.hubs):
            if any(s.link is not None for s in hub.live_sessions):
                return i
        raise AssertionError("no hub holds a link")

    async def stop(self, index: int) -> None:
        """Stop serving hub ``index`` (its links close; its sessions live on in Redis)."""
        await self._stacks[index].aclose()


def numbered(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def transport_for(cluster: Cluster, transport: str) -> rxconn.Transport:
    if transport == "websocket":
        return rxconn.websocket(cluster.url("ws", "/ws"), heartbeat=0.5)
    if transport == "http":
        return rxconn.http(cluster.url("http", "/events"), heartbeat=0.5)
    return rxconn.longpoll(cluster.url("http", "/poll"), hold=0.5, heartbeat=0.5)


@pytest.mark.parametrize("transport", ["websocket", "http", "longpoll"])
async def test_a_hub_leaving_moves_the_session_and_loses_nothing(
    redis_url: str, transport: str
) -> None:
    """A client streams to an echoing cluster while a third hub sends to its session; the hub
    holding its link goes away mid-stream: the client resumes on another hub, in the same
    session, and every echo and every hub message arrives exactly once, in order."""
    async with Cluster(redis_url, 2, echo=True, ping_interval=0.5) as cluster:
        sender = Hub(backplane=redis_url)
        await sender.open_backplane()
        conn = rxconn.Connection(transport_for(cluster, transport), backoff=FAST, idle_timeout=2.0)
        got = Recorder(conn.messages)
        resets = conn.session_resets
        await reach(conn, lambda s: s == Connected(transport))
        first = cluster.holder()
        (session,) = [s for s in cluster.hubs[first].live_sessions if s.link is not None]
        out, pushed = numbered("c", 60), numbered("h", 60)
        for i in range(60):
            conn.send(out[i])
            await sender.send(session.id, pushed[i])
            if i == 20:
                await cluster.stop(first)  # the hub holding the link leaves
            await asyncio.sleep(0.005)
        await got.until(lambda items: len(items) >= 120, 20.0)
        echoes = [m for m in got.items if m.startswith("c")]
        hub_messages = [m for m in got.items if m.startswith("h")]
        assert echoes == out  # each client message applied (and echoed) exactly once
        assert hub_messages == pushed  # each hub message delivered exactly once, in order
        assert conn.session_resets == resets  # the same session throughout
        other = cluster.hubs[1 - first]
        assert [s.id for s in other.live_sessions] == [session.id]
        got.dispose()
        conn.close()
        await sender.close_backplane()


async def test_broadcast_reaches_sessions_on_every_hub(redis_url: str) -> None:
    """broadcast() on one hub reaches the sessions whose links are on the others."""
    async with Cluster(redis_url, 2, ping_interval=0.5) as cluster:
        conns = [
            rxconn.Connection(rxconn.websocket(cluster.url("ws", "/ws")), backoff=FAST)
            for _ in range(4)
        ]
        recorders = [Recorder(c.messages) for c in conns]
        for conn in conns:
            await reach(conn, lambda s: s == Connected("websocket"))
        assert {i for i in cluster.proxy.chosen} == {0, 1} if cluster.proxy else False
        cluster.hubs[0].broadcast("to all")
        for rec in recorders:
            await rec.until(lambda items: items == ["to all"], 5.0)
        for rec, conn in zip(recorders, conns, strict=True):
            rec.dispose()
            conn.close()


async def test_a_session_whose_hub_is_gone_still_gets_every_broadcast(redis_url: str) -> None:
    """A broadcast is numbered once in Redis, not copied to the sessions some hub holds: a
    session whose hub left (no hub holds it while its client waits to reconnect) gets the
    broadcasts and the direct messages of the meantime when it resumes on another hub,
    each once and in order."""
    async with Cluster(redis_url, 2, ping_interval=0.5) as cluster:
        sender = Hub(backplane=redis_url)
        await sender.open_backplane()
        slow = rxconn.Backoff(initial=1.0, max_delay=1.0, jitter=0.0)
        conn = rxconn.Connection(transport_for(cluster, "websocket"), backoff=slow)
        got = Recorder(conn.messages)
        await reach(conn, lambda s: s == Connected("websocket"))
        session_id = conn.session_id
        assert session_id is not None
        sender.broadcast("b-before")
        await got.until(lambda items: items == ["b-before"], 5.0)
        await cluster.stop(cluster.holder())
        for i in range(10):
            sender.broadcast(f"b{i}")
            await sender.send(session_id, f"h{i}")
        await reach(conn, lambda s: s == Connected("websocket"))
        await got.until(lambda items: len(items) >= 21, 10.0)
        assert [m for m in got.items if m.startswith("b")] == ["b-before"] + numbered("b", 10)
        assert [m for m in got.items if m.startswith("h")] == numbered("h", 10)
        assert conn.session_resets == 0
        got.dispose()
        conn.close()
        await sender.close_backplane()


async def test_a_hub_dropped_from_the_registry_reads_what_it_missed(redis_url: str) -> None:
    """A hub that was away longer than its registration lasts (a long pause; here it is
    dropped by hand) gets no inbox entries meanwhile: its next heartbeat notices, and it
    reads its sessions' missing messages from Redis."""
    async with Cluster(redis_url, 1, ping_interval=0.5) as cluster:
        sender = Hub(backplane=redis_url)
        await sender.open_backplane()
        conn = rxconn.Connection(rxconn.websocket(cluster.url("ws", "/ws")), backoff=FAST)
        got = Recorder(conn.messages)
        await reach(conn, lambda s: s == Connected("websocket"))
        client = aioredis.Redis.from_url(redis_url)
        try:
            hub_id = cluster.hubs[0]._cluster.id  # noqa: SLF001
            assert await client.zrem("rx:hubs", hub_id) == 1
            sender.broadcast("while away")
            await got.until(lambda items: items == ["while away"], 5.0)
            assert await client.zscore("rx:hubs", hub_id) is not None  # registered again
        finally:
            await client.aclose()
        got.dispose()
        conn.close()
        await sender.close_backplane()


@pytest.mark.parametrize("transport", ["websocket", "http"])
async def test_while_redis_is_away_a_new_link_is_told_to_try_again_in_a_second(
    redis_server: RedisServer, transport: str
) -> None:
    """A hub that cannot reach Redis answers a new link "try again later" with a 1 s delay
    (503 Retry-After: 1, or a 1013 close naming 1 s; rxconn clients would wait 5 s for a
    bare 1013), and the link opens once Redis is back."""
    async with Cluster(redis_server.url, 1, ping_interval=0.5) as cluster:
        redis_server.pause()
        conn = rxconn.Connection(transport_for(cluster, transport), backoff=FAST)
        states = Recorder(conn.state)
        try:
            await states.until(lambda items: any(isinstance(s, rxconn.Errored) for s in items))
        finally:
            redis_server.resume()
        errored = next(s for s in states.items if isinstance(s, rxconn.Errored))
        assert errored.retry_in == 1.0, errored
        await reach(conn, lambda s: s == Connected(transport), 10.0)
        states.dispose()
        conn.close()


async def test_backplane_state_and_send_to_unknown_session(redis_url: str) -> None:
    """hub.backplane.state says "connected"; sending to a session nobody has is an error."""
    hub = Hub(backplane=redis_url)
    states = Recorder(hub.backplane.state)
    await hub.open_backplane()
    try:
        await states.until(lambda items: items[-1] == "connected", 5.0)
        with pytest.raises(rxconn.ConnectionClosedError):
            await hub.send("no-such-session", "x")
    finally:
        states.dispose()
        await hub.close_backplane()


async def test_redis_restarted_empty_gives_new_sessions_and_loses_nothing_after(
    redis_server: RedisServer,
) -> None:
    """Redis comes back without its data: the hub reports it, the client is told its session
    is gone and continues in a new one (counted in session_resets), and what is sent after
    the recovery arrives."""
    async with Cluster(redis_server.url, 2, echo=True, ping_interval=0.5) as cluster:
        wiped = Recorder(cluster.hubs[0].backplane.wiped)
        conn = rxconn.Connection(
            rxconn.websocket(cluster.url("ws", "/ws"), heartbeat=0.5),
            backoff=FAST,
            idle_timeout=2.0,
        )
        got = Recorder(conn.messages)
        await reach(conn, lambda s: s == Connected("websocket"))
        await asyncio.wait_for(conn.send("before"), 5.0)  # acknowledged: never resent
        await got.until(lambda items: items == ["before"], 5.0)
        await redis_server.restart_empty()
        await wiped.until(lambda items: len(items) == 1, 10.0)  # reported, never silent
        async with asyncio.timeout(10.0):
            while conn.session_resets < 1:
                await asyncio.sleep(0.02)
        await reach(conn, lambda s: s == Connected("websocket"))
        for i in range(20):
            conn.send(f"after{i}")
        await got.until(lambda items: len(items) >= 21, 10.0)
        assert got.items == ["before"] + [f"after{i}" for i in range(20)]
        assert conn.session_resets == 1
        wiped.dispose()
        got.dispose()
        conn.close()


@pytest.mark.timeout(1800 if LONG else 60)
async def test_no_session_key_is_left_after_the_grace(redis_server: RedisServer) -> None:
    """Sessions opened, used and closed or abandoned on any hub leave no key behind once
    their grace is over (checked with SCAN); quitting deletes at once."""
    cycles = 10_000 if LONG else 60
    async with Cluster(redis_server.url, 2, echo=True, session_grace=1.0, poll_hold=0.5) as cluster:
        for i in range(cycles):
            conn = rxconn.Connection(
                transport_for(cluster, ("websocket", "http", "longpoll")[i % 3]), backoff=FAST
            )
            got = Recorder(conn.messages)
            want = [f"m{i}"]
            conn.send(want[0])
            await got.until(lambda items, want=want: items == want, 10.0)
            got.dispose()
            if i % 2:
                conn.close()  # quits: the session is deleted at once
            else:
                conn._stop_pipeline()  # noqa: SLF001  (a client that vanishes: no quit)
                conn.close()
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            async with asyncio.timeout(15.0):
                while [k async for k in client.scan_iter(match="rx:{*")]:
                    await asyncio.sleep(0.2)
        finally:
            await client.aclose()


async def test_redis_briefly_away_loses_nothing(redis_server: RedisServer) -> None:
    """Redis stops answering for a moment (SIGSTOP, then SIGCONT: nothing lost in it) while a
    client streams both ways: messages wait (retried, never acknowledged early) and then
    arrive exactly once, in order, in the same session."""
    async with Cluster(redis_server.url, 2, echo=True, ping_interval=0.5) as cluster:
        sender = Hub(backplane=redis_server.url)
        await sender.open_backplane()
        conn = rxconn.Connection(
            transport_for(cluster, "websocket"), backoff=FAST, idle_timeout=5.0
        )
        got = Recorder(conn.messages)
        await reach(conn, lambda s: s == Connected("websocket"))
        session_id = conn.session_id
        assert session_id is not None
        out, pushed = numbered("c", 40), numbered("h", 40)
        for i in range(40):
            if i == 10:
                redis_server.pause()
            if i == 30:
                redis_server.resume()
            conn.send(out[i])
            if i < 10 or i >= 30:
                await sender.send(session_id, pushed[i])
            await asyncio.sleep(0.02)
        for i in range(10, 30):  # what the sending hub could not hand to Redis meanwhile
            await sender.send(session_id, pushed[i])
        await got.until(lambda items: len(items) >= 80, 20.0)
        assert [m for m in got.items if m.startswith("c")] == out
        in_redis_order = pushed[:10] + pushed[30:] + pushed[10:30]
        assert [m for m in got.items if m.startswith("h")] == in_redis_order
        assert conn.session_resets == 0
        got.dispose()
        conn.close()
        await sender.close_backplane()
