"""Fallback latency: time from interest to ``Connected("http")`` when WebSocket does not work.

What it measures (a script, not a test; nothing is asserted): the time from
``conn.connect()`` to the ``Connected(...)`` state, seen by a ``conn.state``
subscriber, for

* **http only**: ``rxconn.Connection(rxconn.http(hub + "/events"))``, the reference;
* **ws refused**: ``rxconn.fallback(rxconn.websocket(url), rxconn.http(...), timeout=T)``
  where ``url`` points at a closed port on 127.0.0.1 (a socket bound but not
  listening, held for the whole run: the kernel answers RST at once);
* **ws blackholed**: the same with ``url`` pointing at a TCP server that accepts and
  never answers the upgrade, so the WebSocket attempt only ends at the fallback
  ``timeout`` T (0.5 s here);
* informational: **websocket only** (``rxconn.Connection(rxconn.websocket(url))``) and
  **ws ok** (the fallback when WebSocket works: ``Connected("websocket")``).

How: the real ``rxconn.server.Hub`` (under ``/rx``) and the blackhole run in a
**child process** (this script with ``--serve``), pinned to another CPU than the
client where the OS allows. Each variant runs ROUNDS times, interleaved (each
round runs every variant once, with a fresh ``Connection`` and its own aiohttp
session, closed and drained before the next); median, p90 and min are reported.

Targets: refused <= http only + 50 ms; blackholed <= T + http only (medians; p90s
shown too). Run from the repository root::

    python -W error bench/bench_fallback.py
"""

from __future__ import annotations

import asyncio
import math
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _harness as harness  # first: it puts the repository root on sys.path
from aiohttp import web

import rxconn
import rxconn.aio
from rxconn.server import Hub


TIMEOUT = 0.5  # the fallback's timeout for the WebSocket attempt
ROUNDS = 20
RUN_TIMEOUT = 10.0


# ===================================================================== server


class Blackhole:
    """Accepts TCP connections, reads and drops what arrives, never answers."""

    def __init__(self) -> None:
        self.writers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    def close(self) -> None:
        for writer in list(self.writers):
            writer.close()


async def serve(cpu: int | None) -> None:
    """The child process: serve until stdin closes, announcing the ports on stdout.

    The blackhole's port is the second one announced (``child.ports[1]``).
    """
    harness.pin(cpu)
    hub = Hub(ping_interval=60.0, session_grace=1.0)
    app = web.Application()
    app.add_subapp("/rx", hub.app())
    blackhole = Blackhole()
    hole = await asyncio.start_server(blackhole.handle, "127.0.0.1", 0)
    hole_port = hole.sockets[0].getsockname()[1]
    try:
        await harness.serve_app(app, extra_ports=[hole_port], on_stop=[hub.shutdown])
    finally:
        hole.close()
        blackhole.close()
        await hole.wait_closed()


# ===================================================================== client


def closed_port() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1 and never listening: connects are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def time_to_connected(transport: rxconn.Transport, expect: str) -> tuple[float, float]:
    """Seconds from ``conn.connect()`` until the state is ``Connected(expect)``.

    Also returns when ``Connecting(expect)`` was first seen (for a fallback: when it
    moved on to that transport; the time the link itself took is the difference).
    """
    loop = asyncio.get_running_loop()
    connected: asyncio.Future[float] = loop.create_future()
    seen: list[Any] = []
    trying: list[float] = []

    def on_state(state: Any) -> None:
        seen.append(state)
        if not trying and state.kind == "connecting" and state.transport == expect:
            trying.append(time.perf_counter())
        if state.kind == "connected" and not connected.done():
            if state.transport == expect:
                connected.set_result(time.perf_counter())
            else:
                connected.set_exception(RuntimeError(f"connected over {state.transport}"))

    conn = rxconn.Connection(transport)
    start = time.perf_counter()
    handle = conn.connect()
    sub = conn.state.subscribe(on_state)  # observes only: connect() already is the interest
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            end = await connected
    except TimeoutError:
        raise RuntimeError(f"{transport!r}: not connected; states {seen!r}") from None
    finally:
        sub.dispose()
        handle.dispose()
        conn.close()
        await rxconn.aio.drain()
    return end - start, (trying[0] if trying else start) - start


