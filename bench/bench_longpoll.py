"""Long polling against the SSE link: burst throughput, latency, polls per message, empty answers.

What it measures (a script, not a test; nothing is asserted), against the real
``rxconn.server.Hub`` in a **child process** (this script with ``--serve``),
pinned to another CPU than the client where the OS allows:

* **burst receive** (messages/s): the hub sends N 100-byte messages to the
  session at once; the client counts ``conn.messages`` from the first to the
  last, for ``rxconn.longpoll(hub + "/poll")`` and ``rxconn.http(hub + "/events")``
  (rxconn's SSE link). A poll answers with everything pending, so one answer
  carries many messages.
* **one-way latency at a rate** (p50, p99 in ms): the hub sends messages
  stamped with ``time.perf_counter_ns()`` (CLOCK_MONOTONIC: one clock for both
  processes) at 200 msg/s; the client subtracts the stamp on arrival.
* **polls per message** at 10, 200 and 2,000 msg/s and in the burst: the hub
  counts ``GET /poll`` requests (a middleware) while the messages are sent.
* **empty answers**: every ``204`` poll answer the hub wrote during the run,
  and the bytes of its body (must be 0); plus one raw poll held 0.2 s.

Variants run interleaved, ROUNDS times each (a fresh ``Connection`` per run,
closed and drained before the next), so ratios are measured in one run.

Targets (issue 15): burst receive >= 0.8x SSE; p50 at 200 msg/s <= SSE + 0.25 ms;
<= 1 poll per message at any rate; empty answers carry no body. Run from the
repository root::

    python -W error bench/bench_longpoll.py
"""

from __future__ import annotations

import asyncio
import functools
import json
import statistics
import sys
import time
from typing import Any

import _harness as harness  # first: it puts the repository root on sys.path
import aiohttp
from _harness import Counter, best_and_paired, interleaved, rx_close
from aiohttp import web

import rxconn
from rxconn.server import Hub


ROUNDS = 5
BURST = 20_000
SIZE = 100
RATE = 200.0
RATE_MESSAGES = 400
POLL_RATES = (10.0, 200.0, 2000.0)
RUN_TIMEOUT = 30.0
LP = "rxconn longpoll"
SSE = "rxconn http (SSE)"


# ===================================================================== server


class Stats:
    """What the child counts: polls received, and the 204 answers with their body sizes."""

    polls = 0
    empty = 0
    empty_body_bytes = 0


