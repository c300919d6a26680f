"""The ``serve`` command: run the reference hub until a signal stops it.

Only binding, session logging and the listen error live here; the hub is :mod:`rxconn.server`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import AsyncExitStack

from rxconn.server import Hub, Session, serve

from ._console import PROG, CliError, Console


__all__ = ["run_serve"]


async def run_serve(args: argparse.Namespace) -> int:
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
