"""FrameWriter: the one task that writes to a WebSocket, at either end of a link.

Both the client's link and the hub's endpoint write the same way: the newest
pending acknowledgement first (acknowledgements are cumulative, so older ones
are dropped), then the data messages that are due, in order, as binary frames
or text frames (tagged ``m`` under ``rxconn.v1``). Subclasses say what is due
and learn what was written; aiohttp's client and server WebSockets share the
``send_str``/``send_bytes`` API this needs.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Protocol

from .. import wire
from .._types import Payload


__all__ = ["FrameWriter", "Sink"]


class Sink(Protocol):
    """What FrameWriter needs of a WebSocket (aiohttp's client and server ones)."""

    async def send_str(self, data: str) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...


class FrameWriter(ABC):
    """Writes acknowledgements and due data to ``ws``; run :meth:`run` as the link's writer."""

    def __init__(self, ws: Sink, v1: bool) -> None:
        self._ws = ws
        self.v1 = v1
        """Tag text data with ``m`` (``rxconn.v1``); may be set until :meth:`run` starts."""
        self._ack: str | None = None
        self._wake = asyncio.Event()
        self.stopped = False

    def ack(self, seq: int) -> None:
        """Acknowledge every message up to ``seq``, ahead of data (replaces an unsent ack)."""
        self._ack = wire.encode_ack(seq)
        self._wake.set()

    def wake(self) -> None:
        """Data is due: write it."""
        self._wake.set()

    def stop(self) -> None:
        """Write nothing more; :meth:`run` returns."""
        self.stopped = True
        self._wake.set()

    @abstractmethod
    def due(self) -> Iterable[tuple[int, Payload]]:
        """The numbered messages to write now, oldest first (consumed lazily)."""

    def written(self, seq: int) -> None:  # noqa: B027 (an optional hook: no-op by default)
        """Message ``seq`` went out (the socket took it)."""

    def flushed(self) -> None:  # noqa: B027 (an optional hook: no-op by default)
        """A run of writes ended (also when a write failed part-way)."""

    async def run(self) -> None:
        ws, v1, tag = self._ws, self.v1, wire.TAG_MESSAGE
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.stopped:
                return
            if self._ack is not None:
                frame, self._ack = self._ack, None
                await ws.send_str(frame)
            try:
                for seq, payload in self.due():
                    if type(payload) is bytes:
                        await ws.send_bytes(payload)
                    elif v1:
                        await ws.send_str(tag + payload)  # type: ignore[operator]
                    else:
                        await ws.send_str(payload)  # type: ignore[arg-type]
                    self.written(seq)
                    if self._ack is not None or self.stopped:
                        self._wake.set()  # the ack goes first; the rest follows it
                        break
            finally:
                self.flushed()
