"""FallbackMemory: what a fallback remembers for one period of interest.

It lives in ``LinkContext.memory`` (one dict per period of interest, shared by
every pass of the chain, every probe and every upgrade of that period), so new
interest starts with a fresh memory and walks the whole chain again.

Three things are remembered:

* **Where a reconnect starts.** Only while the preferred (first) transport has
  *never opened* during this interest does a reconnect skip the transports
  before the one that last carried a link: WebSocket blocked by a proxy must
  not cost the fallback timeout again on every reconnect. Once the preferred
  transport has opened, even once, it is known to work here, so a later cut is
  probably transient and every reconnect starts from the top of the chain
  again (the rule Phoenix adopted in phoenixframework/phoenix#5741: memorise
  the fallback only if the primary transport never connected).
* **Where the hub refused the session.** A pass that failed with
  ``SessionExpired`` (410: the hub answered, it only forgot the session) makes
  the next pass start on that same transport, once, whatever the rule above
  says: the new session is opened where the hub was just reached.
* **How long to wait before the next upgrade probe.** Each setback (a pass
  that had to fall back, a probe round or switch that did not reach the
  preferred transport) doubles the interval, up to the cap; once a link of
  the preferred transport has held for the base interval, it is reset.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..transport import LinkContext


__all__ = ["FallbackMemory"]


@dataclass(slots=True)
class FallbackMemory:
    """One fallback's memory for one period of interest.

    Attributes:
        preferred_opened: A link of the first transport opened (as the
            active link of a pass, or adopted by an upgrade) during this
            interest. Probes do not count: they carry no messages.
        resume_at: The index of the transport whose link opened last; a
            reconnect starts there while ``preferred_opened`` is false. A pass
            in which every transport failed resets it to 0.
        setbacks: Fall-backs and unsuccessful probe rounds since a link of
            the preferred transport last held; the exponent of the probe
            interval (the first setback waits the base interval).
        session_retry: The index of the transport whose pass just failed with
            ``SessionExpired``; the next pass starts there (then it is cleared).
    """

    preferred_opened: bool = False
    resume_at: int = 0
    setbacks: int = 0
    session_retry: int | None = None

    @classmethod
    def of(cls, context: LinkContext, key: str) -> FallbackMemory:
        """The memory kept under ``key`` in ``context.memory``, created on first use."""
        memory = context.memory.get(key)
        if not isinstance(memory, cls):
            memory = context.memory[key] = cls()
        return memory

    def next_start(self) -> int:
        """Where the next pass along the chain starts (see the module docstring).

        Called once per pass: it uses up a pending ``session_retry``.
        """
        if self.session_retry is not None:
            index, self.session_retry = self.session_retry, None
            return index
        return 0 if self.preferred_opened else self.resume_at

    def opened(self, index: int) -> None:
        """A link of transport ``index`` opened and became the active link."""
        if index == 0:
            self.preferred_opened = True
        self.resume_at = index

    def session_expired(self, index: int) -> None:
        """Transport ``index`` failed the pass with ``SessionExpired``: retry there next."""
        self.session_retry = index

    def exhausted(self) -> None:
        """Every transport of a pass failed to open: the next pass walks the whole chain."""
        self.resume_at = 0

    def setback(self) -> None:
        """A fall-back, or a probe round or switch that did not reach the preferred transport."""
        self.setbacks += 1

    def settled(self) -> None:
        """A link of the preferred transport held: probe at the base interval again."""
        self.setbacks = 0

    def probe_interval(self, base: float, cap: float) -> float:
        """Seconds before the next probe round: ``base`` doubled per setback after the first."""
        return min(cap, base * 2.0 ** max(self.setbacks - 1, 0))
