"""AioTransport: what the aiohttp transports share.

Their common options (URL, headers, open timeout, message size, hub protocol,
a user's ``ClientSession``, TLS), their name and redacted ``repr``, and
:meth:`open`: one link task per subscription (see :mod:`rxconn.aio._links`).
A transport describes links; creating one opens nothing.

**Headers that change.** ``headers`` is a mapping, or a callable (sync or
async) returning one; a callable is called for every link open and for every
HTTP request of a link (:meth:`AioTransport._user_headers`), so a refreshed token
is always the one sent. What it raises fails the link with a *retryable*
:class:`~rxconn.errors.TransportError` whose ``__cause__`` is that exception
(a token service that is briefly down heals with the backoff); an
:class:`~rxconn.errors.RxconnError` it raises is passed on as it is (raise
``TransportError(..., fatal=True)`` to stop the connection); a result that is
not a mapping of strings is a fatal ``TransportError`` (a bug, retrying
cannot help). Header values never appear in errors or logs.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Final, TypeAlias

import aiohttp
from reactivex import Observable, abc
from yarl import URL

from ..errors import InvalidURL, RxconnError, TransportError, safe_url
from ..transport import LinkContext, LinkEvent
from ._links import serial_links
from ._posting import PostOptions


__all__ = [
    "MAX_REDIRECTS",
    "REDIRECT_STATUSES",
    "AioTransport",
    "Headers",
    "HeadersFactory",
    "PostingTransport",
    "http_url",
]

MAX_REDIRECTS: Final = 5
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})

HeadersFactory: TypeAlias = Callable[[], Mapping[str, str] | Awaitable[Mapping[str, str]]]
"""A callable returning the headers (or an awaitable of them), called per request."""

Headers: TypeAlias = Mapping[str, str] | HeadersFactory
"""What ``headers=`` takes: a mapping, or a :data:`HeadersFactory`."""


class AioTransport(ABC):
    """Base of :class:`~rxconn.aio.websocket.WebSocketTransport` and the HTTP transports.

    Subclasses set :attr:`kind` and implement :meth:`_run`, the coroutine of one link.
    """

    kind: ClassVar[str]
    """The transport's name, in states and errors (``"websocket"``, ``"http"``)."""

    dynamic_headers: ClassVar[bool] = False
    """Whether the subclass resolves every request's headers with :meth:`_user_headers`
    (and so takes a callable ``headers``); one that reads :attr:`headers` only
    refuses a callable at construction rather than send no credentials."""

    def __init__(
        self,
        url: str,
        *,
        headers: Headers | None,
        open_timeout: float,
        max_message_size: int,
        max_send_size: int | None,
        hub: bool,
        session: aiohttp.ClientSession | None,
        ssl: Any,
    ) -> None:
        if not open_timeout > 0:
            raise ValueError(f"open_timeout must be > 0, got {open_timeout!r}")
        if max_message_size < 1:
            raise ValueError(f"max_message_size must be >= 1, got {max_message_size!r}")
        self.url = url
        self.header_factory: HeadersFactory | None = None
        """The callable given as ``headers``, if one was (called per request)."""
        if headers is not None and not isinstance(headers, Mapping):
            if not callable(headers):
                raise TypeError(
                    f"headers must be a mapping or a callable, not {type(headers).__name__}"
                )
            if not self.dynamic_headers:
                raise TypeError(f"{self.kind}() takes headers as a mapping only (not a callable)")
            self.header_factory = headers
            headers = None
        self.headers: dict[str, str] = dict(headers or {})
        """The static headers (a copy of the mapping given; empty with a callable)."""
        self.open_timeout = open_timeout
        self.max_message_size = max_message_size
        self.max_send_size = max_send_size
        """The largest payload ``Connection.send()`` accepts for this transport, if known."""
        self.hub = hub
        self.session = session
        self.ssl = ssl
        self._key = f"{self.kind}:{id(self)}"

    @property
    def name(self) -> str:
        return self.kind

    @property
    def has_headers(self) -> bool:
        """Whether requests carry headers of the user's (then redirects stay on the origin)."""
        return bool(self.headers) or self.header_factory is not None

    async def _user_headers(self) -> dict[str, str]:
        """The user's headers for one request: the mapping, or what the callable returns now.

        Raises:
            TransportError: retryable, from what the callable raised (its
                ``__cause__``); fatal when it returned something that is not
                a mapping of strings. An ``RxconnError`` it raised goes on as is.
        """
        factory = self.header_factory
        if factory is None:
            return self.headers
        try:
            result = factory()
            if inspect.isawaitable(result):
                result = await result
        except RxconnError:
            raise
        except Exception as exc:
            error = TransportError(self.kind, f"the headers callable raised {type(exc).__name__}")
            raise error from exc
        if not isinstance(result, Mapping):
            raise TransportError(
                self.kind,
                f"the headers callable returned {type(result).__name__}, not a mapping",
                fatal=True,
            )
        headers = dict(result)
        if not all(type(k) is str and type(v) is str for k, v in headers.items()):
            raise TransportError(
                self.kind, "the headers callable returned a non-string name or value", fatal=True
            )
        return headers

    def __repr__(self) -> str:
        return f"{self.kind}({safe_url(self.url)!r})"

    def open(
        self, scheduler: abc.SchedulerBase, context: LinkContext | None = None
    ) -> Observable[LinkEvent]:
        """A cold observable: each subscription runs one link (after the previous one closed)."""
        name = f"rxconn {self.kind} {safe_url(self.url)}"
        return serial_links(self._key + ":link", name, self._run, context)

    @abstractmethod
    async def _run(self, observer: abc.ObserverBase[LinkEvent], ctx: LinkContext) -> None:
        """Run one link to its end, reporting to ``observer``; cancelled on disposal."""

    async def _get_on_origin(
        self,
        http: aiohttp.ClientSession,
        url: URL,
        headers: Mapping[str, str],
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """GET ``url``, following redirects only while they stay on ``url``'s origin.

        Headers of the user's and the session key must never reach another
        origin, nor go from https to http (a change of origin too): aiohttp
        drops only ``Authorization`` and cookies on such a redirect, so rxconn
        follows redirects itself.

        Raises:
            TransportError: (fatal) for a redirect to another origin, or too many.
        """
        target = url
        for _ in range(MAX_REDIRECTS + 1):
            resp = await http.get(
                target, headers=headers, timeout=timeout, ssl=self.ssl, allow_redirects=False
            )
            if resp.status not in REDIRECT_STATUSES or "Location" not in resp.headers:
                return resp
            resp.close()
            try:
                target = target.join(URL(resp.headers["Location"]))
                same_origin = target.origin() == url.origin()
            except ValueError:
                same_origin = False
            if not same_origin:
                raise TransportError(
                    self.kind,
                    f"{safe_url(self.url)} redirects to another origin; not following it "
                    "with the transport's headers",
                    status=resp.status,
                    fatal=True,
                )
        raise TransportError(self.kind, f"{safe_url(self.url)}: too many redirects", fatal=True)


def http_url(url: str) -> URL:
    """``url`` parsed, if it is an ``http(s)`` URL with a host.

    Raises:
        InvalidURL: otherwise.
    """
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise InvalidURL(str(url), "cannot be parsed") from exc
    if parsed.scheme not in ("http", "https"):
        raise InvalidURL(url, "scheme must be http or https")
    if not parsed.host:
        raise InvalidURL(url, "no host")
    return parsed


class PostingTransport(AioTransport):
    """Base of the HTTP transports (SSE and long polling): an ``http(s)`` URL and the
    POST side they share (batches of at most ``max_batch`` messages and
    ``max_batch_bytes``, each POST bounded by ``post_timeout``; a small POST
    after ``heartbeat`` seconds of quiet, so that ``Connection.quality`` has
    round trips to time)."""

    def __init__(
        self,
        url: str,
        *,
        headers: Headers | None,
        open_timeout: float,
        max_message_size: int,
        max_batch: int,
        max_batch_bytes: int,
        post_timeout: float,
        heartbeat: float | None,
        hub: bool,
        session: aiohttp.ClientSession | None,
        ssl: Any,
    ) -> None:
        self._url = http_url(url)
        super().__init__(
            str(self._url),
            headers=headers,
            open_timeout=open_timeout,
            max_message_size=max_message_size,
            max_send_size=max_message_size,
            hub=hub,
            session=session,
            ssl=ssl,
        )
        if max_batch < 1 or max_batch_bytes < 1:
            raise ValueError("max_batch and max_batch_bytes must be >= 1")
        if heartbeat is not None and not heartbeat > 0:
            raise ValueError(f"heartbeat must be > 0 or None, got {heartbeat!r}")
        self.heartbeat = heartbeat
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.post_timeout = post_timeout
        self._post_options = PostOptions(
            self.kind,
            self.url,
            self.headers,
            max_batch,
            max_batch_bytes,
            post_timeout,
            ssl,
            resolve_headers=self._user_headers,
            heartbeat=heartbeat,
        )
