"""Hub restarts on the same port: the client reconnects each time and loses nothing it sent.

Leaving ``serve()`` ends every hub session (as a restarted process would lose them), so each
restart is a session loss: the client is answered 410 Gone (or, over HTTP, with a fresh
session), opens a new session and resends every payload the hub had not acknowledged.
DESIGN.md makes that at-least-once across a session loss; the hub's last cumulative ack on a
graceful close is meant to leave nothing to resend. Asserted: every payload arrives, in send
order (first occurrences), one session per serve; duplicates are counted and reported.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import rxconn
from rxconn import Backoff, Connected
from rxconn.server import Hub, serve
from tests.helpers import reach
from tests.reliability._chaos import HubLog, StateLog, dedupe, report
from tests.reliability.conftest import LONG


pytestmark = pytest.mark.asyncio

RESTARTS = 20 if LONG else 5
PER_PHASE = 50
"""Messages sent while the hub is up, and again while it is down, per restart."""
BACKOFF = Backoff(initial=0.05, max_delay=0.2, jitter=0.0)


def make_connection(kind: str, base: str) -> rxconn.Connection:
    transport: Any
    if kind == "websocket":
        transport = rxconn.websocket(base + "/ws", heartbeat=1.0, open_timeout=2.0)
    elif kind == "http":
        transport = rxconn.http(base + "/events", open_timeout=2.0)
    else:
        return rxconn.connection(
            base, timeout=1.0, upgrade_interval=0.5, backoff=BACKOFF, idle_timeout=5.0
        )
    return rxconn.Connection(transport, backoff=BACKOFF, idle_timeout=5.0)


@pytest.mark.parametrize("kind", ["websocket", "http", "fallback"])
async def test_restarts_on_the_same_port_deliver_buffered_sends_in_order(kind: str) -> None:
    """RESTARTS restarts; sends while up and while down all reach the hub, in order."""
    loop = asyncio.get_running_loop()
    hub = Hub(ping_interval=0.5)
    log = HubLog(hub)
    sent: list[str] = []
    reconnect_times: list[float] = []
    async with serve(hub, "127.0.0.1", 0) as server:
        port = server.port
        conn = make_connection(kind, server.url)
        states = StateLog()
        state_sub = conn.state.subscribe(states.on_state)
        await reach(conn, lambda s: isinstance(s, Connected))

    def send_batch(tag: str) -> None:
        for i in range(PER_PHASE):
            payload = f"{tag}-{i}"
            sent.append(payload)
            conn.send(payload)

    for restart in range(RESTARTS):
        # The hub is down here: the client retries, and buffers what is sent.
        await reach(conn, lambda s: not isinstance(s, Connected))
        send_batch(f"down{restart}")
        async with serve(hub, "127.0.0.1", port) as server:
            started = loop.time()
            await reach(conn, lambda s: isinstance(s, Connected))
            reconnect_times.append(loop.time() - started)
            send_batch(f"up{restart}")
            await log.until(lambda: set(log.payloads) >= set(sent), 10.0)
            if restart % 2:
                send_batch(f"late{restart}")  # sent just before the hub goes: maybe unacked
    await reach(conn, lambda s: not isinstance(s, Connected))
    send_batch("final")
    async with serve(hub, "127.0.0.1", port):
        await log.until(lambda: set(log.payloads) >= set(sent), 10.0)

    payloads = log.payloads
    report(
        f"restarts {kind}",
        restarts=RESTARTS,
        sent=len(sent),
        delivered=len(payloads),
        duplicates=len(payloads) - len(set(payloads)),
        sessions=len(log.sessions),
        reconnect_max_s=round(max(reconnect_times), 3),
        connects=dict(states.connects),
        errors=dict(states.errors),
    )
    assert dedupe(payloads) == sent  # nothing lost, nothing reordered
    assert len(log.sessions) == RESTARTS + 2  # the first serve, each restart, the last one
    for index, _ in enumerate(log.sessions):  # within a session: exactly once, in order
        mine = [p for i, p in log.received if i == index]
        assert len(mine) == len(set(mine))
    assert not states.gave_up
    state_sub.dispose()
    log.dispose()
    conn.close()


async def test_fallback_stays_on_websocket_across_a_hub_restart() -> None:
    """A restart is a session loss, not a WebSocket failure: reconnect over WebSocket."""
    hub = Hub(ping_interval=0.5)
    async with serve(hub, "127.0.0.1", 0) as server:
        port = server.port
        conn = rxconn.connection(server.url, timeout=1.0, backoff=BACKOFF, idle_timeout=5.0)
        states = StateLog()
        state_sub = conn.state.subscribe(states.on_state)
        await reach(conn, lambda s: s == Connected("websocket"))
    await reach(conn, lambda s: not isinstance(s, Connected))
    async with serve(hub, "127.0.0.1", port):
        state = await reach(conn, lambda s: isinstance(s, Connected))
    state_sub.dispose()
    conn.close()
    report("fallback after a restart", reconnected_over=getattr(state, "transport", None))
    assert state == Connected("websocket")
