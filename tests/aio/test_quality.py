"""Connection.quality on real links: behind a proxy adding 50 ms each way, the reported
round trip is about 100 ms on WebSocket, SSE and long polling, and the first sample comes
within one heartbeat of Connected."""

from __future__ import annotations

import asyncio
import statistics

import pytest

import rxconn
from rxconn.server import Hub, serve
from tests.helpers import Recorder, reach
from tests.proxy import FaultProxy


pytestmark = pytest.mark.asyncio(loop_scope="function")

HEARTBEAT = 0.3
LATENCY = 0.05  # each way


@pytest.mark.parametrize("kind", ["websocket", "http", "longpoll"])
async def test_the_reported_round_trip_is_the_link_s(kind: str) -> None:
    """100 ms ± a few ms (loopback, the proxy and the hub add their handling time)."""
    async with serve(Hub(ping_interval=5.0)) as server:
        async with FaultProxy("127.0.0.1", server.port) as proxy:
            proxy.set_latency(LATENCY)
            base = f"http://127.0.0.1:{proxy.port}/rx"
            transport = {
                "websocket": lambda: rxconn.websocket(base + "/ws", heartbeat=HEARTBEAT),
                "http": lambda: rxconn.http(base + "/events", heartbeat=HEARTBEAT),
                "longpoll": lambda: rxconn.longpoll(base + "/poll", heartbeat=HEARTBEAT),
            }[kind]()
            conn = rxconn.Connection(transport)
            quality = Recorder(conn.quality)
            handle = conn.connect()
            await reach(conn, lambda s: isinstance(s, rxconn.Connected))
            loop = asyncio.get_running_loop()
            connected = loop.time()
            await quality.count(1, timeout=HEARTBEAT + 1.0)
            first_after = loop.time() - connected
            await quality.count(5, timeout=10.0)
            rtts = [q.rtt for q in quality.items]
            shown = [round(r * 1000, 1) for r in rtts]
            print(f"{kind}: first after {first_after:.3f} s, rtt ms {shown}")
            assert first_after <= HEARTBEAT + 2 * LATENCY + 0.1  # within one heartbeat
            assert 0.095 <= statistics.median(rtts) <= 0.115
            assert all(q.transport == kind for q in quality.items)
            assert quality.items[-1].missed == 0
            quality.dispose()
            handle.dispose()
            conn.close()
