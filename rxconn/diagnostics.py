"""Diagnostic: one thing a connection did, as an item of ``Connection.diagnostics``.

States say *where* a connection is; diagnostics say *why it got there*: a retry
and its delay, a server's advice honoured, a fallback, upgrade probes and
switches, a new hub session, payloads dropped or expired. They are values
(frozen, comparable), built only when something happened, never per message.

Sans-I/O: the standard library only, so that the core, the adapters and the
user's own code can all name these values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, get_args


__all__ = ["DIAGNOSTIC_KINDS", "Diagnostic", "DiagnosticKind", "diagnostic"]

DiagnosticKind: TypeAlias = Literal[
    "retry_scheduled",
    "probe_started",
    "probe_failed",
    "upgraded",
    "fell_back",
    "session_reset",
    "dropped",
    "expired",
    "server_advice",
]

DIAGNOSTIC_KINDS: Final[frozenset[str]] = frozenset(get_args(DiagnosticKind))
"""Every ``Diagnostic.kind`` (the contract's list; no other kind is ever emitted)."""

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """Something the connection did, and the facts that explain it.

    Attributes:
        kind: What happened; one of :data:`DIAGNOSTIC_KINDS` (see
            ``docs/lifecycle.md``, "Diagnostics", for when each is emitted).
        transport: The transport it concerns (``"websocket"``, ``"http"``, …):
            the one whose attempt failed, that was probed, switched or fallen
            back *to*, or the connection's current one (session and outbox kinds).
        detail: A small read-only mapping of facts, with fixed keys per kind
            (``delay`` and ``attempt`` in seconds and counts, ``error`` an
            exception, ``from`` a transport name, …). Never headers, keys or
            payloads: a diagnostic is safe to log as it is.
    """

    kind: DiagnosticKind
    transport: str
    detail: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __hash__(self) -> int:  # detail may hold unhashable values: equal items share these
        return hash((self.kind, self.transport))

    def __str__(self) -> str:
        facts = " ".join(f"{key}={value}" for key, value in self.detail.items())
        return f"{self.kind} ({self.transport}){' ' + facts if facts else ''}"

    def __repr__(self) -> str:
        return f"Diagnostic({self.kind!r}, {self.transport!r}, {dict(self.detail)!r})"


def diagnostic(kind: DiagnosticKind, transport: str, **detail: Any) -> Diagnostic:
    """Build a :class:`Diagnostic` whose ``detail`` (the keyword arguments) is read-only."""
    return Diagnostic(kind, transport, MappingProxyType(detail) if detail else _EMPTY)
