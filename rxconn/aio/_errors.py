"""Translate aiohttp and OS errors into rxconn's error tree, keeping the cause."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from typing import Final

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

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


RETRYABLE_POST_STATUSES: Final = frozenset({408, 410, 429})
"""4xx answers to a POST that are worth another try (the rest say the request is wrong)."""


def status_error(
    transport: str,
    url: str,
    status: int,
    headers: Mapping[str, str] | None = None,
    *,
    posting: bool = False,
) -> TransportError:
    """The error for an HTTP answer ``status`` that refused the link (or a POST of it).

    Fatality is decided here, once: a handshake's 401/403/404 is fatal through
    :func:`rxconn.errors.is_retryable` (though the retry operator grants a 401
    one immediate try with fresh headers first); a POST's 4xx is fatal too,
    unless it is 408, 410 (a new session) or 429, since sending the same batch
    again cannot help (a POST's 401 had its one try again already).
    """
    target = safe_url(url)
    if status == 410:
        return SessionExpired(transport, f"{target}: session unknown to the hub", status=410)
    fatal = posting and 400 <= status < 500 and status not in RETRYABLE_POST_STATUSES
    return TransportError(
        transport,
        f"{target} answered {status}",
        status=status,
        retry_after=retry_after(headers),
        fatal=fatal,
    )


def _scrub(exc: BaseException, url: str) -> None:
    """Remove credentials from an aiohttp exception that becomes an rxconn error's cause.

    A logged traceback prints the whole chain: aiohttp's response errors carry
    the request (its full URL, with ``user:pass@`` and ``?token=``, and its
    headers, ``Authorization`` included), and their message names the URL.
    """
    target = safe_url(url)
    info = getattr(exc, "request_info", None)
    if isinstance(info, aiohttp.RequestInfo):
        redacted = URL(safe_url(str(info.real_url)))
        exc.request_info = aiohttp.RequestInfo(  # type: ignore[attr-defined]
            redacted, info.method, CIMultiDictProxy(CIMultiDict()), redacted
        )
    if url != target and exc.args:
        exc.args = tuple(
            arg.replace(url, target) if isinstance(arg, str) else arg for arg in exc.args
        )


def translate(transport: str, url: str, exc: BaseException, *, opening: bool) -> RxconnError:
    """Map ``exc`` (raised by aiohttp or the OS) to an rxconn error whose ``__cause__`` it is.

    The cause is scrubbed of credentials first (see :func:`_scrub`).
    """
    target = safe_url(url)
    error: RxconnError
    if isinstance(exc, RxconnError):
        return exc
    _scrub(exc, url)
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
