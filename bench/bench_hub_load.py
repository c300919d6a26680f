"""Hub under load: 500 concurrent rxconn clients in one process receiving broadcasts (a script).

What it measures, against one ``rxconn.server.Hub`` served on 127.0.0.1 in this very process
(the issue's "in one process": clients and hub share one event loop and one CPU):

* **connect**: how long it takes to bring N ``rxconn.Connection`` s to ``Connected``, half
  ``rxconn.websocket(.../ws)`` and half ``rxconn.http(.../events)`` by default (both speak the
  hub session protocol), opened in waves so the listen backlog never overflows;
* **memory per connection**: the growth of the process's resident set (RSS, from
  ``/proc/self/statm``) and of Python allocations (``tracemalloc``, during the connect phase
  only) from before the first connection to all connected, divided by N. Client *and* hub
  side of each connection are in this process, so this is the cost of both ends together;
* **broadcast throughput**: the hub broadcasts K numbered messages (``hub.broadcast``, paced
  in small bursts so that the loop interleaves writing and reading); every client counts what
  it receives. Reported: deliveries per second (N x K / time from the first broadcast to the
  last delivery), and whether every client got every message exactly once and in order.

Run from the repository root (well under 60 s on a 2-core machine)::

    python bench/bench_hub_load.py                      # 500 clients, 1000 broadcasts
    python bench/bench_hub_load.py --clients 1000 --messages 100 --mix websocket,http,fallback

Nothing is asserted; the exit status is 1 if a client missed, repeated or reordered a message.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rxconn  # noqa: E402
import rxconn.aio  # noqa: E402
from rxconn.server import Hub, serve  # noqa: E402


WAVE = 100
"""Connections opened at once (the hub's listen backlog is 128)."""
BURST = 10
"""Broadcasts between two yields to the event loop."""


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def raise_fd_limit(needed: int) -> int:
    """Each connection needs a client and a hub socket (plus SSE POSTs): lift the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, needed))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Client:
    """One connection and what it received (numbers only, checked for order on the fly)."""

    def __init__(
        self, conn: rxconn.Connection, done: asyncio.Event, total: list[int], kind: str = ""
    ) -> None:
        self.conn = conn
        self.kind = kind
        self.count = 0
        self.expected = 0
        self.finished = 0.0
        self.in_order = True
        self.connected = asyncio.Event()
        self._done = done
        self._total = total
        self._expected_total = 0
        self.subscriptions = [
            conn.state.subscribe(self._on_state),
            conn.messages.subscribe(self._on_message),
        ]

    def _on_state(self, state: Any) -> None:
        if isinstance(state, rxconn.Connected):
            self.connected.set()

    def _on_message(self, payload: Any) -> None:
        number = int(payload.split(":", 1)[0])
        if number != self.count:
            self.in_order = False
        self.count += 1
        if self.count == self.expected:
            self.finished = time.perf_counter()
        self._total[0] += 1
        if self._total[0] >= self._total[1]:
            self._done.set()

    def close(self) -> None:
        self.conn.close()  # while subscribed: the link ends its hub session as it closes
        for subscription in self.subscriptions:
            subscription.dispose()


def make_connection(kind: str, base: str) -> rxconn.Connection:
    backoff = rxconn.Backoff(initial=0.05, max_delay=1.0)
    if kind == "websocket":
        return rxconn.Connection(rxconn.websocket(base + "/ws"), backoff=backoff)
    if kind == "http":
        return rxconn.Connection(rxconn.http(base + "/events"), backoff=backoff)
    if kind == "fallback":
        return rxconn.connection(base, backoff=backoff)
    raise SystemExit(f"unknown transport {kind!r} (websocket, http or fallback)")


async def run(clients: int, messages: int, size: int, mix: list[str]) -> bool:
    limit = raise_fd_limit(4 * clients + 256)
    hub = Hub(ping_interval=15.0, replay_limit=max(10_000, 2 * messages))
    done = asyncio.Event()
    total = [0, clients * messages]
    async with serve(hub, "127.0.0.1", 0) as server:
        # Warm up imports, the loop and aiohttp with one round trip before measuring.
        warm = Client(make_connection(mix[0], server.url), asyncio.Event(), [0, 1])
        await asyncio.wait_for(warm.connected.wait(), 10)
        warm.close()
        await rxconn.aio.drain()
        gc.collect()
        rss_before = rss_bytes()
        tracemalloc.start()
        heap_before = tracemalloc.get_traced_memory()[0]

        started = time.perf_counter()
        population: list[Client] = []
        kinds: dict[str, int] = {}
        for wave_start in range(0, clients, WAVE):
            wave = []
            for i in range(wave_start, min(wave_start + WAVE, clients)):
                kind = mix[i % len(mix)]
                kinds[kind] = kinds.get(kind, 0) + 1
                client = Client(make_connection(kind, server.url), done, total, kind)
                client.expected = messages
                wave.append(client)
            await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in wave)), 30)
            population.extend(wave)
        connect_s = time.perf_counter() - started
        gc.collect()
        heap_after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        rss_after = rss_bytes()
        sessions = len(hub.live_sessions)

        padding = "x" * max(size - 8, 0)
        started = time.perf_counter()
        for i in range(messages):
            hub.broadcast(f"{i}:{padding}")
            if i % BURST == BURST - 1:
                await asyncio.sleep(0)
        broadcast_s = time.perf_counter() - started
        try:
            await asyncio.wait_for(done.wait(), 60)
        except TimeoutError:
            pass
        elapsed = time.perf_counter() - started
        delivered = total[0]
        exact = all(c.count == messages and c.in_order for c in population)
        last_by_kind = {
            kind: max(
                (c.finished or time.perf_counter()) - started for c in population if c.kind == kind
            )
            for kind in kinds
        }
        for client in population:
            client.close()
        await rxconn.aio.drain(30)

    mix_text = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    print(f"hub load: {clients} clients ({mix_text}) in one process, fd limit {limit}")
    print(f"  connect:    {connect_s:6.2f} s for all to be Connected ({sessions} hub sessions)")
    print(
        f"  memory:     {(rss_after - rss_before) / clients / 1024:6.1f} KiB RSS per connection, "
        f"{(heap_after - heap_before) / clients / 1024:6.1f} KiB Python heap (tracemalloc) "
        "per connection (client + hub side)"
    )
    print(
        f"  broadcast:  {messages} x {size} B messages to every client: "
        f"{delivered}/{total[1]} deliveries in {elapsed:.2f} s "
        f"(broadcast calls took {broadcast_s:.2f} s)"
    )
    print(f"  throughput: {delivered / elapsed:,.0f} messages/s delivered in total")
    for kind, seconds in last_by_kind.items():
        print(f"    {kind:>9}: last client had all {messages} after {seconds:.2f} s")
    print(f"  every client got every message once, in order: {'yes' if exact else 'NO'}")
    return exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=100, help="bytes per broadcast message")
    parser.add_argument(
        "--mix", default="websocket,http", help="transports, round robin: websocket,http,fallback"
    )
    args = parser.parse_args()
    ok = asyncio.run(run(args.clients, args.messages, args.size, args.mix.split(",")))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
