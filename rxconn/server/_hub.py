"""The Hub: session registry, broadcast, limits, and the aiohttp application."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from aiohttp import web
from reactivex import Observable

from .._multicast import Multicast
from ..transport import Payload
from ._session import Session


__all__ = ["Hub"]


class Hub:
    """A reference server speaking both rxconn transports, with hub sessions.

    Args:
        echo: Send every received message back to its session.
        ping_interval: Seconds between WebSocket pings and SSE ping comments
            (keep it well inside the clients' ``idle_timeout``).
        session_grace: Seconds a session outlives its last link (30 s).
        replay_limit: Messages kept per session until acknowledged (10,000):
            ``Session.send`` past it raises ``BufferFullError``; ``broadcast``
            and echo end such a session (1008) and its client is told (410 Gone
            or a fresh session) rather than missing messages silently. For a
            browser ``EventSource`` (which never acknowledges) it is the replay
            window of ``Last-Event-ID`` resumes.
        max_message_size: Largest message accepted from a client (4 MiB);
            a larger WebSocket frame closes the link with 1009, a larger POSTed
            message gets 413.
        max_body_size: Largest POST body (16 MiB); larger gets 413.
        allowed_origins: Exact origins (``"https://app.example"``) allowed
            cross-origin; same-origin (and non-browser) requests are always
            allowed, others get 403.
    """

    def __init__(
        self,
        *,
        echo: bool = False,
        ping_interval: float = 15.0,
        session_grace: float = 30.0,
        replay_limit: int = 10_000,
        max_message_size: int = 4 * 1024 * 1024,
        max_body_size: int = 16 * 1024 * 1024,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        if not ping_interval > 0:
            raise ValueError(f"ping_interval must be > 0, got {ping_interval!r}")
        if not session_grace >= 0:
            raise ValueError(f"session_grace must be >= 0, got {session_grace!r}")
        if replay_limit < 1:
            raise ValueError(f"replay_limit must be >= 1, got {replay_limit!r}")
        self.echo = echo
        self.ping_interval = ping_interval
        self.session_grace = session_grace
        self.replay_limit = replay_limit
        self.max_message_size = max_message_size
        self.max_body_size = max_body_size
        self.allowed_origins = frozenset(allowed_origins)
        self._sessions: dict[str, Session] = {}
        self._new_sessions: Multicast[Session] = Multicast("hub.sessions")
        self.links: set[object] = set()
        """Every open server link (for prompt shutdown)."""
        self._websocket_enabled = True

    @property
    def websocket_enabled(self) -> bool:
        """Whether ``GET {prefix}/ws`` accepts upgrades (True by default).

        Setting it to False answers new upgrades with 503 and closes open
        WebSocket links (1001), as a proxy that blocks WebSocket would: rxconn
        clients with a fallback move to HTTP, and upgrade back once it is True
        again. Meant for demos, notebooks and tests.
        """
        return self._websocket_enabled

    @websocket_enabled.setter
    def websocket_enabled(self, enabled: bool) -> None:
        self._websocket_enabled = enabled
        if not enabled:
            for link in list(self.links):
                if getattr(link, "transport", None) == "websocket":
                    link.close(1001, "WebSocket disabled")  # type: ignore[attr-defined]

    @property
    def sessions(self) -> Observable[Session]:
        """Hot: each new session, once (not once per link), before its first message."""
        return self._new_sessions.observable

    def session(self, session_id: str) -> Session | None:
        """The live session named ``session_id``, if any."""
        return self._sessions.get(session_id)

    @property
    def live_sessions(self) -> list[Session]:
        """Every session that has not ended."""
        return list(self._sessions.values())

    def broadcast(self, payload: Payload) -> int:
        """Send ``payload`` to every live session (linked or within its grace); returns how many.

        A session whose client is ``replay_limit`` messages behind is ended
        (close 1008) rather than allowed to block or fail the others.
        """
        reached = 0
        for session in list(self._sessions.values()):
            if not session.ended and session.offer(payload):
                reached += 1
        return reached

    def app(self) -> web.Application:
        """A ``web.Application`` with the hub's routes; mount it with ``add_subapp(prefix, …)``."""
        from ._routes import add_routes

        app = web.Application(client_max_size=self.max_body_size)
        add_routes(app, self)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, _: web.Application) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """End every session and close every link now (WebSocket close 1001)."""
        for session in list(self._sessions.values()):
            session.end("hub shutting down", code=1001)
        for link in list(self.links):
            link.close(1001, "hub shutting down")  # type: ignore[attr-defined]

    # ------------------------------------------------------------ internal

    def _create(self, kind: str, transport: str) -> Session:
        session = Session(self, secrets.token_urlsafe(12), kind, transport)
        self._sessions[session.id] = session
        self._new_sessions.send(session)
        return session

    def _forget(self, session: Session) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
