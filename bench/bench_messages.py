"""Per-item cost of the ``conn.messages`` multicast, against a plain Python call (a script).

What it measures (ns per item, best of several interleaved rounds, gc off while timing):

* (a) ``cb(x)`` in a loop: the baseline every ratio is computed against;
* (b) ``Multicast.emit(x)`` (``rxconn._multicast``) with 1, 2 and 4 subscribers
  attached with ``.observable.subscribe(cb)``;
* (c) the whole receive path of a :class:`rxconn.Connection`: payloads pushed
  into a connected :class:`rxconn.testing.FakeTransport` link (under a
  ``TestScheduler``) with ``link.push(payload)``, reaching
  ``conn.messages.subscribe(cb)`` through the connection's pipeline
  (announce, idle_timeout, retry_with_backoff, ``Connection._on_event``);
  (c') the same path entered through the link observer's ``on_next``, as the
  WebSocket reader does (without ``FakeLink.push``'s own call);
* (d) a reactivex ``Subject`` with 1, 2 and 4 subscribers, for comparison.

``cb`` does nothing, so each ratio is "how many plain calls' worth of time one
item costs". The target (from the issue): with one subscriber ``Multicast.emit``
costs about one extra call over ``cb(x)`` (ratio ~2x), far below a ``Subject``;
the Connection path should stay a small constant number of calls per message.
Run from the repository root::

    python bench/bench_messages.py
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reactivex.subject import Subject  # noqa: E402
from reactivex.testing import TestScheduler  # noqa: E402

import rxconn  # noqa: E402
from rxconn._multicast import Multicast  # noqa: E402
from rxconn.testing import FakeTransport  # noqa: E402


N = 200_000
ROUNDS = 7
PAYLOAD = "x" * 100


def cb(_: object) -> None:
    """The subscriber: does nothing, so only the delivery is timed."""


# Each case is a setup returning (run, teardown); run() pushes N items and is timed.
Case = Callable[[], tuple[Callable[[], None], Callable[[], None]]]


def _nothing() -> None:
    pass


def case_loop() -> tuple[Callable[[], None], Callable[[], None]]:
    items = [PAYLOAD] * N

    def run() -> None:
        for _ in items:
            pass

    return run, _nothing


def case_call() -> tuple[Callable[[], None], Callable[[], None]]:
    items = [PAYLOAD] * N
    f = cb

    def run() -> None:
        for x in items:
            f(x)

    return run, _nothing


def case_multicast(subscribers: int) -> Case:
    def setup() -> tuple[Callable[[], None], Callable[[], None]]:
        items = [PAYLOAD] * N
        m: Multicast[str] = Multicast("bench")
        subs = [m.observable.subscribe(cb) for _ in range(subscribers)]

        def run() -> None:
            for x in items:
                m.emit(x)

        def teardown() -> None:
            for s in subs:
                s.dispose()

        return run, teardown

    return setup


def case_subject(subscribers: int) -> Case:
    def setup() -> tuple[Callable[[], None], Callable[[], None]]:
        items = [PAYLOAD] * N
        s: Subject[str] = Subject()
        subs = [s.subscribe(cb) for _ in range(subscribers)]

        def run() -> None:
            for x in items:
                s.on_next(x)

        def teardown() -> None:
            for d in subs:
                d.dispose()
            s.dispose()

        return run, teardown

    return setup


def _connected() -> tuple[rxconn.Connection, Any, Any]:
    scheduler = TestScheduler()
    transport = FakeTransport("websocket", "o")
    conn = rxconn.Connection(transport, scheduler=scheduler)
    sub = conn.messages.subscribe(cb)
    scheduler.advance_by(1)
    state = conn.current_state
    if state.kind != "connected" or len(transport.links) != 1:
        raise RuntimeError(f"the fake link did not open: {state!r}")
    return conn, sub, transport.links[0]


def case_connection() -> tuple[Callable[[], None], Callable[[], None]]:
    items = [PAYLOAD] * N
    conn, sub, link = _connected()

    def run() -> None:
        for x in items:
            link.push(x)

    def teardown() -> None:
        sub.dispose()
        conn.close()

    return run, teardown


def case_connection_observer() -> tuple[Callable[[], None], Callable[[], None]]:
    items = [PAYLOAD] * N
    conn, sub, link = _connected()
    on_next = link._observer.on_next  # noqa: SLF001  (what the WebSocket reader calls)

    def run() -> None:
        for x in items:
            on_next(x)

    def teardown() -> None:
        sub.dispose()
        conn.close()

    return run, teardown


def call_chain() -> list[str]:
    """The Python functions one message runs through on path (c'), in call order."""
    conn, sub, link = _connected()
    on_next = link._observer.on_next  # noqa: SLF001
    calls: list[str] = []

    def profile(frame: Any, event: str, _: Any) -> None:
        if event == "call":
            code = frame.f_code
            module = Path(code.co_filename).stem
            name = code.co_qualname.replace(".<locals>", "")
            calls.append(f"{module}:{code.co_firstlineno} {name}")

    sys.setprofile(profile)
    try:
        on_next(PAYLOAD)
    finally:
        sys.setprofile(None)
    sub.dispose()
    conn.close()
    return calls


def check_delivery() -> None:
    """Prove that each measured path really delivers each item once, in order."""
    got: list[str] = []
    m: Multicast[str] = Multicast("check")
    d = m.observable.subscribe(got.append)
    m.emit("1")
    d.dispose()
    scheduler = TestScheduler()
    transport = FakeTransport("websocket", "o")
    conn = rxconn.Connection(transport, scheduler=scheduler)
    d = conn.messages.subscribe(got.append)
    scheduler.advance_by(1)
    transport.links[0].push("2")
    transport.links[0]._observer.on_next("3")  # noqa: SLF001
    d.dispose()
    conn.close()
    if got != ["1", "2", "3"]:
        raise RuntimeError(f"delivery check failed: {got!r}")


CASES: dict[str, Case] = {
    "empty loop (for x in items: pass)": case_loop,
    "(a) plain call cb(x)": case_call,
    "(b) Multicast.emit, 1 subscriber": case_multicast(1),
    "(b) Multicast.emit, 2 subscribers": case_multicast(2),
    "(b) Multicast.emit, 4 subscribers": case_multicast(4),
    "(c) Connection: FakeLink.push -> messages": case_connection,
    "(c') Connection: link observer.on_next": case_connection_observer,
    "(d) Subject.on_next, 1 subscriber": case_subject(1),
    "(d) Subject.on_next, 2 subscribers": case_subject(2),
    "(d) Subject.on_next, 4 subscribers": case_subject(4),
}
BASELINE = "(a) plain call cb(x)"


def measure() -> dict[str, float]:
    """Best ns/item of each case over ROUNDS rounds; the cases are interleaved in each round."""
    best = {name: float("inf") for name in CASES}
    gc_was_enabled = gc.isenabled()
    for _ in range(ROUNDS):
        for name, setup in CASES.items():
            run, teardown = setup()
            run()  # warm up
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter_ns()
                run()
                elapsed = time.perf_counter_ns() - start
            finally:
                if gc_was_enabled:
                    gc.enable()
            teardown()
            best[name] = min(best[name], elapsed / N)
    return best


def main() -> None:
    check_delivery()
    print(f"Python {sys.version.split()[0]}, {N:,} items per run, best of {ROUNDS} rounds")
    best = measure()
    base = best[BASELINE]
    width = max(map(len, CASES))
    print(f"{'case':<{width}}  {'ns/item':>8}  {'vs (a)':>7}  {'over (a)':>9}")
    for name, ns in best.items():
        print(f"{name:<{width}}  {ns:>8.1f}  {ns / base:>6.2f}x  {ns - base:>+7.1f}ns")
    print()
    one = best["(b) Multicast.emit, 1 subscriber"]
    print(f"Multicast(1) / plain call         = {one / base:.2f}x")
    subject = best["(d) Subject.on_next, 1 subscriber"]
    print(f"Subject(1) / Multicast(1)          = {subject / one:.2f}x")
    full = best["(c) Connection: FakeLink.push -> messages"]
    print(f"Connection path / plain call       = {full / base:.2f}x")
    print(f"Connection path / Multicast(1)     = {full / one:.2f}x")
    chain = call_chain()
    direct = best["(c') Connection: link observer.on_next"]
    print()
    each = direct / len(chain)
    print(f"Python calls per message on path (c'): {len(chain)} (~{each:.0f} ns each)")
    for step in chain:
        print(f"  {step}")


if __name__ == "__main__":
    main()
