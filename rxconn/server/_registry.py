"""The registry of one hub: its live sessions and open links.

The endpoints (``_http``, ``_ws``) and the routes depend on this module, never
on the :class:`~rxconn.server.Hub` itself: the hub is a façade over a registry
and its settings. Sessions report their end through ``on_end``, so nothing
reaches back up.
"""

from __future__ import annotations

import secrets
from typing import Protocol

from reactivex import Observable

from .._multicast import Multicast
from ._session import Session
from ._settings import HubSettings, LinkTransport, ServerLink, SessionKind


__all__ = ["Registry", "SessionSource"]


class SessionSource(Protocol):
    """Where sessions come from when several hubs share them (Redis: ``_cluster.Cluster``)."""

    async def create(self, kind: SessionKind, transport: LinkTransport) -> Session:
        """A new session, stored, owned by this hub."""
        ...

    async def claim(
        self, session_id: str, secret: str, last: int, transport: LinkTransport
    ) -> Session | None:
        """Take ``session_id``'s link over (its key, or a browser's token); None if unknown."""
        ...

    async def visit(self, session_id: str, key: str | None) -> Session | None:
        """The session a request names (its key), without taking its link; None if unknown."""
        ...


class Registry:
    """Live sessions by id, open links, and the switch for WebSocket upgrades."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.links: set[ServerLink] = set()
        """Every open server link (for prompt shutdown)."""
        self.websocket_enabled = True
        self.source: SessionSource | None = None
        """Set when sessions are shared with other hubs (Redis); None in one process."""
        self._sessions: dict[str, Session] = {}
        self._created: Multicast[Session] = Multicast("hub.sessions")

    @property
    def created(self) -> Observable[Session]:
        """Hot: each new session, once, before its first message."""
        return self._created.observable

    def create(self, kind: SessionKind, transport: LinkTransport) -> Session:
        """A new session with a fresh public id (and secrets); announced on ``created``."""
        session = Session(secrets.token_urlsafe(12), kind, transport, self.settings, self.forget)
        self._sessions[session.id] = session
        self._created.send(session)
        return session

    def register(self, session: Session) -> None:
        """Keep a session made elsewhere (read from Redis) and announce it on ``created``."""
        self._sessions[session.id] = session
        self._created.send(session)

    async def open(self, kind: SessionKind, transport: LinkTransport) -> Session:
        """A new session for a link: here, or stored in Redis when sessions are shared."""
        if self.source is None:
            return self.create(kind, transport)
        return await self.source.create(kind, transport)

    async def find(
        self, session_id: str, secret: str | None, last: int, transport: LinkTransport
    ) -> Session | None:
        """The session a new link resumes; shared sessions are claimed (the link moves here).

        Only a shared session's secret is checked here; callers check the rest.
        """
        if self.source is None:
            return self.get(session_id)
        return await self.source.claim(session_id, secret or "", last, transport)

    async def visit(self, session_id: str, key: str | None) -> Session | None:
        """The session a request (a POST) names, wherever its link is."""
        if self.source is None:
            return self.get(session_id)
        return await self.source.visit(session_id, key)

    def get(self, session_id: str) -> Session | None:
        """The live session named ``session_id``, if any."""
        return self._sessions.get(session_id)

    def live(self) -> list[Session]:
        """Every session that has not ended."""
        return list(self._sessions.values())

    def forget(self, session: Session) -> None:
        """``session`` ended: it is no longer found by id."""
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]

    def close_links(self, code: int, reason: str, transport: LinkTransport | None = None) -> None:
        """Close every open link (of ``transport``, if given)."""
        for link in list(self.links):
            if transport is None or link.transport == transport:
                link.close(code, reason)
