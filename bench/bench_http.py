"""HTTP link throughput: SSE receive against other clients, and batched POST send to the Hub.

What it measures (a script, not a test; nothing is asserted):

* **(a) SSE receive throughput** (events/s) of 100 B and 10 KiB ``data:``
  events, all against the same server in the same run:
  ``conn.messages`` of ``rxconn.Connection(rxconn.http(url, hub=False))``;
  raw ``aiohttp`` with a minimal hand-written parser (``resp.content.iter_any()``,
  split on ``b"\\n\\n"``, strip ``"data: "``, decode, one callback per event); and
  ``httpx-sse`` (``httpx.AsyncClient`` + ``httpx_sse.aconnect_sse`` +
  ``aiter_sse()``). A bytes-only aiohttp reader (no parsing) shows what the
  server and the socket can deliver. Rates are timed on the client from the
  first to the last event.
* **(b) POST send throughput** to the real ``rxconn.server.Hub`` (``echo=False``):
  ``conn = rxconn.Connection(rxconn.http(hub_url + "/events"), max_buffer=N)``,
  connected first, then N = 200k 20-byte ``conn.send()`` calls in a row; timed
  from the first send until every message is acknowledged (``conn.buffered == 0``,
  polled every ms) and, with the hub in this process, until a ``hub.sessions``
  subscriber counted all N. Variants: hub in this process (client and hub share
  one CPU and one event loop); hub in the child process (its own CPU; the child
  counts arrivals, checked after each run); the same with a producer that yields
  to the loop after every 1,000 sends; and, as the hub's capacity, raw aiohttp
  POSTing the same batches (1,000 messages each, encoded ahead of time, one POST
  in flight like rxconn).

How: the server (a minimal aiohttp app with ``/sse`` that writes N pre-built
events in ~1 MiB batches, plus the Hub under ``/rx``) runs in a **child process**
(this script with ``--serve``), pinned to another CPU than the client where the
OS allows. Variants run interleaved, ROUNDS times each; best and median are
reported, and ratios best/best plus the median of per-round ratios.

Targets: (a) rxconn >= 0.8x the hand parser and >= 2x httpx-sse on 100 B events;
(b) >= 100k messages/s. ``--profile`` adds cProfile tables (ns per message) of
the rxconn SSE receive path and the POST send path. Run from the repository root::

    python -W error bench/bench_http.py             # the benchmark (< 60 s)
    python -W error bench/bench_http.py --profile   # + cProfile of both rxconn paths
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import itertools
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _harness as harness  # first: it puts the repository root on sys.path
import aiohttp
import httpx
import httpx_sse
from _harness import Counter, best_and_paired, interleaved, payload, rx_close
from aiohttp import web

import rxconn
import rxconn.aio
from rxconn import wire
from rxconn.server import Hub
from rxconn.server import serve as serve_hub


SSE_SIZES = {100: 200_000, 10 * 1024: 10_000}  # event size -> events per run
SSE_ROUNDS = 7
POST_N = 200_000
POST_SIZE = 20
POST_ROUNDS = 5
PRODUCER_SLICE = 1_000  # the yielding producer sends this many, then yields
RAW_BATCH = 1_000  # what rxconn's max_batch defaults to
BATCH_BYTES = 1 << 20
HIGH_WATER = 8 << 20
RUN_TIMEOUT = harness.RUN_TIMEOUT


# ===================================================================== server


def sse_event(size: int) -> bytes:
    return b"data: " + payload(size).encode() + b"\n\n"


class Stats:
    """What the child's hub received (its sessions' messages, counted)."""

    received = 0


async def handle_sse(request: web.Request) -> web.StreamResponse:
    """Stream N pre-built events in ~1 MiB writes, then keep the stream open until the client goes.

    (Keeping it open stops an rxconn client from reconnecting at the end of the stream.)
    """
    n, size = int(request.query["n"]), int(request.query["size"])
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    event = sse_event(size)
    per_batch = max(1, BATCH_BYTES // len(event))
    full, rest = divmod(n, per_batch)
    batch = event * per_batch
    transport = request.transport
    try:
        for chunk in itertools.chain(itertools.repeat(batch, full), [event * rest] if rest else []):
            await resp.write(chunk)  # chunked encoding; waits for the socket to drain
        while transport is not None and not transport.is_closing():
            await asyncio.sleep(0.05)
    except (ConnectionError, RuntimeError):
        pass  # the client left
    return resp


async def handle_received(request: web.Request) -> web.Response:
    return web.json_response({"received": Stats.received})


def count_session(session: Any) -> None:
    def on_message(_: object) -> None:
        Stats.received += 1

    session.messages.subscribe(on_message)


async def serve(cpu: int | None) -> None:
    """The child process: serve until stdin closes, announcing the port on stdout."""
    harness.pin(cpu)
    hub = Hub(ping_interval=60.0, session_grace=1.0)
    hub.sessions.subscribe(count_session)
    app = web.Application()
    app.router.add_get("/sse", handle_sse)
    app.router.add_get("/received", handle_received)
    app.add_subapp("/rx", hub.app())
    await harness.serve_app(app, on_stop=[hub.shutdown])


# ============================================================ (a) SSE receive


class HandParser:
    """The least an SSE parser can do: cut at blank lines, strip ``data: ``, decode."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[str]:
        blocks = (self._buf + chunk).split(b"\n\n")
        self._buf = blocks.pop()
        return [block.removeprefix(b"data: ").decode() for block in blocks]


