"""The error tree of rxconn, and the policy that decides what is worth retrying.

* RxconnError
    * TransportError          (transport name, optional HTTP status, optional advised delay)
        * OpenTimeout         (the link did not open within ``open_timeout``)
        * ConnectionLost      (an open link died: reset, missed pong, idle, peer closed)
        * ProtocolError       (the peer broke the SSE, wire or WebSocket rules)
    * BufferFullError         (``send()`` past ``max_buffer``)
    * Dropped                 (a receipt's error: the ``overflow`` policy dropped the payload)
        * Expired             (a receipt's error: the payload waited unsent longer than ``ttl``)
    * MessageTooLarge         (also a ValueError: a payload the transport cannot carry)
    * ConnectionClosedError   (``send()``/``connect()`` after ``close()``)
    * RetriesExhausted        (``max_attempts`` failed in a row; ``__cause__`` is the last error)
    * SessionExpired          (the hub no longer knows our session: 410 Gone; retried)
    * InvalidURL              (also a ValueError: a URL rxconn cannot use)

Errors keep structured fields and build their message from them, so the text
never contains credentials (URLs are reduced to scheme, host, port and path).
"""

from __future__ import annotations

from urllib.parse import urlsplit


__all__ = [
    "BufferFullError",
    "ConnectionClosedError",
    "ConnectionLost",
    "Dropped",
    "Expired",
    "OpenTimeout",
    "ProtocolError",
    "RetriesExhausted",
    "RxconnError",
    "SessionExpired",
    "TransportError",
    "FATAL_STATUSES",
    "InvalidURL",
    "MessageTooLarge",
    "is_retryable",
    "safe_url",
]

FATAL_STATUSES = frozenset({204, 401, 403, 404})
"""HTTP statuses after which retrying cannot help (204 is the SSE "stop reconnecting")."""


class RxconnError(Exception):
    """Base class of every error rxconn raises or emits."""


class TransportError(RxconnError):
    """A link could not be opened or kept.

    Args:
        transport: Name of the transport (``"websocket"``, ``"http"``, …).
        reason: Human-readable reason, free of credentials.
        status: The HTTP status of a refused handshake, if any.
        retry_after: A delay in seconds the server advised (``Retry-After``,
            close 1012/1013, SSE ``retry:``); it replaces the backoff delay once.
        fatal: Force the error to be fatal (not retried) whatever its status.
    """

    def __init__(
        self,
        transport: str,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        fatal: bool = False,
    ) -> None:
        super().__init__(transport, reason)  # the rest is in __dict__: pickling keeps it
        self.transport = transport
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.fatal = fatal

    def __str__(self) -> str:
        suffix = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.transport}: {self.reason}{suffix}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class OpenTimeout(TransportError):
    """The link did not open within its ``open_timeout``."""


class ConnectionLost(TransportError):
    """An open link died: reset, clean close by the peer, missed pong or idle timeout."""


class ProtocolError(TransportError):
    """The peer broke the rules (bad content type, malformed frame, oversized message).

    Protocol errors are fatal by default when they happen during the handshake
    (a protocol mismatch); the ones that concern one message are raised with
    ``fatal=False`` so that the link is replaced and the connection goes on.
    """


class SessionExpired(TransportError):
    """The hub answered 410 Gone: it no longer knows our session.

    Not fatal: the client starts a new session and resends what was not acknowledged.
    """


class BufferFullError(RxconnError):
    """``send()`` was called while ``max_buffer`` payloads wait unacknowledged."""

    def __init__(self, max_buffer: int) -> None:
        super().__init__(max_buffer)
        self.max_buffer = max_buffer

    def __str__(self) -> str:
        return f"outbound buffer full ({self.max_buffer} payloads not yet accepted)"


class Dropped(RxconnError):
    """A receipt's error: the payload will never be sent; it is also on ``Connection.drops``.

    ``reason`` is ``"overflow"`` (refused or evicted by ``Connection(overflow=...)``)
    or ``"expired"`` (see :class:`Expired`).
    """

    reason = "overflow"

    def __str__(self) -> str:
        return "payload dropped: the outbound buffer was full (overflow policy)"


class Expired(Dropped):
    """A receipt's error: the payload waited unsent longer than ``Connection(ttl=...)``."""

    reason = "expired"

    def __init__(self, ttl: float) -> None:
        super().__init__(ttl)
        self.ttl = ttl

    def __str__(self) -> str:
        return f"payload expired: not sent within ttl={self.ttl:g} s"


class MessageTooLarge(RxconnError, ValueError):
    """``send()`` of a payload larger than the transport's ``max_send_size``.

    Raised at once, so that a payload no link could ever carry never blocks the
    ones behind it in the outbox.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(size, limit)
        self.size = size
        self.limit = limit

    def __str__(self) -> str:
        return f"message of {self.size} bytes exceeds the transport's limit of {self.limit}"


class ConnectionClosedError(RxconnError):
    """The ``Connection`` was closed: it accepts no more ``send()`` or ``connect()``."""

    def __str__(self) -> str:
        return "connection is closed"


class RetriesExhausted(RxconnError):
    """``max_attempts`` attempts failed in a row; ``__cause__`` holds the last error."""

    def __init__(self, attempts: int) -> None:
        super().__init__(attempts)
        self.attempts = attempts

    def __str__(self) -> str:
        cause = f": {self.__cause__}" if self.__cause__ is not None else ""
        return f"gave up after {self.attempts} failed attempts{cause}"


class InvalidURL(RxconnError, ValueError):
    """A URL rxconn cannot use (wrong scheme, no host); raised when the transport is built."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, reason)
        self.url = safe_url(url)
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid URL {self.url!r}: {self.reason}"


def is_retryable(exc: BaseException) -> bool:
    """Decide whether a failed link is worth another attempt.

    Network errors, timeouts, lost connections and 5xx/429 answers are
    retryable; 204/401/403/404, errors marked ``fatal`` and anything that is
    not an rxconn error (a bug) are not. Shaped like websockets'
    ``process_exception`` hook: a pure function of the error.
    """
    if not isinstance(exc, TransportError):
        return False
    if exc.fatal:
        return False
    return exc.status not in FATAL_STATUSES


def safe_url(url: str) -> str:
    """Return ``url`` without user info, query or fragment, fit for messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or not parts.netloc:
        # Not a URL we can take apart: keep what precedes any query or fragment,
        # and drop anything that looks like user info.
        text = url.split("?", 1)[0].split("#", 1)[0]
        return text.rpartition("@")[2] if "@" in text else text
    return f"{parts.scheme}://{host}{port}{parts.path}"
