"""Half-open links: a blackholed established link is detected and replaced.

The proxy's black hole forwards nothing either way (no byte, no FIN) while both kernels keep
the TCP connection up, as a dead NAT entry or a silent middlebox would. DESIGN.md: if nothing
arrives for ``idle_timeout`` seconds while connected, the link is dead and replaced; with
``websocket(heartbeat=h)`` a pong missing for ``h`` seconds is a dead link too. The issue's
bound: detection within 2x the timeout. Once the hole lifts, the connection reconnects, and
(with the hub session) what was sent meanwhile arrives exactly once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import rxconn
from rxconn import Backoff, Connected, ConnectionLost, Errored
from rxconn.server import Hub
from tests.helpers import Recorder, reach
from tests.proxy import FaultProxy
from tests.reliability._chaos import StateLog, report
from tests.reliability.conftest import LONG


pytestmark = pytest.mark.asyncio

ROUNDS = 10 if LONG else 3
"""Black holes per test."""
IDLE = 1.0
HEARTBEAT = 0.3
BACKOFF = Backoff(initial=0.05, max_delay=0.2, jitter=0.0)


def transport(kind: str, proxy: FaultProxy, heartbeat: float | None) -> Any:
    if kind == "websocket":
        return rxconn.websocket(proxy.url("ws", "/rx/ws"), heartbeat=heartbeat, open_timeout=1.0)
    return rxconn.http(proxy.url("http", "/rx/events"), open_timeout=1.0)


async def blackhole_rounds(
    conn: rxconn.Connection, proxy: FaultProxy, received: Recorder, bound: float
) -> tuple[list[float], list[float], list[Errored]]:
    """Black-hole the established link ROUNDS times; return detection and recovery times."""
    loop = asyncio.get_running_loop()
    detections: list[float] = []
    recoveries: list[float] = []
    failures: list[Errored] = []
    for round_ in range(ROUNDS):
        await reach(conn, lambda s: isinstance(s, Connected))
        conn.send(f"before{round_}")
        await received.until(lambda items, r=round_: f"before{r}" in items)
        await asyncio.sleep(0.2)  # an idle, healthy link: only pings flow
        started = loop.time()
        proxy.blackhole()
        state = await reach(conn, lambda s: not isinstance(s, Connected), timeout=bound + 5.0)
        detections.append(loop.time() - started)
        assert isinstance(state, Errored)
        failures.append(state)
        conn.send(f"during{round_}")  # buffered: no link carries it now
        await asyncio.sleep(0.3)
        lifted = loop.time()
        proxy.blackhole(False)
        await reach(conn, lambda s: isinstance(s, Connected), timeout=10.0)
        recoveries.append(loop.time() - lifted)
        await received.until(lambda items, r=round_: f"during{r}" in items)
    return detections, recoveries, failures


@pytest.mark.parametrize("kind", ["websocket", "http"])
async def test_idle_timeout_detects_a_blackholed_link_and_replaces_it(
    kind: str, hub: Hub, proxy: FaultProxy
) -> None:
    """No client heartbeat; the hub pings every 0.3 s. Blackholed: lost within 2 x idle."""
    hub.echo = True
    hub.ping_interval = 0.3  # life on a healthy link, well inside IDLE
    conn = rxconn.Connection(
        transport(kind, proxy, heartbeat=None), backoff=BACKOFF, idle_timeout=IDLE
    )
    states = StateLog()
    state_sub = conn.state.subscribe(states.on_state)
    received = Recorder(conn.messages)
    detections, recoveries, failures = await blackhole_rounds(conn, proxy, received, 2 * IDLE)

    report(
        f"half-open idle {kind}",
        idle_timeout=IDLE,
        rounds=ROUNDS,
        detect_min_s=round(min(detections), 3),
        detect_max_s=round(max(detections), 3),
        recover_max_s=round(max(recoveries), 3),
        errors=dict(states.errors),
    )
    assert max(detections) <= 2 * IDLE
    assert min(detections) >= IDLE * 0.9  # not before the timeout: only a dead link trips it
    for failure in failures:
        assert isinstance(failure.error, ConnectionLost)
        assert "idle" in str(failure.error)
        assert failure.retry_in is not None
    expected = [item for r in range(ROUNDS) for item in (f"before{r}", f"during{r}")]
    assert received.items == expected  # hub session: exactly once, in order
    received.dispose()
    state_sub.dispose()
    conn.close()


async def test_heartbeat_detects_a_blackholed_websocket(hub: Hub, proxy: FaultProxy) -> None:
    """websocket(heartbeat=0.3), idle_timeout=None: a missing pong fails the link within 2 x h."""
    hub.echo = True
    hub.ping_interval = 30.0  # the hub's pings play no part: only our heartbeat detects
    conn = rxconn.Connection(
        transport("websocket", proxy, heartbeat=HEARTBEAT), backoff=BACKOFF, idle_timeout=None
    )
    states = StateLog()
    state_sub = conn.state.subscribe(states.on_state)
    received = Recorder(conn.messages)
    detections, recoveries, failures = await blackhole_rounds(conn, proxy, received, 2 * HEARTBEAT)

    report(
        "half-open heartbeat websocket",
        heartbeat=HEARTBEAT,
        rounds=ROUNDS,
        detect_min_s=round(min(detections), 3),
        detect_max_s=round(max(detections), 3),
        recover_max_s=round(max(recoveries), 3),
        errors=dict(states.errors),
    )
    assert max(detections) <= 2 * HEARTBEAT + 0.05  # 50 ms for the event loop's scheduling
    for failure in failures:
        assert isinstance(failure.error, ConnectionLost)
        assert "pong" in str(failure.error)
    expected = [item for r in range(ROUNDS) for item in (f"before{r}", f"during{r}")]
    assert received.items == expected
    received.dispose()
    state_sub.dispose()
    conn.close()