async def hand_receive(http: aiohttp.ClientSession, url: str, n: int) -> float:
    counter = Counter(n)
    on_next = counter.on_next
    parser = HandParser()
    async with asyncio.timeout(RUN_TIMEOUT), http.get(url) as resp:
        async for chunk in resp.content.iter_any():
            for data in parser.feed(chunk):
                on_next(data)
            if counter.count >= n:
                break
    if counter.count < n:
        raise RuntimeError(f"hand parser: got {counter.count} of {n}")
    return counter.rate()


async def bytes_receive(http: aiohttp.ClientSession, url: str, n: int, size: int) -> float:
    """The server's and the socket's capacity: count bytes, parse nothing (events/s)."""
    total = n * len(sse_event(size))
    got = 0
    start = 0.0
    async with asyncio.timeout(RUN_TIMEOUT), http.get(url) as resp:
        async for chunk in resp.content.iter_any():
            if not got:
                start = time.perf_counter()
            got += len(chunk)
            if got >= total:
                break
    return n / (time.perf_counter() - start)


async def httpx_receive(client: httpx.AsyncClient, url: str, n: int) -> float:
    counter = Counter(n)
    on_next = counter.on_next
    async with asyncio.timeout(RUN_TIMEOUT):
        async with httpx_sse.aconnect_sse(client, "GET", url) as source:
            async with contextlib.aclosing(source.aiter_sse()) as events:
                async for event in events:
                    on_next(event.data)
                    if counter.count >= n:
                        break
    if counter.count < n:
        raise RuntimeError(f"httpx-sse: got {counter.count} of {n}")
    return counter.rate()


async def rx_receive(url: str, n: int) -> float:
    counter = Counter(n)
    conn = rxconn.Connection(rxconn.http(url, hub=False))
    sub = conn.messages.subscribe(counter.on_next)
    try:
        try:
            await asyncio.wait_for(counter.done.wait(), RUN_TIMEOUT)
        except TimeoutError:
            raise RuntimeError(
                f"rxconn: got {counter.count} of {n} in state {conn.current_state!r}"
            ) from None
    finally:
        await rx_close(conn, sub)
    return counter.rate()


# ============================================================= (b) POST send


async def wait_connected(conn: rxconn.Connection) -> Any:
    """Hold interest (``connect()``) and wait until the link is up; returns the handle."""
    handle = conn.connect()
    async with asyncio.timeout(RUN_TIMEOUT):
        while conn.current_state.kind != "connected":
            await asyncio.sleep(0.001)
    return handle


async def wait_acked(conn: rxconn.Connection) -> float:
    """Poll ``conn.buffered`` every ms; the time it reached 0."""
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            while conn.buffered:
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise RuntimeError(
            f"POST: {conn.buffered} unacknowledged in state {conn.current_state!r}"
        ) from None
    return time.perf_counter()


