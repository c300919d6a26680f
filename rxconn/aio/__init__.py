"""aiohttp adapters: thin transports where each subscription owns one link task."""

from __future__ import annotations

from ._tasks import TASKS, drain


__all__ = ["TASKS", "drain"]
