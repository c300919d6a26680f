"""Connection states: small frozen values, cheap to compare and to read.

``Disconnected`` → ``Connecting`` → ``Connected`` → (``Errored`` → ``Connecting`` …).
See ``docs/lifecycle.md`` for the full diagram.

The classes declare ``__slots__`` by hand instead of ``dataclass(slots=True)``:
that option builds a new class, and the frozen ``__setattr__`` generated for
the old one then fails with a confusing ``TypeError`` for any name that is not
a field (``state.kind = …``). Declared this way, every assignment raises
``dataclasses.FrozenInstanceError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias

from .errors import RxconnError


__all__ = ["Connected", "Connecting", "Disconnected", "Errored", "State"]


class _Frozen:
    """Pickling for frozen, slotted states (the default would assign attributes)."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        names: tuple[str, ...] = type(self).__slots__
        return type(self), tuple(getattr(self, name) for name in names)


@dataclass(frozen=True)
class Disconnected(_Frozen):
    """No link and no attempt under way: nothing holds interest, or the connection is closed."""

    __slots__ = ()
    kind: ClassVar[Literal["disconnected"]] = "disconnected"


@dataclass(frozen=True)
class Connecting(_Frozen):
    """Opening a link over ``transport``; ``attempt`` is 0 for the first try after interest."""

    __slots__ = ("transport", "attempt")

    transport: str
    attempt: int
    kind: ClassVar[Literal["connecting"]] = "connecting"


@dataclass(frozen=True)
class Connected(_Frozen):
    """A link over ``transport`` is open and carries messages."""

    __slots__ = ("transport",)

    transport: str
    kind: ClassVar[Literal["connected"]] = "connected"


@dataclass(frozen=True)
class Errored(_Frozen):
    """Attempt ``attempt`` failed with ``error``.

    ``retry_in`` is the wait in seconds before the next attempt, or ``None``
    when rxconn gave up (fatal error or ``RetriesExhausted``); then only new
    interest tries again.
    """

    __slots__ = ("error", "attempt", "retry_in")

    error: RxconnError
    attempt: int
    retry_in: float | None
    kind: ClassVar[Literal["errored"]] = "errored"


State: TypeAlias = Disconnected | Connecting | Connected | Errored
