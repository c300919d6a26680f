"""Receipts under chaos: every receipt settles exactly once, in bounded time, and tells the truth.

Through the fault proxy, with every link cut every ~200 ms (FIN and RST alternate), an
outage longer than ``ttl`` (the proxy refuses connections), and, for the fallback, the
hub's WebSocket switched off and on: each receipt of a numbered stream is counted.

* it settles exactly once (its observer is told once), as ``Delivered`` or a typed error;
* it settles within ``ttl`` plus one backoff cycle (the longest backoff wait plus one
  attempt's ``open_timeout``) after ``send()``;
* what it says is true: the hub received exactly the ``Delivered`` payloads, once each, in
  order, and none of the expired ones; each expired payload is on ``drops`` once.

A second test measures the reliable client -> hub rate through 50 ms of added latency
each way (the outbox keeps writing while acknowledgements are on their way; stop-and-wait
would give 10 msg/s) and checks that every receipt says Delivered.

Each test prints one ``[reliability]`` line (``pytest -s``); ``RXCONN_LONG=1`` runs longer.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

import rxconn
from rxconn import Connected, Delivered, Drop, Expired
from rxconn.server import Hub, serve
from tests.helpers import Recorder, reach
from tests.proxy import FaultProxy
from tests.reliability._chaos import (
    CHAOS_BACKOFF,
    Cutter,
    HubLog,
    flip_websocket,
    numbered,
    paced,
    report,
)
from tests.reliability.conftest import LONG


pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(300 if LONG else 60)]

COUNT = 10_000 if LONG else 600
"""Payloads sent during the chaos run."""
DURATION = 30.0 if LONG else 3.0
"""Seconds over which they are sent (the cutter runs that long)."""
TTL = 1.0
"""Seconds a payload may wait unsent."""
OUTAGE = 1.5
"""Seconds during which the proxy refuses every connection (longer than TTL)."""
OPEN_TIMEOUT = 2.0
CYCLE = CHAOS_BACKOFF.max_delay * (1 + CHAOS_BACKOFF.jitter) + OPEN_TIMEOUT
"""One backoff cycle: the longest wait before an attempt, plus that attempt's open timeout."""
SETTLE = 30.0


def make_connection(kind: str, proxy: FaultProxy) -> rxconn.Connection:
    options: dict[str, Any] = {
        "backoff": CHAOS_BACKOFF,
        "idle_timeout": 5.0,
        "ttl": TTL,
        "max_buffer": COUNT + 10,
    }
    if kind == "websocket":
        transport: Any = rxconn.websocket(
            proxy.url("ws", "/rx/ws"), heartbeat=1.0, open_timeout=OPEN_TIMEOUT
        )
    elif kind == "http":
        transport = rxconn.http(proxy.url("http", "/rx/events"), open_timeout=OPEN_TIMEOUT)
    else:  # what rxconn.connection() builds (spelled out: it does not take ttl= yet)
        transport = rxconn.fallback(
            rxconn.websocket(proxy.url("ws", "/rx/ws"), heartbeat=1.0, open_timeout=OPEN_TIMEOUT),
            rxconn.http(proxy.url("http", "/rx/events"), open_timeout=OPEN_TIMEOUT),
            timeout=0.5,
            upgrade_interval=0.3,
        )
    return rxconn.Connection(transport, **options)


async def outage(proxy: FaultProxy, at: float, seconds: float) -> None:
    """After ``at`` s, cut every link and refuse new ones for ``seconds`` s."""
    await asyncio.sleep(at)
    proxy.refuse(True)
    proxy.cut(rst=True)
    await asyncio.sleep(seconds)
    proxy.refuse(False)


