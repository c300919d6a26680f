"""What the benchmark scripts in ``bench/`` share: the server process, timing, statistics, tables.

The client/server benchmarks (``bench_websocket.py``, ``bench_http.py``,
``bench_session.py``, ``bench_fallback.py``) all work the same way: the script
starts itself again with ``--serve`` as a **child process** that serves on
127.0.0.1, announces its port(s) on stdout and serves until its stdin closes;
client and server are pinned to different CPUs where the OS allows, so the
server never shares the client's CPU or event loop. The client then runs its
variants interleaved (each round runs every variant once, so slow drifts of a
shared machine hit all of them alike) and reports best, median and paired
ratios. Keeping that machinery here means every script measures and reports the
same way, and a fix to it (say, to the child's shutdown) reaches all of them.

Importing this module also puts the repository root on ``sys.path`` (the
scripts run as ``python bench/<name>.py``, from a checkout that need not be
installed), so a script imports it before ``rxconn``.
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
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar


ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

import rxconn  # noqa: E402
import rxconn.aio  # noqa: E402


T = TypeVar("T")

RUN_TIMEOUT = 30.0
"""Seconds one measured run may take before it counts as hung (scripts may pass their own)."""


# ================================================================= arguments


def arg_parser(doc: str | None, profile_help: str | None = None) -> argparse.ArgumentParser:
    """The command line every client/server script takes.

    ``--serve`` and ``--cpu`` are how a script starts itself as the server
    (see :class:`Child`); ``--profile`` is added when ``profile_help`` is given.
    """
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="(internal) run the server")
    parser.add_argument("--cpu", type=int, help="(internal) the server's CPU")
    if profile_help is not None:
        parser.add_argument("--profile", action="store_true", help=profile_help)
    return parser


# ================================================================ CPU pinning


def cpus() -> list[int]:
    """The CPUs this process may run on (empty where the OS cannot tell or pin)."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def pin(cpu: int | None) -> str:
    """Pin this process to ``cpu`` (client and server get different ones), where possible.

    Returns where the process runs, for the report's first line.
    """
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    os.sched_setaffinity(0, {cpu})
    return f"CPU {cpu}"


def client_and_server_cpus() -> tuple[int | None, int | None]:
    """The first two CPUs we may use (client, server), or ``(None, None)`` with fewer than two."""
    available = cpus()
    return (available[0], available[1]) if len(available) >= 2 else (None, None)


# ============================================================ server process


async def serve_app(
    app: web.Application,
    *,
    extra_ports: Sequence[int] = (),
    on_stop: Sequence[Callable[[], object]] = (),
) -> None:
    """The child process's body: serve ``app`` until stdin closes.

    Binds an ephemeral port on 127.0.0.1 and prints ``PORTS <port> <extra_ports...>``
    (what :class:`Child` waits for) once it serves. When the parent closes our
    stdin, calls each of ``on_stop`` (e.g. ``hub.shutdown``) and then cleans up
    the aiohttp runner.
    """
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
    print(" ".join(["PORTS", str(port), *map(str, extra_ports)]), flush=True)
    try:
        await stdin.read()  # until the parent closes our stdin
    finally:
        transport.close()
        for stop in on_stop:
            stop()
        await runner.cleanup()


class Child:
    """The server process: ``script --serve``, with the same interpreter and warning options.

    ``async with Child(__file__) as child`` starts it on the second CPU we may
    use, waits for its ports, then pins this process (the client) to the first
    CPU. On exit it closes the child's stdin (its signal to stop) and checks that
    it exited cleanly, so a server-side error or warning (``-W error``) fails the run.
    """

    def __init__(self, script: str) -> None:
        self.script = Path(script).resolve()
        self.proc: asyncio.subprocess.Process | None = None
        self.ports: list[int] = []
        self.client_cpu, self.server_cpu = client_and_server_cpus()
        self.client = "not pinned"

    @property
    def port(self) -> int:
        """The port of the child's aiohttp app."""
        return self.ports[0]

    @property
    def pid(self) -> int | str:
        return self.proc.pid if self.proc else "?"

    @property
    def placement(self) -> str:
        """Where client and server run, for the report's first line."""
        server = "not pinned" if self.server_cpu is None else f"CPU {self.server_cpu}"
        return f"client on {self.client}, server on {server}"

    async def __aenter__(self) -> Child:
        warn = [f"-W{option}" for option in sys.warnoptions]
        cpu = self.server_cpu
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *warn,
            str(self.script),
            "--serve",
            *(["--cpu", str(cpu)] if cpu is not None else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20.0)
        if not line.startswith(b"PORTS "):
            raise RuntimeError(f"the server process did not start: {line!r}")
        self.ports = [int(p) for p in line.split()[1:]]
        self.client = pin(self.client_cpu)
        return self

    async def __aexit__(self, *_: object) -> None:
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        await proc.stdout.read()
        code = await asyncio.wait_for(proc.wait(), 10.0)
        if code != 0:
            raise RuntimeError(f"the server process exited with {code}")


