"""The client commands ``listen`` and ``send``, and the URL rules they share.

These are the only commands that build a client connection from user input.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from typing import Final
from urllib.parse import SplitResult, urlsplit, urlunsplit

from reactivex.disposable import CompositeDisposable

import rxconn

from ._console import PROG, CliError, Console, describe
from ._run import Outcome


__all__ = [
    "base_url",
    "client_connection",
    "endpoint_url",
    "format_message",
    "run_listen",
    "run_send",
]

ENDPOINTS: Final = {"websocket": "/ws", "http": "/events"}
WEB_SCHEMES: Final = {"ws": "http", "wss": "https"}
CLIENT_BACKOFF: Final = rxconn.Backoff(initial=0.2, max_delay=2.0, max_attempts=3)
"""listen/send give up after three failed attempts in a row (RetriesExhausted)."""
SEND_POLL: Final = 0.01


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise rxconn.InvalidURL(url, "cannot be parsed") from exc


def base_url(url: str) -> str:
    """The hub base URL: ``ws(s)`` becomes ``http(s)``; a trailing ``/``, ``/ws`` or
    ``/events`` is dropped."""
    parts = _split(url)
    scheme = WEB_SCHEMES.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    for suffix in ENDPOINTS.values():
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
    open_timeout = min(10.0, args.timeout)
    if args.transport == "auto":
        return rxconn.connection(
            base_url(args.url), backoff=CLIENT_BACKOFF, open_timeout=open_timeout
        )
    url = args.url if args.exact_url else endpoint_url(args.url, args.transport)
    link: rxconn.Transport
    if args.transport == "websocket":
        link = rxconn.websocket(url, open_timeout=open_timeout)
    else:
        link = rxconn.http(url, open_timeout=open_timeout)
    return rxconn.Connection(link, backoff=CLIENT_BACKOFF)


def format_message(payload: str | bytes, as_json: bool) -> str:
    """One output line for ``payload``: text as is, binary as ``b64:…``, or a JSON object."""
    if isinstance(payload, str):
        kind, data = "text", payload
    else:
        kind, data = "binary", base64.b64encode(payload).decode("ascii")
    if as_json:
        return json.dumps({"type": kind, "data": data}, ensure_ascii=False)
    return data if kind == "text" else f"b64:{data}"


async def run_listen(args: argparse.Namespace) -> int:
    """``rxconn listen``: print messages until ``--count`` or Ctrl-C."""
    out, err = Console(sys.stdout), Console(sys.stderr)
    conn = client_connection(args)
    outcome = Outcome()
    received = 0
    connected = False

    def on_state(state: rxconn.State) -> None:
        nonlocal connected
        connected = connected or isinstance(state, rxconn.Connected)
        err.line(f"{PROG}: {describe(state)}")
        if isinstance(state, rxconn.Errored) and state.retry_in is None:
            outcome.fail(str(state.error))  # gave up: fatal error or RetriesExhausted

    def on_message(payload: str | bytes) -> None:
        nonlocal received
        if not out.line(format_message(payload, args.json)):
            outcome.finish(1)  # the reader went away (e.g. `| head`)
        received += 1
        if args.count is not None and received >= args.count:
            outcome.finish(0)

    def check_connected() -> None:
        if not connected:
            outcome.fail(f"no link opened within {args.timeout:g} s")

    deadline = asyncio.get_running_loop().call_later(args.timeout, check_connected)
    subscriptions = CompositeDisposable(
        conn.messages.subscribe(on_message), conn.state.subscribe(on_state)
    )
    try:
        return await outcome.wait()
    finally:
        deadline.cancel()
        subscriptions.dispose()
        conn.close()
        await rxconn.aio.drain()


async def run_send(args: argparse.Namespace) -> int:
    """``rxconn send``: send payloads in order, wait until all were accepted."""
    conn = client_connection(args)
    outcome = Outcome()
    for payload in args.payloads:
        conn.send(payload)

    def on_state(state: rxconn.State) -> None:
        if isinstance(state, rxconn.Errored) and state.retry_in is None:
            outcome.fail(str(state.error))  # gave up: fatal error or RetriesExhausted

    subscription = conn.state.subscribe(on_state)
    try:
        await _until_accepted(conn, outcome, args.timeout)
        Console(sys.stderr).line(f"{PROG}: {len(args.payloads)} payload(s) accepted")
        return 0
    finally:
        subscription.dispose()
        conn.close()
        await rxconn.aio.drain()


async def _until_accepted(conn: rxconn.Connection, outcome: Outcome, timeout: float) -> None:
    """Wait (polling ``conn.buffered``, bounded) until nothing awaits acceptance.

    Raises:
        CliError: when the connection gave up, or after ``timeout`` seconds.
    """
    try:
        async with asyncio.timeout(timeout):
            while conn.buffered and not outcome.future.done():
                await asyncio.wait([outcome.future], timeout=SEND_POLL)
    except TimeoutError:
        pass
    if outcome.future.done():
        await outcome.wait()  # raises the connection's failure
    if conn.buffered:
        raise CliError(f"{conn.buffered} payload(s) not accepted within {timeout:g} s")