@pytest.mark.parametrize("kind", ["websocket", "http", "fallback"])
async def test_every_receipt_settles_once_within_ttl_plus_a_backoff_cycle(
    kind: str, hub: Hub, proxy: FaultProxy
) -> None:
    """COUNT receipts under cuts every ~200 ms and an outage: each settles once, in time, truly."""
    loop = asyncio.get_running_loop()
    log = HubLog(hub)
    conn = make_connection(kind, proxy)
    drops = Recorder(conn.drops)
    handle = conn.connect()
    await reach(conn, lambda s: isinstance(s, Connected))

    payloads = numbered("c", COUNT)
    sent_at: dict[str, float] = {}
    settled: dict[str, list[tuple[float, object]]] = {p: [] for p in payloads}

    def send(payload: str) -> None:
        sent_at[payload] = loop.time()
        receipt = conn.send(payload)

        def told(outcome: object) -> None:
            settled[payload].append((loop.time(), outcome))

        receipt.subscribe(told, told)

    proxy.set_latency(0.01)
    cutter = Cutter(proxy)
    flipping = asyncio.Event()
    flipper = asyncio.create_task(flip_websocket(hub, flipping)) if kind == "fallback" else None
    cutter.start()
    dark = asyncio.create_task(outage(proxy, DURATION / 3, OUTAGE))
    await paced(send, payloads, DURATION)
    await dark
    await cutter.stop()
    flipping.set()
    flips = await flipper if flipper is not None else 0
    await conn.flush(timeout=SETTLE)
    delivered = [p for p in payloads if isinstance(settled[p][0][1], Delivered)]
    await log.until(lambda: len(log.received) >= len(delivered), SETTLE)

    counts = Counter(len(told) for told in settled.values())
    latency = {p: settled[p][0][0] - sent_at[p] for p in payloads if settled[p]}
    kinds = Counter(type(told[0][1]).__name__ for told in settled.values() if told)
    report(
        f"receipts chaos {kind}",
        receipts=COUNT,
        outcomes=dict(kinds),
        cut_rounds=cutter.rounds,
        links_cut=cutter.links_cut,
        flips=flips,
        sessions=len(log.sessions),
        delivered_by=dict(Counter(settled[p][0][1].transport for p in delivered)),  # type: ignore[union-attr]
        settle_max_s=round(max(latency.values()), 3),
        settle_p50_s=round(sorted(latency.values())[len(latency) // 2], 3),
        bound_s=round(TTL + CYCLE, 2),
    )
    assert counts == {1: COUNT}  # every receipt settled, exactly once
    assert set(kinds) <= {"Delivered", "Expired"}
    assert kinds["Delivered"] > COUNT // 2
    assert max(latency.values()) <= TTL + CYCLE
    # Truth: the hub has exactly the delivered payloads, once each and in order.
    assert log.payloads == delivered
    expired = [p for p in payloads if isinstance(settled[p][0][1], Expired)]
    assert drops.items == [Drop(p, "expired") for p in expired]
    for p in delivered:
        outcome = settled[p][0][1]
        assert isinstance(outcome, Delivered) and outcome.acknowledged
    assert cutter.links_cut >= 5
    if kind == "fallback":  # receipts name the link that delivered: both took part
        assert {settled[p][0][1].transport for p in delivered} == {"websocket", "http"}  # type: ignore[union-attr]

    drops.dispose()
    handle.dispose()
    log.dispose()
    conn.close()


@pytest.mark.parametrize("kind", ["websocket", "http"])
async def test_window_is_not_capped_by_the_round_trip(
    kind: str, hub: Hub, proxy: FaultProxy
) -> None:
    """N x 100 B through 50 ms each way: all Delivered, exactly once; the rate is reported."""
    count = 20_000 if LONG else 3_000
    log = HubLog(hub)
    transport: Any = (
        rxconn.websocket(proxy.url("ws", "/rx/ws"))
        if kind == "websocket"
        else rxconn.http(proxy.url("http", "/rx/events"))
    )
    conn = rxconn.Connection(transport, max_buffer=count)
    handle = conn.connect()
    await reach(conn, lambda s: isinstance(s, Connected))
    proxy.set_latency(0.05)
    payloads = [f"{i:09d}" + "x" * 91 for i in range(count)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    receipts = [conn.send(p) for p in payloads]
    await conn.flush(timeout=SETTLE)
    elapsed = loop.time() - started
    report(
        f"receipts throughput {kind} through 50 ms each way",
        messages=count,
        seconds=round(elapsed, 3),
        msg_per_s=round(count / elapsed),
        stop_and_wait_msg_per_s=10,
    )
    assert all(isinstance(r.outcome, Delivered) and r.outcome.acknowledged for r in receipts)
    await log.until(lambda: len(log.received) >= count, SETTLE)
    assert log.payloads == payloads

    handle.dispose()
    log.dispose()
    conn.close()


@pytest.mark.parametrize("kind", ["websocket", "http"])
async def test_receipts_unacknowledged_at_a_session_loss_wait_for_the_new_session(
    kind: str,
) -> None:
    """Payloads the hub never acknowledged when it lost the session: resent, and their
    receipts settle only when the new session acknowledges them (numbered from 1 again)."""
    hub = Hub(ping_interval=0.5)
    log = HubLog(hub)
    async with serve(hub, "127.0.0.1", 0) as server:
        port = server.port  # a free port, served twice below
    async with FaultProxy("127.0.0.1", port) as proxy:
        transport: Any = (
            rxconn.websocket(proxy.url("ws", "/rx/ws"), heartbeat=None, open_timeout=2.0)
            if kind == "websocket"
            else rxconn.http(proxy.url("http", "/rx/events"), open_timeout=2.0)
        )
        conn = rxconn.Connection(transport, backoff=CHAOS_BACKOFF, idle_timeout=None)
        try:
            async with serve(hub, "127.0.0.1", port):
                handle = conn.connect()
                await reach(conn, lambda s: isinstance(s, Connected))
                first = conn.send("before")
                assert await asyncio.wait_for(first, 10) == Delivered(1, kind)
                proxy.blackhole(True)  # what is sent now is written, never acknowledged
                receipts = [conn.send(f"p{i}") for i in range(20)]
            # The hub went away with the session; a new one serves the same port.
            async with serve(hub, "127.0.0.1", port):
                assert not any(r.done for r in receipts)
                proxy.blackhole(False)
                proxy.cut(rst=True)
                async with asyncio.timeout(10):
                    outcomes = [await r for r in receipts]
                await log.until(lambda: len(log.sessions) == 2 and len(log.received) >= 21, 10)
            report(
                f"receipts across a session loss {kind}",
                resets=conn.session_resets,
                sessions=len(log.sessions),
            )
            assert outcomes == [Delivered(i, kind) for i in range(1, 21)]  # new numbers
            assert [p for index, p in log.received if index == 1] == [f"p{i}" for i in range(20)]
            assert conn.session_resets >= 1
            handle.dispose()
        finally:
            log.dispose()
            conn.close()


async def test_plain_websocket_receipts_say_not_acknowledged(hub: Hub, server: Any) -> None:
    """hub=False: Delivered once the socket took the frame, with acknowledged=False."""
    log = HubLog(hub)
    conn = rxconn.Connection(rxconn.websocket(server.url + "/ws", hub=False), idle_timeout=None)
    receipts = [conn.send(f"p{i}") for i in range(5)]
    async with asyncio.timeout(10):
        await conn.flush()
        await log.until(lambda: len(log.received) >= 5, 10)
    assert [r.outcome for r in receipts] == [
        Delivered(i, "websocket", acknowledged=False) for i in range(1, 6)
    ]
    assert log.payloads == [f"p{i}" for i in range(5)]
    log.dispose()
    conn.close()
