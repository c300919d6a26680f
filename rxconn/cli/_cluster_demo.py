"""``demo --cluster``: three hub processes on one Redis, one killed under a live client.

A local ``redis-server`` (a temp dir, no persistence), three ``rxconn serve --redis``
processes behind a round-robin balancer (no sticky sessions), a client streaming
numbered messages both ways (its messages echoed; a fourth hub in this process
sends to its session through Redis), and ``kill -9`` of the hub that holds the
client's link a third of the way in. The summary counts every message: the exit
code is 0 only if nothing was lost, duplicated or reordered in either direction
and the session was never reset.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
from contextlib import AsyncExitStack
from typing import Final

import rxconn

from ._console import CliError, Console, describe
from ._demo import Tally
from ._hubprocess import HubProcess
from ._redis import LocalRedis


__all__ = ["run_cluster_demo"]

HUBS: Final = 3
START_TIMEOUT: Final = 20.0
"""Seconds the client may take to connect."""
SETTLE_TIMEOUT: Final = 10.0
BACKOFF: Final = rxconn.Backoff(initial=0.05, max_delay=0.5)


async def run_cluster_demo(args: argparse.Namespace) -> int:
    """``rxconn demo --cluster``."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise CliError("demo --cluster needs redis-server: apt-get install redis-server")
    try:
        import redis  # noqa: F401  (the optional extra)
    except ImportError:
        raise CliError(
            "demo --cluster needs the redis extra: pip install 'rxconn[redis]'"
        ) from None
    from rxconn.server import Hub

    from ._balancer import RoundRobinProxy

    out = Console.for_stdout()
    count = max(1, int(args.duration * args.rate))
    clock = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        local = LocalRedis(executable)
        stack.callback(local.cleanup)  # last: after the server stopped
        stack.push_async_callback(local.stop)
        await local.start()
        out.line(f"redis-server on {local.url} (a temp dir, no persistence)")
        options = ["--redis", local.url, "--echo", "--ping-interval", "0.5"]
        hubs = [HubProcess(options) for _ in range(HUBS)]
        for hub in hubs:
            stack.push_async_callback(hub.stop)
        try:
            for hub in hubs:
                await hub.start()
        except RuntimeError as exc:
            raise CliError(str(exc)) from exc
        out.line(f"{HUBS} hub processes on ports {', '.join(str(h.port) for h in hubs)}")
        proxy = await stack.enter_async_context(
            RoundRobinProxy([("127.0.0.1", h.port) for h in hubs])
        )
        out.line(f"a round-robin balancer on port {proxy.port} (no sticky sessions)")
        sender = Hub(backplane=local.url)
        await sender.open_backplane()
        stack.push_async_callback(sender.close_backplane)

        conn = rxconn.Connection(
            rxconn.websocket(proxy.url("ws", "/rx/ws"), heartbeat=0.5),
            backoff=BACKOFF,
            idle_timeout=2.0,
        )
        stack.callback(conn.close)
        echoes, pushed = Tally("c"), Tally("h")
        begin = clock.time()

        def on_state(state: rxconn.State) -> None:
            out.line(f"{clock.time() - begin:6.2f}s  {describe(state)}")

        def on_message(payload: str | bytes) -> None:
            (echoes if str(payload).startswith("c") else pushed).take(payload)

        stack.callback(conn.state.subscribe(on_state).dispose)
        stack.callback(conn.messages.subscribe(on_message).dispose)
        connected = asyncio.Event()
        stack.callback(
            conn.state.subscribe(
                lambda s: connected.set() if isinstance(s, rxconn.Connected) else None
            ).dispose
        )
        await asyncio.wait_for(connected.wait(), START_TIMEOUT)
        holder = proxy.chosen[-1]
        session = conn.session_id
        assert session is not None
        out.line(
            f"the client's session {session} is on hub {holder + 1} (port {hubs[holder].port})"
        )

        async def stream() -> None:
            step = 1.0 / args.rate
            for n in range(1, count + 1):
                delay = begin + n * step - clock.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                conn.send(f"c{n}")
                echoes.sent = n
                await sender.send(session, f"h{n}")
                pushed.sent = n
                if n == count // 3:
                    hubs[holder].kill()
                    out.line(f"{clock.time() - begin:6.2f}s  killed hub {holder + 1} (kill -9)")

        await stream()
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                while len(echoes.received) < count or len(pushed.received) < count:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pass
        moved = proxy.chosen[-1] if proxy.chosen[-1] != holder else None
        out.line("")
        out.line(f"client -> hub (echoed): {echoes.report()}")
        out.line(f"hub -> client (sent by a 4th hub): {pushed.report()}")
        out.line(f"session resets: {conn.session_resets}")
        if moved is not None:
            out.line(f"the session continued on hub {moved + 1}")
        ok = (
            echoes.complete
            and pushed.complete
            and echoes.duplicated == pushed.duplicated == 0
            and echoes.out_of_order == pushed.out_of_order == 0
            and conn.session_resets == 0
        )
        verdict = "OK: 0 lost, 0 duplicated, in order, one session" if ok else "FAIL"
        out.line(verdict, "green" if ok else "red")
        return 0 if ok else 1
    return 1  # not reached: the block returns
