"""Link quality from heartbeat round trips: ``LinkQuality`` and its sans-I/O estimator.

A link times its own heartbeats and reports each as a :class:`RoundTrip` link
event: over WebSocket, rxconn's ping and the server's pong; over HTTP and long
polling, a small POST (the acknowledgement POST, or a heartbeat POST when the
link is otherwise idle) and the hub's answer. Nothing is done per message.
:class:`QualityEstimator` turns the samples into :class:`LinkQuality` values,
smoothed as RTP does (RFC 3550, §6.4.1): the average moves 1/8 of the way to
each sample, the jitter 1/16 of the way to each sample's deviation from it.
"""

from __future__ import annotations

from dataclasses import dataclass


__all__ = ["LinkQuality", "QualityEstimator", "RoundTrip"]


@dataclass(frozen=True, slots=True)
class LinkQuality:
    """The active link's round trips, in seconds.

    Attributes:
        transport: The link's transport (``"websocket"``, ``"http"``, ``"longpoll"``).
        rtt: The latest round trip.
        rtt_avg: Its smoothed average (since this link opened).
        jitter: The smoothed deviation of round trips from the average.
        missed: Heartbeats without an answer in time, since this link opened.
    """

    transport: str
    rtt: float
    rtt_avg: float
    jitter: float
    missed: int


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """A link event: one timed heartbeat (``rtt`` in seconds), or a missed one (``None``)."""

    rtt: float | None


class QualityEstimator:
    """Smoothed round-trip statistics of one link; reset when a new link opens."""

    __slots__ = ("_avg", "_jitter", "_last", "_missed", "transport")

    def __init__(self, transport: str = "") -> None:
        self.reset(transport)

    def reset(self, transport: str) -> None:
        """Start over for a new link of ``transport``."""
        self.transport = transport
        self._avg: float | None = None
        self._jitter = 0.0
        self._last = 0.0
        self._missed = 0

    def add(self, sample: RoundTrip) -> LinkQuality | None:
        """Take one round trip; the quality now, or None before the first answered one."""
        rtt = sample.rtt
        if rtt is None:
            self._missed += 1
        elif self._avg is None:
            self._avg, self._last = rtt, rtt
        else:
            self._jitter += (abs(rtt - self._avg) - self._jitter) / 16
            self._avg += (rtt - self._avg) / 8
            self._last = rtt
        if self._avg is None:
            return None
        return LinkQuality(self.transport, self._last, self._avg, self._jitter, self._missed)
