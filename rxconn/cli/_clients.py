"""The client commands ``listen`` and ``send``, and the URL rules they share.

These are the only commands that build a client connection from user input.
Both keep retrying (the connection's backoff, capped at ``CLIENT_MAX_DELAY``)
until ``--timeout`` or ``--retries`` says stop; ``listen`` without ``--timeout``
never gives up on a retryable error, so it outlives a hub restart.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit, urlunsplit

from reactivex.disposable import CompositeDisposable

import rxconn

from ._console import PROG, CliError, Console, UsageError, describe, explain
from ._format import binary_payload, format_message
from ._run import Outcome


__all__ = [
    "base_url",
    "client_connection",
    "endpoint_url",
    "failure",
    "run_listen",
    "run_send",
]

ENDPOINTS: Final = {"websocket": "/ws", "http": "/events"}
WEB_SCHEMES: Final = {"ws": "http", "wss": "https"}
CLIENT_INITIAL_DELAY: Final = 0.2
CLIENT_MAX_DELAY: Final = 2.0
"""listen/send retry quickly: at most 2 s between attempts (a hub restart is noticed fast)."""
MAX_OPEN_TIMEOUT: Final = 10.0
PLAIN_HINT: Final = "not the rxconn hub? for any other server use --plain"
RECEIVE_ONLY: Final = (
    "the server accepts no messages: an SSE server other than the rxconn hub is receive-only"
)


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise rxconn.InvalidURL(url, "cannot be parsed") from exc
    try:
        parts.port  # noqa: B018 (urlsplit checks the port only when asked)
    except ValueError:
        raw = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        if raw.isdigit():
            raise rxconn.InvalidURL(url, f"port {raw} is out of range (0-65535)") from None
        raise rxconn.InvalidURL(url, f"port {raw!r} is not a number") from None
    return parts


def base_url(url: str) -> str:
    """The hub base URL: ``ws(s)`` becomes ``http(s)``; a trailing ``/``, ``/ws``,
    ``/events`` or ``/poll`` is dropped."""
    parts = _split(url)
    scheme = WEB_SCHEMES.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    for suffix in (*ENDPOINTS.values(), "/poll"):
        if path.endswith(suffix):
            path = path.removesuffix(suffix)
            break
    return urlunsplit(parts._replace(scheme=scheme, path=path))


def endpoint_url(url: str, transport: str) -> str:
    """The endpoint of ``transport``: ``/ws`` or ``/events`` appended unless already there."""
    suffix = ENDPOINTS[transport]
    parts = _split(url)
    path = parts.path.rstrip("/")
    if not path.endswith(suffix):
        path += suffix
    return urlunsplit(parts._replace(path=path))


def plain_transport(args: argparse.Namespace) -> str:
    """With ``--plain``: ``--transport``, or for ``auto`` the URL's scheme
    (``ws(s)``: websocket, otherwise http)."""
    if args.transport != "auto":
        return str(args.transport)
    return "websocket" if _split(args.url).scheme in WEB_SCHEMES else "http"


def client_connection(args: argparse.Namespace) -> rxconn.Connection:
    """The connection ``listen``/``send`` asked for.

    Raises:
        InvalidURL: when the URL cannot be used.
    """
    try:
        return _client_connection(args)
    except rxconn.InvalidURL as exc:  # name the URL as the user typed it
        raise rxconn.InvalidURL(args.url, exc.reason) from exc


def _client_connection(args: argparse.Namespace) -> rxconn.Connection:
    open_timeout = min(MAX_OPEN_TIMEOUT, args.timeout or MAX_OPEN_TIMEOUT)
    backoff = rxconn.Backoff(
        initial=CLIENT_INITIAL_DELAY,
        max_delay=CLIENT_MAX_DELAY,
        max_attempts=None if args.retries is None else args.retries + 1,
    )
    _split(args.url)  # a bad port is named before any transport sees the URL
    if args.plain:
        kind, url, hub = plain_transport(args), args.url, False
    elif args.transport == "auto":
        return rxconn.connection(base_url(args.url), backoff=backoff, open_timeout=open_timeout)
    else:
        kind, hub = args.transport, True
        url = args.url if args.exact_url else endpoint_url(args.url, kind)
    link: rxconn.Transport
    if kind == "websocket":
        link = rxconn.websocket(url, open_timeout=open_timeout, hub=hub)
    else:
        link = rxconn.http(url, open_timeout=open_timeout, hub=hub)
    return rxconn.Connection(link, backoff=backoff)


def failure(args: argparse.Namespace, error: BaseException) -> str:
    """The one-line reason a client command gave up on ``error``, with a hint where one helps."""
    text = explain(error)
    cause: BaseException | None = error
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:  # a cause chain may loop
        seen.add(id(cause))
        if isinstance(cause, rxconn.ProtocolError) and cause.transport == "websocket":
            return text if args.plain else f"{text}; {PLAIN_HINT}"  # a handshake mismatch
        cause = cause.__cause__
    return text


async def run_listen(args: argparse.Namespace) -> int:
    """``rxconn listen``: print messages until ``--count``, ``--timeout`` without a link,
    a fatal error, or Ctrl-C."""
    out, err = Console(sys.stdout), Console(sys.stderr)
    conn = client_connection(args)
    outcome = Outcome()
    loop = asyncio.get_running_loop()
    received = 0
    deadline: asyncio.TimerHandle | None = None
    last_error: BaseException | None = None

    def no_link() -> None:
        reason = f"no link open for {args.timeout:g} s"
        outcome.fail(reason if last_error is None else f"{reason}: {failure(args, last_error)}")

    def on_state(state: rxconn.State) -> None:
        nonlocal deadline, last_error
        err.line(f"{PROG}: {describe(state)}")
        if isinstance(state, rxconn.Connected):
            if deadline is not None:
                deadline.cancel()
                deadline = None
        elif deadline is None and args.timeout is not None:
            deadline = loop.call_later(args.timeout, no_link)
        if isinstance(state, rxconn.Errored):
            last_error = state.error
            if state.retry_in is None:  # gave up: fatal error or --retries exhausted
                outcome.fail(failure(args, state.error))

    def on_message(payload: str | bytes) -> None:
        nonlocal received
        if not out.line(format_message(payload, args.json)):
            outcome.finish(1)  # the reader went away (e.g. `| head`)
        received += 1
        if args.count is not None and received >= args.count:
            outcome.finish(0)

    subscriptions = CompositeDisposable(
        conn.messages.subscribe(on_message), conn.state.subscribe(on_state)
    )
    try:
        return await outcome.wait()
    finally:
        if deadline is not None:
            deadline.cancel()
        subscriptions.dispose()
        conn.close()
        await rxconn.aio.drain()


def send_payloads(args: argparse.Namespace) -> list[str | bytes]:
    """The PAYLOAD arguments: text as given, or with ``--binary`` hex or ``@FILE`` bytes.

    Raises:
        UsageError: for a bad ``--binary`` payload, or ``--plain`` over SSE (receive-only).
    """
    if args.plain and plain_transport(args) == "http":
        raise UsageError(
            f"{RECEIVE_ONLY} (--plain over HTTP); use a ws:// URL or --transport websocket"
        )
    if args.binary:
        return [binary_payload(argument) for argument in args.payloads]
    return list(args.payloads)


async def run_send(args: argparse.Namespace) -> int:
    """``rxconn send``: send payloads in order, wait (up to ``--timeout``) until all were
    accepted; failed attempts are reported on stderr as they happen."""
    payloads = send_payloads(args)
    conn = client_connection(args)
    outcome = Outcome()
    err = Console(sys.stderr)
    errors: list[BaseException] = []

    def on_state(state: rxconn.State) -> None:
        if not isinstance(state, rxconn.Errored):
            return
        errors.append(state.error)
        if state.retry_in is None:  # gave up: fatal error or --retries exhausted
            outcome.fail(failure(args, state.error))
        else:
            err.line(f"{PROG}: {describe(state)}")

    try:
        for payload in payloads:
            conn.send(payload)
        subscription = conn.state.subscribe(on_state)
        try:
            await _until_accepted(conn, outcome, args.timeout)
        except TimeoutError:
            raise CliError(_not_accepted(args, conn, len(payloads), errors)) from None
        finally:
            subscription.dispose()
        err.line(f"{PROG}: {len(payloads)} payload(s) accepted")
        return 0
    finally:
        conn.close()
        await rxconn.aio.drain()


async def _until_accepted(conn: rxconn.Connection, outcome: Outcome, timeout: float) -> None:
    """Wait (bounded) until ``conn.flush()`` says every payload was delivered.

    Raises:
        CliError: when the connection gave up first.
        TimeoutError: after ``timeout`` seconds.
    """
    flushing: asyncio.Future[None] = asyncio.ensure_future(conn.flush())
    waiting: list[asyncio.Future[Any]] = [flushing, outcome.future]
    try:
        async with asyncio.timeout(timeout):
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        flushing.cancel()
        await asyncio.gather(flushing, return_exceptions=True)
    if outcome.future.done():
        await outcome.wait()  # raises the connection's failure


def _not_accepted(
    args: argparse.Namespace, conn: rxconn.Connection, sent: int, errors: list[BaseException]
) -> str:
    """Why ``send`` timed out: the last failure, or a receive-only SSE server."""
    text = f"{conn.buffered} of {sent} payload(s) not accepted within {args.timeout:g} s"
    state = conn.current_state
    if isinstance(state, rxconn.Connected) and state.transport == "http":
        return f"{text}: connected over http, but {RECEIVE_ONLY}"
    if errors:
        return f"{text}: {failure(args, errors[-1])}"
    return text
