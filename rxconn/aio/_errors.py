"""Translate aiohttp and OS errors into rxconn's error tree, keeping the cause."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping

import aiohttp

from ..errors import (
    ConnectionLost,
    OpenTimeout,
    ProtocolError,
    RxconnError,
    SessionExpired,
    TransportError,
    safe_url,
)


__all__ = ["retry_after", "status_error", "translate"]


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), if any."""
    if not headers:
        return None
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def status_error(
    transport: str, url: str, status: int, headers: Mapping[str, str] | None = None
) -> TransportError:
    """The error for an HTTP answer ``status`` that refused the link."""
    target = safe_url(url)
    if status == 410:
        return SessionExpired(transport, f"{target}: session unknown to the hub", status=410)
    return TransportError(
        transport, f"{target} answered {status}", status=status, retry_after=retry_after(headers)
    )


def translate(transport: str, url: str, exc: BaseException, *, opening: bool) -> RxconnError:
    """Map ``exc`` (raised by aiohttp or the OS) to an rxconn error whose ``__cause__`` it is."""
    target = safe_url(url)
    error: RxconnError
    if isinstance(exc, RxconnError):
        return exc
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        if exc.status in (101, 200):  # answered, but not as a WebSocket server
            error = ProtocolError(
                transport, f"{target} is not a WebSocket endpoint ({exc.message})", fatal=True
            )
        else:
            error = status_error(transport, url, exc.status, exc.headers)
    elif isinstance(exc, aiohttp.ClientResponseError):
        error = status_error(transport, url, exc.status, exc.headers)
    elif isinstance(exc, TimeoutError | asyncio.TimeoutError):
        if opening:
            error = OpenTimeout(transport, f"{target} did not open in time")
        else:
            error = ConnectionLost(transport, f"{target} timed out")
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = TransportError(transport, f"cannot connect to {target}: {exc.os_error.strerror}")
    elif isinstance(exc, aiohttp.InvalidURL):
        error = TransportError(transport, f"invalid URL {target}", fatal=True)
    elif isinstance(exc, aiohttp.ClientError | OSError | asyncio.IncompleteReadError):
        kind = ConnectionLost if not opening else TransportError
        error = kind(transport, f"{target}: {type(exc).__name__}: {exc}".rstrip(": "))
    else:
        error = TransportError(transport, f"unexpected {type(exc).__name__}: {exc}", fatal=True)
    error.__cause__ = exc
    return error