def summary(samples: list[float]) -> tuple[float, float, float]:
    """Median, p90 (nearest rank) and min, in milliseconds."""
    ordered = sorted(samples)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return statistics.median(ordered) * 1e3, p90 * 1e3, ordered[0] * 1e3


HTTP = "http only"
REFUSED = "fallback, ws refused -> http"
BLACKHOLED = f"fallback, ws blackholed ({TIMEOUT:g} s) -> http"
WS = "websocket only"
WS_OK = "fallback, ws ok"


async def bench(port: int, blackhole_port: int) -> None:
    base = f"http://127.0.0.1:{port}/rx"
    events, ws_url = f"{base}/events", f"{base}/ws"
    with closed_port() as refused:
        refused_url = f"ws://127.0.0.1:{refused.getsockname()[1]}/rx/ws"
        hole_url = f"ws://127.0.0.1:{blackhole_port}/rx/ws"

        def fallback(first: str) -> rxconn.Transport:
            return rxconn.fallback(rxconn.websocket(first), rxconn.http(events), timeout=TIMEOUT)

        variants: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {
            HTTP: lambda: time_to_connected(rxconn.http(events), "http"),
            REFUSED: lambda: time_to_connected(fallback(refused_url), "http"),
            BLACKHOLED: lambda: time_to_connected(fallback(hole_url), "http"),
            WS: lambda: time_to_connected(rxconn.websocket(ws_url), "websocket"),
            WS_OK: lambda: time_to_connected(fallback(ws_url), "websocket"),
        }
        await harness.interleaved(variants, 1)  # warm up (imports, first connections)
        results = await harness.interleaved(variants, ROUNDS)

    print(
        f"time from conn.connect() to Connected (ms), {ROUNDS} interleaved runs each, "
        f"fallback timeout {TIMEOUT:g} s"
    )
    print(
        f"  {'variant':<40} {'median':>8} {'p90':>8} {'min':>8}   "
        "(moved on to the last transport at: median; then that link took: median)"
    )
    stats = {name: summary([r[0] for r in runs]) for name, runs in results.items()}
    for name, (mid, p90, low) in stats.items():
        moved = statistics.median(r[1] for r in results[name]) * 1e3
        link = statistics.median(r[0] - r[1] for r in results[name]) * 1e3
        print(f"  {name:<40} {mid:>8.1f} {p90:>8.1f} {low:>8.1f}   ({moved:.1f}; {link:.1f})")
    http_mid, http_p90, _ = stats[HTTP]
    ref_mid, ref_p90, _ = stats[REFUSED]
    hole_mid, hole_p90, _ = stats[BLACKHOLED]
    limit = http_mid + 50
    print(
        f"  refused - http only: median {ref_mid - http_mid:+.1f} ms, p90 {ref_p90 - http_p90:+.1f}"
        f" ms   target median <= http only + 50 ms ({limit:.1f}): "
        f"{'met' if ref_mid <= limit else 'NOT met'}"
    )
    limit = TIMEOUT * 1e3 + http_mid
    print(
        f"  blackholed - timeout - http only: median {hole_mid - limit:+.1f} ms, p90 "
        f"{hole_p90 - TIMEOUT * 1e3 - http_p90:+.1f} ms   target median <= timeout + http only "
        f"({limit:.1f}): {'met' if hole_mid <= limit else 'NOT met'}"
    )


async def client(child: harness.Child, _: bool) -> None:
    port, blackhole_port = child.ports
    print(
        f"Python {sys.version.split()[0]}; hub in pid {child.pid} on port {port}, "
        f"blackhole on port {blackhole_port}, {child.placement}"
    )
    await bench(port, blackhole_port)


if __name__ == "__main__":
    harness.run_script(__file__, __doc__, serve, client)
