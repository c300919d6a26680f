"""The reference hub: an aiohttp application speaking both rxconn transports.

``GET {prefix}/ws`` (WebSocket; ``rxconn.v1`` for sessions, plain frames
otherwise), ``GET {prefix}/events`` (SSE) and ``POST {prefix}/messages``.
"""

from __future__ import annotations

from ._hub import Hub
from ._limits import LimitedSite
from ._serve import Server, serve
from ._session import Session


__all__ = ["Hub", "LimitedSite", "Server", "Session", "serve"]
