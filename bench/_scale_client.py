"""A client process of ``bench_scale.py``: many ``rxconn.Connection`` s, driven over stdin/stdout.

Started by ``bench_scale.py`` (never by hand) as::

    python -W error bench/_scale_client.py <hub url>

It reads one JSON command per line on stdin and answers each with one JSON
line on stdout (``{"ok": ...}`` or ``{"error": ...}``); it exits cleanly,
every connection closed, when stdin closes. Commands:

* ``open`` ``kind`` (``"ws"`` or ``"sse"``), ``n``, ``wave``: open ``n``
  connections of that kind, ``wave`` at a time, each waiting for all of its
  wave to be ``Connected`` (the hub's listen backlog is 128, so the parent
  keeps the sum of the processes' waves under it);
* ``stats``: connections, how many are ``Connected`` now, how many times a
  link came back after the first (reconnects: should stay 0), RSS and CPU;
* ``expect`` ``id``: wait until every connection has received broadcast
  ``id`` (a payload ``"<id> <time.time() at the hub> ..."``), then answer
  the send -> receive delays in microseconds, one per copy received, by kind;
* ``echo`` ``kind``, ``seconds``, ``window``: every connection of ``kind`` keeps ``window`` 100 B
  messages in flight to an echoing hub (a new one for each echo), for a
  warm-up of 0.5 s and then ``seconds``; answers the echoes counted in the
  timed part and its exact duration, after the in-flight ones have returned;
* ``close``: close every connection and drain rxconn's tasks.

Every wait is bounded (``TIMEOUT``), and so is the whole process: the parent
kills nothing, it closes stdin and waits.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rxconn  # noqa: E402
import rxconn.aio  # noqa: E402


TIMEOUT = 60.0
"""Seconds any one command may take."""
ECHO_TEXT = "e" * 100


def raise_fd_limit() -> tuple[int, int]:
    """Lift the soft RLIMIT_NOFILE to the hard limit; the (soft, hard) pair now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Client:
    """One connection: its subscriptions, whether it is up, and its echo loop."""

    __slots__ = ("conn", "kind", "up", "ups", "inflight", "subs")

    def __init__(self, pool: Pool, kind: str) -> None:
        self.kind = kind
        target = pool.url + ("/ws" if kind == "ws" else "/events")
        transport = rxconn.websocket(target) if kind == "ws" else rxconn.http(target)
        self.conn = rxconn.Connection(transport)
        self.up = False
        self.ups = 0
        self.inflight = 0
        on_message = pool.on_broadcast(kind) if not pool.echo else self._on_echo(pool)
        self.subs = [
            self.conn.state.subscribe(self._on_state(pool)),
            self.conn.messages.subscribe(on_message),  # interest: this connects
        ]

    def _on_state(self, pool: Pool) -> Any:
        def on_state(state: object) -> None:
            if isinstance(state, rxconn.Connected):
                if not self.up:
                    self.up = True
                    self.ups += 1
                    pool.up += 1
                    if pool.up >= pool.target:
                        pool.reached.set()
            elif self.up:
                self.up = False
                pool.up -= 1

        return on_state

    def _on_echo(self, pool: Pool) -> Any:
        conn = self.conn

        def on_echo(_: object) -> None:
            self.inflight -= 1
            pool.echoes += 1
            if pool.sending:
                self.inflight += 1
                conn.send(ECHO_TEXT)
            elif pool.inflight_zero is not None and self.inflight == 0:
                pool.settled += 1
                if pool.settled >= pool.running:
                    pool.inflight_zero.set()

        return on_echo

    def close(self) -> None:
        self.conn.close()  # while subscribed: the link ends its hub session as it closes
        for sub in self.subs:
            sub.dispose()


