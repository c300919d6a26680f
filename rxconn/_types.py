"""Small shared types with no dependencies (usable by the sans-I/O layer)."""

from __future__ import annotations

from typing import TypeAlias


__all__ = ["Payload"]

Payload: TypeAlias = str | bytes
"""A message: text as ``str``, binary as ``bytes``."""
