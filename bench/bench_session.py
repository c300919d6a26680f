"""Hub session protocol (``rxconn.v1``) against plain frames, both on the real Hub's ``/ws``.

What it measures (a script, not a test; nothing is asserted), in one run:

* **(a) hub -> client throughput** (messages/s): the hub ``broadcast()`` s N 100 B
  messages to the one connected session; the client counts them in a
  ``conn.messages`` callback, timed from the first to the last message;
* **(b) client -> hub throughput** (messages/s): the client sends ``"expect:N"``
  and then N 100 B messages with ``conn.send()`` in a row; a ``hub.sessions``
  subscriber counts them and answers ``"done"`` after the N-th; timed from the
  first ``send()`` until ``"done"`` arrives (one hub->client hop included);
* **(c) echo latency** p50/p99 of 100 B messages against a ``Hub(echo=True)``,
  one round trip at a time (``conn.send`` + a future completed by the
  ``conn.messages`` callback); medians over runs, and the lowest p99 of any run
  (on a shared machine one burst of CPU contention decides a run's p99);

each for ``rxconn.Connection(rxconn.websocket(url))`` (default ``hub=True``:
the ``rxconn.v1`` session protocol, with numbering, acks and replay) and
``rxconn.websocket(url, hub=False)`` (plain frames: the hub serves a plain
client plain frames), plus a bare aiohttp plain-frame client on the same hub as
a reference for what the hub itself can do.

How: the hubs run in a **child process** (this script with ``--serve``), pinned
to another CPU than the client where the OS allows: ``Hub(replay_limit=2N)``
under ``/rx`` (its ``/trigger?n=N&size=S`` route waits until exactly one session
is live, then broadcasts N messages at once) and ``Hub(echo=True)`` under
``/echo``. Variants run interleaved, ROUNDS times each; best and median
throughput and median p50/p99 are reported, with ratios session/plain (best/best
and the median of per-round ratios).

Target: the session protocol >= 0.8x plain-frame throughput. Run from the
repository root::

    python -W error bench/bench_session.py             # the benchmark (< 60 s)
    python -W error bench/bench_session.py --profile   # + cProfile of (a) and (b) with hub=True
"""

from __future__ import annotations

import asyncio
import cProfile
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _harness as harness  # first: it puts the repository root on sys.path
import aiohttp
from _harness import Counter, interleaved, payload, rx_close, rx_wait
from aiohttp import web

import rxconn
from rxconn.server import Hub


N = 100_000  # messages per throughput run
SIZE = 100
ROUNDS = 7
ECHO_ROUNDS = 5
ECHO_COUNT = 2_000
ECHO_WARMUP = 200
RUN_TIMEOUT = harness.RUN_TIMEOUT
TEXT = aiohttp.WSMsgType.TEXT


# ===================================================================== server


def on_hub_session(session: Any) -> None:
    """``expect:N`` arms a counter; the N-th message after it is answered with ``done``."""
    expect = 0
    count = 0

    def on_message(message: str | bytes) -> None:
        nonlocal expect, count
        if expect:
            count += 1
            if count == expect:
                expect = 0
                session.send("done")
        elif isinstance(message, str) and message.startswith("expect:"):
            expect, count = int(message[7:]), 0

    session.messages.subscribe(on_message)


def trigger_route(hub: Hub) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def trigger(request: web.Request) -> web.Response:
        """Wait until exactly one session is live (earlier ones ended), then broadcast N."""
        n, size = int(request.query["n"]), int(request.query["size"])
        try:
            async with asyncio.timeout(5.0):
                while len(hub.live_sessions) != 1:
                    await asyncio.sleep(0.002)
        except TimeoutError:
            return web.json_response({"sessions": len(hub.live_sessions)}, status=409)
        text = payload(size)
        broadcast = hub.broadcast
        for _ in range(n):
            broadcast(text)
        return web.json_response({"sessions": 1})

    return trigger


