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

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

import rxconn  # noqa: E402
import rxconn.aio  # noqa: E402
from rxconn.server import Hub  # noqa: E402


N = 100_000  # messages per throughput run
SIZE = 100
ROUNDS = 7
ECHO_ROUNDS = 5
ECHO_COUNT = 2_000
ECHO_WARMUP = 200
RUN_TIMEOUT = 30.0
TEXT = aiohttp.WSMsgType.TEXT


# ===================================================================== server


def payload(size: int) -> str:
    return "x" * (size - 1) + "~"


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


def cpus() -> list[int]:
    if not hasattr(os, "sched_getaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def pin(cpu: int | None) -> str:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    os.sched_setaffinity(0, {cpu})
    return f"CPU {cpu}"


async def serve(cpu: int | None) -> None:
    """The child process: serve until stdin closes, announcing the port on stdout."""
    pin(cpu)
    hub = Hub(ping_interval=60.0, session_grace=1.0, replay_limit=2 * N)
    hub.sessions.subscribe(on_hub_session)
    echo = Hub(echo=True, ping_interval=60.0, session_grace=1.0)
    app = web.Application()
    app.router.add_get("/trigger", trigger_route(hub))
    app.add_subapp("/rx", hub.app())
    app.add_subapp("/echo", echo.app())
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin
    )
    print(f"PORT {port}", flush=True)
    try:
        await stdin.read()  # until the parent closes our stdin
    finally:
        transport.close()
        hub.shutdown()
        echo.shutdown()
        await runner.cleanup()


class Child:
    """The server process: started with the same interpreter and warning options."""

    def __init__(self, cpu: int | None) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.cpu = cpu

    async def __aenter__(self) -> Child:
        warn = [f"-W{option}" for option in sys.warnoptions]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *warn,
            str(Path(__file__).resolve()),
            "--serve",
            *(["--cpu", str(self.cpu)] if self.cpu is not None else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20.0)
        if not line.startswith(b"PORT "):
            raise RuntimeError(f"the server process did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    async def __aexit__(self, *_: object) -> None:
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        await proc.stdout.read()
        code = await asyncio.wait_for(proc.wait(), 10.0)
        if code != 0:
            raise RuntimeError(f"the server process exited with {code}")


# ===================================================================== client


class Counter:
    """Counts messages; notes when the first and the n-th arrived."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.done = asyncio.Event()

    def on_next(self, _: object) -> None:
        self.count += 1
        if self.count == 1:
            self.first = time.perf_counter()
        if self.count == self.n:
            self.last = time.perf_counter()
            self.done.set()

    def rate(self) -> float:
        return (self.n - 1) / (self.last - self.first)


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


async def rx_close(conn: rxconn.Connection, sub: Any) -> None:
    sub.dispose()
    conn.close()
    await rxconn.aio.drain()


async def rx_wait(conn: rxconn.Connection, event: asyncio.Event, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), RUN_TIMEOUT)
    except TimeoutError:
        raise RuntimeError(f"{what}: timed out in state {conn.current_state!r}") from None


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
    on_next = counter.on_next
    async with http.ws_connect(f"{base}/rx/ws") as ws:
        await trigger(http, base, N)
        async with asyncio.timeout(RUN_TIMEOUT):
            async for msg in ws:
                if msg.type is TEXT:
                    on_next(msg.data)
                    if counter.count == N:
                        break
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


def percentiles(samples: list[int]) -> tuple[float, float]:
    """p50 and p99 of nanosecond samples, in microseconds."""
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 / 1000, p99 / 1000


async def rx_echo(base: str, hub: bool) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    text = payload(SIZE)
    waiter: list[asyncio.Future[None]] = []

    def on_next(_: object) -> None:
        if waiter and not waiter[0].done():
            waiter[0].set_result(None)

    conn, sub = await rx_open(f"{base}/echo/ws", hub, on_next)
    samples: list[int] = []
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            for i in range(ECHO_WARMUP + ECHO_COUNT):
                future = loop.create_future()
                waiter[:] = [future]
                start = time.perf_counter_ns()
                conn.send(text)
                await future
                elapsed = time.perf_counter_ns() - start
                if i >= ECHO_WARMUP:
                    samples.append(elapsed)
    finally:
        await rx_close(conn, sub)
    return percentiles(samples)


async def raw_echo(http: aiohttp.ClientSession, base: str) -> tuple[float, float]:
    text = payload(SIZE)
    samples: list[int] = []
    async with http.ws_connect(f"{base}/echo/ws") as ws, asyncio.timeout(RUN_TIMEOUT):
        for i in range(ECHO_WARMUP + ECHO_COUNT):
            start = time.perf_counter_ns()
            await ws.send_str(text)
            msg = await ws.receive()
            elapsed = time.perf_counter_ns() - start
            if msg.type is not TEXT:
                raise RuntimeError(f"raw echo: unexpected {msg!r}")
            if i >= ECHO_WARMUP:
                samples.append(elapsed)
    return percentiles(samples)


# ================================================================== reporting


async def interleaved(
    variants: dict[str, Callable[[], Awaitable[Any]]], rounds: int
) -> dict[str, list[Any]]:
    results: dict[str, list[Any]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            results[name].append(await run())
    return results


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
    best = max(results[SESSION]) / max(results[PLAIN])
    paired = statistics.median(a / b for a, b in zip(results[SESSION], results[PLAIN], strict=True))
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
        med[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
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
    """Top functions by own time, per message, with an estimate scaled to the unprofiled run."""
    stats: dict[Any, Any] = pstats.Stats(profiler, stream=io.StringIO()).stats  # type: ignore[attr-defined]
    rows = sorted(
        (
            (tottime, calls, f"{Path(file).name}:{line}({func})")
            for (file, line, func), (_, calls, tottime, _, _) in stats.items()
        ),
        reverse=True,
    )
    total = sum(r[0] for r in rows)
    per_msg = total / n * 1e9
    scale = 1e9 / rate / per_msg
    print(
        f"cProfile (client side), {label}: {per_msg:,.0f} ns/msg profiled, "
        f"{1e9 / rate:,.0f} ns/msg unprofiled (scale {scale:.2f})"
    )
    print(f"  {'share':>6} {'profiled':>9} {'~real':>7} {'calls/msg':>9}  function")
    for tottime, calls, where in rows[:top]:
        ns = tottime / n * 1e9
        print(f"  {tottime / total:>6.1%} {ns:>9.0f} {ns * scale:>7.0f} {calls / n:>9.3f}  {where}")
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
            profiler = cProfile.Profile()
            profiler.enable()
            await run()
            profiler.disable()
            print_profile(profiler, label, N, rate)


async def main(do_profile: bool) -> None:
    started = time.perf_counter()
    available = cpus()
    client_cpu, server_cpu = (available[0], available[1]) if len(available) >= 2 else (None, None)
    async with Child(server_cpu) as child:
        client = pin(client_cpu)
        print(
            f"Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}; hubs in pid "
            f"{child.proc.pid if child.proc else '?'} on port {child.port}, client on {client}, "
            f"server on {'not pinned' if server_cpu is None else f'CPU {server_cpu}'}"
        )
        await bench(child.port)
        if do_profile:
            await profile(child.port)
    if rxconn.aio.TASKS.running():
        raise RuntimeError("rxconn tasks left running")
    print(f"(total {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="(internal) run the server")
    parser.add_argument("--cpu", type=int, help="(internal) the server's CPU")
    parser.add_argument("--profile", action="store_true", help="also cProfile the hub=True paths")
    args = parser.parse_args()
    asyncio.run(serve(args.cpu) if args.serve else main(args.profile))
