"""The command line: ``python -m rxconn demo | serve | listen | send``.

Only parsing, wiring of the public API and printing live here.

URLs (``listen``, ``send``):

* ``--transport auto`` (default) takes the hub's *base* URL (``http://host:8080/rx``)
  and builds ``rxconn.connection(base)``; a URL ending in ``/ws`` or ``/events`` is
  accepted too, that last segment is dropped.
* ``--transport websocket`` / ``http`` take the endpoint. When the path does not
  already end with ``/ws`` (websocket) or ``/events`` (http), that suffix is
  appended, so the hub's base URL works as well; ``--exact-url`` uses the URL as
  given (for servers other than the rxconn hub).

Exit codes: 0 success; 1 runtime failure (unreachable, refused, HTTP 404, nothing
delivered in time, lost messages in the demo); 2 bad arguments or URL;
130 (128 + signal) when interrupted. ``serve`` exits 0 on Ctrl-C or SIGTERM.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Final, TextIO, TypeVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

from reactivex.disposable import CompositeDisposable

import rxconn
from rxconn.server import Hub, Session, serve


__all__ = ["CliError", "build_parser", "main"]

PROG: Final = "rxconn"
TRANSPORTS: Final = ("auto", "websocket", "http")
ENDPOINTS: Final = {"websocket": "/ws", "http": "/events"}
WEB_SCHEMES: Final = {"ws": "http", "wss": "https"}
CLIENT_BACKOFF: Final = rxconn.Backoff(initial=0.2, max_delay=2.0, max_attempts=3)
"""listen/send give up after three failed attempts in a row (RetriesExhausted)."""
SEND_POLL: Final = 0.01
DEMO_CONNECT_TIMEOUT: Final = 5.0
DEMO_SETTLE_TIMEOUT: Final = 5.0
DEMO_UPGRADE_INTERVAL: Final = 0.5
DEMO_MAX_UPGRADE_INTERVAL: Final = 1.0
DEMO_BACKOFF: Final = rxconn.Backoff(initial=0.05, max_delay=1.0)

_N = TypeVar("_N", int, float)

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


class CliError(Exception):
    """A runtime failure reported as one line on stderr, with exit code 1."""


# ------------------------------------------------------------------- output


class Console:
    """Line-oriented output that survives a closed pipe, with optional ANSI colour.

    Args:
        stream: Where lines go (stdout or stderr).
        colour: Whether to wrap text in ANSI colour codes.
    """

    CODES: Final = {
        "red": "31",
        "green": "32",
        "yellow": "33",
        "cyan": "36",
        "dim": "2",
        "bold": "1",
    }

    def __init__(self, stream: TextIO, colour: bool = False) -> None:
        self.stream = stream
        self.colour = colour
        self.broken = False

    @classmethod
    def for_stdout(cls) -> Console:
        """Colour only when stdout is a terminal and ``NO_COLOR`` is unset."""
        return cls(sys.stdout, colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ)

    def paint(self, text: str, colour: str | None) -> str:
        """``text`` in ``colour`` (a key of ``CODES``) when colour is on."""
        if not self.colour or colour is None:
            return text
        return f"\x1b[{self.CODES[colour]}m{text}\x1b[0m"

    def line(self, text: str, colour: str | None = None) -> bool:
        """Write one line and flush; False once the reader went away (broken pipe)."""
        if self.broken:
            return False
        try:
            self.stream.write(self.paint(text, colour) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self.broken = True
            _silence(self.stream)
            return False
        return True


def _silence(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at /dev/null so the exit-time flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # not a real file: nothing will be flushed to a dead pipe


def _error(command: str, message: str) -> None:
    """Print the one-line error of ``command`` to stderr."""
    name = f"{PROG} {command}" if command else PROG
    Console(sys.stderr).line(f"{name}: error: {message}")


def describe(state: rxconn.State) -> str:
    """A short human description of a connection state."""
    if isinstance(state, rxconn.Connecting):
        return f"connecting over {state.transport} (attempt {state.attempt})"
    if isinstance(state, rxconn.Connected):
        return f"connected over {state.transport}"
    if isinstance(state, rxconn.Errored):
        then = "giving up" if state.retry_in is None else f"retrying in {state.retry_in:.2f} s"
        return f"attempt {state.attempt} failed: {state.error}; {then}"
    return "disconnected"


STATE_COLOURS: Final = {
    "connecting": "yellow",
    "connected": "green",
    "errored": "red",
    "disconnected": "dim",
}


# ------------------------------------------------------------ arguments


def _number(kind: Callable[[str], _N], low: _N, high: _N) -> Callable[[str], _N]:
    """An argparse type: a number of ``kind`` (int or float) within ``[low, high]``."""

    def parse(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be within [{low:g}, {high:g}], got {text}")
        return value

    return parse


def _positive(text: str) -> float:
    """An argparse type: seconds > 0."""
    value = _number(float, 0.0, math.inf)(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _prefix(text: str) -> str:
    """An argparse type: a URL prefix such as ``/rx``."""
    if not text.startswith("/") or text.endswith("/"):
        raise argparse.ArgumentTypeError(f"must start with '/' and not end with it: {text!r}")
    return text


def _add_client_options(parser: argparse.ArgumentParser, timeout_help: str) -> None:
    """Options shared by ``listen`` and ``send``."""
    parser.add_argument("url", metavar="URL", help="hub base URL, or endpoint (see below)")
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="auto",
        help="auto: WebSocket with HTTP fallback (default); or one transport only",
    )
    parser.add_argument(
        "--exact-url",
        action="store_true",
        help="with --transport websocket/http, use URL as is (no /ws or /events appended)",
    )
    parser.add_argument("--timeout", type=_positive, default=10.0, metavar="S", help=timeout_help)


URL_HELP: Final = """\
URL: with --transport auto, the hub's base URL (http://host:8080/rx; a trailing
/ws or /events is dropped). With websocket or http, the endpoint: /ws or /events
is appended unless the path already ends with it (or --exact-url is given).
Gives up after 3 failed attempts in a row, or at once on a fatal error (e.g. 404).
Exit codes: 0 ok, 1 failure, 2 bad arguments or URL, 130 interrupted."""


def build_parser() -> argparse.ArgumentParser:
    """The ``rxconn`` argument parser with its four subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Resilient client connections: demo, hub, and clients."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {rxconn.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    demo = commands.add_parser(
        "demo",
        help="show WebSocket -> HTTP fallback -> upgrade, live, with nothing lost",
        description="Run an embedded hub and a fallback connection; block WebSocket at 1/3 "
        "of the run and allow it again at 2/3; count every message both ways. "
        "Exit 0 when nothing was lost or duplicated and both switches happened.",
    )
    demo.add_argument(
        "--duration",
        type=_number(float, 3.0, 300.0),
        default=12.0,
        metavar="SECONDS",
        help="how long messages flow (default 12)",
    )
    demo.add_argument(
        "--rate",
        type=_number(int, 1, 1000),
        default=20,
        metavar="N",
        help="messages per second in each direction (default 20)",
    )
    demo.set_defaults(run=_demo, stop_code=None)

    srv = commands.add_parser(
        "serve",
        help="run the reference hub until Ctrl-C",
        description="Run the rxconn hub until Ctrl-C or SIGTERM (then exit 0). "
        "Prints 'rxconn hub on URL' first; --port 0 picks a free port.",
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=_number(int, 0, 65535), default=8080, help="default 8080")
    srv.add_argument("--prefix", type=_prefix, default="/rx", help="URL prefix (default /rx)")
    srv.add_argument("--echo", action="store_true", help="send each message back to its sender")
    srv.add_argument(
        "--ping-interval",
        type=_positive,
        default=15.0,
        metavar="S",
        help="seconds between pings to clients (default 15)",
    )
    srv.set_defaults(run=_serve, stop_code=0)

    listen = commands.add_parser(
        "listen",
        help="print the messages a hub (or server) sends",
        description="Print each message on stdout, one per line: text as is, binary as "
        '\'b64:\' + base64; with --json one {"type", "data"} object per line. '
        "State changes go to stderr.",
        epilog=URL_HELP,
        formatter_class=raw,
    )
    _add_client_options(listen, "give up if no link opens within S seconds (default 10)")
    listen.add_argument("--json", action="store_true", help="one JSON object per message")
    listen.add_argument(
        "--count", type=_number(int, 1, sys.maxsize), metavar="N", help="exit 0 after N messages"
    )
    listen.set_defaults(run=_listen, stop_code=None)

    send = commands.add_parser(
        "send",
        help="send text payloads, in order, and wait until they are accepted",
        description="Send each PAYLOAD (as text) in order and exit 0 once all were accepted "
        "(acknowledged by the hub).",
        epilog=URL_HELP,
        formatter_class=raw,
    )
    _add_client_options(send, "give up if not all were accepted within S seconds (default 10)")
    send.add_argument("payloads", nargs="+", metavar="PAYLOAD", help="text to send")
    send.set_defaults(run=_send, stop_code=None)
    return parser


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    """Run ``rxconn`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    command: Command = args.run
    try:
        return asyncio.run(_interruptible(command(args), stop_code=args.stop_code))
    except KeyboardInterrupt:  # before our handlers were installed, or after
        return 130
    except rxconn.InvalidURL as exc:
        _error(args.command, str(exc))
        return 2
    except (CliError, rxconn.RxconnError) as exc:
        _error(args.command, str(exc))
        return 1
    except BrokenPipeError:
        _silence(sys.stdout)
        return 1


@contextmanager
def _signal_handlers(handler: Callable[[signal.Signals], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler`` on the running loop (where supported)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handler, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # Windows, or not the main thread: KeyboardInterrupt still ends main()
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _interruptible(job: Coroutine[Any, Any, int], *, stop_code: int | None) -> int:
    """Await ``job``; a signal cancels it (its cleanup runs) and picks the exit code.

    Returns ``stop_code`` after a signal when given, else ``128 + signal number``.
    """
    task = asyncio.current_task()
    assert task is not None
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        task.cancel()

    with _signal_handlers(on_signal):
        try:
            return await job
        except asyncio.CancelledError:
            if not received:
                raise
            task.uncancel()
            return stop_code if stop_code is not None else 128 + received[0]


# ---------------------------------------------------------------- waiting


class Changes:
    """Wakes waiters whenever something they wait for may have changed (no polling)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Something changed: re-check every waiting predicate."""
        self._event.set()

    async def until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds, at most ``timeout`` s; return whether it does."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._event.clear()
                    await self._event.wait()
        except TimeoutError:
            return predicate()
        return True


class Outcome:
    """The result a client command settles on, set once from Rx callbacks."""

    def __init__(self) -> None:
        self.future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def finish(self, code: int) -> None:
        """End with exit code ``code`` (first call wins)."""
        if not self.future.done():
            self.future.set_result(code)

    def fail(self, message: str) -> None:
        """End with a one-line error (exit code 1; first call wins)."""
        if not self.future.done():
            self.future.set_exception(CliError(message))

    async def wait(self) -> int:
        """The exit code, or raise the failure."""
        return await self.future


# ----------------------------------------------------------------- clients


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


async def _listen(args: argparse.Namespace) -> int:
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


async def _send(args: argparse.Namespace) -> int:
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


# ------------------------------------------------------------------- serve


async def _serve(args: argparse.Namespace) -> int:
    """``rxconn serve``: run the hub until a signal cancels it."""
    hub = Hub(echo=args.echo, ping_interval=args.ping_interval)
    err = Console(sys.stderr)
    async with AsyncExitStack() as stack:
        try:
            server = await stack.enter_async_context(
                serve(hub, args.host, args.port, prefix=args.prefix)
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CliError(f"cannot listen on {args.host}:{args.port}: {reason}") from exc

        def on_session(session: Session) -> None:
            err.line(f"{PROG}: session {session.id} opened ({session.kind})")

        stack.callback(hub.sessions.subscribe(on_session).dispose)
        Console(sys.stdout).line(f"rxconn hub on {server.url}")
        await asyncio.Future()  # until a signal cancels us
    return 0


# -------------------------------------------------------------------- demo


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
        if previous == "http" and state.transport == "websocket":
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
        path = ",".join(self.switches)
        return "websocket,http,websocket" in path


class Demo:
    """``rxconn demo``: an embedded hub, a fallback connection, and a blocking "proxy".

    Args:
        duration: Seconds messages flow; WebSocket is blocked from 1/3 to 2/3 of it.
        rate: Messages per second in each direction.
        console: Where the live lines go.
    """

    def __init__(self, duration: float, rate: int, console: Console) -> None:
        self.duration = duration
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
            conn = self.connection(server.url)
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
        return self.summary()

    def connection(self, url: str) -> rxconn.Connection:
        """WebSocket first, HTTP fallback, quick upgrade probes (capped at 1 s)."""
        both = rxconn.fallback(
            rxconn.websocket(url + "/ws", heartbeat=2.0),
            rxconn.http(url + "/events"),
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
        """Block WebSocket at 1/3 of the run and allow it again at 2/3."""
        await self.sleep_until(begin, self.duration / 3)
        self.hub.websocket_enabled = False
        self.say("proxy", "WebSocket blocked, as by a proxy", "cyan")
        await self.sleep_until(begin, 2 * self.duration / 3)
        self.hub.websocket_enabled = True
        self.say("proxy", "WebSocket allowed again", "cyan")

    def summary(self) -> int:
        """Print the summary; 0 when nothing was lost, duplicated or reordered and both
        switches happened."""
        tl = self.timeline
        time_on = ", ".join(f"on {t} {s:.1f} s" for t, s in sorted(tl.time_on.items()))
        links = len(tl.transports)
        ok = (
            all(t.lost == t.duplicated == t.out_of_order == 0 for t in (self.up, self.down))
            and tl.round_trip
        )
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
            verdict = "PASS: nothing lost or duplicated; fell back to HTTP and upgraded back"
        else:
            verdict = "FAIL: messages lost, duplicated or reordered, or a switch did not happen"
        self.out.line(verdict, "green" if ok else "red")
        return 0 if ok else 1


async def _demo(args: argparse.Namespace) -> int:
    """``rxconn demo``."""
    return await Demo(args.duration, args.rate, Console.for_stdout()).run()
