"""Leaks: subscribe -> send -> echo -> dispose, a thousand times, leaves nothing behind.

DESIGN.md: disposing the last subscription closes the link and releases everything (sockets,
aiohttp responses, tasks, timers, Rx subscriptions). Each cycle here opens a real link to an
echoing hub, round-trips one message and disposes. Between a warm-up and the end, the number
of asyncio tasks, of open file descriptors, and of live rxconn / reactivex / aiohttp objects
(``gc``) must not grow, and no ResourceWarning may be emitted (unclosed sockets, sessions).

Two variants per transport: one ``Connection`` re-subscribed every cycle (its hub session
survives the gaps), and a new ``Connection`` per cycle, closed at the end of it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

import rxconn
from rxconn import Backoff
from rxconn.aio import TASKS, drain
from rxconn.server import Server
from tests.helpers import Recorder
from tests.reliability._chaos import report
from tests.reliability.conftest import LONG


pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(900 if LONG else 60)]

CYCLES = 10_000 if LONG else 1_000
WARMUP = 20
MODULES = ("rxconn", "reactivex", "aiohttp")
OBJECT_SLACK = 30
"""Live objects per library that may differ between two snapshots (caches, free lists)."""


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def live_objects() -> Counter[str]:
    """Live gc-tracked objects per library, by the module of their type."""
    gc.collect()
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        module = getattr(type(obj), "__module__", None)
        root = module.split(".", 1)[0] if isinstance(module, str) else ""
        if root in MODULES:
            counts[root] += 1
    return counts


async def snapshot() -> tuple[int, int, Counter[str]]:
    await drain(10.0)
    for _ in range(3):  # let closed transports run their connection_lost callbacks
        await asyncio.sleep(0)
    return len(asyncio.all_tasks()), open_fds(), live_objects()


def make_connection(kind: str, server: Server) -> rxconn.Connection:
    transport: Any
    if kind == "websocket":
        transport = rxconn.websocket(server.url + "/ws", heartbeat=5.0)
    else:
        transport = rxconn.http(server.url + "/events")
    return rxconn.Connection(transport, backoff=Backoff(initial=0.01, max_delay=0.1))


async def round_trip(conn: rxconn.Connection, payload: str, *, close: bool) -> None:
    rec = Recorder(conn.messages)
    try:
        conn.send(payload)
        await rec.until(lambda items: payload in items, timeout=10.0)
        if close:
            conn.close()  # while subscribed: the link quits the hub session as it closes
    finally:
        rec.dispose()


async def hub_idle(server: Server) -> None:
    """Wait (bounded) until the hub let go of every link: an SSE handler notices a client
    that went away only when it next writes (at the latest its next ping)."""
    async with asyncio.timeout(5.0):
        while server.hub.links:
            await asyncio.sleep(0.05)


@dataclass
class Measured:
    elapsed: float
    tasks: tuple[int, int]
    fds: tuple[int, int]
    objects: tuple[Counter[str], Counter[str]]
    warnings: list[str]
    hub_sessions: int


async def run_cycles(kind: str, variant: str, server: Server) -> Measured:
    """WARMUP cycles, a snapshot, CYCLES cycles, a snapshot."""
    server.hub.echo = True
    loop = asyncio.get_running_loop()
    shared = make_connection(kind, server) if variant == "reuse" else None

    async def cycle(i: int) -> None:
        if shared is not None:
            await round_trip(shared, f"m{i}", close=False)
        else:
            await round_trip(make_connection(kind, server), f"m{i}", close=True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(WARMUP):
            await cycle(i)
        await hub_idle(server)
        tasks_before, fds_before, objects_before = await snapshot()
        started = loop.time()
        for i in range(WARMUP, WARMUP + CYCLES):
            await cycle(i)
        elapsed = loop.time() - started
        await hub_idle(server)
        tasks_after, fds_after, objects_after = await snapshot()
        if shared is not None:
            shared.close()
        await drain(10.0)
        gc.collect()
    measured = Measured(
        elapsed,
        (tasks_before, tasks_after),
        (fds_before, fds_after),
        (objects_before, objects_after),
        [f"{w.category.__name__}: {w.message}" for w in caught],
        len(server.hub.live_sessions),
    )
    report(
        f"leaks {kind} {variant}",
        cycles=CYCLES,
        seconds=round(elapsed, 1),
        ms_per_cycle=round(1000 * elapsed / CYCLES, 2),
        tasks="{}->{}".format(*measured.tasks),
        fds="{}->{}".format(*measured.fds),
        objects={m: f"{objects_before[m]}->{objects_after[m]}" for m in MODULES},
        hub_sessions=measured.hub_sessions,
        warnings=len(caught),
    )
    return measured


@pytest.mark.parametrize("variant", ["reuse", "fresh"])
@pytest.mark.parametrize("kind", ["websocket", "http"])
async def test_subscribe_echo_dispose_cycles_leak_nothing(
    kind: str, variant: str, server: Server
) -> None:
    """CYCLES cycles: as many tasks, fds and live rxconn / reactivex / aiohttp objects as
    before, no warning, and the hub's sessions ended (a reused connection keeps its one).

    (Found by this suite: each link task used to keep its predecessor alive through the
    CancelledError traceback of its frame, ~35 KB per link for the life of the Connection.)
    """
    measured = await run_cycles(kind, variant, server)
    assert measured.warnings == []  # ResourceWarning (unclosed socket/session) included
    assert measured.tasks[1] <= measured.tasks[0]
    assert TASKS.running() == []
    assert measured.fds[1] <= measured.fds[0] + 2
    before, after = measured.objects
    grown = {m: after[m] - before[m] for m in MODULES if after[m] > before[m] + OBJECT_SLACK}
    assert grown == {}, f"live objects grew over {CYCLES} cycles: {grown}"
    assert measured.hub_sessions <= 1
