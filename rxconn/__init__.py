"""rxconn: resilient client connections on ReactiveX and aiohttp.

One :class:`Connection` holds exactly one live link (a WebSocket, or HTTP:
Server-Sent Events down and batched POSTs up), reconnects with backoff,
detects dead links, buffers what is sent while no link is up, and exposes its
state and messages as observables.
"""

from __future__ import annotations

import logging

from . import aio, diagnostics, errors, quality, receipts, states, testing, transport
from ._core._fallback import Fallback, fallback
from ._shortcuts import connection
from .aio.httplink import http
from .aio.longpoll import longpoll
from .aio.websocket import websocket
from .backoff import Backoff
from .connection import Connection
from .diagnostics import Diagnostic
from .errors import (
    BufferFullError,
    ConnectionClosedError,
    ConnectionLost,
    Dropped,
    Expired,
    InvalidURL,
    MessageTooLarge,
    OpenTimeout,
    ProtocolError,
    RetriesExhausted,
    RxconnError,
    SessionExpired,
    TransportError,
)
from .quality import LinkQuality
from .receipts import Delivered, Drop, Receipt
from .states import Connected, Connecting, Disconnected, Errored, State
from .transport import Link, LinkContext, Transport


__version__ = "0.1.0.dev0"

# A library adds no output of its own: an app that configured no logging must not
# get rxconn's warnings on stderr (the "last resort" handler). Apps opt in as usual.
logging.getLogger("rxconn").addHandler(logging.NullHandler())

__all__ = [
    "Backoff",
    "BufferFullError",
    "Connected",
    "Connecting",
    "Connection",
    "ConnectionClosedError",
    "ConnectionLost",
    "Delivered",
    "Diagnostic",
    "LinkQuality",
    "Disconnected",
    "Drop",
    "Dropped",
    "Errored",
    "Expired",
    "Fallback",
    "InvalidURL",
    "MessageTooLarge",
    "Link",
    "LinkContext",
    "OpenTimeout",
    "ProtocolError",
    "Receipt",
    "RetriesExhausted",
    "RxconnError",
    "SessionExpired",
    "State",
    "Transport",
    "TransportError",
    "aio",
    "connection",
    "diagnostics",
    "quality",
    "errors",
    "fallback",
    "http",
    "longpoll",
    "receipts",
    "states",
    "testing",
    "transport",
    "websocket",
]
