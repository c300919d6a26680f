"""Hubs on Redis (issue 13): the cost of the backplane against one hub, in the same run.

Every hub is a ``python -m rxconn serve`` child process (``--redis URL`` for the
cluster, on a ``redis-server`` this script starts on a free port); the clients
are ``rxconn.Connection`` s over WebSocket in this process. Variants run
interleaved (single hub, cluster, single hub, ...).

* **echo**: ``--clients`` connections to ``serve --echo`` keep ``--window``
  100 B messages each in flight for ``--seconds``; echoes per second. The cluster
  variant is one hub process with ``--redis`` (every client message applied in
  Redis, every echo numbered there and read back), so the ratio is the
  backplane's cost per message. Goal: >= 0.5x the single hub.
* **broadcast**: ``--sessions`` connections spread (round robin) over one hub, or
  over three ``serve --redis --broadcast`` hubs; one more connection sends a
  message stamped with ``time.time()``, which the hub it lands on broadcasts to
  every session (through the Redis stream for the cluster); each copy's latency
  is its arrival time minus the stamp (one host, one clock). p50 / p99 over all
  copies, and the first copy (the fixed cost of the path: for the cluster, the
  client message applied in Redis, the broadcast script, the other hubs' inbox
  reads), median over ``--rounds`` x ``--broadcasts``. The connections go straight
  to the hubs (round robin), not through a balancer in this process. Goal: the
  cluster adds <= 2 ms p50 and <= 10 ms p99. With enough sessions the cluster is
  *faster* than one hub (three processes write the copies), so the first copy
  is the honest measure of what Redis adds.

Run: ``python -W error bench/bench_cluster.py`` (``--sessions 10000`` for the
issue's size; raise ``ulimit -n`` first).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import _harness  # noqa: F401  (first: it puts the repository root on sys.path)

import rxconn
import rxconn.aio
from rxconn.cli._balancer import RoundRobinProxy
from rxconn.cli._hubprocess import HubProcess
from rxconn.cli._redis import LocalRedis


BACKOFF = rxconn.Backoff(initial=0.05, max_delay=0.5)
WAVE = 100


@asynccontextmanager
async def hubs(n: int, mode: str, redis_url: str | None) -> AsyncIterator[list[int]]:
    """``n`` hub processes (``--echo`` or ``--broadcast``); yields their ports."""
    options = [f"--{mode}"] + (["--redis", redis_url] if redis_url is not None else [])
    procs = [HubProcess(options) for _ in range(n)]
    try:
        for proc in procs:
            await proc.start()
        yield [proc.port for proc in procs]
    finally:
        for proc in procs:
            await proc.stop()


class Fleet:
    """``n`` connections to ``url``, each held open by a state subscriber until closed."""

    def __init__(self, url: str, n: int) -> None:
        self.conns = [
            rxconn.Connection(rxconn.websocket(url), backoff=BACKOFF, idle_timeout=None)
            for _ in range(n)
        ]
        self._subs: list[Any] = []

    async def connected(self) -> list[rxconn.Connection]:
        # In waves under the hub's listen backlog (128): a dropped SYN costs a 1 s retry.
        for start in range(0, len(self.conns), WAVE):
            waits = []
            for conn in self.conns[start : start + WAVE]:
                ready = asyncio.get_running_loop().create_future()

                def on_state(state: rxconn.State, ready: asyncio.Future[None] = ready) -> None:
                    if isinstance(state, rxconn.Connected) and not ready.done():
                        ready.set_result(None)

                self._subs.append(conn.state.subscribe(on_state))
                waits.append(ready)
            await asyncio.wait_for(asyncio.gather(*waits), 60.0)
        return self.conns

    def close(self) -> None:
        for sub in self._subs:
            sub.dispose()
        for conn in self.conns:
            conn.close()


async def echo_run(ports: list[int], clients: int, window: int, seconds: float) -> float:
    async with RoundRobinProxy([("127.0.0.1", p) for p in ports]) as proxy:
        fleet = Fleet(proxy.url("ws", "/rx/ws"), clients)
        conns = await fleet.connected()
        count = [0]
        timing = [False]
        subs = []
        payload = "x" * 100
        for conn in conns:

            def on_message(_: object, conn: rxconn.Connection = conn) -> None:
                if timing[0]:
                    count[0] += 1
                conn.send(payload)

            subs.append(conn.messages.subscribe(on_message))
            for _ in range(window):
                conn.send(payload)
        await asyncio.sleep(0.5)  # warm-up
        timing[0] = True
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        timing[0] = False
        rate = count[0] / (time.perf_counter() - start)
        for sub in subs:
            sub.dispose()
        fleet.close()
        await rxconn.aio.drain(10.0)
        return rate


async def broadcast_run(
    ports: list[int], sessions: int, broadcasts: int
) -> list[tuple[float, float, float]]:
    # Straight to the hubs, round robin (a balancer in this process would double its
    # sockets and its work): the comparison is of the hubs, not of a proxy.
    urls = [f"ws://127.0.0.1:{port}/rx/ws" for port in ports]
    fleets = [Fleet(urls[i % len(urls)], n) for i, n in enumerate(_spread(sessions, len(urls)))]
    senders = Fleet(urls[0], 1)
    conns = [conn for fleet in fleets for conn in await fleet.connected()]
    (sender,) = await senders.connected()
    latencies: list[float] = []
    got = [0]
    done = asyncio.Event()

    def on_message(payload: object) -> None:
        latencies.append(time.time() - float(str(payload)))
        got[0] += 1
        if got[0] >= sessions:
            done.set()

    subs = [c.messages.subscribe(on_message) for c in conns]
    results = []
    for _ in range(broadcasts + 1):  # the first one is a warm-up
        latencies.clear()
        got[0] = 0
        done.clear()
        sender.send(repr(time.time()))
        await asyncio.wait_for(done.wait(), 60.0)
        ordered = sorted(latencies)
        results.append(
            (
                ordered[len(ordered) // 2] * 1000,
                ordered[int(len(ordered) * 0.99)] * 1000,
                ordered[0] * 1000,
            )
        )
        await asyncio.sleep(0.2)
    for sub in subs:
        sub.dispose()
    for fleet in fleets:
        fleet.close()
    senders.close()
    await rxconn.aio.drain(10.0)
    return results[1:]


def _spread(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` sizes that differ by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def main(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("bench_cluster needs redis-server (apt-get install redis-server)")
    local = LocalRedis(executable)
    await local.start()
    try:
        print(
            f"Python {sys.version.split()[0]}, redis-server on {local.url}; "
            f"file limit {soft} -> {hard}"
        )
        if args.only != "broadcast":
            await echo_bench(args, local.url)
        if args.only != "echo":
            await broadcast_bench(args, local.url)
    finally:
        await local.stop()
        local.cleanup()


async def echo_bench(args: argparse.Namespace, redis_url: str) -> None:
    echo: dict[str, list[float]] = {"single": [], "cluster": []}
    for _ in range(args.rounds):
        for name, url in (("single", None), ("cluster", redis_url)):
            async with hubs(1, "echo", url) as ports:
                echo[name].append(await echo_run(ports, args.clients, args.window, args.seconds))
    print(
        f"(a) echo, {args.clients} WebSocket clients x {args.window} in flight, "
        f"{args.seconds:g} s, {args.rounds} interleaved rounds (msg/s, best / median)"
    )
    for name, rates in echo.items():
        print(f"    {name:8} {max(rates):>10,.0f} / {statistics.median(rates):>10,.0f}")
    ratio = max(echo["cluster"]) / max(echo["single"])
    pairs = zip(echo["cluster"], echo["single"], strict=True)
    paired = statistics.median(c / s for c, s in pairs)
    verdict = "met" if ratio >= 0.5 else "NOT met"
    print(f"    cluster / single {ratio:.2f}x (paired {paired:.2f}x)   target >= 0.5x: {verdict}")


async def broadcast_bench(args: argparse.Namespace, redis_url: str) -> None:
    runs: dict[str, list[tuple[float, float, float]]] = {"single": [], "cluster": []}
    for _ in range(args.rounds):
        for name, count, url in (("single", 1, None), ("cluster", 3, redis_url)):
            async with hubs(count, "broadcast", url) as ports:
                runs[name] += await broadcast_run(ports, args.sessions, args.broadcasts)
    print(
        f"(b) broadcast to {args.sessions:,} WebSocket sessions (one hub, or three hubs on "
        f"Redis), median over {args.rounds} x {args.broadcasts} (ms)"
    )
    medians = {}
    for name, samples in runs.items():
        p50 = statistics.median(p for p, _, _ in samples)
        p99 = statistics.median(q for _, q, _ in samples)
        first = statistics.median(f for _, _, f in samples)
        medians[name] = (p50, p99)
        print(f"    {name:8} p50 {p50:8.2f}   p99 {p99:8.2f}   first copy {first:6.2f}")
    add50 = medians["cluster"][0] - medians["single"][0]
    add99 = medians["cluster"][1] - medians["single"][1]
    ok = add50 <= 2.0 and add99 <= 10.0
    print(
        f"    cluster adds {add50:+.2f} ms p50, {add99:+.2f} ms p99   "
        f"target <= +2 / +10 ms: {'met' if ok else 'NOT met'}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--broadcasts", type=int, default=5)
    parser.add_argument("--only", choices=("echo", "broadcast"))
    asyncio.run(main(parser.parse_args()))
