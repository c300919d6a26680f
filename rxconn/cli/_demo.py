"""The ``demo`` command: WebSocket -> HTTP fallback -> upgrade, live, counting every message.

With ``--mute-sse`` the "proxy" also buffers SSE, so the chain goes on to long polling.

Its bookkeeping (tallies, transport timeline) is self-contained, so it lives apart.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Final

from reactivex.disposable import CompositeDisposable

import rxconn
from rxconn.server import Hub, Session, serve

from ._console import STATE_COLOURS, CliError, Console, describe
from ._mute import MutingProxy
from ._run import Changes


__all__ = ["Demo", "Tally", "Timeline", "run_demo"]

DEMO_CONNECT_TIMEOUT: Final = 5.0
DEMO_SETTLE_TIMEOUT: Final = 5.0
DEMO_UPGRADE_INTERVAL: Final = 0.5
DEMO_MAX_UPGRADE_INTERVAL: Final = 1.0
DEMO_BACKOFF: Final = rxconn.Backoff(initial=0.05, max_delay=1.0)


@dataclass
class Tally:
    """One direction of the demo: how many numbered messages were sent, which arrived."""

    prefix: str
    sent: int = 0
    received: list[int] = field(default_factory=list)

    def take(self, payload: str | bytes) -> None:
        """Record an arrival such as ``"c12"`` (anything else counts as number 0)."""
        text = payload if isinstance(payload, str) else ""
        number = text[len(self.prefix) :]
        ok = text.startswith(self.prefix) and number.isdigit()
        self.received.append(int(number) if ok else 0)

    @property
    def lost(self) -> int:
        return len(set(range(1, self.sent + 1)) - set(self.received))

    @property
    def duplicated(self) -> int:
        return len(self.received) - len(set(self.received))

    @property
    def out_of_order(self) -> int:
        return sum(1 for a, b in pairwise(self.received) if b < a)

    @property
    def complete(self) -> bool:
        return self.lost == 0

    def report(self) -> str:
        return (
            f"sent {self.sent}, received {len(self.received)}, lost {self.lost}, "
            f"duplicated {self.duplicated}, out of order {self.out_of_order}"
        )


@dataclass
class Timeline:
    """Which transport carried the connection when: links, switches, time on each."""

    transports: list[str] = field(default_factory=list)
    errors: int = 0
    reconnects: int = 0
    last: rxconn.State = field(default_factory=rxconn.Disconnected)
    time_on: dict[str, float] = field(default_factory=dict)
    current: str | None = None
    since: float = 0.0

    def on_state(self, state: rxconn.State, now: float) -> str:
        """Record ``state`` at ``now``; return a note for the live line ("" if none)."""
        self.close(now)
        if not isinstance(state, rxconn.Connected):
            self.last = state
        if isinstance(state, rxconn.Errored):
            self.errors += 1
        if not isinstance(state, rxconn.Connected):
            return ""
        previous = self.transports[-1] if self.transports else None
        if self.transports and not isinstance(self.last, rxconn.Connected):
            self.reconnects += 1
        self.last = state
        self.transports.append(state.transport)
        self.current, self.since = state.transport, now
        if previous == "websocket" and state.transport == "http":
            return "  <- fell back to HTTP"
        if previous != "longpoll" and state.transport == "longpoll":
            return "  <- fell back to long polling"
        if previous in ("http", "longpoll") and state.transport == "websocket":
            return "  <- upgraded back to WebSocket"
        return ""

    def close(self, now: float) -> None:
        """End the current link's segment at ``now``."""
        if self.current is not None:
            self.time_on[self.current] = self.time_on.get(self.current, 0.0) + now - self.since
            self.current = None

    @property
    def switches(self) -> list[str]:
        """The transports in the order the connection moved between them."""
        path = self.transports[:1]
        for transport in self.transports[1:]:
            if transport != path[-1]:
                path.append(transport)
        return path

    @property
    def round_trip(self) -> bool:
        """Whether the connection went websocket -> http -> websocket."""
        return self.went_via("http")

    def went_via(self, fallback: str) -> bool:
        """Whether the connection went websocket -> ``fallback`` -> websocket."""
        return f"websocket,{fallback},websocket" in ",".join(self.switches)


