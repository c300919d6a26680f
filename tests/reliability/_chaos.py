"""Shared pieces of the reliability tests: numbered streams, a link cutter, and statistics."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import rxconn
from rxconn import Backoff, Connected, Errored
from rxconn.server import Hub, Session
from tests.proxy import FaultProxy


CHAOS_BACKOFF = Backoff(initial=0.02, factor=2.0, max_delay=0.1, jitter=0.2)
"""Reconnect quickly: the chaos tests cut links every ~200 ms."""


def numbered(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def number_of(payload: Any) -> int:
    return int(str(payload)[1:])


class HubLog:
    """Every session the hub creates, and every message each of them delivers, in order."""

    def __init__(self, hub: Hub) -> None:
        self.sessions: list[Session] = []
        self.received: list[tuple[int, Any]] = []
        """(index of the session in :attr:`sessions`, payload), in delivery order."""
        self._changed = asyncio.Event()
        self._subscriptions: list[Any] = [hub.sessions.subscribe(self._on_session)]

    def _on_session(self, session: Session) -> None:
        index = len(self.sessions)
        self.sessions.append(session)

        def on_message(payload: Any) -> None:
            self.received.append((index, payload))
            self._changed.set()

        self._subscriptions.append(session.messages.subscribe(on_message))
        self._changed.set()

    @property
    def payloads(self) -> list[Any]:
        return [payload for _, payload in self.received]

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def dispose(self) -> None:
        for subscription in self._subscriptions:
            subscription.dispose()


@dataclass
class StateLog:
    """What a connection's state stream said: connects per transport, errors per type."""

    states: list[Any] = field(default_factory=list)

    def on_state(self, state: Any) -> None:
        self.states.append(state)

    @property
    def connects(self) -> Counter[str]:
        return Counter(s.transport for s in self.states if isinstance(s, Connected))

    @property
    def reconnects(self) -> int:
        return max(sum(self.connects.values()) - 1, 0)

    @property
    def errors(self) -> Counter[str]:
        return Counter(type(s.error).__name__ for s in self.states if isinstance(s, Errored))

    @property
    def gave_up(self) -> list[Errored]:
        return [s for s in self.states if isinstance(s, Errored) and s.retry_in is None]


class Cutter:
    """Cuts every proxied connection every ``interval`` seconds, alternating FIN and RST."""

    def __init__(self, proxy: FaultProxy, interval: float = 0.2) -> None:
        self.proxy = proxy
        self.interval = interval
        self.rounds = 0
        self.links_cut = 0
        self.rst_rounds = 0
        self.cuts: list[tuple[float, bool]] = []
        """(loop time, rst?) of each round."""
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="chaos cutter")

    async def _run(self) -> None:
        rst = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            self.links_cut += self.proxy.cut(rst=rst)
            self.cuts.append((asyncio.get_running_loop().time(), rst))
            self.rounds += 1
            self.rst_rounds += rst
            rst = not rst

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def paced(send: Callable[[str], Any], payloads: list[str], duration: float) -> list[float]:
    """Call ``send`` for each payload, spread evenly over ``duration`` seconds.

    Returns the loop time at which each payload was sent.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    step = duration / max(len(payloads), 1)
    times: list[float] = []
    for i, payload in enumerate(payloads):
        delay = start + i * step - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        times.append(loop.time())
        send(payload)
    return times


def dedupe(seq: list[Any]) -> list[Any]:
    """First occurrences, in order."""
    seen: set[Any] = set()
    out = []
    for item in seq:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def strictly_increasing(numbers: list[int]) -> bool:
    return all(a < b for a, b in zip(numbers, numbers[1:], strict=False))


def report(title: str, **numbers: Any) -> str:
    """One line of statistics, printed (``pytest -s`` shows it) and returned."""
    line = f"[reliability] {title}: " + ", ".join(f"{k}={v}" for k, v in numbers.items())
    print(line)
    return line


def close_all(*things: Any) -> None:
    for thing in things:
        if isinstance(thing, rxconn.Connection):
            thing.close()
        else:
            thing.dispose()


async def flip_websocket(hub: Hub, stop: asyncio.Event, period: float = 0.75) -> int:
    """Turn the hub's WebSocket off and on every ``period`` seconds until ``stop``; returns
    the flips (a fallback connection then moves between transports during a run)."""
    flips = 0
    while not stop.is_set():
        try:
            async with asyncio.timeout(period):
                await stop.wait()
        except TimeoutError:
            hub.websocket_enabled = not hub.websocket_enabled
            flips += 1
    hub.websocket_enabled = True
    return flips
