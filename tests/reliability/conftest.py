"""Fixtures for the reliability suite: a hub on 127.0.0.1 behind a fault-injection proxy.

CI runs a fast subset; ``RXCONN_LONG=1 python -m pytest tests/reliability`` scales every
count and duration up (see :data:`LONG`). Every test ends with the suite's leak check
(``tests/conftest.py``): no rxconn task may outlive it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest_asyncio

from rxconn.server import Hub, Server, serve
from tests.proxy import FaultProxy


LONG = os.environ.get("RXCONN_LONG") == "1"
"""True for the long run (``RXCONN_LONG=1``): more messages, more cycles, longer chaos."""


@pytest_asyncio.fixture
async def hub() -> Hub:
    """A hub with short timers (tests may flip ``hub.echo`` before connecting)."""
    return Hub(ping_interval=0.5, session_grace=30.0)


@pytest_asyncio.fixture
async def server(hub: Hub) -> AsyncIterator[Server]:
    """``hub`` served on a free loopback port."""
    async with serve(hub, "127.0.0.1", 0) as running:
        yield running


@pytest_asyncio.fixture
async def proxy(server: Server) -> AsyncIterator[FaultProxy]:
    """A :class:`~tests.proxy.FaultProxy` on 127.0.0.1 in front of ``server``."""
    async with FaultProxy("127.0.0.1", server.port) as running:
        yield running