@web.middleware
async def count_polls(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.method == "GET" and request.path.endswith("/poll"):
        Stats.polls += 1
    response: web.StreamResponse = await handler(request)
    if response.status == 204 and isinstance(response, web.Response):
        Stats.empty += 1
        Stats.empty_body_bytes += len(response.body or b"")  # type: ignore[arg-type]
    return response


def newest(hub: Hub) -> list[Any]:
    """The session of the run's connection: the newest one with a link (an earlier run's
    session may still be letting go of its link, or waiting out its grace)."""
    return [s for s in hub.live_sessions if s.link is not None][-1:]


async def serve(cpu: int | None) -> None:
    """The child: the hub under /rx, and /ctl endpoints that make it send and report."""
    harness.pin(cpu)
    hub = Hub(ping_interval=60.0, session_grace=1.0, replay_limit=10 * BURST)
    filler = "x" * (SIZE - 21)

    async def burst(request: web.Request) -> web.Response:
        n = int(request.query["n"])
        for session in newest(hub):
            for _ in range(n):
                session.send(filler)
        return web.Response(text="ok")

    async def paced(request: web.Request) -> web.Response:
        n, rate = int(request.query["n"]), float(request.query["rate"])
        loop = asyncio.get_running_loop()
        start = loop.time()
        sessions = newest(hub)
        for i in range(n):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            stamp = f"{time.perf_counter_ns():020d}"  # 20 digits + one space
            for session in sessions:
                session.offer(f"{stamp} {filler}")
        return web.Response(text="ok")

    async def stats(_: web.Request) -> web.Response:
        held = sum(bool(getattr(s.link, "polling", False)) for s in newest(hub))
        return web.json_response(
            {
                "polls": Stats.polls,
                "held": held,
                "empty": Stats.empty,
                "empty_bytes": Stats.empty_body_bytes,
            }
        )

    app = web.Application(middlewares=[count_polls])
    app.add_subapp("/rx", hub.app())
    app.router.add_post("/ctl/burst", burst)
    app.router.add_post("/ctl/paced", paced)
    app.router.add_get("/ctl/stats", stats)
    await harness.serve_app(app, on_stop=[hub.shutdown])


# ===================================================================== client


def transport(kind: str, base: str) -> rxconn.Transport:
    if kind == LP:
        return rxconn.longpoll(base + "/rx/poll")
    return rxconn.http(base + "/rx/events")


async def connected(
    kind: str, conn: rxconn.Connection, http: aiohttp.ClientSession, base: str
) -> int:
    """Wait (bounded) until ``conn``'s link is up (and, polling, its first poll is held at the
    hub, so that the count starts between two polls); returns the hub's poll count."""
    async with asyncio.timeout(RUN_TIMEOUT):
        while conn.current_state.kind != "connected":
            await asyncio.sleep(0.001)
        while True:
            stats = await control(http, base, "/ctl/stats")
            if kind != LP or stats["held"]:
                return stats["polls"]
            await asyncio.sleep(0.001)


async def control(http: aiohttp.ClientSession, base: str, path: str) -> dict[str, int]:
    async with http.post(base + path) if path != "/ctl/stats" else http.get(base + path) as resp:
        resp.raise_for_status()
        return await resp.json() if path == "/ctl/stats" else {}


async def burst_receive(kind: str, http: aiohttp.ClientSession, base: str) -> tuple[float, float]:
    """Messages/s of a BURST-message burst, and polls per message during it."""
    counter = Counter(BURST)
    conn = rxconn.Connection(transport(kind, base), max_buffer=10)
    sub = conn.messages.subscribe(counter.on_next)
    try:
        before = await connected(kind, conn, http, base)
        await control(http, base, f"/ctl/burst?n={BURST}")
        try:
            await asyncio.wait_for(counter.done.wait(), RUN_TIMEOUT)
        except TimeoutError:
            raise RuntimeError(f"{kind}: got {counter.count} of {BURST}") from None
        polls = (await control(http, base, "/ctl/stats"))["polls"] - before
    finally:
        await rx_close(conn, sub)
    return counter.rate(), polls / BURST


async def paced_receive(
    kind: str, http: aiohttp.ClientSession, base: str, n: int, rate: float
) -> tuple[list[float], float]:
    """One-way latencies (ms) of ``n`` messages sent at ``rate``/s, and polls per message."""
    latencies: list[float] = []
    done = asyncio.Event()

    def on_next(message: Any) -> None:
        latencies.append((time.perf_counter_ns() - int(message[:20])) / 1e6)
        if len(latencies) == n:
            done.set()

    conn = rxconn.Connection(transport(kind, base), max_buffer=10)
    sub = conn.messages.subscribe(on_next)
    try:
        before = await connected(kind, conn, http, base)
        await control(http, base, f"/ctl/paced?n={n}&rate={rate}")
        await asyncio.wait_for(done.wait(), RUN_TIMEOUT)
        polls = (await control(http, base, "/ctl/stats"))["polls"] - before
    finally:
        await rx_close(conn, sub)
    return latencies, polls / n


async def raw_empty_poll(http: aiohttp.ClientSession, base: str) -> tuple[int, int]:
    """Open a session by hand, then one poll held 0.2 s with nothing pending: status, bytes."""
    url = base + "/rx/poll"
    async with http.get(url, headers={"X-Rxconn": "v1"}) as resp:
        first = rxconn.sse.SSEDecoder().feed(await resp.read())[0]
        link = resp.headers["X-Rxconn-Link"]
    hello = json.loads(first.data)
    headers = {
        "X-Rxconn": "v1",
        "X-Rxconn-Link": link,
        "X-Rxconn-Key": hello["key"],
        "X-Rxconn-Hold": "0.2",
        "Last-Event-ID": f"{hello['session']}:0",
    }
    async with http.get(url, headers=headers) as resp:
        body = await resp.read()
        status = resp.status
    async with http.delete(url, headers=headers) as resp:
        await resp.read()
    return status, len(body)


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


async def client(child: harness.Child, profile: bool) -> None:
    base = f"http://127.0.0.1:{child.port}"
    print(
        f"Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}; server pid "
        f"{child.pid} on port {child.port}, {child.placement}; {ROUNDS} interleaved rounds"
    )
    async with aiohttp.ClientSession() as http:
        start_stats = await control(http, base, "/ctl/stats")

        # -- burst receive
        bursts = await interleaved(
            {kind: functools.partial(burst_receive, kind, http, base) for kind in (LP, SSE)},
            ROUNDS,
        )
        rates = {kind: [r for r, _ in runs] for kind, runs in bursts.items()}
        print(f"\nburst receive: {BURST:,} x {SIZE} B messages sent at once by the hub")
        for kind, values in rates.items():
            print(
                f"  {kind:<20} best {max(values):>10,.0f} msg/s  median "
                f"{statistics.median(values):>10,.0f} msg/s"
            )
        best, paired = best_and_paired(rates, LP, SSE)
        print(
            f"  longpoll / SSE: {best:.2f}x best/best, {paired:.2f}x paired median"
            f"   target >= 0.8x: {verdict(paired >= 0.8)}"
        )
        burst_polls = max(per for _, per in bursts[LP])
        print(f"  polls per message in the burst (worst run): {burst_polls:.4f}")

        # -- latency at RATE
        runs = await interleaved(
            {
                kind: functools.partial(paced_receive, kind, http, base, RATE_MESSAGES, RATE)
                for kind in (LP, SSE)
            },
            ROUNDS,
        )
        print(f"\none-way latency at {RATE:g} msg/s ({RATE_MESSAGES} messages per run), ms")
        p50 = {}
        for kind, results in runs.items():
            medians = [statistics.median(lat) for lat, _ in results]
            p99s = [p(lat, 0.99) for lat, _ in results]
            p50[kind] = statistics.median(medians)
            print(
                f"  {kind:<20} p50 {p50[kind]:.3f}  (runs {min(medians):.3f}-"
                f"{max(medians):.3f})  p99 {statistics.median(p99s):.3f}"
            )
        diffs = [
            statistics.median(a) - statistics.median(b)
            for (a, _), (b, _) in zip(runs[LP], runs[SSE], strict=True)
        ]
        extra = statistics.median(diffs)
        print(
            f"  longpoll p50 - SSE p50: {extra:+.3f} ms (paired median)"
            f"   target <= +0.25 ms: {verdict(extra <= 0.25)}"
        )

        # -- polls per message at several rates
        print("\npolls per message (GET /poll requests the hub received while sending)")
        worst = burst_polls
        for rate in POLL_RATES:
            n = int(min(400, rate * 2))
            _latencies, per = await paced_receive(LP, http, base, n, rate)
            worst = max(worst, per)
            print(f"  {rate:>8,.0f} msg/s  {n:>5} messages  {per:.3f} polls/message")
        print(f"  {'burst':>8}        {BURST:>5} messages  {burst_polls:.4f} polls/message")
        print(f"  worst {worst:.3f}   target <= 1: {verdict(worst <= 1.0)}")

        # -- empty answers
        status, size = await raw_empty_poll(http, base)
        end_stats = await control(http, base, "/ctl/stats")
        empty = end_stats["empty"] - start_stats["empty"]
        empty_bytes = end_stats["empty_bytes"] - start_stats["empty_bytes"]
        print(
            f"\nempty answers: raw poll held 0.2 s -> {status}, {size} body bytes; "
            f"{empty} empty answers in the whole run, {empty_bytes} body bytes in all"
            f"   target 0 bytes: {verdict(size == 0 and empty_bytes == 0 and status == 204)}"
        )


if __name__ == "__main__":
    harness.run_script(__file__, __doc__, serve, client, total_sep="\n")
