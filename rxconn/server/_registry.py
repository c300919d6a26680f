"""The registry of one hub: its live sessions and open links.

The endpoints (``_http``, ``_ws``) and the routes depend on this module, never
on the :class:`~rxconn.server.Hub` itself: the hub is a façade over a registry
and its settings. Sessions report their end through ``on_end``, so nothing
reaches back up.
"""

from __future__ import annotations

import secrets

from reactivex import Observable

from .._multicast import Multicast
from ._session import Session
from ._settings import HubSettings, LinkTransport, ServerLink, SessionKind


__all__ = ["Registry"]


class Registry:
    """Live sessions by id, open links, and the switch for WebSocket upgrades."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.links: set[ServerLink] = set()
        """Every open server link (for prompt shutdown)."""
        self.websocket_enabled = True
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