def run_script(
    script: str,
    doc: str | None,
    serve: Callable[[int | None], Coroutine[Any, Any, None]],
    client: Callable[[Child, bool], Awaitable[None]],
    *,
    profile_help: str | None = None,
    total_sep: str = "",
) -> None:
    """A client/server script's entry point (call it under ``if __name__ == "__main__"``).

    With ``--serve`` this is the child: ``serve(cpu)``. Otherwise it starts the
    child (:class:`Child`), awaits ``client(child, profile)`` (which prints the
    report; ``profile`` is ``--profile``, ``False`` without ``profile_help``), then
    checks for leftover rxconn tasks and prints the total time (see :func:`finish`).
    """
    args = arg_parser(doc, profile_help).parse_args()
    if args.serve:
        asyncio.run(serve(args.cpu))
        return

    async def main() -> None:
        started = time.perf_counter()
        async with Child(script) as child:
            await client(child, bool(getattr(args, "profile", False)))
        finish(started, total_sep)

    asyncio.run(main())


def finish(started: float, sep: str = "") -> None:
    """End of a run: fail if rxconn tasks outlived their connections, print the total time."""
    if rxconn.aio.TASKS.running():
        raise RuntimeError("rxconn tasks left running")
    print(f"{sep}(total {time.perf_counter() - started:.1f} s)")


# ==================================================================== client


def payload(size: int) -> str:
    """A ``size``-character text message (ASCII, so also ``size`` bytes) with a marked end."""
    return "x" * (size - 1) + "~"


class Counter:
    """Counts messages; notes when the first and the n-th arrived.

    ``on_next`` is the callback a variant feeds; ``rate()`` is messages per second
    from the first to the last (so connecting and the first byte are not timed).
    """

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


async def rx_close(conn: rxconn.Connection, sub: Any) -> None:
    """Dispose of a ``messages`` subscription, close ``conn`` and drain rxconn's tasks.

    Draining after every run keeps one run's teardown out of the next one's timing.
    """
    sub.dispose()
    conn.close()
    await rxconn.aio.drain()