class Pool:
    """This process's connections and what they received."""

    def __init__(self, url: str, echo: bool) -> None:
        self.url = url
        self.echo = echo
        self.clients: list[Client] = []
        self.up = 0  # connections Connected now
        self.target = 0
        self.reached = asyncio.Event()
        self.delays: dict[int, dict[str, list[int]]] = {}  # id -> kind -> delays (us)
        self.arrivals: dict[int, int] = {}  # id -> copies received
        self.arrived = asyncio.Event()
        self.sending = False
        self.echoes = 0
        self.settled = 0
        self.running = 0  # connections taking part in the echo run
        self.inflight_zero: asyncio.Event | None = None

    def on_broadcast(self, kind: str) -> Any:
        """The ``messages`` callback of a connection of ``kind`` (scale mode)."""
        delays_by_id = self.delays

        def on_message(payload: object) -> None:
            now = time.time()
            assert isinstance(payload, str)
            ident, sent, _ = payload.split(" ", 2)
            key = int(ident)
            delays = delays_by_id.get(key)
            if delays is None:
                delays = delays_by_id[key] = {"ws": [], "sse": []}
            delays[kind].append(round((now - float(sent)) * 1e6))
            self.arrivals[key] = self.arrivals.get(key, 0) + 1
            if self.arrivals[key] >= len(self.clients):
                self.arrived.set()

        return on_message

    async def open(self, kind: str, n: int, wave: int) -> dict[str, Any]:
        started = time.perf_counter()
        for first in range(0, n, wave):
            count = min(wave, n - first)
            self.target = len(self.clients) + count
            self.reached.clear()
            self.clients.extend(Client(self, kind) for _ in range(count))
            if self.up < self.target:
                try:
                    await asyncio.wait_for(self.reached.wait(), TIMEOUT)
                except TimeoutError:
                    raise RuntimeError(
                        f"{kind}: {self.up} of {self.target} connected after {TIMEOUT:g} s"
                    ) from None
        return {"connected": self.up, "secs": time.perf_counter() - started}

    def stats(self) -> dict[str, Any]:
        ups = sum(c.ups for c in self.clients)
        return {
            "connections": len(self.clients),
            "connected": sum(
                isinstance(c.conn.current_state, rxconn.Connected) for c in self.clients
            ),
            "reconnects": ups - sum(1 for c in self.clients if c.ups),
            "rss": rss_bytes(),
            "cpu": time.process_time(),
        }

    async def expect(self, ident: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while self.arrivals.get(ident, 0) < len(self.clients):
            self.arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                break
        delays = self.delays.pop(ident, {"ws": [], "sse": []})
        missing = len(self.clients) - self.arrivals.pop(ident, 0)
        return {"delays_us": delays, "missing": missing}

    async def echo_run(self, kind: str, seconds: float, window: int) -> dict[str, Any]:
        clients = [c for c in self.clients if c.kind == kind]
        self.running = len(clients)
        self.sending = True
        self.inflight_zero = None
        for client in clients:
            for _ in range(window):
                client.inflight += 1
                client.conn.send(ECHO_TEXT)
        await asyncio.sleep(0.5)  # warm-up: every connection has its window in flight
        start_count, start = self.echoes, time.perf_counter()
        await asyncio.sleep(seconds)
        count, elapsed = self.echoes - start_count, time.perf_counter() - start
        self.sending = False
        self.inflight_zero = asyncio.Event()
        self.settled = sum(1 for c in clients if c.inflight == 0)
        if self.settled < self.running:
            try:
                await asyncio.wait_for(self.inflight_zero.wait(), TIMEOUT)
            except TimeoutError:
                raise RuntimeError("echo: messages still in flight after the run") from None
        self.inflight_zero = None
        return {"echoes": count, "secs": elapsed}

    async def close(self) -> dict[str, Any]:
        for client in self.clients:
            client.close()
        await rxconn.aio.drain(TIMEOUT)
        closed, self.clients = len(self.clients), []
        return {"closed": closed}


async def main(url: str, echo: bool) -> None:
    soft, hard = raise_fd_limit()
    pool = Pool(url, echo)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin
    )
    print(json.dumps({"ok": {"pid": os.getpid(), "nofile": [soft, hard]}}), flush=True)
    try:
        while line := await stdin.readline():
            command = json.loads(line)
            name = command["cmd"]
            try:
                if name == "open":
                    answer = await pool.open(command["kind"], command["n"], command["wave"])
                elif name == "stats":
                    answer = pool.stats()
                elif name == "expect":
                    answer = await pool.expect(command["id"])
                elif name == "echo":
                    answer = await pool.echo_run(
                        command["kind"], command["seconds"], command["window"]
                    )
                elif name == "close":
                    answer = await pool.close()
                else:
                    raise ValueError(f"unknown command {name!r}")
                reply: dict[str, Any] = {"ok": answer}
            except Exception as exc:  # reported to the parent, which stops the run
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)
    finally:
        transport.close()
        if pool.clients:
            await pool.close()
        if rxconn.aio.TASKS.running():
            raise RuntimeError("rxconn tasks left running")


if __name__ == "__main__":
    cpu = os.environ.get("RXCONN_BENCH_CPU")
    if cpu and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})
    asyncio.run(main(sys.argv[1], "--echo" in sys.argv[2:]))
