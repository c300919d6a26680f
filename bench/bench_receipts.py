"""Receipts: what ``send()`` costs now that it returns one, and reliable throughput over latency.

Part (a), no I/O (ns per message, best and paired median of interleaved rounds,
gc off while timing). The same scenario runs against this checkout's
``rxconn`` and against a *baseline*: the ``rxconn`` package of a git revision
from before receipts (default ``78a788c``, extracted with ``git archive`` into a
temporary directory and imported as ``rxconn_baseline``, so both run in this
one process, interleaved):

* ``buffered``: ``conn.send(p)`` with no link (the payload only enters the outbox);
* ``connected``: ``conn.send(p)`` on an open :class:`rxconn.testing.FakeTransport`
  link that acknowledges every write at once (write, ``Acked``, settle);
* ``cumulative ack``: one ``Acked(n)`` that releases ``n`` payloads written
  earlier (ns per released payload, for n = 1,000 / 10,000 / 100,000: constant
  means O(acknowledged)).

The receipts are ignored, as most callers do. Target (issue 14): at most
150 ns per message over the baseline.

Part (b), real sockets: client -> hub throughput of 100 B messages with
``Connection(rxconn.websocket(...))`` (the ``rxconn.v1`` session: every payload
counted only once the hub acknowledged it) and with ``rxconn.http(...)``, through
``tests.proxy.FaultProxy`` adding 50 ms each way (a 100 ms round trip), hub
and proxy in this process. Timed from the first ``send()`` until ``await
conn.flush()`` returned, i.e. until the last receipt settled; every receipt
must be ``Delivered``. Target: >= 2,000 msg/s (stop-and-wait would give 10).

Run from the repository root::

    python -W error bench/bench_receipts.py [--baseline REV] [--count N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reactivex.testing import TestScheduler  # noqa: E402

import rxconn  # noqa: E402
import rxconn.aio  # noqa: E402
from rxconn.server import Hub, serve  # noqa: E402
from tests.proxy import FaultProxy  # noqa: E402


BASELINE_REV = "78a788c"
"""The last commit before receipts: its ``send()`` returned None."""
N = 20_000
ROUNDS = 25
PAYLOAD = "x" * 100


# ============================================================== (a) CPU cost


def load_baseline(rev: str, into: Path) -> ModuleType | None:
    """Import ``rxconn`` as of ``rev`` under the name ``rxconn_baseline`` (None if impossible)."""
    try:
        tar = subprocess.run(
            ["git", "archive", "--format=tar", rev, "rxconn"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"no baseline: git archive {rev} failed ({exc})")
        return None
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        try:
            archive.extractall(into, filter="data")
        except TypeError:  # Python < 3.11.4: no extraction filters (our own repository's files)
            archive.extractall(into)  # noqa: S202
    (into / "rxconn").rename(into / "rxconn_baseline")
    sys.path.insert(0, str(into))
    return importlib.import_module("rxconn_baseline")


Run = Callable[[], None]


def buffered(pkg: Any) -> tuple[Run, Run]:
    conn = pkg.Connection(
        pkg.testing.FakeTransport("websocket", "o"), max_buffer=N + 1, scheduler=TestScheduler()
    )
    send = conn.send
    items = [PAYLOAD] * N

    def run() -> None:
        for x in items:
            send(x)

    return run, conn.close


class QuickTransport:
    """A transport whose one link opens at once and acknowledges every write at once.

    Lighter than ``FakeTransport`` (which records every write), so that the
    connection's own per-message work is a larger share of what is timed.
    """

    name = "websocket"

    def __init__(self, pkg: Any) -> None:
        self._pkg = pkg

    def open(self, scheduler: Any, context: Any = None) -> Any:
        from reactivex import Observable
        from reactivex.disposable import Disposable

        pkg = self._pkg

        def subscribe(observer: Any, _: Any = None) -> Any:
            acked = pkg.transport.Acked

            class Link:
                def write(self, first_seq: int, payloads: Any) -> None:
                    observer.on_next(acked(first_seq + len(payloads) - 1))

            observer.on_next(pkg.transport.Opened(Link(), "websocket"))
            return Disposable()

        return Observable(subscribe)


def connected(pkg: Any) -> tuple[Run, Run]:
    scheduler = TestScheduler()
    transport = QuickTransport(pkg)
    conn = pkg.Connection(transport, scheduler=scheduler)
    handle = conn.connect()
    scheduler.advance_by(1)
    if conn.current_state.kind != "connected":
        raise RuntimeError("the fake link did not open")
    send = conn.send
    items = [PAYLOAD] * N

    def run() -> None:
        for x in items:
            send(x)
        if conn.buffered:
            raise RuntimeError("payloads left unacknowledged")

    def teardown() -> None:
        handle.dispose()
        conn.close()

    return run, teardown


def cumulative(pkg: Any, n: int) -> tuple[Run, Run]:
    scheduler = TestScheduler()
    transport = pkg.testing.FakeTransport("websocket", "o", acks=False)
    conn = pkg.Connection(transport, max_buffer=n + 1, scheduler=scheduler)
    handle = conn.connect()
    scheduler.advance_by(1)
    for _ in range(n):
        conn.send(PAYLOAD)
    push = transport.links[0].push
    ack = pkg.transport.Acked(n)

    def run() -> None:
        push(ack)
        if conn.buffered:
            raise RuntimeError("payloads left unacknowledged")

    def teardown() -> None:
        handle.dispose()
        conn.close()

    return run, teardown


def time_once(setup: Callable[[], tuple[Run, Run]], per: int) -> float:
    """ns per message of one timed run (fresh setup, gc off)."""
    run, teardown = setup()
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        run()
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
        teardown()
    return elapsed / per


def cpu_cost(baseline: ModuleType | None) -> None:
    scenarios: dict[str, tuple[Callable[[Any], tuple[Run, Run]], int]] = {
        "buffered": (buffered, N),
        "connected": (connected, N),
    }
    for n in (1_000, 10_000, 100_000):
        scenarios[f"cumulative ack n={n:,}"] = (lambda pkg, n=n: cumulative(pkg, n), n)
    packages: dict[str, Any] = {"receipts": rxconn}
    if baseline is not None:
        packages["baseline"] = baseline
    results: dict[tuple[str, str], list[float]] = {}
    for setup, per in scenarios.values():  # warm up every path once
        for pkg in packages.values():
            time_once(lambda setup=setup, pkg=pkg: setup(pkg), per)
    for _ in range(ROUNDS):
        for name, (setup, per) in scenarios.items():
            for label, pkg in packages.items():
                ns = time_once(lambda setup=setup, pkg=pkg: setup(pkg), per)
                results.setdefault((name, label), []).append(ns)
    print(f"(a) ns per message, {ROUNDS} interleaved rounds: best / median")
    header = f"{'scenario':<26} {'receipts':>16} {'baseline':>16} {'ratio':>6}"
    print(header + f" {'over (best)':>12} {'over (paired median)':>21}")
    for name in scenarios:
        new = results[(name, "receipts")]
        line = f"{name:<26} {min(new):>7.1f} / {statistics.median(new):>6.1f}"
        if baseline is not None:
            old = results[(name, "baseline")]
            paired = statistics.median(a - b for a, b in zip(new, old, strict=True))
            line += f" {min(old):>7.1f} / {statistics.median(old):>6.1f}"
            line += f" {min(new) / min(old):>5.2f}x {min(new) - min(old):>+11.1f}"
            line += f" {paired:>+21.1f}"
        print(line)
    print("target: send() at most +150 ns per message over the baseline (receipts ignored)")


# ======================================================== (b) throughput


async def throughput(kind: str, count: int, latency: float) -> tuple[float, int]:
    """msg/s from the first send until flush() returned; and how many were Delivered."""
    hub = Hub()
    received = 0

    def on_session(session: Any) -> None:
        def on_message(_: object) -> None:
            nonlocal received
            received += 1

        session.messages.subscribe(on_message)

    subscription = hub.sessions.subscribe(on_session)
    async with serve(hub, "127.0.0.1", 0) as server, FaultProxy("127.0.0.1", server.port) as proxy:
        if kind == "websocket":
            transport: Any = rxconn.websocket(proxy.url("ws", "/rx/ws"))
        else:
            transport = rxconn.http(proxy.url("http", "/rx/events"))
        conn = rxconn.Connection(transport, max_buffer=count + 1)
        handle = conn.connect()
        async with asyncio.timeout(10):
            while conn.current_state.kind != "connected":
                await asyncio.sleep(0.01)
        proxy.set_latency(latency)
        loop = asyncio.get_running_loop()
        start = loop.time()
        receipts = [conn.send(PAYLOAD) for _ in range(count)]
        await conn.flush(timeout=120)
        elapsed = loop.time() - start
        delivered = sum(isinstance(r.outcome, rxconn.Delivered) for r in receipts)
        if received != count:
            raise RuntimeError(f"the hub received {received} of {count}")
        handle.dispose()
        conn.close()
        await rxconn.aio.drain()
    subscription.dispose()
    return count / elapsed, delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE_REV, help="git revision to compare with")
    parser.add_argument("--count", type=int, default=20_000, help="messages per throughput run")
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, {N:,} messages per CPU run, {PAYLOAD.__len__()} B")
    if not args.skip_cpu:
        with tempfile.TemporaryDirectory() as tmp:
            baseline = load_baseline(args.baseline, Path(tmp))
            cpu_cost(baseline)
    print()
    print(f"(b) client -> hub, {args.count:,} x 100 B through FaultProxy, 50 ms each way")
    for kind in ("websocket", "http"):
        rate, delivered = asyncio.run(throughput(kind, args.count, 0.05))
        print(f"{kind:<10} {rate:>10,.0f} msg/s   Delivered receipts: {delivered:,}/{args.count:,}")


if __name__ == "__main__":
    main()