class Demo:
    """``rxconn demo``: an embedded hub, a fallback connection, and a blocking "proxy".

    Args:
        duration: Seconds messages flow; WebSocket is blocked from 1/3 to 2/3 of it.
        rate: Messages per second in each direction.
        console: Where the live lines go.
        mute_sse: Also buffer SSE meanwhile (a proxy between the connection and
            the hub answers the SSE request and holds every byte), so the chain
            goes on to long polling.
    """

    def __init__(
        self, duration: float, rate: int, console: Console, *, mute_sse: bool = False
    ) -> None:
        self.duration = duration
        self.mute_sse = mute_sse
        self.fallback = "longpoll" if mute_sse else "http"
        self.muter: MutingProxy | None = None
        self.rate = rate
        self.out = console
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()
        self.up = Tally("c")
        self.down = Tally("h")
        self.timeline = Timeline()
        self.hub = Hub(ping_interval=0.5)
        self.sessions: list[Session] = []
        self.changes = Changes()
        self.subscriptions = CompositeDisposable()
        self.state: rxconn.State = rxconn.Disconnected()

    def elapsed(self) -> float:
        return self.loop.time() - self.start

    def say(self, tag: str, text: str, colour: str | None = None) -> None:
        """One live line: elapsed time, a tag and the text."""
        stamp = self.out.paint(f"{self.elapsed():6.2f}s", "dim")
        self.out.line(f"{stamp}  {tag:<7} {self.out.paint(text, colour)}")

    # -- callbacks (run on the loop, from Rx)

    def on_state(self, state: rxconn.State) -> None:
        self.state = state
        note = self.timeline.on_state(state, self.elapsed())
        self.say("state", describe(state) + note, STATE_COLOURS[state.kind])
        self.changes.notify()

    def on_session(self, session: Session) -> None:
        self.sessions.append(session)
        self.subscriptions.add(session.messages.subscribe(self.on_hub_message))
        self.changes.notify()

    def on_hub_message(self, payload: str | bytes) -> None:
        self.up.take(payload)
        self.changes.notify()

    def on_client_message(self, payload: str | bytes) -> None:
        self.down.take(payload)
        self.changes.notify()

    # -- the run

    async def run(self) -> int:
        """Run the whole demo; return the exit code."""
        self.say("demo", f"{self.duration:g} s, {self.rate} messages/s each way", "bold")
        async with serve(self.hub, "127.0.0.1", 0) as server:
            self.say("hub", f"serving on {server.url}")
            url = server.url
            if self.mute_sse:
                self.muter = MutingProxy(server.port)
                await self.muter.start()
                url = f"http://127.0.0.1:{self.muter.port}{server.prefix}"
                self.say("proxy", f"the connection goes through a proxy on {url}")
            conn = self.connection(url)
            self.subscriptions.add(self.hub.sessions.subscribe(self.on_session))
            self.subscriptions.add(conn.messages.subscribe(self.on_client_message))
            self.subscriptions.add(conn.state.subscribe(self.on_state))
            try:
                await self.flow(conn)
            finally:
                self.timeline.close(self.elapsed())
                self.subscriptions.dispose()
                conn.close()
                await rxconn.aio.drain()
                if self.muter is not None:
                    await self.muter.close()
        return self.summary()

    def connection(self, url: str) -> rxconn.Connection:
        """WebSocket, then SSE, then long polling; quick upgrade probes (capped at 1 s)."""
        both = rxconn.fallback(
            rxconn.websocket(url + "/ws", heartbeat=2.0),
            rxconn.http(url + "/events"),
            rxconn.longpoll(url + "/poll", hold=2.0),
            timeout=1.0,
            upgrade_interval=DEMO_UPGRADE_INTERVAL,
            max_upgrade_interval=DEMO_MAX_UPGRADE_INTERVAL,
        )
        return rxconn.Connection(both, backoff=DEMO_BACKOFF, idle_timeout=5.0)

    async def flow(self, conn: rxconn.Connection) -> None:
        """Connect, run traffic and the proxy script, then wait for every message."""
        if not await self.changes.until(lambda: bool(self.sessions), DEMO_CONNECT_TIMEOUT):
            raise CliError(f"the demo connection did not open within {DEMO_CONNECT_TIMEOUT:g} s")
        begin = self.loop.time()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.traffic(conn, begin))
            tasks.create_task(self.progress(begin))
            tasks.create_task(self.proxy(begin))
        self.say("demo", "stopped sending; waiting for every message to arrive")
        await self.changes.until(self.settled, DEMO_SETTLE_TIMEOUT)
        self.progress_line()

    def settled(self) -> bool:
        on_websocket = self.state == rxconn.Connected("websocket")
        return self.up.complete and self.down.complete and on_websocket

    async def sleep_until(self, begin: float, offset: float) -> None:
        await asyncio.sleep(max(0.0, begin + offset - self.loop.time()))

    async def traffic(self, conn: rxconn.Connection, begin: float) -> None:
        """Send ``c1, c2, …`` from the client and ``h1, h2, …`` from the hub session."""
        n = 0
        while n / self.rate < self.duration:
            n += 1
            conn.send(f"c{n}")
            self.up.sent = n
            try:
                self.sessions[-1].send(f"h{n}")
            except rxconn.ConnectionClosedError:
                self.say("hub", "the hub session ended: stopped sending", "red")
                return
            self.down.sent = n
            await self.sleep_until(begin, n / self.rate)

    async def progress(self, begin: float) -> None:
        """A compact traffic line every second."""
        second = 1
        while second < self.duration:
            await self.sleep_until(begin, second)
            self.progress_line()
            second += 1

    def progress_line(self) -> None:
        up, down = self.up, self.down
        self.say(
            "traffic",
            f"client->hub {len(up.received)}/{up.sent}  hub->client {len(down.received)}/"
            f"{down.sent}  (received/sent)",
            "dim",
        )

    async def proxy(self, begin: float) -> None:
        """Block WebSocket (and mute SSE) at 1/3 of the run and allow it again at 2/3."""
        await self.sleep_until(begin, self.duration / 3)
        if self.muter is not None:
            self.muter.muting = True
            self.say("proxy", "SSE muted: the proxy holds every byte after the headers", "cyan")
        self.hub.websocket_enabled = False
        self.say("proxy", "WebSocket blocked, as by a proxy", "cyan")
        await self.sleep_until(begin, 2 * self.duration / 3)
        if self.muter is not None:
            self.muter.muting = False
            self.say("proxy", f"SSE passed again ({self.muter.held} bytes were held)", "cyan")
        self.hub.websocket_enabled = True
        self.say("proxy", "WebSocket allowed again", "cyan")

    def summary(self) -> int:
        """Print the summary; 0 when nothing was lost, duplicated or reordered and both
        switches happened."""
        tl = self.timeline
        time_on = ", ".join(f"on {t} {s:.1f} s" for t, s in sorted(tl.time_on.items()))
        links = len(tl.transports)
        ok = all(
            t.lost == t.duplicated == t.out_of_order == 0 for t in (self.up, self.down)
        ) and tl.went_via(self.fallback)
        lines = [
            f"summary after {self.elapsed():.1f} s",
            f"  client -> hub: {self.up.report()}",
            f"  hub -> client: {self.down.report()}",
            f"  time {time_on or 'on no transport'}",
            f"  links {links}: reconnects {tl.reconnects}, "
            f"transport switches {max(len(tl.switches) - 1, 0)} "
            f"({' -> '.join(tl.switches) or 'never connected'})",
            f"  errors {tl.errors}, hub sessions {len(self.sessions)}",
        ]
        for line in lines:
            self.out.line(line, "bold" if line.startswith("summary") else None)
        if ok:
            way = "long polling" if self.mute_sse else "HTTP"
            verdict = f"PASS: nothing lost or duplicated; fell back to {way} and upgraded back"
        else:
            verdict = "FAIL: messages lost, duplicated or reordered, or a switch did not happen"
        self.out.line(verdict, "green" if ok else "red")
        return 0 if ok else 1


async def run_demo(args: argparse.Namespace) -> int:
    """``rxconn demo`` (``--cluster``: the Redis hub demo)."""
    if getattr(args, "cluster", False):
        from ._cluster_demo import run_cluster_demo

        return await run_cluster_demo(args)
    demo = Demo(
        args.duration, args.rate, Console.for_stdout(), mute_sse=getattr(args, "mute_sse", False)
    )
    return await demo.run()
