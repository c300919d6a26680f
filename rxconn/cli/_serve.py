"""The ``serve`` command: run the reference hub until a signal stops it.

Only binding, session logging, ``--print`` / ``--broadcast`` and the listen error
live here; the hub is :mod:`rxconn.server`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import AbstractAsyncContextManager, AsyncExitStack

from rxconn.server import Hub, Server, Session, serve

from ._console import PROG, CliError, Console
from ._format import format_message


__all__ = ["run_serve"]


async def run_serve(args: argparse.Namespace) -> int:
    """``rxconn serve``: run the hub until a signal cancels it."""
    hub = _hub(args)
    out, err = Console(sys.stdout), Console(sys.stderr)
    async with AsyncExitStack() as stack:
        try:
            server = await stack.enter_async_context(_serve(hub, args))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CliError(f"cannot listen on {args.host}:{args.port}: {reason}") from exc

        def on_session(session: Session) -> None:
            err.line(f"{PROG}: session {session.id} opened ({session.kind})")
            if args.print or args.broadcast:  # ends by itself: messages completes with the session
                session.messages.subscribe(lambda payload: on_message(session, payload))

        def on_message(session: Session, payload: str | bytes) -> None:
            if args.print:
                out.line(f"{session.id}: {format_message(payload, as_json=False)}")
            if args.broadcast:
                hub.broadcast(payload)

        stack.callback(hub.sessions.subscribe(on_session).dispose)
        out.line(f"rxconn hub on {server.url}")
        await asyncio.Future()  # until a signal cancels us
    return 0


def _hub(args: argparse.Namespace) -> Hub:
    backplane = getattr(args, "redis", None)
    if backplane is not None:
        if not backplane.startswith(("redis://", "rediss://", "unix://")):
            raise CliError(f"--redis needs a redis:// URL, got {backplane!r}")
        try:
            import redis  # noqa: F401  (the optional extra)
        except ImportError:
            raise CliError("--redis needs the redis extra: pip install 'rxconn[redis]'") from None
    return Hub(echo=args.echo, ping_interval=args.ping_interval, backplane=backplane)


def _serve(hub: Hub, args: argparse.Namespace) -> AbstractAsyncContextManager[Server]:
    return serve(hub, args.host, args.port, prefix=args.prefix)