async def child_received(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(f"{base}/received") as resp:
        return int((await resp.json())["received"])


async def rx_post(
    events_url: str,
    n: int,
    *,
    yielding: bool = False,
    arrivals: Callable[[], float | None] | None = None,
    check: Callable[[], Awaitable[int]] | None = None,
) -> tuple[float, float | None]:
    """Send n messages right after connecting; (acked rate, hub-received rate or None)."""
    conn = rxconn.Connection(rxconn.http(events_url), max_buffer=n)
    handle = await wait_connected(conn)
    before = await check() if check is not None else 0
    text = "m" * POST_SIZE
    send = conn.send
    try:
        start = time.perf_counter()
        if yielding:
            for i in range(0, n, PRODUCER_SLICE):
                for _ in range(min(PRODUCER_SLICE, n - i)):
                    send(text)
                await asyncio.sleep(0)
        else:
            for _ in range(n):
                send(text)
        acked = await wait_acked(conn)
        arrived = arrivals() if arrivals is not None else None
        if check is not None and (got := await check() - before) != n:
            raise RuntimeError(f"POST: the hub received {got} of {n}")
    finally:
        handle.dispose()
        conn.close()
        await rxconn.aio.drain()
    return n / (acked - start), (n / (arrived - start) if arrived is not None else None)


class InProcessHub:
    """A Hub served in this process; counts arrivals and notes when the n-th came."""

    def __init__(self) -> None:
        self.hub = Hub(ping_interval=60.0, session_grace=1.0)
        self.hub.sessions.subscribe(self._session)
        self.expect = 0
        self.count = 0
        self.last: float | None = None

    def _session(self, session: Any) -> None:
        session.messages.subscribe(self._message)

    def _message(self, _: object) -> None:
        self.count += 1
        if self.count == self.expect:
            self.last = time.perf_counter()

    def arm(self, n: int) -> Callable[[], float | None]:
        self.expect, self.count, self.last = n, 0, None
        return lambda: self.last if self.count == n else None


async def raw_post(http: aiohttp.ClientSession, base: str, n: int) -> float:
    """The hub's capacity: pre-encoded batches POSTed one at a time.

    An SSE stream (``X-Rxconn: v1``) holds the session open meanwhile.
    """
    headers = {"Accept": "text/event-stream", "X-Rxconn": "v1"}
    async with http.get(f"{base}/rx/events", headers=headers) as stream:
        buffer = b""
        while b"\n\n" not in buffer:
            buffer += await stream.content.readany()
        data = next(line for line in buffer.split(b"\n") if line.startswith(b"data:"))
        hello = json.loads(data[5:])
        session, post, key = hello["session"], f"{base}{hello['post']}", hello["key"]
        text = "m" * POST_SIZE
        bodies = [
            wire.encode_batch(
                wire.Batch(session, seq, (text,) * min(RAW_BATCH, n - seq + 1), key=key)
            )
            for seq in range(1, n + 1, RAW_BATCH)
        ]
        post_headers = {"Content-Type": "application/json"}
        start = time.perf_counter()
        for body in bodies:
            async with http.post(post, data=body, headers=post_headers) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"raw POST: {resp.status} {await resp.text()}")
                await resp.read()
        elapsed = time.perf_counter() - start
        close = wire.encode_batch(wire.Batch(session, n + 1, (), close=True, key=key))
        async with http.post(post, data=close, headers=post_headers) as resp:
            await resp.read()
    return n / elapsed


# ================================================================== reporting


def ratio_line(label: str, value: float, paired: float, target: float | None = None) -> str:
    mark = ""
    if target is not None:
        mark = f"   target >= {target:g}x: {'met' if value >= target else 'NOT met'}"
    return f"  {label:<44} {value:>6.2f}x  (paired median {paired:.2f}x){mark}"


BYTES = "(capacity: aiohttp, bytes only)"
HAND = "aiohttp + hand parser"
RX = "rxconn http(hub=False)"
HTTPX = "httpx-sse"


async def bench_sse(port: int, http: aiohttp.ClientSession, client: httpx.AsyncClient) -> None:
    print(
        f"(a) SSE receive throughput (events/s), best and median of {SSE_ROUNDS} interleaved runs"
    )
    print(f"  {'size':>6}  {'variant':<34} {'N':>8} {'best ev/s':>12} {'MiB/s':>8} {'median':>10}")
    for size, n in SSE_SIZES.items():
        url = f"http://127.0.0.1:{port}/sse?n={n}&size={size}"
        results = await interleaved(
            {
                BYTES: lambda u=url, n=n, s=size: bytes_receive(http, u, n, s),
                HAND: lambda u=url, n=n: hand_receive(http, u, n),
                RX: lambda u=url, n=n: rx_receive(u, n),
                HTTPX: lambda u=url, n=n: httpx_receive(client, u, n),
            },
            SSE_ROUNDS,
        )
        for name, rates in results.items():
            best, mid = max(rates), statistics.median(rates)
            mib = best * len(sse_event(size)) / 2**20
            print(f"  {size:>6}  {name:<34} {n:>8,} {best:>12,.0f} {mib:>8.1f} {mid:>10,.0f}")
        small_event = size == 100
        best, paired = best_and_paired(results, RX, HAND)
        print(
            ratio_line(f"{size} B rxconn / hand parser", best, paired, 0.8 if small_event else None)
        )
        best, paired = best_and_paired(results, RX, HTTPX)
        print(
            ratio_line(f"{size} B rxconn / httpx-sse", best, paired, 2.0 if small_event else None)
        )
        best, paired = best_and_paired(results, HAND, BYTES)
        print(ratio_line(f"{size} B hand parser / bytes-only capacity", best, paired))
        extra = (1 / max(results[RX]) - 1 / max(results[HAND])) * 1e9
        print(
            f"  {size} B rxconn costs {extra:+,.0f} ns per event over the hand parser (best runs)"
        )
    print()


