"""Connection states: small frozen values, cheap to compare and to read.

``Disconnected`` → ``Connecting`` → ``Connected`` → (``Errored`` → ``Connecting`` …).
See ``docs/lifecycle.md`` for the full diagram.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, TypeAlias

from .errors import RxconnError


__all__ = ["Connected", "Connecting", "Disconnected", "Errored", "State"]


@dataclass(frozen=True, slots=True)
class Disconnected:
    """No link and no attempt under way: nothing holds interest, or the connection is closed."""

    kind: ClassVar[Literal["disconnected"]] = "disconnected"


@dataclass(frozen=True, slots=True)
class Connecting:
    """Opening a link over ``transport``; ``attempt`` is 0 for the first try after interest."""

    transport: str
    attempt: int
    kind: ClassVar[Literal["connecting"]] = "connecting"


@dataclass(frozen=True, slots=True)
class Connected:
    """A link over ``transport`` is open and carries messages."""

    transport: str
    kind: ClassVar[Literal["connected"]] = "connected"


@dataclass(frozen=True, slots=True)
class Errored:
    """Attempt ``attempt`` failed with ``error``.

    ``retry_in`` is the wait in seconds before the next attempt, or ``None``
    when rxconn gave up (fatal error or ``RetriesExhausted``); then only new
    interest tries again.
    """

    error: RxconnError
    attempt: int
    retry_in: float | None
    kind: ClassVar[Literal["errored"]] = "errored"


State: TypeAlias = Disconnected | Connecting | Connected | Errored
