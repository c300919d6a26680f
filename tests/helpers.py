"""Shared test helpers: wait on events (never on sleeps) with a bound on every wait."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from reactivex import Observable

import rxconn
from rxconn.server import Hub
from rxconn.states import State


MS = float(os.environ.get("RXCONN_TEST_MS", "1.0")) / 1000.0
"""One millisecond, scaled by RXCONN_TEST_MS for slow machines (websockets' trick)."""

TIMEOUT = 10.0


class Recorder:
    """Records what an observable emits and lets a test await a condition on it."""

    def __init__(self, source: Observable[Any]) -> None:
        self.items: list[Any] = []
        self.errors: list[Exception] = []
        self.completed = False
        self._changed = asyncio.Event()
        self.subscription = source.subscribe(self._on_next, self._on_error, self._on_completed)

    def _on_next(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    def _on_error(self, error: Exception) -> None:
        self.errors.append(error)
        self._changed.set()

    def _on_completed(self) -> None:
        self.completed = True
        self._changed.set()

    async def until(self, predicate: Callable[[list[Any]], bool], timeout: float = TIMEOUT) -> None:
        """Wait until ``predicate(items)`` holds."""
        async with asyncio.timeout(timeout):
            while not predicate(self.items):
                self._changed.clear()
                await self._changed.wait()

    async def count(self, n: int, timeout: float = TIMEOUT) -> list[Any]:
        await self.until(lambda items: len(items) >= n, timeout)
        return self.items

    def dispose(self) -> None:
        self.subscription.dispose()


async def reach(
    conn: rxconn.Connection, predicate: Callable[[State], bool], timeout: float = TIMEOUT
) -> State:
    """Wait (as a state subscriber, so holding interest) until the state satisfies ``predicate``."""
    rec = Recorder(conn.state)
    try:
        await rec.until(lambda items: bool(items) and predicate(items[-1]), timeout)
        state: State = rec.items[-1]
        return state
    finally:
        rec.dispose()


async def eventually(
    predicate: Callable[[], object], timeout: float = TIMEOUT, poll: float = 5 * MS
) -> None:
    """Wait, bounded, for a condition on state that has no event of its own to await
    (the hub's session table, say): it is checked every ``poll`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(poll)


async def settle() -> None:
    """Let every rxconn task finish tearing down (bounded)."""
    await rxconn.aio.drain(TIMEOUT)


def is_connected(state: object) -> bool:
    return isinstance(state, rxconn.Connected)


def is_errored(state: object) -> bool:
    return isinstance(state, rxconn.Errored)


FAST = rxconn.Backoff(initial=0.02, max_delay=0.2, jitter=0.0)
"""A quick reconnect schedule for loopback tests."""


def connection_over(
    factory: Callable[..., rxconn.Transport],
    url: str,
    transport_options: tuple[str, ...],
    **kw: object,
) -> rxconn.Connection:
    """A Connection over ``factory(url, ...)``; ``kw`` names in ``transport_options`` go to it."""
    transport_kw = {k: kw.pop(k) for k in list(kw) if k in transport_options}
    options: dict[str, object] = {"backoff": FAST, "idle_timeout": 5.0, **kw}
    return rxconn.Connection(factory(url, **transport_kw), **options)  # type: ignore[arg-type]


@asynccontextmanager
async def app_server(
    app: web.Application | Callable[[web.Application], None],
    port: int = 0,
    *,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[str]:
    """Serve an aiohttp app (or a routes callable building one) on 127.0.0.1; yields its URL."""
    if not isinstance(app, web.Application):
        routes, app = app, web.Application()
        routes(app)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        await runner.cleanup()


async def assert_no_leaked_tasks() -> None:
    """After a test: every rxconn task of this loop has finished (teardown included)."""
    await rxconn.aio.drain(TIMEOUT)
    assert rxconn.aio.TASKS.running() == []
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert [t for t in others if "rxconn" in repr(t.get_coro())] == []


@asynccontextmanager
async def hub_in_app(
    hub: Hub, root: web.Application | None = None, *, shutdown_timeout: float = 1.0
) -> AsyncIterator[str]:
    """Mount ``hub`` under /rx in ``root`` (with middlewares, say) and serve it; yields its URL."""
    root = root if root is not None else web.Application()
    root.add_subapp("/rx", hub.app())
    try:
        async with app_server(root, shutdown_timeout=shutdown_timeout) as url:
            yield url + "/rx"
    finally:
        hub.shutdown()