async def bench_post(port: int, http: aiohttp.ClientSession) -> None:
    base = f"http://127.0.0.1:{port}"
    local = InProcessHub()
    async with serve_hub(local.hub) as server:
        local_events = f"{server.url}/events"
        child_events = f"{base}/rx/events"

        def check() -> Awaitable[int]:
            return child_received(http, base)

        variants: dict[str, Callable[[], Awaitable[tuple[float, float | None]]]] = {
            "rxconn, hub in this process": lambda: rx_post(
                local_events, POST_N, arrivals=local.arm(POST_N)
            ),
            "rxconn, hub in the child process": lambda: rx_post(child_events, POST_N, check=check),
            f"rxconn, child hub, yield every {PRODUCER_SLICE:,}": lambda: rx_post(
                child_events, POST_N, yielding=True, check=check
            ),
        }

        async def raw() -> tuple[float, float | None]:
            return await raw_post(http, base, POST_N), None

        variants[f"(capacity: raw aiohttp POSTs of {RAW_BATCH:,}, child hub)"] = raw
        print(
            f"(b) POST send throughput: {POST_N:,} x {POST_SIZE} B messages, from the first "
            f"send() until all are acknowledged; best and median of {POST_ROUNDS} interleaved runs"
        )
        results = await interleaved(variants, POST_ROUNDS)
    print(f"  {'variant':<48} {'best msg/s':>12} {'median':>10} {'hub got all':>12} {'us/msg':>7}")
    for name, runs in results.items():
        acked = [r[0] for r in runs]
        arrived = [r[1] for r in runs if r[1] is not None]
        got = f"{max(arrived):>12,.0f}" if arrived else f"{'-':>12}"
        best = max(acked)
        mid = statistics.median(acked)
        print(f"  {name:<48} {best:>12,.0f} {mid:>10,.0f} {got} {1e6 / best:>7.2f}")
    best = max(
        max(r[0] for r in runs) for name, runs in results.items() if name.startswith("rxconn")
    )
    verdict = "met" if best >= 1e5 else "NOT met"
    print(f"  best rxconn: {best:,.0f} msg/s   target >= 100,000 msg/s: {verdict}")
    print()


# ================================================================== profiling


def print_profile(
    profiler: cProfile.Profile, label: str, n: int, rate: float, top: int = 16
) -> None:
    """Top functions by own time, per message (see ``harness.print_profile``)."""
    title = f"\ncProfile, {label}"
    harness.print_profile(
        profiler, title, n, rate, top=top, function_header="function  (ns per message)"
    )


async def profile(port: int, http: aiohttp.ClientSession) -> None:
    n = SSE_SIZES[100]
    url = f"http://127.0.0.1:{port}/sse?n={n}&size=100"
    rate = max([await rx_receive(url, n), await rx_receive(url, n)])
    profiler, _ = await harness.profile_run(lambda: rx_receive(url, n))
    print_profile(profiler, f"rxconn SSE receive, {n:,} x 100 B", n, rate)

    local = InProcessHub()
    async with serve_hub(local.hub) as server:
        events = f"{server.url}/events"
        runs = [await rx_post(events, POST_N, arrivals=local.arm(POST_N)) for _ in range(2)]
        rate = max(r[0] for r in runs)
        local.arm(POST_N)
        profiler, _ = await harness.profile_run(lambda: rx_post(events, POST_N))
    label = f"rxconn POST send, {POST_N:,} x {POST_SIZE} B, client and hub in this process"
    print_profile(profiler, label, POST_N, rate, top=24)


async def client(child: harness.Child, do_profile: bool) -> None:
    print(
        f"Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}, httpx "
        f"{httpx.__version__}, httpx-sse {getattr(httpx_sse, '__version__', '?')}; server pid "
        f"{child.pid} on port {child.port}, {child.placement}"
    )
    async with (
        aiohttp.ClientSession() as http,
        httpx.AsyncClient(timeout=httpx.Timeout(RUN_TIMEOUT)) as client_httpx,
    ):
        await bench_sse(child.port, http, client_httpx)
        await bench_post(child.port, http)
        if do_profile:
            await profile(child.port, http)


if __name__ == "__main__":
    harness.run_script(
        __file__, __doc__, serve, client, profile_help="also cProfile the rxconn paths"
    )
