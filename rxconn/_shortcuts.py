"""connection(base_url): the one-line way to a hub: WebSocket, then SSE, then long polling."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reactivex import Observable, abc

from ._core._fallback import fallback
from .aio.httplink import http
from .aio.longpoll import longpoll
from .aio.websocket import websocket
from .backoff import Backoff
from .connection import Connection
from .receipts import Overflow


__all__ = ["connection"]

HUB_MESSAGE_LIMIT = 4 * 1024 * 1024
"""The hub's default ``max_message_size``: what ``connection()`` lets ``send()`` accept."""


def connection(
    base_url: str,
    *,
    timeout: float = 2.0,
    upgrade_interval: float | None = 30.0,
    max_upgrade_interval: float = 300.0,
    headers: Mapping[str, str] | None = None,
    heartbeat: float | None = 15.0,
    hold: float = 20.0,
    open_timeout: float = 10.0,
    backoff: Backoff | None = None,
    idle_timeout: float | None = 30.0,
    max_buffer: int = 10_000,
    overflow: Overflow = "error",
    ttl: float | None = None,
    online: Observable[bool] | None = None,
    scheduler: abc.SchedulerBase | None = None,
    **transport_options: Any,
) -> Connection:
    """A :class:`Connection` to a hub over WebSocket, then SSE, then long polling.

    That is ``Connection(fallback(websocket(base + "/ws"), http(base + "/events"),
    longpoll(base + "/poll"), ...), ...)``.

    With the hub, an SSE link counts as open only at its first event, so a
    proxy that answers the SSE request and then holds every byte (buffering
    it) moves the chain on to long polling after ``timeout`` seconds.

    Args:
        base_url: The hub's base URL, e.g. ``server.url`` (``http://host:port/rx``).
        timeout: Seconds WebSocket, then SSE, may take to open before the next is tried.
        upgrade_interval: Seconds between probes back to WebSocket while on a later one.
        hold: Seconds the hub may hold a long poll (see :func:`rxconn.longpoll`).
        max_upgrade_interval: Cap on the probe interval as it doubles after failures.
        headers: Extra headers for every transport.
        heartbeat: WebSocket ping interval, and the HTTP transports' heartbeat POST.
        open_timeout: Bound on each transport's own open.
        backoff, idle_timeout, max_buffer, overflow, ttl, online, scheduler: see
            :class:`Connection`.
        transport_options: Passed to every transport (e.g. ``session=``, ``ssl=``).
    """
    base = base_url.rstrip("/")
    scheme, sep, rest = base.partition("://")
    if sep and scheme in ("ws", "wss"):  # the HTTP half needs http(s); websocket() takes both
        base = ("https" if scheme == "wss" else "http") + "://" + rest
    both = fallback(
        websocket(
            base + "/ws",
            headers=headers,
            heartbeat=heartbeat,
            open_timeout=open_timeout,
            max_send_size=transport_options.pop("max_send_size", HUB_MESSAGE_LIMIT),
            **transport_options,
        ),
        http(
            base + "/events",
            headers=headers,
            heartbeat=heartbeat,
            open_timeout=open_timeout,
            **transport_options,
        ),
        longpoll(
            base + "/poll",
            hold=hold,
            headers=headers,
            heartbeat=heartbeat,
            open_timeout=open_timeout,
            **transport_options,
        ),
        timeout=timeout,
        upgrade_interval=upgrade_interval,
        max_upgrade_interval=max_upgrade_interval,
    )
    return Connection(
        both,
        backoff=backoff,
        idle_timeout=idle_timeout,
        max_buffer=max_buffer,
        overflow=overflow,
        ttl=ttl,
        online=online,
        scheduler=scheduler,
    )