async def rx_wait(
    conn: rxconn.Connection, event: asyncio.Event, what: str, timeout: float = RUN_TIMEOUT
) -> None:
    """Wait for ``event``; on a timeout, fail with ``what`` and the connection's state."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        raise RuntimeError(f"{what}: timed out in state {conn.current_state!r}") from None


async def rx_awaited_echo(
    conn: rxconn.Connection,
    waiter: list[asyncio.Future[None]],
    text: str,
    warmup: int,
    count: int,
) -> tuple[float, float]:
    """Round trips as an asyncio app would await them; p50 and p99 in microseconds.

    Each one sends ``text`` and awaits a future that the connection's ``messages``
    callback completes (see :func:`completes_waiter`, subscribed to
    ``conn.messages`` with the same ``waiter`` list); the first ``warmup`` are not counted.
    """
    loop = asyncio.get_running_loop()
    samples: list[int] = []
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            for i in range(warmup + count):
                future = loop.create_future()
                waiter[:] = [future]
                start = time.perf_counter_ns()
                conn.send(text)
                await future
                elapsed = time.perf_counter_ns() - start
                if i >= warmup:
                    samples.append(elapsed)
    except TimeoutError:
        raise RuntimeError(f"rxconn echo: timed out in state {conn.current_state!r}") from None
    return percentiles(samples)


def completes_waiter(waiter: list[asyncio.Future[None]]) -> Callable[[object], None]:
    """A ``messages`` callback completing the future in ``waiter`` (see :func:`rx_awaited_echo`)."""

    def on_next(_: object) -> None:
        if waiter and not waiter[0].done():
            waiter[0].set_result(None)

    return on_next


async def raw_count_text(ws: aiohttp.ClientWebSocketResponse, counter: Counter) -> None:
    """Feed the text frames of a bare aiohttp WebSocket to ``counter`` until it has them all.

    The reference receive loop (``async for msg in ws``) that rxconn's is compared with;
    fails if the socket closes first.
    """
    on_next = counter.on_next
    n = counter.n
    async with asyncio.timeout(RUN_TIMEOUT):
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                on_next(msg.data)
                if counter.count == n:
                    break
    if counter.count != n:
        raise RuntimeError(f"raw receive: got {counter.count} of {n}")


async def raw_echo(
    http: aiohttp.ClientSession, url: str, text: str, warmup: int, count: int
) -> tuple[float, float]:
    """Round trips with a bare aiohttp WebSocket (``send_str`` + ``receive``); p50/p99 in us.

    The reference for :func:`rx_awaited_echo`; the first ``warmup`` are not counted.
    """
    samples: list[int] = []
    async with http.ws_connect(url) as ws, asyncio.timeout(RUN_TIMEOUT):
        for i in range(warmup + count):
            start = time.perf_counter_ns()
            await ws.send_str(text)
            msg = await ws.receive()
            elapsed = time.perf_counter_ns() - start
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"raw echo: unexpected {msg!r}")
            if i >= warmup:
                samples.append(elapsed)
    return percentiles(samples)


# ================================================================ statistics


async def interleaved(
    variants: Mapping[str, Callable[[], Awaitable[T]]], rounds: int
) -> dict[str, list[T]]:
    """Run every variant once per round, ``rounds`` times; each variant's results in order.

    Interleaving (rather than all runs of one variant, then the next) spreads a
    shared machine's slow phases over all variants, and makes run i of one
    variant comparable with run i of another (see :func:`best_and_paired`).
    """
    results: dict[str, list[T]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            results[name].append(await run())
    return results


def best_and_paired(results: Mapping[str, Sequence[float]], a: str, b: str) -> tuple[float, float]:
    """Best / best of ``a`` over ``b``, and the median of the per-round ratios.

    Each run of ``a`` is paired with the run of ``b`` made just before or after it;
    the paired median cancels slow drifts of a shared machine that best / best does not.
    """
    best = max(results[a]) / max(results[b])
    paired = statistics.median(x / y for x, y in zip(results[a], results[b], strict=True))
    return best, paired


def percentiles(samples: list[int]) -> tuple[float, float]:
    """p50 and p99 of nanosecond samples, in microseconds."""
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 / 1000, p99 / 1000


def median_percentiles(runs: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The median p50 and the median p99 of several latency runs."""
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


# ================================================================= profiling


def print_profile(
    profiler: cProfile.Profile,
    title: str,
    n: int,
    rate: float,
    *,
    top: int,
    share: bool = True,
    calls_digits: int = 3,
    function_header: str = "function",
) -> None:
    """Top functions by own time, per message, with an estimate scaled to the unprofiled run.

    cProfile inflates every Python call, so next to its raw ``tottime`` the table
    shows an estimate scaled by (unprofiled time / profiled time) of the same
    path; ``rate`` is the unprofiled messages/s and ``n`` the messages profiled.
    ``title`` starts the heading line; ``share`` adds a column with each
    function's share of the profiled total.
    """
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
        f"{title}: {per_msg:,.0f} ns/msg profiled, {1e9 / rate:,.0f} ns/msg "
        f"unprofiled (scale {scale:.2f})"
    )
    head = f"{'share':>6} " if share else ""
    print(f"  {head}{'profiled':>9} {'~real':>7} {'calls/msg':>9}  {function_header}")
    for tottime, calls, where in rows[:top]:
        ns = tottime / n * 1e9
        cell = f"{tottime / total:>6.1%} " if share else ""
        print(f"  {cell}{ns:>9.0f} {ns * scale:>7.0f} {calls / n:>9.{calls_digits}f}  {where}")


async def profile_run(
    run: Callable[[], Awaitable[T]],
) -> tuple[cProfile.Profile, T]:
    """One run of ``run`` under cProfile: the profiler and the run's result."""
    profiler = cProfile.Profile()
    profiler.enable()
    result = await run()
    profiler.disable()
    return profiler, result