async def serve(cpu: int | None) -> None:
    """The child process: serve until stdin closes, announcing the port on stdout."""
    harness.pin(cpu)
    hub = Hub(ping_interval=60.0, session_grace=1.0, replay_limit=2 * N)
    hub.sessions.subscribe(on_hub_session)
    echo = Hub(echo=True, ping_interval=60.0, session_grace=1.0)
    app = web.Application()
    app.router.add_get("/trigger", trigger_route(hub))
    app.add_subapp("/rx", hub.app())
    app.add_subapp("/echo", echo.app())
    await harness.serve_app(app, on_stop=[hub.shutdown, echo.shutdown])


# ===================================================================== client


class Done:
    """Notes when ``done`` arrived."""

    def __init__(self) -> None:
        self.at = 0.0
        self.event = asyncio.Event()

    def on_next(self, message: object) -> None:
        if message == "done":
            self.at = time.perf_counter()
            self.event.set()


async def trigger(http: aiohttp.ClientSession, base: str, n: int) -> None:
    async with http.get(f"{base}/trigger", params={"n": str(n), "size": str(SIZE)}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"trigger: {resp.status} {await resp.text()}")


async def rx_open(
    url: str, hub: bool, on_next: Callable[[Any], None], max_buffer: int = 10_000
) -> tuple[rxconn.Connection, Any]:
    """A connection with a ``messages`` subscriber, once connected."""
    conn = rxconn.Connection(rxconn.websocket(url, hub=hub), max_buffer=max_buffer)
    sub = conn.messages.subscribe(on_next)
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            while conn.current_state.kind != "connected":
                await asyncio.sleep(0.001)
    except BaseException:
        await rx_close(conn, sub)
        raise
    return conn, sub


async def rx_down(http: aiohttp.ClientSession, base: str, hub: bool) -> float:
    counter = Counter(N)
    conn, sub = await rx_open(f"{base}/rx/ws", hub, counter.on_next)
    try:
        await trigger(http, base, N)
        await rx_wait(conn, counter.done, f"hub -> client, hub={hub}")
    finally:
        await rx_close(conn, sub)
    return counter.rate()


async def raw_down(http: aiohttp.ClientSession, base: str) -> float:
    counter = Counter(N)
    async with http.ws_connect(f"{base}/rx/ws") as ws:
        await trigger(http, base, N)
        await harness.raw_count_text(ws, counter)
    return counter.rate()


async def rx_up(base: str, hub: bool) -> float:
    done = Done()
    conn, sub = await rx_open(f"{base}/rx/ws", hub, done.on_next, max_buffer=N + 10)
    text = payload(SIZE)
    send = conn.send
    try:
        send(f"expect:{N}")
        start = time.perf_counter()
        for _ in range(N):
            send(text)
        await rx_wait(conn, done.event, f"client -> hub, hub={hub}")
    finally:
        await rx_close(conn, sub)
    return N / (done.at - start)


async def raw_up(http: aiohttp.ClientSession, base: str) -> float:
    text = payload(SIZE)
    async with http.ws_connect(f"{base}/rx/ws") as ws:
        await ws.send_str(f"expect:{N}")
        start = time.perf_counter()
        for _ in range(N):
            await ws.send_str(text)
        async with asyncio.timeout(RUN_TIMEOUT):
            async for msg in ws:
                if msg.type is TEXT and msg.data == "done":
                    return N / (time.perf_counter() - start)
    raise RuntimeError("raw client -> hub: no done")


async def rx_echo(base: str, hub: bool) -> tuple[float, float]:
    waiter: list[asyncio.Future[None]] = []
    conn, sub = await rx_open(f"{base}/echo/ws", hub, harness.completes_waiter(waiter))
    try:
        return await harness.rx_awaited_echo(conn, waiter, payload(SIZE), ECHO_WARMUP, ECHO_COUNT)
    finally:
        await rx_close(conn, sub)


async def raw_echo(http: aiohttp.ClientSession, base: str) -> tuple[float, float]:
    url = f"{base}/echo/ws"
    return await harness.raw_echo(http, url, payload(SIZE), ECHO_WARMUP, ECHO_COUNT)


# ================================================================== reporting


SESSION = "rxconn hub=True (rxconn.v1 session)"
PLAIN = "rxconn hub=False (plain frames)"
RAW = "(reference: bare aiohttp, plain frames)"


