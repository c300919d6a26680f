"""The reconnect schedule: policy as data, no timers (those live in the core).

Delay *n* (after failed attempt *n*, counting from 0) is
``min(max_delay, initial * factor**n)`` scaled by a random factor in
``[1 - jitter, 1 + jitter]``. The schedule starts over only once a link has
stayed connected for ``stable_after`` seconds, so a server that accepts and
then drops at once is retried at growing intervals rather than in a storm.
A delay the server advised (``Retry-After``, close 1012/1013, SSE ``retry:``)
replaces the computed one for that retry.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter, a cap, an optional attempt limit and a stability rule.

    Args:
        initial: Delay after the first failure, in seconds.
        factor: Growth factor per failed attempt.
        max_delay: Cap on the computed delay, in seconds.
        jitter: Relative spread of the random factor (0 disables jitter).
        max_attempts: Give up after this many failed attempts in a row
            (``None``: retry forever; 1: never retry).
        stable_after: Seconds a link must stay connected before the schedule
            starts over from ``initial``.
        rng: Source of randomness for the jitter; pass ``random.Random(seed)``
            for reproducible schedules in tests.
    """

    initial: float = 0.1
    factor: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.2
    max_attempts: int | None = None
    stable_after: float = 2.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.initial >= 0 and math.isfinite(self.initial)):
            raise ValueError(f"initial must be a finite delay >= 0, got {self.initial!r}")
        if not self.factor >= 1:
            raise ValueError(f"factor must be >= 1, got {self.factor!r}")
        if not self.max_delay >= 0:
            raise ValueError(f"max_delay must be >= 0, got {self.max_delay!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter!r}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {self.max_attempts!r}")
        if not self.stable_after >= 0:
            raise ValueError(f"stable_after must be >= 0, got {self.stable_after!r}")

    def base_delay(self, attempt: int) -> float:
        """The delay after failed attempt ``attempt`` before jitter, capped at ``max_delay``."""
        # Compare in log space so that huge attempt numbers cannot overflow.
        if self.initial == 0:
            return 0.0
        if self.factor > 1 and attempt * math.log(self.factor) > math.log(
            max(self.max_delay, 1e-300) / self.initial
        ):
            return self.max_delay
        return min(self.max_delay, self.initial * self.factor**attempt)

    def delay(self, attempt: int) -> float:
        """The jittered delay after failed attempt ``attempt`` (0-based)."""
        base = self.base_delay(attempt)
        if self.jitter == 0 or base == 0:
            return base
        return base * self.rng.uniform(1 - self.jitter, 1 + self.jitter)

    def gives_up_after(self, attempt: int) -> bool:
        """True when failed attempt ``attempt`` (0-based) is the last one allowed."""
        return self.max_attempts is not None and attempt + 1 >= self.max_attempts
