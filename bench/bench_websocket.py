"""WebSocket receive throughput and echo latency: rxconn against raw aiohttp (a script).

What it measures, all in one run, against the same server:

* **receive throughput** (messages/s) of 100 B and 10 KiB text messages:
  raw ``aiohttp`` (``ClientSession.ws_connect`` + ``async for msg in ws``)
  against ``rxconn.Connection(rxconn.websocket(url, hub=False))`` counting in a
  ``conn.messages.subscribe(on_next)`` callback; and ``hub=True`` (the
  ``rxconn.v1`` session protocol: tagged frames, acks every 64) against a bare
  aiohttp client that strips the tags of the same frames;
* **echo latency** p50/p99 of 100 B messages, one round trip at a time:
  ``await ws.send_str`` + ``await ws.receive()`` against ``conn.send`` + a
  future completed by the ``conn.messages`` callback (what an asyncio app that
  awaits replies does), and against sending the next one from the callback;
* the same against the real rxconn ``Hub`` (informational: the hub's own
  per-message send cost bounds those throughput numbers), and the server's
  capacity (a bare blocking socket reading ``/burst`` without parsing frames),
  to show that the server is not what limits the client measurements.

How: the server runs in a **child process** (this script with ``--serve``) and,
where the OS allows, client and server are pinned to different CPUs, so that
the server never shares the client's CPU or event loop. Its ``/burst`` and
``/v1burst`` routes write N **pre-built** frames straight to the transport in
~1 MiB batches (``/v1burst`` answers the ``rxconn.v1`` hello first and tags each
frame like the hub does); ``/echo`` echoes each text frame. The real ``Hub`` is
mounted under ``/rx``; its sessions answer ``burst:N:SIZE`` with N messages and
echo anything else. Throughput is timed on the client from the first to the
last message. The variants run interleaved, ROUNDS times each; the best (and
median) throughput and the median p50/p99 are reported, with ratios rxconn / raw
(above 1 is faster for throughput, slower for latency); throughput ratios are
given best / best and as the median of the per-round ratios (each rxconn run
against the raw run just before it, which cancels slow drifts of a shared
machine). Nothing is asserted.

Targets (from the issue): rxconn >= 0.9x raw aiohttp on 100 B receive;
echo p50 <= 1.1x raw. Run from the repository root::

    python bench/bench_websocket.py            # the benchmark (< 60 s)
    python bench/bench_websocket.py --profile  # + cProfile of the 100 B receive paths
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _harness as harness  # first: it puts the repository root on sys.path
import aiohttp
from _harness import Counter, interleaved, payload, percentiles, rx_close, rx_wait
from aiohttp import web

import rxconn
from rxconn import wire
from rxconn.server import Hub


SIZES = {100: 100_000, 10 * 1024: 25_000}  # message size -> messages per throughput run
ROUNDS = 9  # throughput runs per variant (interleaved)
HUB_ROUNDS = 3  # ... for the server capacity and the real Hub (informational)
ECHO_ROUNDS = 5  # latency runs per variant (interleaved)
ECHO_COUNT = 2_000  # timed round trips per latency run
ECHO_WARMUP = 200
ECHO_SIZE = 100
BATCH_BYTES = 1 << 20  # the server writes pre-built frames in batches this big
HIGH_WATER = 8 << 20  # ... while its transport buffer holds less than this
RUN_TIMEOUT = harness.RUN_TIMEOUT
TEXT = aiohttp.WSMsgType.TEXT


# ===================================================================== server


def text_frame(data: bytes) -> bytes:
    """One unmasked, final, uncompressed text frame (what a server sends), per RFC 6455."""
    n = len(data)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + data


async def write_frames(request: web.Request, frame: bytes, n: int) -> None:
    """Write ``frame`` ``n`` times straight to the socket, in big pre-built batches."""
    transport = request.transport
    assert transport is not None
    per_batch = max(1, BATCH_BYTES // len(frame))
    batch = frame * per_batch
    full, rest = divmod(n, per_batch)
    chunks = itertools.chain(itertools.repeat(batch, full), [frame * rest] if rest else [])
    for chunk in chunks:
        while transport.get_write_buffer_size() > HIGH_WATER:
            if transport.is_closing():
                return
            await asyncio.sleep(0.0005)
        transport.write(chunk)


async def drain_client(ws: web.WebSocketResponse) -> None:
    """Read (and drop) what the client sends until it closes."""
    async for _ in ws:
        pass


async def handle_burst(request: web.Request) -> web.StreamResponse:
    """Plain frames: on connect, write N messages of SIZE bytes as fast as possible."""
    n, size = int(request.query["n"]), int(request.query["size"])
    ws = web.WebSocketResponse(compress=False, max_msg_size=0)
    await ws.prepare(request)
    await write_frames(request, text_frame(payload(size).encode()), n)
    await drain_client(ws)
    return ws


async def handle_v1_burst(request: web.Request) -> web.StreamResponse:
    """``rxconn.v1`` without a hub: answer the hello, then write N tagged messages."""
    n, size = int(request.query["n"]), int(request.query["size"])
    ws = web.WebSocketResponse(protocols=(wire.SUBPROTOCOL,), compress=False, max_msg_size=0)
    await ws.prepare(request)
    if ws.ws_protocol != wire.SUBPROTOCOL:
        await ws.close(code=1002, message=b"rxconn.v1 expected")
        return ws
    hello = await ws.receive()
    if hello.type is not TEXT or not isinstance(wire.decode_control(hello.data), wire.Hello):
        await ws.close(code=1002, message=b"hello expected")
        return ws
    await ws.send_str(wire.encode_welcome(wire.Welcome("bench", 0, False, key="bench-key")))
    frame = text_frame(wire.encode_text(payload(size)).encode())
    await write_frames(request, frame, n)
    await drain_client(ws)
    return ws


async def handle_echo(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(compress=False, max_msg_size=0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is TEXT:
            await ws.send_str(msg.data)
    return ws


def on_hub_session(session: Any) -> None:
    """Hub sessions: ``burst:N:SIZE`` asks for N messages; anything else is echoed."""

    def on_message(message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("burst:"):
            _, n, size = message.split(":")
            text = payload(int(size))
            for _ in range(int(n)):
                session.send(text)
        elif not session.ended:
            session.send(message)

    session.messages.subscribe(on_message)


async def serve(cpu: int | None) -> None:
    """The child process: serve until stdin closes, announcing the port on stdout."""
    harness.pin(cpu)
    hub = Hub(
        ping_interval=60.0,
        session_grace=1.0,
        replay_limit=2 * max(SIZES.values()),
        replay_bytes=1 << 30,  # a burst of 10 KiB messages sent without yielding
    )
    hub.sessions.subscribe(on_hub_session)
    app = web.Application()
    app.router.add_get("/burst", handle_burst)
    app.router.add_get("/v1burst", handle_v1_burst)
    app.router.add_get("/echo", handle_echo)
    app.add_subapp("/rx", hub.app())
    await harness.serve_app(app, on_stop=[hub.shutdown])


# ===================================================================== client


async def rx_connected(
    url: str, hub: bool, on_next: Callable[[Any], None]
) -> tuple[rxconn.Connection, Any]:
    conn = rxconn.Connection(rxconn.websocket(url, hub=hub))
    sub = conn.messages.subscribe(on_next)
    return conn, sub


async def rx_receive(url: str, n: int, hub: bool, request: str | None = None) -> float:
    counter = Counter(n)
    conn, sub = await rx_connected(url, hub, counter.on_next)
    try:
        if request is not None:
            conn.send(request)
        await rx_wait(conn, counter.done, f"rxconn receive from {url}")
    finally:
        await rx_close(conn, sub)
    return counter.rate()


async def raw_receive(http: aiohttp.ClientSession, url: str, n: int) -> float:
    counter = Counter(n)
    async with http.ws_connect(url) as ws:
        await harness.raw_count_text(ws, counter)
    return counter.rate()


async def v1_open(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    """A bare aiohttp client speaking just enough ``rxconn.v1`` for the hub (no acks)."""
    ws = await http.ws_connect(url, protocols=(wire.SUBPROTOCOL,))
    await ws.send_str(wire.encode_hello(wire.Hello(None, 0)))
    welcome = await ws.receive()
    if welcome.type is not TEXT or not isinstance(wire.decode_control(welcome.data), wire.Welcome):
        raise RuntimeError(f"no welcome from the hub: {welcome!r}")
    return ws


async def raw_v1_receive(
    http: aiohttp.ClientSession, url: str, n: int, request: str | None = None
) -> float:
    """Strip the tag of each data frame, count; never acknowledge (the server keeps it all)."""
    counter = Counter(n)
    on_next = counter.on_next
    ws = await v1_open(http, url)
    try:
        if request is not None:
            await ws.send_str(wire.encode_text(request))
        async with asyncio.timeout(RUN_TIMEOUT):
            async for msg in ws:
                if msg.type is TEXT and msg.data[:1] == wire.TAG_MESSAGE:
                    on_next(msg.data[1:])
                    if counter.count == n:
                        break
    finally:
        await ws.close()
    return counter.rate()


def socket_drain(port: int, n: int, size: int) -> float:
    """The server's capacity: read /burst with a bare blocking socket (no frame parsing)."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /burst?n={n}&size={size} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    total = n * len(text_frame(payload(size).encode()))
    buffer = memoryview(bytearray(1 << 20))
    with socket.create_connection(("127.0.0.1", port), timeout=RUN_TIMEOUT) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"no upgrade: {head!r}")
        got = sock.recv_into(buffer)
        start = time.perf_counter()
        while got < total:
            got += sock.recv_into(buffer)
        return n / (time.perf_counter() - start)


