"""The command line: ``python -m rxconn demo | serve | listen | send``.

Only parsing, wiring of the public API and printing live here.

URLs (``listen``, ``send``):

* ``--transport auto`` (default) takes the hub's *base* URL (``http://host:8080/rx``)
  and builds ``rxconn.connection(base)``; a URL ending in ``/ws`` or ``/events`` is
  accepted too, that last segment is dropped.
* ``--transport websocket`` / ``http`` take the endpoint. When the path does not
  already end with ``/ws`` (websocket) or ``/events`` (http), that suffix is
  appended, so the hub's base URL works as well; ``--exact-url`` uses the URL as
  given.
* ``--plain`` (any server: ``hub=False``) uses the URL as given; with ``--transport
  auto`` the scheme picks the transport (``ws(s)``: WebSocket, ``http(s)``: SSE).

Output: ``listen`` prints one line per message (see :mod:`rxconn.cli._format`),
state changes go to stderr; ``serve --print`` prints ``SESSION: line`` per payload.

Exit codes: 0 success; 1 runtime failure (gave up: fatal error such as HTTP 404,
``--retries`` exhausted, ``--timeout`` passed; lost messages in the demo);
2 bad arguments, URL or payload; 130 (128 + signal) when interrupted. ``serve``
exits 0 on Ctrl-C or SIGTERM. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import rxconn

from ._args import URL_HELP, add_client_options, number_in, positive, url_prefix
from ._clients import base_url, endpoint_url, run_listen, run_send
from ._console import PROG, CliError, UsageError, print_error, silence
from ._demo import run_demo
from ._format import format_message, parse_line
from ._run import interruptible, run
from ._serve import run_serve


__all__ = [
    "CliError",
    "base_url",
    "build_parser",
    "endpoint_url",
    "format_message",
    "main",
    "parse_line",
]

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


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
        type=number_in(float, 3.0, 300.0),
        default=12.0,
        metavar="SECONDS",
        help="how long messages flow (default 12)",
    )
    demo.add_argument(
        "--rate",
        type=number_in(int, 1, 1000),
        default=20,
        metavar="N",
        help="messages per second in each direction (default 20)",
    )
    demo.add_argument(
        "--mute-sse",
        action="store_true",
        help="also mute SSE meanwhile (a proxy holds every byte after the headers), "
        "so the connection falls back to long polling",
    )
    demo.add_argument(
        "--cluster",
        action="store_true",
        help="instead: a local redis-server, three hub processes behind a round-robin "
        "balancer, and kill -9 of the hub holding the client's link mid-stream "
        "(needs redis-server and the rxconn[redis] extra)",
    )
    demo.set_defaults(run=run_demo, stop_code=None)

    srv = commands.add_parser(
        "serve",
        help="run the reference hub until Ctrl-C",
        description="Run the rxconn hub until Ctrl-C or SIGTERM (then exit 0). "
        "Prints 'rxconn hub on URL' first; --port 0 picks a free port.",
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=number_in(int, 0, 65535), default=8080, help="default 8080")
    srv.add_argument(
        "--prefix", type=url_prefix, default="/rx", help="URL prefix (default /rx; '' for the root)"
    )
    srv.add_argument(
        "--print",
        action="store_true",
        help="print each received payload on stdout, one line, after its session id "
        "(formatted as by listen)",
    )
    reply = srv.add_mutually_exclusive_group()
    reply.add_argument("--echo", action="store_true", help="send each message back to its sender")
    reply.add_argument(
        "--broadcast",
        action="store_true",
        help="send each message to every session (hub.broadcast), so listen shows what send sent",
    )
    srv.add_argument(
        "--ping-interval",
        type=positive,
        default=15.0,
        metavar="S",
        help="seconds between pings to clients (default 15)",
    )
    srv.add_argument(
        "--redis",
        metavar="URL",
        help="keep sessions in the Redis at URL (redis://HOST:PORT/DB), shared with every hub "
        "on it: any of them serves any session (needs the rxconn[redis] extra)",
    )
    srv.set_defaults(run=run_serve, stop_code=0)

    listen = commands.add_parser(
        "listen",
        help="print the messages a hub (or server) sends",
        description="Print each message on stdout, exactly one line per message: text with "
        "backslash escapes (\\\\, \\n, \\r, \\t, \\xNN, \\uNNNN for control and line-break "
        "characters), binary as 'hex:' + hex digits; with --json one exact "
        '{"type": "text"|"binary", "data"} object per line (binary data in base64). '
        "State changes go to stderr. Keeps retrying, also across hub restarts, "
        "until --timeout or --retries says stop.",
        epilog=URL_HELP,
        formatter_class=raw,
    )
    add_client_options(listen, "give up once no link was open for S seconds (default: never)", None)
    listen.add_argument("--json", action="store_true", help="one JSON object per message")
    listen.add_argument(
        "--count", type=number_in(int, 1), metavar="N", help="exit 0 after N messages"
    )
    listen.set_defaults(run=run_listen, stop_code=None)

    send = commands.add_parser(
        "send",
        help="send payloads, in order, and wait until they are accepted",
        description="Send each PAYLOAD in order (as text, or with --binary as bytes) and "
        "exit 0 once all were accepted (acknowledged by the hub; with --plain, taken by "
        "the socket). Failed attempts are reported on stderr as they happen.",
        epilog=URL_HELP,
        formatter_class=raw,
    )
    add_client_options(send, "give up if not all were accepted within S seconds (default 10)", 10.0)
    send.add_argument(
        "--binary",
        action="store_true",
        help="payloads are bytes: hex digits (e.g. 00ff), or @FILE for a file's bytes (@- stdin)",
    )
    send.add_argument("payloads", nargs="+", metavar="PAYLOAD", help="what to send")
    send.set_defaults(run=run_send, stop_code=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``rxconn`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    command: Command = args.run
    try:
        return run(interruptible(command(args), stop_code=args.stop_code))
    except KeyboardInterrupt:  # before our handlers were installed, or after
        return 130
    except (rxconn.InvalidURL, UsageError) as exc:
        print_error(args.command, str(exc))
        return 2
    except (CliError, rxconn.RxconnError) as exc:
        print_error(args.command, str(exc))
        return 1
    except BrokenPipeError:
        silence(sys.stdout)
        return 1
