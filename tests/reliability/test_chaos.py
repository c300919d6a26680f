"""Chaos: numbered streams both ways while a proxy cuts every link every ~200 ms.

With the rxconn hub both transports speak the hub session protocol, so DESIGN.md promises
exactly once and in order, in both directions, across every cut (FIN and RST alternate),
reconnect and transport switch, as long as the session lives. These tests check exactly
that, per transport and through the fallback while ``hub.websocket_enabled`` flips.

Plain-frame WebSocket links (``hub=False``) promise less: "frames in flight at a cut can be
lost, never reordered". That test measures loss and duplication and asserts the order.

Each test prints one ``[reliability]`` line of statistics (run with ``-s`` to see them).
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
    dedupe,
    flip_websocket,
    number_of,
    numbered,
    paced,
    report,
    strictly_increasing,
)
from tests.reliability.conftest import LONG


pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(300 if LONG else 60)]

COUNT = 20_000 if LONG else 1_000
"""Messages per direction."""
DURATION = 40.0 if LONG else 3.0
"""Seconds over which each stream is spread (the cutter runs that long)."""
LATENCY = 0.01
"""Seconds each chunk spends inside the proxy, each way, while the cuts run."""
FLIP = 0.75
"""Seconds between two flips of ``hub.websocket_enabled`` in the fallback run."""
SETTLE = 30.0
"""Bound on the wait for the last messages once the cuts stopped."""


def make_connection(kind: str, proxy: FaultProxy) -> rxconn.Connection:
    if kind == "websocket":
        transport: Any = rxconn.websocket(
            proxy.url("ws", "/rx/ws"), heartbeat=1.0, open_timeout=2.0
        )
    elif kind == "http":
        transport = rxconn.http(proxy.url("http", "/rx/events"), open_timeout=2.0)
    else:
        return rxconn.connection(
            proxy.url("http", "/rx"),
            timeout=0.5,
            upgrade_interval=0.3,
            heartbeat=1.0,
            open_timeout=2.0,
            backoff=CHAOS_BACKOFF,
            idle_timeout=5.0,
        )
    return rxconn.Connection(transport, backoff=CHAOS_BACKOFF, idle_timeout=5.0)


@pytest.mark.parametrize("kind", ["websocket", "http", "fallback"])
async def test_exactly_once_in_order_both_ways_under_cuts(
    kind: str, hub: Hub, proxy: FaultProxy
) -> None:
    """COUNT numbered messages each way while every link is cut every ~200 ms (FIN/RST).

    Both ends receive every message exactly once and in order, in one hub session.
    """
    loop = asyncio.get_running_loop()
    log = HubLog(hub)
    conn = make_connection(kind, proxy)
    states = StateLog()
    state_sub = conn.state.subscribe(states.on_state)
    received = Recorder(conn.messages)
    await reach(conn, lambda s: isinstance(s, Connected))
    await log.until(lambda: bool(log.sessions), 5.0)
    session = log.sessions[0]

    client_out = numbered("c", COUNT)
    hub_out = numbered("h", COUNT)
    proxy.set_latency(LATENCY)  # more bytes in flight inside the proxy when a cut drops them
    cutter = Cutter(proxy)
    flipping = asyncio.Event()
    flipper = (
        asyncio.create_task(flip_websocket(hub, flipping, FLIP)) if kind == "fallback" else None
    )
    started = loop.time()
    cutter.start()
    await asyncio.gather(
        paced(conn.send, client_out, DURATION), paced(session.send, hub_out, DURATION)
    )
    await cutter.stop()
    flipping.set()
    flips = await flipper if flipper is not None else 0
    sent_at = loop.time()
    await log.until(lambda: len(log.received) >= COUNT, SETTLE)
    await received.count(COUNT, SETTLE)
    settled_at = loop.time()

    report(
        f"chaos {kind}",
        messages_each_way=COUNT,
        cut_rounds=cutter.rounds,
        links_cut=cutter.links_cut,
        rst_rounds=cutter.rst_rounds,
        flips=flips,
        reconnects=states.reconnects,
        connects=dict(states.connects),
        errors=dict(states.errors),
        sessions=len(log.sessions),
        run_s=round(sent_at - started, 2),
        settle_s=round(settled_at - sent_at, 2),
        lost_c2h=COUNT - len(set(log.payloads)),
        dup_c2h=len(log.payloads) - len(set(log.payloads)),
        lost_h2c=COUNT - len(set(received.items)),
        dup_h2c=len(received.items) - len(set(received.items)),
    )
    assert log.payloads == client_out  # client -> hub: exactly once, in order
    assert received.items == hub_out  # hub -> client: exactly once, in order
    assert len(log.sessions) == 1  # one session outlived every link
    assert not states.gave_up
    assert cutter.links_cut >= 5
    assert states.reconnects >= 5
    if kind == "fallback":
        # Both served; a cut between an SSE answer and its session event may also
        # move the three-transport chain on to long polling for a while.
        assert {"websocket", "http"} <= set(states.connects) <= {"websocket", "http", "longpoll"}

    received.dispose()
    state_sub.dispose()
    log.dispose()
    conn.close()


async def test_plain_websocket_loses_at_most_frames_in_flight_and_never_reorders(
    hub: Hub, proxy: FaultProxy
) -> None:
    """hub=False: plain frames, accepted once written. Measure loss/duplication; no reordering.

    client -> hub: the outbox releases a payload once the socket took it, so frames in flight
    at a cut are lost; a batch cut half-way is written again on the next link (duplicates).
    hub -> client: each plain link is its own hub session, so a broadcast while no link is
    up reaches nobody, and frames in flight at a cut are lost; nothing is ever resent.
    Asserted: within each link, numbers strictly increase, and across links no message
    overtakes an earlier one; the numbers are reported.
    """
    log = HubLog(hub)
    conn = rxconn.Connection(
        rxconn.websocket(proxy.url("ws", "/rx/ws"), hub=False, heartbeat=1.0, open_timeout=2.0),
        backoff=CHAOS_BACKOFF,
        idle_timeout=5.0,
    )
    states = StateLog()
    state_sub = conn.state.subscribe(states.on_state)
    received = Recorder(conn.messages)
    await reach(conn, lambda s: isinstance(s, Connected))

    client_out = numbered("c", COUNT)
    hub_out = numbered("h", COUNT)
    addressed = 0

    def broadcast(payload: str) -> None:
        nonlocal addressed
        addressed += sum(1 for s in hub.live_sessions if s.link is not None)
        hub.broadcast(payload)

    proxy.set_latency(LATENCY)
    cutter = Cutter(proxy)
    cutter.start()
    sent_at, _ = await asyncio.gather(
        paced(conn.send, client_out, DURATION), paced(broadcast, hub_out, DURATION)
    )
    await cutter.stop()
    # Sentinels: once "end" arrives on a link, everything written before it has arrived.
    await reach(conn, lambda s: isinstance(s, Connected))
    conn.send("cend")
    await log.until(lambda: bool(log.received) and log.received[-1][1] == "cend", SETTLE)

    async def hub_sentinel() -> None:
        while "hend" not in received.items:
            hub.broadcast("hend")
            await asyncio.sleep(0.1)

    await asyncio.wait_for(hub_sentinel(), SETTLE)

    at_hub = [(index, number_of(p)) for index, p in log.received if p != "cend"]
    at_client = [number_of(p) for p in received.items if p != "hend"]
    per_link = [[n for index, n in at_hub if index == link] for link in range(len(log.sessions))]
    hub_numbers = [n for _, n in at_hub]
    lost_c2h = COUNT - len(set(hub_numbers))
    dup_c2h = len(hub_numbers) - len(set(hub_numbers))
    lost_h2c = COUNT - len(set(at_client))
    c2h_runs = missing_runs(set(hub_numbers), COUNT)
    h2c_runs = missing_runs(set(at_client), COUNT)
    # Where: how long before the next cut the first payload of each lost run was sent.
    # and how long after that cut its last payload was sent (written before the client saw
    # the link die: the socket took it, so a plain link counts it as accepted).
    before_cut = [cut_after(cutter.cuts, sent_at[first]) for first, _ in c2h_runs]
    rst_runs = sum(rst for _, rst in before_cut if rst is not None)
    leads = [lead for lead, _ in before_cut if lead is not None]
    lead_ms = sorted(round(1000 * lead) for lead in leads)
    tail_ms = sorted(
        round(1000 * (sent_at[first + n - 1] - sent_at[first] - lead))
        for (first, n), (lead, _) in zip(c2h_runs, before_cut, strict=True)
        if lead is not None
    )
    report(
        "chaos plain websocket (hub=False)",
        messages_each_way=COUNT,
        cut_rounds=cutter.rounds,
        links_cut=cutter.links_cut,
        reconnects=states.reconnects,
        errors=dict(states.errors),
        lost_c2h=lost_c2h,
        c2h_loss_runs=len(c2h_runs),
        c2h_longest_run=max((n for _, n in c2h_runs), default=0),
        c2h_runs_at_rst_cuts=rst_runs,
        c2h_sent_ms_before_cut_median=lead_ms[len(lead_ms) // 2] if lead_ms else None,
        c2h_sent_ms_before_cut_max=lead_ms[-1] if lead_ms else None,
        c2h_sent_ms_after_cut_median=tail_ms[len(tail_ms) // 2] if tail_ms else None,
        c2h_sent_ms_after_cut_max=tail_ms[-1] if tail_ms else None,
        dup_c2h=dup_c2h,
        lost_h2c=lost_h2c,
        h2c_loss_runs=len(h2c_runs),
        h2c_broadcast_with_no_link=COUNT - addressed,
        h2c_lost_in_flight=max(addressed - len(at_client), 0),
        dup_h2c=len(at_client) - len(set(at_client)),
    )
    assert all(strictly_increasing(numbers) for numbers in per_link)  # no reordering on a link
    assert strictly_increasing(dedupe(hub_numbers))  # nothing overtakes across links
    assert strictly_increasing(at_client)  # hub -> client: in order, never twice
    assert states.reconnects >= 5
    # Loss happens only at cuts: at most one run of consecutive numbers per link lost.
    assert len(c2h_runs) <= states.reconnects
    assert len(h2c_runs) <= states.reconnects
    assert all(lead < cutter.interval / 2 for lead in leads)  # each run starts just before a cut

    received.dispose()
    state_sub.dispose()
    log.dispose()
    conn.close()


def cut_after(cuts: list[tuple[float, bool]], when: float) -> tuple[float | None, bool | None]:
    """(seconds from ``when`` to the next cut, was it RST?); (None, None) if no cut followed."""
    for at, rst in cuts:
        if at >= when:
            return at - when, rst
    return None, None


def missing_runs(present: set[int], count: int) -> list[tuple[int, int]]:
    """(first missing number, how many in a row) for every run of missing numbers."""
    runs: list[tuple[int, int]] = []
    for n in range(count):
        if n in present:
            continue
        if runs and runs[-1][0] + runs[-1][1] == n:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((n, 1))
    return runs
