"""The Hub: the public face of a registry of sessions, its settings, and its application."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from reactivex import Observable

from .._types import coerce_payload
from ..errors import ConnectionClosedError
from ..transport import Payload
from ._registry import Registry
from ._session import Session
from ._settings import HubSettings


__all__ = ["Hub"]


class Hub(HubSettings):
    """A reference server for every rxconn transport (WebSocket, SSE, long poll), with sessions.

    Args:
        echo: Send every received message back to its session.
        ping_interval: Seconds between WebSocket pings and SSE ping comments
            (keep it well inside the clients' ``idle_timeout``).
        session_grace: Seconds a session outlives its last link (30 s).
        replay_limit: Messages kept per session until acknowledged (10,000).
        replay_bytes: Their total size (32 MiB; text counted in characters).
            ``Session.send`` past either raises ``BufferFullError``; ``broadcast``
            and echo end such a session (1008) and its client is told (410 Gone
            or a fresh session) rather than missing messages silently. For a
            browser ``EventSource`` (which never acknowledges) it is the replay
            window of ``Last-Event-ID`` resumes.
        max_message_size: Largest message accepted from a client (4 MiB);
            a larger WebSocket frame closes the link with 1009, a larger POSTed
            message gets 413.
        max_body_size: Largest POST body (16 MiB); larger gets 413.
        max_batch: Most messages in one POST (10,000); more gets 413 (rxconn
            clients split their batch and try again), and a body is refused
            before parsing when its JSON element count already says so.
        poll_hold: The longest a long poll is held (20 s, under common proxy
            idle cuts; a client may ask for less), and how long the hub waits
            for a long-poll link's next poll before the link counts as gone.
        allowed_origins: Origins allowed cross-origin, normalised as browsers
            send ``Origin`` (``ValueError`` for an entry that is not an origin).
            Without an entry, only requests without ``Origin`` and pages whose
            own origin is an IP literal or ``localhost`` are allowed; any named
            host, the hub's own included, must be listed (DNS rebinding).
            Others get 403.

        backplane: ``"redis://host:port/db"`` or a ``RedisBackplane``: sessions
            live in Redis, shared by every hub on it (any hub serves any session;
            a hub's death loses nothing; see docs/cluster.md). Needs the
            ``rxconn[redis]`` extra. Afterwards the attribute is the
            ``RedisBackplane`` (its ``state`` says how Redis is reached).

    All arguments are keyword-only, and stay writable as attributes.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self._registry = Registry(self)
        self._cluster: Any = None
        if self.backplane is not None:
            from ._cluster import make_cluster  # imports redis: only when asked for

            self._cluster = make_cluster(self.backplane, self._registry)
            self._registry.source = self._cluster
            self.backplane = self._cluster.backplane

    @property
    def websocket_enabled(self) -> bool:
        """Whether ``GET {prefix}/ws`` accepts upgrades (True by default).

        Setting it to False answers new upgrades with 503 and closes open
        WebSocket links (1001), as a proxy that blocks WebSocket would: rxconn
        clients with a fallback move to HTTP, and upgrade back once it is True
        again. Meant for demos, notebooks and tests.
        """
        return self._registry.websocket_enabled

    @websocket_enabled.setter
    def websocket_enabled(self, enabled: bool) -> None:
        self._registry.websocket_enabled = enabled
        if not enabled:
            self._registry.close_links(1001, "WebSocket disabled", "websocket")

    @property
    def links(self) -> frozenset[object]:
        """Every open server link (read-only; for tests and diagnostics)."""
        return frozenset(self._registry.links)

    @property
    def sessions(self) -> Observable[Session]:
        """Hot: each new session, once (not once per link), before its first message."""
        return self._registry.created

    def session(self, session_id: str) -> Session | None:
        """The live session named ``session_id``, if any."""
        return self._registry.get(session_id)

    @property
    def live_sessions(self) -> list[Session]:
        """Every session that has not ended."""
        return self._registry.live()

    async def send(self, session_id: str, payload: Payload) -> None:
        """Send ``payload`` to the session ``session_id``, wherever its link is.

        With a backplane the session may be held by any hub; this returns once
        Redis has numbered the message (it then survives any hub's death).

        Raises:
            ConnectionClosedError: no such live session.
            BufferFullError: its client is ``replay_limit`` messages behind.
            TypeError, ValueError: as for ``Session.send``.
        """
        payload = coerce_payload(payload)
        if self._cluster is not None:
            await self._cluster.send(session_id, payload)
            return
        session = self._registry.get(session_id)
        if session is None:
            raise ConnectionClosedError()
        session.send(payload)

    def broadcast(self, payload: Payload) -> int:
        """Send ``payload`` to every live session (linked or within its grace); returns how many.

        A session whose client is ``replay_limit`` messages behind is ended
        (close 1008) rather than allowed to block or fail the others. With a
        backplane every session of every hub gets it (through Redis, in the
        order of this hub's sends); the count is then this hub's sessions.

        Raises:
            TypeError: for anything but ``str`` or ``bytes``.
            ValueError: for text that is not valid Unicode (a lone surrogate).
        """
        payload = coerce_payload(payload)
        if self._cluster is not None:
            return int(self._cluster.broadcast(payload))
        reached = 0
        for session in self._registry.live():
            if not session.ended and session.offer(payload):
                reached += 1
        return reached

    def app(self) -> web.Application:
        """A ``web.Application`` with the hub's routes; mount it with ``add_subapp(prefix, …)``."""
        from ._routes import add_routes

        app = web.Application(client_max_size=self.max_body_size)
        add_routes(app, self._registry)
        if self._cluster is not None:
            app.on_startup.append(self._start_cluster)
            app.on_cleanup.append(self._stop_cluster)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _start_cluster(self, _: web.Application) -> None:
        await self.open_backplane()

    async def _stop_cluster(self, _: web.Application) -> None:
        await self.close_backplane()

    async def open_backplane(self) -> None:
        """Connect to the backplane (``serve()`` does it): for a hub that only sends.

        A hub that serves no links can still ``send`` and ``broadcast`` to every
        session of the cluster once its backplane is open. No-op without one.
        """
        if self._cluster is not None:
            await self._cluster.start()

    async def close_backplane(self) -> None:
        """Disconnect from the backplane (``serve()`` does it on exit). No-op without one."""
        if self._cluster is not None:
            await self._cluster.stop()

    async def _on_shutdown(self, _: web.Application) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """End every session and close every link now (WebSocket close 1001).

        With a backplane the sessions live on in Redis: their clients resume
        them on another hub.
        """
        if self._cluster is not None:
            self._cluster.shutdown()
        for session in self._registry.live():
            session.end("hub shutting down", code=1001)
        self._registry.close_links(1001, "hub shutting down")