async def raw_echo(http: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    return await harness.raw_echo(http, url, payload(ECHO_SIZE), ECHO_WARMUP, ECHO_COUNT)


async def raw_v1_echo(http: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    frame = wire.encode_text(payload(ECHO_SIZE))
    samples: list[int] = []
    ws = await v1_open(http, url)
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            for i in range(ECHO_WARMUP + ECHO_COUNT):
                start = time.perf_counter_ns()
                await ws.send_str(frame)
                while True:  # skip the hub's acks
                    msg = await ws.receive()
                    if msg.type is not TEXT:
                        raise RuntimeError(f"raw v1 echo: unexpected {msg!r}")
                    if msg.data[:1] == wire.TAG_MESSAGE:
                        break
                elapsed = time.perf_counter_ns() - start
                if i >= ECHO_WARMUP:
                    samples.append(elapsed)
    finally:
        await ws.close()
    return percentiles(samples)


async def rx_echo(url: str, hub: bool) -> tuple[float, float]:
    """Round trips as an asyncio app would await them: the callback completes a future."""
    waiter: list[asyncio.Future[None]] = []
    conn, sub = await rx_connected(url, hub, harness.completes_waiter(waiter))
    try:
        text = payload(ECHO_SIZE)
        return await harness.rx_awaited_echo(conn, waiter, text, ECHO_WARMUP, ECHO_COUNT)
    finally:
        await rx_close(conn, sub)


async def rx_echo_in_callback(url: str, hub: bool) -> tuple[float, float]:
    """Round trips driven from the ``messages`` callback (no hop back to an awaiting task)."""
    text = payload(ECHO_SIZE)
    samples: list[int] = []
    done = asyncio.Event()
    total = ECHO_WARMUP + ECHO_COUNT
    count = 0
    start = 0
    conn: rxconn.Connection | None = None

    def on_next(_: object) -> None:
        nonlocal count, start
        now = time.perf_counter_ns()
        count += 1
        if count > ECHO_WARMUP:
            samples.append(now - start)
        if count == total:
            done.set()
            return
        assert conn is not None
        start = time.perf_counter_ns()
        conn.send(text)

    conn, sub = await rx_connected(url, hub, on_next)
    try:
        start = time.perf_counter_ns()
        conn.send(text)  # the first round trip includes the connect: it is a warm-up one
        await rx_wait(conn, done, "rxconn echo from the callback")
    finally:
        await rx_close(conn, sub)
    return percentiles(samples)


# ================================================================== reporting


def ratio_line(label: str, value: float, target: str | None = None) -> str:
    mark = ""
    if target is not None:
        op, bound = target.split()
        ok = value >= float(bound) if op == ">=" else value <= float(bound)
        mark = f"   target {op} {bound}x: {'met' if ok else 'NOT met'}"
    return f"  {label:<44} {value:>6.2f}x{mark}"


def report_throughput(size: int, results: dict[str, list[float]], ratios: dict[str, float]) -> None:
    for name, rates in results.items():
        best, mid = max(rates), statistics.median(rates)
        mib = best * size / 2**20
        print(f"  {size:>6}  {name:<38} {best:>12,.0f} {mib:>8.1f} {mid:>10,.0f}")

    target = ">= 0.9" if size == 100 else None
    for label, a, b, key, goal in (
        ("rxconn hub=False / raw", RX_PLAIN, RAW_PLAIN, "hub=False", target),
        ("rxconn hub=True / raw v1", RX_V1, RAW_V1, "hub=True", None),
        ("rxconn hub=True / raw plain", RX_V1, RAW_PLAIN, None, None),
        ("rxconn / raw v1, both on the real Hub", RX_HUB, RAW_HUB, None, None),
    ):
        best, mid = harness.best_and_paired(results, a, b)
        print(ratio_line(f"{size} B {label}", best, goal) + f"   (paired median {mid:.2f}x)")
        if key is not None:
            ratios[f"receive {size} B {key}"] = best
    extra = (1 / max(results[RX_PLAIN]) - 1 / max(results[RAW_PLAIN])) * 1e9
    extra_v1 = (1 / max(results[RX_V1]) - 1 / max(results[RAW_V1])) * 1e9
    print(
        f"  {size} B per message over raw (best runs): hub=False {extra:+.0f} ns, "
        f"hub=True {extra_v1:+.0f} ns"
    )


SERVER_CAP = "(server capacity: bare socket, /burst)"
RAW_PLAIN = "raw aiohttp, plain /burst"
RX_PLAIN = "rxconn hub=False, plain /burst"
RAW_V1 = "raw aiohttp rxconn.v1, /v1burst"
RX_V1 = "rxconn hub=True, rxconn.v1 /v1burst"
RAW_HUB = "raw aiohttp rxconn.v1, real Hub"
RX_HUB = "rxconn hub=True, real Hub"


async def bench(port: int) -> dict[str, float]:
    base = f"ws://127.0.0.1:{port}"
    hub_url = f"{base}/rx/ws"
    ratios: dict[str, float] = {}
    async with aiohttp.ClientSession() as http:
        print(
            f"receive throughput (messages/s): best and median of {ROUNDS} interleaved runs "
            f"({HUB_ROUNDS} for the server capacity and the real Hub)"
        )
        print(f"  {'size':>6}  {'variant':<38} {'best msg/s':>12} {'MiB/s':>8} {'median':>10}")
        for size, n in SIZES.items():
            burst = f"{base}/burst?n={n}&size={size}"
            v1burst = f"{base}/v1burst?n={n}&size={size}"
            request = f"burst:{n}:{size}"
            results = await interleaved(
                {
                    RAW_PLAIN: lambda u=burst, n=n: raw_receive(http, u, n),
                    RX_PLAIN: lambda u=burst, n=n: rx_receive(u, n, False),
                    RAW_V1: lambda u=v1burst, n=n: raw_v1_receive(http, u, n),
                    RX_V1: lambda u=v1burst, n=n: rx_receive(u, n, True),
                },
                ROUNDS,
            )
            results.update(
                await interleaved(
                    {
                        SERVER_CAP: lambda n=n, size=size: asyncio.to_thread(
                            socket_drain, port, n, size
                        ),
                        RAW_HUB: lambda n=n, r=request: raw_v1_receive(http, hub_url, n, r),
                        RX_HUB: lambda n=n, r=request: rx_receive(hub_url, n, True, r),
                    },
                    HUB_ROUNDS,
                )
            )
            report_throughput(size, results, ratios)
        print()

        print(
            f"echo latency, {ECHO_SIZE} B, {ECHO_COUNT} round trips per run, "
            f"median of {ECHO_ROUNDS} interleaved runs (microseconds)"
        )
        echo = f"{base}/echo"
        latency = await interleaved(
            {
                "raw aiohttp, plain /echo": lambda: raw_echo(http, echo),
                "rxconn hub=False, plain /echo": lambda: rx_echo(echo, False),
                "rxconn hub=False, send from callback": lambda: rx_echo_in_callback(echo, False),
                "raw aiohttp rxconn.v1, real Hub": lambda: raw_v1_echo(http, hub_url),
                "rxconn hub=True, real Hub": lambda: rx_echo(hub_url, True),
            },
            ECHO_ROUNDS,
        )
        print(f"  {'variant':<38} {'p50':>8} {'p99':>8}")
        med: dict[str, tuple[float, float]] = {}
        for name, runs in latency.items():
            med[name] = p50, p99 = harness.median_percentiles(runs)
            print(f"  {name:<38} {p50:>8.1f} {p99:>8.1f}")
        raw50, raw99 = med["raw aiohttp, plain /echo"]
        rx50, rx99 = med["rxconn hub=False, plain /echo"]
        cb50, cb99 = med["rxconn hub=False, send from callback"]
        hub_raw50, hub_raw99 = med["raw aiohttp rxconn.v1, real Hub"]
        hub50, hub99 = med["rxconn hub=True, real Hub"]
        print(ratio_line("echo p50 rxconn hub=False / raw", rx50 / raw50, "<= 1.1"))
        print(ratio_line("echo p99 rxconn hub=False / raw", rx99 / raw99))
        print(ratio_line("echo p50 rxconn send-from-callback / raw", cb50 / raw50))
        print(ratio_line("echo p50 rxconn hub=True / raw v1 (real Hub)", hub50 / hub_raw50))
        print(ratio_line("echo p99 rxconn hub=True / raw v1 (real Hub)", hub99 / hub_raw99))
        print(f"  echo p50 rxconn hub=False costs {rx50 - raw50:+.1f} us per round trip over raw")
        ratios["echo p50 hub=False"] = rx50 / raw50
    return ratios


async def profile_receive(port: int, top: int = 12) -> None:
    """cProfile the 100 B receive paths; per-message costs, scaled to the unprofiled run.

    cProfile inflates every Python call, so next to its raw ``tottime`` the table
    shows an estimate scaled by (unprofiled time / profiled time) of the same path.
    """
    n = SIZES[100]
    burst = f"ws://127.0.0.1:{port}/burst?n={n}&size=100"
    v1burst = f"ws://127.0.0.1:{port}/v1burst?n={n}&size=100"
    async with aiohttp.ClientSession() as http:
        runs: list[tuple[str, Callable[[], Awaitable[float]]]] = [
            ("rxconn hub=False, /burst", lambda: rx_receive(burst, n, False)),
            ("raw aiohttp, /burst", lambda: raw_receive(http, burst, n)),
            ("rxconn hub=True, /v1burst", lambda: rx_receive(v1burst, n, True)),
            ("raw aiohttp rxconn.v1, /v1burst", lambda: raw_v1_receive(http, v1burst, n)),
        ]
        for label, run in runs:
            rate = max([await run(), await run()])  # warm up, and the unprofiled reference
            profiler, _ = await harness.profile_run(run)
            harness.print_profile(
                profiler,
                f"\ncProfile, {label}, {n:,} x 100 B",
                n,
                rate,
                top=top,
                share=False,
                calls_digits=2,
                function_header="function  (ns per message)",
            )


async def client(child: harness.Child, profile: bool) -> None:
    print(
        f"Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}, server pid "
        f"{child.pid} (its own process) on port {child.port}, {child.placement}"
    )
    await bench(child.port)
    if profile:
        await profile_receive(child.port)


if __name__ == "__main__":
    harness.run_script(
        __file__,
        __doc__,
        serve,
        client,
        profile_help="also cProfile the receive path",
        total_sep="\n",
    )
