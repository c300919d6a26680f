"""Fallback: try transports in order, and upgrade back to the preferred one when it works.

One subscription is one attempt, assembled from three parts:

* :mod:`~rxconn._core._chain`: one pass along the chain (``catch`` over the
  transports, each but the last with ``timeout`` seconds to open; errors after
  a link opened carried past ``catch`` as values; a pass that fails entirely
  fails with the last error, noted with why each earlier transport failed);
* :mod:`~rxconn._core._upgrade`: the active link as the latest inner stream of
  ``switch_latest``, and, while it is not the preferred transport's, probe
  rounds with backoff and make-before-break switches to a verified better
  transport (the first one, or, from the third, the second);
* :mod:`~rxconn._core._memory`: what one period of interest remembers
  (``LinkContext.memory``). A reconnect skips the transports before the one
  that last worked only while the preferred transport has never opened during
  this interest (WebSocket blocked by a proxy: don't pay the timeout on every
  reconnect); once it has opened, every reconnect starts from the top. After
  a ``SessionExpired`` the next pass starts on the transport that reached the
  hub. New interest starts from the top too.
"""

from __future__ import annotations

from collections.abc import Sequence

from reactivex import Observable, abc

from ..transport import LinkContext, LinkEvent, SizedTransport, Transport
from ._chain import FAILED_FIRST, one_pass_
from ._memory import FallbackMemory
from ._upgrade import Upgrades


__all__ = ["FAILED_FIRST", "Fallback", "fallback"]


class Fallback:
    """A transport that tries several in order and upgrades back; see the module docstring.

    Build it with :func:`fallback`.
    """

    def __init__(
        self,
        transports: Sequence[Transport],
        *,
        timeout: float = 2.0,
        upgrade_interval: float | None = 30.0,
        max_upgrade_interval: float = 300.0,
    ) -> None:
        if not transports:
            raise ValueError("fallback() needs at least one transport")
        for transport in transports:
            if not isinstance(transport, Transport):
                raise TypeError(f"not a transport: {transport!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        if upgrade_interval is not None and not upgrade_interval > 0:
            raise ValueError(f"upgrade_interval must be > 0 or None, got {upgrade_interval!r}")
        self.transports = tuple(transports)
        self.timeout = timeout
        self.upgrade_interval = upgrade_interval
        self.max_upgrade_interval = max(max_upgrade_interval, upgrade_interval or 0.0)
        limits = [t.max_send_size for t in transports if isinstance(t, SizedTransport)]
        sizes = [limit for limit in limits if isinstance(limit, int)]
        self.max_send_size: int | None = min(sizes) if sizes else None
        self._key = f"fallback:{id(self)}"

    @property
    def name(self) -> str:
        return "fallback"

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transports)
        return (
            f"fallback({inner}, timeout={self.timeout}, upgrade_interval={self.upgrade_interval})"
        )

    def open(
        self, scheduler: abc.SchedulerBase, context: LinkContext | None = None
    ) -> Observable[LinkEvent]:
        """A cold observable: each subscription is one attempt, one pass along the chain.

        The pass starts where this period of interest's memory says; its link
        becomes the active link, which upgrades may replace.
        """
        ctx = context if context is not None else LinkContext()

        def subscribe(
            observer: abc.ObserverBase[LinkEvent], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            memory = FallbackMemory.of(ctx, self._key)
            start = memory.next_start()
            upgrades = Upgrades(
                self.transports,
                timeout=self.timeout,
                interval=self.upgrade_interval,
                max_interval=self.max_upgrade_interval,
                scheduler=scheduler,
                context=ctx,
                memory=memory,
                observer=observer,
            )

            def opened(index: int) -> None:
                if start == 0 and index > 0:
                    memory.setback()  # fell back: probes start from a longer interval
                upgrades.activate(index)

            first = one_pass_(
                self.transports,
                start,
                timeout=self.timeout,
                scheduler=scheduler,
                context=ctx,
                on_opened=opened,
                on_exhausted=memory.exhausted,
                on_expired=memory.session_expired,
            )
            return upgrades.run(first)

        return Observable(subscribe)


def fallback(
    *transports: Transport,
    timeout: float = 2.0,
    upgrade_interval: float | None = 30.0,
    max_upgrade_interval: float = 300.0,
) -> Fallback:
    """Try ``transports`` in order; upgrade back to the first while on a later one.

    A reconnect skips the transports before the one that last worked only while
    the first has never opened during the current period of interest; once it
    has, every reconnect starts from the top. While on a later transport, each
    probe round probes the transports preferred to the active one, best first,
    and switches (make-before-break) to the first one verified.

    Args:
        transports: In order of preference (e.g. ``websocket(...)``, ``http(...)``).
        timeout: Seconds each but the last may take to open before the next is
            tried; also the time a probe or an upgrade link gets to open.
        upgrade_interval: Seconds between probe rounds while on a later
            transport (``None``: never upgrade); doubles after each round
            that did not reach the first transport and after each fall-back,
            up to ``max_upgrade_interval``, and returns to the base once a
            link of the first transport held for ``upgrade_interval``.
        max_upgrade_interval: Cap on the probe interval.

    Returns:
        A :class:`~rxconn.transport.Transport` named ``"fallback"``; states
        name the transport of the active link.
    """
    return Fallback(
        transports,
        timeout=timeout,
        upgrade_interval=upgrade_interval,
        max_upgrade_interval=max_upgrade_interval,
    )
