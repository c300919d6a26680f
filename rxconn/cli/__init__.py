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
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import rxconn

from ._args import URL_HELP, add_client_options, number_in, positive, url_prefix
from ._clients import base_url, endpoint_url, format_message, run_listen, run_send
from ._console import PROG, CliError, print_error, silence
from ._demo import run_demo
from ._run import interruptible
from ._serve import run_serve


__all__ = ["CliError", "base_url", "build_parser", "endpoint_url", "format_message", "main"]

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
    demo.set_defaults(run=run_demo, stop_code=None)

    srv = commands.add_parser(
        "serve",
        help="run the reference hub until Ctrl-C",
        description="Run the rxconn hub until Ctrl-C or SIGTERM (then exit 0). "
        "Prints 'rxconn hub on URL' first; --port 0 picks a free port.",
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=number_in(int, 0, 65535), default=8080, help="default 8080")
    srv.add_argument("--prefix", type=url_prefix, default="/rx", help="URL prefix (default /rx)")
    srv.add_argument("--echo", action="store_true", help="send each message back to its sender")
    srv.add_argument(
        "--ping-interval",
        type=positive,
        default=15.0,
        metavar="S",
        help="seconds between pings to clients (default 15)",
    )
    srv.set_defaults(run=run_serve, stop_code=0)

    listen = commands.add_parser(
        "listen",
        help="print the messages a hub (or server) sends",
        description="Print each message on stdout, one per line: text as is, binary as "
        '\'b64:\' + base64; with --json one {"type", "data"} object per line. '
        "State changes go to stderr.",
        epilog=URL_HELP,
        formatter_class=raw,
    )
    add_client_options(listen, "give up if no link opens within S seconds (default 10)")
    listen.add_argument("--json", action="store_true", help="one JSON object per message")
    listen.add_argument(
        "--count", type=number_in(int, 1, sys.maxsize), metavar="N", help="exit 0 after N messages"
    )
    listen.set_defaults(run=run_listen, stop_code=None)

    send = commands.add_parser(
        "send",
        help="send text payloads, in order, and wait until they are accepted",
        description="Send each PAYLOAD (as text) in order and exit 0 once all were accepted "
        "(acknowledged by the hub).",
        epilog=URL_HELP,
        formatter_class=raw,
    )
    add_client_options(send, "give up if not all were accepted within S seconds (default 10)")
    send.add_argument("payloads", nargs="+", metavar="PAYLOAD", help="text to send")
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
        return asyncio.run(interruptible(command(args), stop_code=args.stop_code))
    except KeyboardInterrupt:  # before our handlers were installed, or after
        return 130
    except rxconn.InvalidURL as exc:
        print_error(args.command, str(exc))
        return 2
    except (CliError, rxconn.RxconnError) as exc:
        print_error(args.command, str(exc))
        return 1
    except BrokenPipeError:
        silence(sys.stdout)
        return 1
