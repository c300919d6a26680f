"""rxconn: resilient client connections on ReactiveX and aiohttp.

One :class:`Connection` holds exactly one live link (a WebSocket, or HTTP:
Server-Sent Events down and batched POSTs up), reconnects with backoff,
detects dead links, buffers what is sent while no link is up, and exposes its
state and messages as observables.
"""

from __future__ import annotations

from . import aio, errors, states, testing, transport
from ._core._fallback import Fallback, fallback
from ._shortcuts import connection
from .aio.httplink import http
from .aio.websocket import websocket
from .backoff import Backoff
from .connection import Connection
from .errors import (
    BufferFullError,
    ConnectionClosedError,
    ConnectionLost,
    InvalidURL,
    MessageTooLarge,
    OpenTimeout,
    ProtocolError,
    RetriesExhausted,
    RxconnError,
    SessionExpired,
    TransportError,
)
from .states import Connected, Connecting, Disconnected, Errored, State
from .transport import Link, LinkContext, Transport


__version__ = "0.1.0.dev0"

__all__ = [
    "Backoff",
    "BufferFullError",
    "Connected",
    "Connecting",
    "Connection",
    "ConnectionClosedError",
    "ConnectionLost",
    "Disconnected",
    "Errored",
    "Fallback",
    "InvalidURL",
    "MessageTooLarge",
    "Link",
    "LinkContext",
    "OpenTimeout",
    "ProtocolError",
    "RetriesExhausted",
    "RxconnError",
    "SessionExpired",
    "State",
    "Transport",
    "TransportError",
    "aio",
    "connection",
    "errors",
    "fallback",
    "http",
    "states",
    "testing",
    "transport",
    "websocket",
]
