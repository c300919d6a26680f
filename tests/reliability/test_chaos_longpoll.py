"""Chaos for long polling: exactly once, in order, both ways, on a long-poll leg under cuts and
across a WebSocket -> SSE -> long poll -> WebSocket switch sequence, in one hub session.

The switches are what a hostile network does: WebSocket blocked (``hub.websocket_enabled``
off), then a proxy that buffers SSE (:meth:`FaultProxy.mute_after_headers`, with a cut so the
connection must open a new link), then both lifted so the chain upgrades back to WebSocket.
Each test prints one ``[reliability]`` line (``-s`` shows it); ``RXCONN_LONG=1`` runs more
messages and more rounds of the sequence.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import rxconn
from rxconn import Connected
from rxconn.server import Hub
from tests.helpers import Recorder, reach
from tests.proxy import FaultProxy
from tests.reliability._chaos import (
    CHAOS_BACKOFF,
    Cutter,
    HubLog,
    StateLog,
    numbered,
    paced,
    report,
)
from tests.reliability.conftest import LONG


pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(300 if LONG else 60)]

COUNT = 20_000 if LONG else 1_000
"""Messages per direction."""
DURATION = 40.0 if LONG else 4.0
"""Seconds over which each stream is spread."""
ROUNDS = 5 if LONG else 1
"""Times the switch sequence runs during one stream."""
LATENCY = 0.01
HOLD = 1.0
"""Poll hold: well inside the connection's idle_timeout (5 s)."""
SETTLE = 30.0
SWITCH = 10.0
"""Bound on each switch of the sequence."""
MUTED = b" /rx/events"
"""What the proxy looks for in a request to buffer its response (the SSE GET)."""


def check(
    title: str,
    log: HubLog,
    received: Recorder,
    client_out: list[str],
    hub_out: list[str],
    states: StateLog,
    **numbers: Any,
) -> None:
    """Report, then assert: exactly once, in order, both ways, one session, never gave up."""
    report(
        title,
        messages_each_way=COUNT,
        reconnects=states.reconnects,
        connects=dict(states.connects),
        errors=dict(states.errors),
        sessions=len(log.sessions),
        lost_c2h=COUNT - len(set(log.payloads)),
        dup_c2h=len(log.payloads) - len(set(log.payloads)),
        lost_h2c=COUNT - len(set(received.items)),
        dup_h2c=len(received.items) - len(set(received.items)),
        **numbers,
    )
    assert log.payloads == client_out  # client -> hub: exactly once, in order
    assert received.items == hub_out  # hub -> client: exactly once, in order
    assert not states.gave_up


async def test_longpoll_exactly_once_in_order_both_ways_under_cuts(
    hub: Hub, proxy: FaultProxy
) -> None:
    """The long-poll leg: COUNT messages each way while every connection is cut every ~200 ms
    (FIN and RST alternate): every message arrives once, in order, in one session."""
    log = HubLog(hub)
    conn = rxconn.Connection(
        rxconn.longpoll(proxy.url("http", "/rx/poll"), hold=HOLD, open_timeout=2.0),
        backoff=CHAOS_BACKOFF,
        idle_timeout=5.0,
    )
    states = StateLog()
    state_sub = conn.state.subscribe(states.on_state)
    received = Recorder(conn.messages)
    await reach(conn, lambda s: s == Connected("longpoll"))
    await log.until(lambda: bool(log.sessions), 5.0)
    session = log.sessions[0]
    client_out = numbered("c", COUNT)
    hub_out = numbered("h", COUNT)
    proxy.set_latency(LATENCY)
    cutter = Cutter(proxy)
    cutter.start()
    await asyncio.gather(
        paced(conn.send, client_out, DURATION), paced(session.send, hub_out, DURATION)
    )
    await cutter.stop()
    await log.until(lambda: len(log.received) >= COUNT, SETTLE)
    await received.count(COUNT, SETTLE)
    check(
        "chaos longpoll",
        log,
        received,
        client_out,
        hub_out,
        states,
        cut_rounds=cutter.rounds,
        links_cut=cutter.links_cut,
    )
    assert len(log.sessions) == 1
    assert cutter.links_cut >= 5 and states.reconnects >= 5
    received.dispose()
    state_sub.dispose()
    log.dispose()
    conn.close()


async def switch_sequence(
    conn: rxconn.Connection, hub: Hub, proxy: FaultProxy, rounds: int, pause: float
) -> list[str]:
    """WebSocket -> SSE -> long poll -> WebSocket, ``rounds`` times; returns the transports
    the connection was on after each switch."""
    path: list[str] = []

    async def on(transport: str) -> None:
        await reach(conn, lambda s: s == Connected(transport), SWITCH)
        path.append(transport)
        await asyncio.sleep(pause)  # messages flow on this transport for a while

    await on("websocket")
    for _ in range(rounds):
        hub.websocket_enabled = False  # WebSocket blocked: the link closes, SSE takes over
        await on("http")
        proxy.mute_after_headers(MUTED)  # now SSE is buffered too ...
        proxy.cut()  # ... and the link must be replaced: the chain reaches long polling
        await on("longpoll")
        proxy.mute_after_headers(None)
        hub.websocket_enabled = True  # the upgrade probe finds WebSocket again
        await on("websocket")
    return path


async def test_switch_sequence_websocket_sse_longpoll_websocket_loses_nothing(
    hub: Hub, proxy: FaultProxy
) -> None:
    """COUNT messages each way while the connection goes WebSocket -> SSE -> long poll ->
    WebSocket (ROUNDS times): exactly once, in order, both ways, across every switch."""
    log = HubLog(hub)
    conn = rxconn.connection(
        proxy.url("http", "/rx"),
        timeout=0.5,
        upgrade_interval=0.3,
        heartbeat=1.0,
        hold=HOLD,
        open_timeout=2.0,
        backoff=CHAOS_BACKOFF,
        idle_timeout=5.0,
    )
    states = StateLog()
    state_sub = conn.state.subscribe(states.on_state)
    received = Recorder(conn.messages)
    await reach(conn, lambda s: s == Connected("websocket"))
    await log.until(lambda: bool(log.sessions), 5.0)
    session = log.sessions[0]
    client_out = numbered("c", COUNT)
    hub_out = numbered("h", COUNT)
    proxy.set_latency(LATENCY)
    loop = asyncio.get_running_loop()
    started = loop.time()
    pause = DURATION / (3 * ROUNDS + 1) / 2
    path, *_ = await asyncio.gather(
        switch_sequence(conn, hub, proxy, ROUNDS, pause),
        paced(conn.send, client_out, DURATION),
        paced(session.send, hub_out, DURATION),
    )
    await log.until(lambda: len(log.received) >= COUNT, SETTLE)
    await received.count(COUNT, SETTLE)
    connected = [s.transport for s in states.states if isinstance(s, Connected)]
    check(
        "chaos switch websocket->sse->longpoll->websocket",
        log,
        received,
        client_out,
        hub_out,
        states,
        rounds=ROUNDS,
        path="->".join(path),
        run_s=round(loop.time() - started, 2),
    )
    assert path == ["websocket"] + ["http", "longpoll", "websocket"] * ROUNDS
    assert is_subsequence(path, connected)
    # Every message went through the client's one session; the muted SSE GETs resumed it
    # (the client presented its key), so no orphan session carried anything.
    assert [i for i, _ in log.received] == [0] * COUNT
    received.dispose()
    state_sub.dispose()
    log.dispose()
    conn.close()


def is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(x == y for y in it) for x in needle)