def report_throughput(title: str, results: dict[str, list[float]]) -> None:
    print(title)
    print(f"  {'variant':<42} {'best msg/s':>12} {'median':>10} {'us/msg':>7}")
    for name, rates in results.items():
        best = max(rates)
        mid = statistics.median(rates)
        print(f"  {name:<42} {best:>12,.0f} {mid:>10,.0f} {1e6 / best:>7.2f}")
    best, paired = harness.best_and_paired(results, SESSION, PLAIN)
    verdict = "met" if best >= 0.8 else "NOT met"
    print(
        f"  session / plain: {best:.2f}x best/best (paired median {paired:.2f}x)   "
        f"target >= 0.8x: {verdict}"
    )
    raw = max(results[PLAIN]) / max(results[RAW])
    print(f"  rxconn plain / bare aiohttp: {raw:.2f}x best/best")
    print()


async def bench(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        down = await interleaved(
            {
                SESSION: lambda: rx_down(http, base, True),
                PLAIN: lambda: rx_down(http, base, False),
                RAW: lambda: raw_down(http, base),
            },
            ROUNDS,
        )
        report_throughput(
            f"(a) hub -> client: hub.broadcast() of {N:,} x {SIZE} B to one session, "
            f"first to last message; best and median of {ROUNDS} interleaved runs",
            down,
        )
        up = await interleaved(
            {
                SESSION: lambda: rx_up(base, True),
                PLAIN: lambda: rx_up(base, False),
                RAW: lambda: raw_up(http, base),
            },
            ROUNDS,
        )
        report_throughput(
            f"(b) client -> hub: {N:,} x {SIZE} B sent in a row, first send() until the hub "
            f"counted all (its 'done' arrived); best and median of {ROUNDS} interleaved runs",
            up,
        )
        echo = await interleaved(
            {
                SESSION: lambda: rx_echo(base, True),
                PLAIN: lambda: rx_echo(base, False),
                RAW: lambda: raw_echo(http, base),
            },
            ECHO_ROUNDS,
        )
    print(
        f"(c) echo latency with Hub(echo=True), {SIZE} B, {ECHO_COUNT:,} round trips per run, "
        f"median of {ECHO_ROUNDS} interleaved runs (microseconds)"
    )
    print(f"  {'variant':<42} {'p50':>8} {'p99':>8} {'min p99':>8}")
    med: dict[str, tuple[float, float]] = {}
    for name, runs in echo.items():
        med[name] = harness.median_percentiles(runs)
        low = min(r[1] for r in runs)
        print(f"  {name:<42} {med[name][0]:>8.1f} {med[name][1]:>8.1f} {low:>8.1f}")
    (s50, s99), (p50, p99) = med[SESSION], med[PLAIN]
    print(
        f"  session / plain: p50 {s50 / p50:.2f}x ({s50 - p50:+.1f} us), "
        f"p99 {s99 / p99:.2f}x ({s99 - p99:+.1f} us)"
    )
    print()


def print_profile(
    profiler: cProfile.Profile, label: str, n: int, rate: float, top: int = 14
) -> None:
    """Top functions by own time, per message (see ``harness.print_profile``)."""
    harness.print_profile(profiler, f"cProfile (client side), {label}", n, rate, top=top)
    print()


async def profile(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for label, run in (
            ("(a) hub -> client, hub=True", lambda: rx_down(http, base, True)),
            ("(a) hub -> client, hub=False", lambda: rx_down(http, base, False)),
            ("(b) client -> hub, hub=True", lambda: rx_up(base, True)),
            ("(b) client -> hub, hub=False", lambda: rx_up(base, False)),
        ):
            rate = max([await run(), await run()])
            profiler, _ = await harness.profile_run(run)
            print_profile(profiler, label, N, rate)


async def client(child: harness.Child, do_profile: bool) -> None:
    print(
        f"Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}; hubs in pid "
        f"{child.pid} on port {child.port}, {child.placement}"
    )
    await bench(child.port)
    if do_profile:
        await profile(child.port)


if __name__ == "__main__":
    harness.run_script(
        __file__, __doc__, serve, client, profile_help="also cProfile the hub=True paths"
    )
