"""Build the example notebooks from the cell sources below, and execute them.

The notebooks are generated so that they can be reviewed as code: edit the
cells here, then run ::

    python notebooks/_build.py                # build and execute them all
    python notebooks/_build.py 02             # only the notebooks whose name contains "02"
    python notebooks/_build.py --no-execute   # sources only (no outputs)

Each notebook is executed with nbclient on a ``python3`` kernel that runs
*this* interpreter (the one rxconn is installed in), with ``notebooks/`` as the
working directory, and written with its outputs. ``tests/test_notebooks.py``
executes the committed notebooks again and checks that their sources match
this file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from textwrap import dedent


HERE = Path(__file__).resolve().parent

Cell = tuple[str, str]
"""(cell type, source): ``("markdown", ...)`` or ``("code", ...)``."""


def md(text: str) -> Cell:
    return ("markdown", dedent(text).strip())


def code(text: str) -> Cell:
    return ("code", dedent(text).strip())


# --------------------------------------------------------------------------
# 01 - quickstart
# --------------------------------------------------------------------------

QUICKSTART: list[Cell] = [
    md(
        """
        # rxconn quickstart

        A `rxconn.Connection` holds one live link to a server (a WebSocket, or
        HTTP: Server-Sent Events down and POSTs up). Its **state** and its
        **messages** are ReactiveX observables.

        This notebook starts the reference hub in the notebook itself, connects
        to it, sends and receives, and watches the state. Everything runs on the
        notebook's own event loop, with top-level `await`: no threads,
        no `asyncio.run()`, no blocking `reactivex.run()`.
        """
    ),
    code(
        """
        import asyncio

        from reactivex import operators as ops

        import rxconn
        from rxconn.server import Hub, serve
        """
    ),
    md(
        """
        ## Start a hub

        `serve()` is an async context manager. A notebook cannot keep an
        `async with` block open across cells, so we enter it by hand here and
        leave it at the end of the notebook. `echo=True` makes the hub send
        every message back to the client that sent it.
        """
    ),
    code(
        """
        hub = Hub(echo=True)
        server_cm = serve(hub)  # 127.0.0.1, on a free port
        server = await server_cm.__aenter__()
        server.url
        """
    ),
    md(
        """
        ## Connect

        `rxconn.connection(url)` tries WebSocket first and falls back to HTTP.
        Creating a connection opens nothing: it connects while something is
        *interested* in it, i.e. subscribed to `state` or `messages`.
        """
    ),
    code(
        """
        conn = rxconn.connection(server.url)
        conn.current_state
        """
    ),
    code(
        """
        states = []  # every state, in order
        received = []  # every message, in order

        interest = [
            conn.state.subscribe(states.append),
            conn.messages.subscribe(received.append),
        ]
        states
        """
    ),
    md(
        """
        The first subscriber sees `Disconnected()`, then `Connecting(...)` at
        once, since the subscription itself is interest. An observable can be
        awaited (the result is its last item), so waiting for a state is one
        `await` on a filtered stream:
        """
    ),
    code(
        """
        async def first(observable, predicate, timeout=5.0):
            \"\"\"The first item of `observable` that satisfies `predicate`.\"\"\"
            async with asyncio.timeout(timeout):
                return await observable.pipe(ops.first(predicate))


        await first(conn.state, lambda s: s.kind == "connected")
        """
    ),
    code(
        """
        states
        """
    ),
    md(
        """
        ## Send and receive

        `send()` never blocks: the payload waits in the connection's outbox
        until the hub has acknowledged it. Text arrives as `str`, binary as
        `bytes`.

        To await replies, subscribe *before* sending (`ops.to_future()`
        subscribes at once and returns an `asyncio.Future`):
        """
    ),
    code(
        """
        replies = conn.messages.pipe(ops.take(3), ops.to_list(), ops.to_future())

        conn.send("hello")
        conn.send("world")
        conn.send(b"\\x00\\x01 binary")

        async with asyncio.timeout(5):
            print(await replies)
        """
    ),
    md(
        """
        The hub sees one session per client (not per link), with its own
        `messages`, and can push to it (`session.send`) or to every session
        (`hub.broadcast`):
        """
    ),
    code(
        """
        news = conn.messages.pipe(ops.take(2), ops.to_list(), ops.to_future())

        (session,) = hub.live_sessions
        print("the session's link:", session.transport)
        session.send("just for you")
        print("sessions reached:", hub.broadcast("news for everyone"))

        async with asyncio.timeout(5):
            print(await news)
        """
    ),
    md(
        """
        ## Receipts: every payload's fate

        `send()` returns a receipt: awaiting it gives `Delivered(...)` once the
        hub acknowledged the payload (or raises if it was dropped, expired, or
        the connection closed). Here the hub cuts every WebSocket link and
        refuses new ones, as a proxy that blocks WebSocket would: the
        connection falls back to HTTP, and every receipt still resolves, once,
        with the transport that delivered it.
        """
    ),
    code(
        """
        receipts = [conn.send(f"order {i}") for i in range(5)]
        hub.websocket_enabled = False
        print("cut:", await first(conn.state, lambda s: s != rxconn.Connected("websocket")))
        receipts += [conn.send(f"order {i}") for i in range(5, 10)]  # sent during the cut

        delivered = []
        async with asyncio.timeout(10):
            for receipt in receipts:
                delivered.append(await receipt)
        hub.websocket_enabled = True  # the fallback upgrades back to WebSocket later
        for receipt, outcome in zip(receipts, delivered, strict=True):
            print(f"{receipt.payload!r}: {outcome}")
        """
    ),
    md(
        """
        ## Time operators: stay on the event loop

        reactivex's time-based operators (`buffer_with_time`, `debounce`,
        `throttle_first`, ...) run their callbacks on a thread pool unless they
        are given a scheduler. `conn.scheduler` is the one the connection runs
        on (here an `AsyncIOScheduler` on the notebook's loop): pass it, and the
        callbacks stay on the event loop, with no threads.
        """
    ),
    code(
        """
        import threading


        batches = conn.messages.pipe(
            ops.buffer_with_time(0.5, scheduler=conn.scheduler),
            ops.filter(bool),  # skip the empty half-second windows
            ops.map(lambda batch: (batch, threading.current_thread().name)),
            ops.take(1),
            ops.to_future(),
        )
        for word in ("one", "two", "three"):
            conn.send(word)

        async with asyncio.timeout(5):
            batch, thread = await batches
        print(batch, "arrived on", thread)
        """
    ),
    md(
        """
        ## Interest drives the lifecycle

        Disposing the last subscription closes the link. Sends made meanwhile
        are not lost: they stay in the outbox, and go out as soon as something
        is interested again.
        """
    ),
    code(
        """
        for subscription in interest:
            subscription.dispose()
        print("no interest:", conn.current_state)

        conn.send("sent while nobody listens")
        print("after send():", conn.current_state)
        """
    ),
    code(
        """
        late = conn.messages.pipe(ops.take(1), ops.to_future())  # new interest: reconnects
        async with asyncio.timeout(5):
            print("received:", await late)
        print("take(1) completed, no interest left:", conn.current_state)
        """
    ),
    code(
        """
        received  # what the first subscription saw before it was disposed
        """
    ),
    md(
        """
        ## Clean up

        `close()` is final: it completes `state` and `messages`, and `send()`
        raises from then on. `rxconn.aio.drain()` waits until every link task
        has finished tearing down; then we leave `serve()`.
        """
    ),
    code(
        """
        conn.close()
        await rxconn.aio.drain()
        await server_cm.__aexit__(None, None, None)

        try:
            conn.send("too late")
        except rxconn.ConnectionClosedError as error:
            print("send() after close():", type(error).__name__)
        conn.current_state
        """
    ),
]


# --------------------------------------------------------------------------
# 02 - fallback and upgrade
# --------------------------------------------------------------------------

FALLBACK: list[Cell] = [
    md(
        """
        # Fallback to HTTP, and upgrade back

        Some proxies block WebSocket. An rxconn connection then falls back to
        HTTP (Server-Sent Events down, POSTs up) and, while on HTTP, keeps
        probing WebSocket; once a probe completes a round trip it opens a new
        WebSocket link *before* closing the HTTP one (make-before-break).

        The hub and the client keep a session across links and transports, so
        no message is lost or repeated during the switches. This notebook blocks
        WebSocket at the hub, as a proxy would, unblocks it, and checks that
        claim with a stream of numbered messages.
        """
    ),
    code(
        """
        %matplotlib inline

        import asyncio

        from plots import draw_state_timeline  # notebooks/plots.py: the matplotlib code
        from reactivex import operators as ops

        import rxconn
        from rxconn.server import Hub, serve


        hub = Hub(echo=True, ping_interval=1.0)
        server_cm = serve(hub)
        server = await server_cm.__aenter__()
        """
    ),
    md(
        """
        A connection with short timers, so that the whole story takes a few
        seconds: WebSocket gets `timeout=0.3` s to open before HTTP is tried,
        and while on HTTP a probe goes to WebSocket every 0.25 s (backing off
        to at most 0.5 s). This is what `rxconn.connection(url, ...)` builds,
        spelled out to set `max_upgrade_interval` too.
        """
    ),
    code(
        """
        both = rxconn.fallback(
            rxconn.websocket(server.url + "/ws"),
            rxconn.http(server.url + "/events"),
            timeout=0.3,
            upgrade_interval=0.25,
            max_upgrade_interval=0.5,
        )
        conn = rxconn.Connection(both, backoff=rxconn.Backoff(initial=0.05, jitter=0.0))

        loop = asyncio.get_running_loop()
        t0 = loop.time()


        def now():
            return round(loop.time() - t0, 3)


        timeline = []  # (time, state)
        received = []  # (time, payload, transport it arrived over)
        sent = []  # (time, payload)
        at_hub = []  # payloads as the hub received them
        marks = {}  # what we did, and when


        def on_message(payload):
            received.append((now(), payload, conn.current_state.transport))


        hub.sessions.subscribe(lambda session: session.messages.subscribe(at_hub.append))
        subscriptions = [
            conn.state.subscribe(lambda state: timeline.append((now(), state))),
            conn.messages.subscribe(on_message),
        ]


        async def reach(state, timeout=10.0):
            async with asyncio.timeout(timeout):
                await conn.state.pipe(ops.first(lambda s: s == state))
            return now()


        print("connected over websocket after", await reach(rxconn.Connected("websocket")), "s")
        """
    ),
    md(
        """
        Numbered messages, one every 20 ms, for the whole experiment. The hub
        echoes each one back.
        """
    ),
    code(
        """
        async def send_numbered(stop):
            n = 0
            while not stop.is_set():
                payload = f"m{n:04d}"
                conn.send(payload)
                sent.append((now(), payload))
                n += 1
                await asyncio.sleep(0.02)


        stop = asyncio.Event()
        sender = asyncio.create_task(send_numbered(stop))
        await asyncio.sleep(0.5)
        """
    ),
    md(
        """
        ## Block WebSocket

        `hub.websocket_enabled = False` closes open WebSocket links and answers
        new upgrades with 503, like a proxy that does not let WebSocket through.
        Losing the open link is an `Errored` state (with a short `retry_in`);
        the retry then finds WebSocket refused and moves on to HTTP within the
        same attempt: `Connecting("websocket", 1)` is followed directly by
        `Connecting("http", 1)`, since falling back is not an error.
        """
    ),
    code(
        """
        marks["WebSocket blocked"] = now()
        hub.websocket_enabled = False
        on_http = await reach(rxconn.Connected("http"))
        print(f"on http {on_http - marks['WebSocket blocked']:.2f} s later")
        await asyncio.sleep(1.0)
        """
    ),
    md(
        """
        ## Unblock it

        The next probe succeeds, and the connection upgrades back to WebSocket.
        """
    ),
    code(
        """
        marks["WebSocket unblocked"] = now()
        hub.websocket_enabled = True
        upgraded = await reach(rxconn.Connected("websocket"))
        print(f"back on websocket {upgraded - marks['WebSocket unblocked']:.2f} s later")
        await asyncio.sleep(0.5)
        """
    ),
    md(
        """
        ## Nothing lost, nothing repeated

        Stop sending, wait for the last echo, and compare both directions.
        """
    ),
    code(
        """
        stop.set()
        await sender
        async with asyncio.timeout(10):
            while len(received) < len(sent):
                await asyncio.sleep(0.05)

        payloads = [p for _, p in sent]
        assert at_hub == payloads, "the hub got every message once, in order"
        assert [m for _, m, _ in received] == payloads, "every echo came back once, in order"
        print(f"sent {len(sent)}, the hub received {len(at_hub)}, echoes received {len(received)}")
        for transport in ("websocket", "http"):
            count = sum(1 for *_, over in received if over == transport)
            print(f"echoes over {transport}: {count}")
        """
    ),
    code(
        """
        for t, state in timeline:
            print(f"{t:6.2f} s  {state}")
        """
    ),
    md(
        """
        ## The state timeline

        One band per state (the colour says which transport), the messages
        sent, and the echoes received, coloured by the transport they arrived
        over. Echoes sent while the link was being replaced arrive a little
        late, but they all arrive. (The drawing code is in `notebooks/plots.py`.)
        """
    ),
    code(
        """
        draw_state_timeline(timeline, sent, received, marks, end=now())
        """
    ),
    md(
        """
        ## Link quality over a changing delay

        `conn.quality` reports the active link's round trips, timed from its
        heartbeats (here rxconn's WebSocket ping every 0.25 s and the hub's
        pong; a pong later than that would count as a dead link): nothing per
        message, and subscribing opens no link. A small relay
        (`notebooks/delay.py`) adds a delay that changes every 1.5 s; the round
        trip follows it (twice the delay: once each way).
        """
    ),
    code(
        """
        from delay import DelayProxy  # notebooks/delay.py: a TCP relay with a settable delay
        from plots import draw_quality


        samples, delays = [], []
        async with DelayProxy(server.port) as relay:
            through = f"http://127.0.0.1:{relay.port}{server.prefix}/ws"
            measured = rxconn.Connection(rxconn.websocket(through, heartbeat=0.25))
            start = loop.time()
            watching = measured.quality.subscribe(
                lambda quality: samples.append((loop.time() - start, quality))
            )
            handle = measured.connect()
            for delay in (0.0, 0.04, 0.015, 0.06):  # the round trip stays under the heartbeat
                relay.delay = delay
                delays.append((loop.time() - start, delay))
                await asyncio.sleep(1.5)
            watching.dispose()
            handle.dispose()
            measured.close()  # (the clean-up below waits for its link to be torn down)
        print(samples[-1][1])
        draw_quality(samples, delays)
        """
    ),
    md("## Clean up"),
    code(
        """
        for subscription in subscriptions:
            subscription.dispose()
        conn.close()
        await rxconn.aio.drain()
        await server_cm.__aexit__(None, None, None)
        hub.live_sessions  # leaving serve() ended every session
        """
    ),
]


# --------------------------------------------------------------------------
# 03 - marble testing
# --------------------------------------------------------------------------

MARBLES: list[Cell] = [
    md(
        """
        # Marble-testing your pipeline against a flaky connection

        rxconn's core takes its time from a scheduler and talks to links only
        through the `Transport` protocol. So you can test *your* code built on
        a connection in virtual time, with no sockets: `rxconn.testing.FakeTransport`
        plays one marble script per link, and `reactivex.testing.TestScheduler`
        runs the clock.

        In a script each character is one second: `o` opens the link, `#` fails
        it, `|` closes it cleanly, `-` is nothing, other letters are received
        messages. A script that neither fails nor closes keeps the link open.
        """
    ),
    code(
        """
        %matplotlib inline
        from plots import draw_marbles, link_rows, recorded_row, state_marble, writes_row
        from reactivex import operators as ops
        from reactivex.testing import ReactiveTest, TestScheduler

        import rxconn
        from rxconn import Backoff, Connected, Connecting, Connection, Disconnected, Errored
        from rxconn.testing import FakeTransport


        on_next = ReactiveTest.on_next
        on_completed = ReactiveTest.on_completed
        subscribe = ReactiveTest.subscribe
        """
    ),
    md(
        """
        ## The pipeline under test

        Two small streams an application might build on a connection: an
        online indicator for the UI, and the messages, upper-cased.
        """
    ),
    code(
        """
        def online(conn):
            return conn.state.pipe(
                ops.map(lambda state: isinstance(state, Connected)),
                ops.distinct_until_changed(),
            )


        def shouted(conn):
            return conn.messages.pipe(ops.map(str.upper))
        """
    ),
    md(
        """
        ## Drawing marble diagrams

        `draw_marbles(title, rows, until)` (from `notebooks/plots.py`, next to
        this notebook) draws one line per stream. `link_rows(transport)` gives
        one line per fake link: its script, placed where the connection
        subscribed to it and cut where the connection disposed of it.
        `recorded_row(label, observer, marble)` draws what a `TestScheduler`
        observer recorded, `writes_row(transport)` when each payload was written
        to a link, and `state_marble(state)` names a state in one short marble.
        Values that occur at the same instant are grouped, as in `(a,b)`.
        """
    ),
    md(
        """
        ## 1. The first link fails, the second delivers

        The first WebSocket link fails after 2 s. The connection waits for its
        backoff (2 s, no jitter, so the test is exact), opens a second link
        that delivers `a`, `b`, `c`. A message sent at 1 s, while no link is
        open, waits in the outbox and is written to the second link as soon as
        it opens. At 14 s the application closes the connection.
        """
    ),
    code(
        """
        # One error instance, reused: exceptions compare by identity in the assertions.
        REFUSED = rxconn.ConnectionLost("websocket", "refused")

        scheduler = TestScheduler()
        ws = FakeTransport("websocket", "--#", "-o-a-b-c", error=REFUSED)
        conn = Connection(
            ws,
            backoff=Backoff(initial=2.0, jitter=0.0),
            idle_timeout=None,
            scheduler=scheduler,
        )

        states, is_online, messages = (scheduler.create_observer() for _ in range(3))
        conn.state.subscribe(states)
        online(conn).subscribe(is_online)
        shouted(conn).subscribe(messages)
        scheduler.schedule_absolute(1, lambda *_: conn.send("hi"))
        scheduler.schedule_absolute(14, lambda *_: conn.close())
        scheduler.advance_to(16)
        """
    ),
    code(
        """
        assert states.messages == [
            on_next(0, Disconnected()),
            on_next(0, Connecting("websocket", 0)),
            on_next(2, Errored(REFUSED, 0, 2.0)),
            on_next(4, Connecting("websocket", 1)),
            on_next(5, Connected("websocket")),
            on_next(14, Disconnected()),
            on_completed(14),
        ]
        assert is_online.messages == [
            on_next(0, False),
            on_next(5, True),
            on_next(14, False),
            on_completed(14),
        ]
        assert messages.messages == [
            on_next(7, "A"),
            on_next(9, "B"),
            on_next(11, "C"),
            on_completed(14),
        ]
        assert ws.subscriptions == [subscribe(0, 2), subscribe(4, 14)]
        assert [(w.time, w.link, w.payload) for w in ws.writes] == [(5, 1, "hi")]
        print("all assertions hold")
        """
    ),
    code(
        """
        draw_marbles(
            "First link fails, second opens and delivers; close() at 14 s",
            [
                *link_rows(ws),
                recorded_row("conn.state", states, state_marble),
                ("conn.send()", 0, None, [(1, "hi", None)]),
                writes_row(ws),
                recorded_row("online(conn)", is_online, lambda v: ("T" if v else "F", None)),
                recorded_row("shouted(conn)", messages),
            ],
            until=16,
        )
        """
    ),
    md(
        """
        `d` is `Disconnected()`, `c0` is `Connecting(attempt=0)`, `e0` is
        `Errored(attempt=0)`, `o` is `Connected`; the colour is the transport.
        Each link line runs from subscription to disposal, the teardown that
        `ws.subscriptions` proves: the first link is released when it fails,
        the second when `close()` runs. `hi`, sent at 1 s, is written when the
        second link opens at 5 s.

        ## 2. Fallback to HTTP and upgrade back

        Now a fallback: WebSocket is refused, HTTP opens and delivers `a` and
        `b`. After 6 s on HTTP the fallback probes WebSocket; the probe
        (link #1, which carries no messages) succeeds, so a real WebSocket link
        (#2) is opened, and only once it is open is the HTTP link disposed.
        """
    ),
    code(
        """
        WS_DOWN = rxconn.TransportError("websocket", "refused")

        scheduler = TestScheduler()
        # one script per link: the first attempt, the upgrade probe, the real link
        ws = FakeTransport("websocket", "-#", "-o", "-o-c-d", error=WS_DOWN)
        http = FakeTransport("http", "-o-a-b")
        conn = Connection(
            rxconn.fallback(ws, http, timeout=2.0, upgrade_interval=6.0),
            backoff=Backoff(initial=1.0, jitter=0.0),
            idle_timeout=None,
            scheduler=scheduler,
        )

        states, is_online, messages = (scheduler.create_observer() for _ in range(3))
        conn.state.subscribe(states)
        online(conn).subscribe(is_online)
        shouted(conn).subscribe(messages)
        scheduler.schedule_absolute(16, lambda *_: conn.close())
        scheduler.advance_to(17)
        """
    ),
    code(
        """
        assert states.messages == [
            on_next(0, Disconnected()),
            on_next(0, Connecting("websocket", 0)),
            on_next(1, Connecting("http", 0)),  # a fallback, not an Errored state
            on_next(2, Connected("http")),
            on_next(10, Connected("websocket")),
            on_next(16, Disconnected()),
            on_completed(16),
        ]
        assert is_online.messages == [
            on_next(0, False),
            on_next(2, True),
            on_next(16, False),
            on_completed(16),
        ]
        assert messages.messages == [
            on_next(4, "A"),
            on_next(6, "B"),
            on_next(12, "C"),
            on_next(14, "D"),
            on_completed(16),
        ]
        assert ws.subscriptions == [subscribe(0, 1), subscribe(8, 9), subscribe(9, 16)]
        assert http.subscriptions == [subscribe(1, 10)]  # make-before-break: released at 10, not 9
        assert [ctx.probe for ctx in ws.contexts] == [False, True, False]
        print("all assertions hold")
        """
    ),
    code(
        """
        draw_marbles(
            "Fallback to HTTP, verified upgrade back to WebSocket; close() at 16 s",
            [
                *link_rows(ws),
                *link_rows(http),
                recorded_row("conn.state", states, state_marble),
                recorded_row("online(conn)", is_online, lambda v: ("T" if v else "F", None)),
                recorded_row("shouted(conn)", messages),
            ],
            until=17,
        )
        """
    ),
    md(
        """
        The same tests run under pytest: copy the setup and the asserts into a
        test function. Virtual time makes them exact and instant, whatever the
        backoff delays and timeouts.
        """
    ),
]


# --------------------------------------------------------------------------
# 04 - hubs on Redis
# --------------------------------------------------------------------------

CLUSTER: list[Cell] = [
    md(
        """
        # Hubs on Redis: a hub killed mid-stream loses nothing

        With a backplane (`Hub(backplane="redis://...")`, or `serve --redis URL`)
        a hub keeps its sessions in Redis, and any hub on the same Redis serves
        any session (see `docs/cluster.md`). This notebook starts a local
        `redis-server`, three hub processes behind a round-robin balancer (no
        sticky sessions) and one client, streams numbered messages both ways,
        and kills the hub that holds the client's link with `kill -9` a third of
        the way in. The client reconnects through the balancer to another hub,
        in the same session, and every message arrives once, in order.

        It needs `redis-server` (Debian/Ubuntu: `apt-get install redis-server`)
        and redis-py (the `redis` extra, also in `dev`:
        `python -m pip install -e '.[redis]'`). What `python -m rxconn demo
        --cluster` prints, drawn.
        """
    ),
    code(
        """
        %matplotlib inline

        import asyncio
        import shutil

        from plots import draw_arrivals
        from reactivex import operators as ops

        import rxconn
        from rxconn.cli._balancer import RoundRobinProxy
        from rxconn.cli._demo import Tally
        from rxconn.cli._hubprocess import HubProcess
        from rxconn.cli._redis import LocalRedis
        from rxconn.server import Hub


        REDIS_SERVER = shutil.which("redis-server")
        if REDIS_SERVER is None:
            raise RuntimeError("this notebook needs redis-server: apt-get install redis-server")
        """
    ),
    md(
        """
        ## Redis, three hubs and a balancer

        `LocalRedis` runs a throwaway `redis-server` (a free port, a temporary
        directory, no persistence). Each `HubProcess` is
        `python -m rxconn serve --port 0 --redis URL --echo`, a process of its
        own, so that it can be killed for real. `RoundRobinProxy` hands each new
        TCP connection to the next hub that accepts it, as a load balancer with
        no sticky sessions would, and records its choices in `proxy.chosen`.
        """
    ),
    code(
        """
        local = LocalRedis(REDIS_SERVER)
        await asyncio.wait_for(local.start(), 15)

        options = ["--redis", local.url, "--echo", "--ping-interval", "0.5"]
        processes = [HubProcess(options) for _ in range(3)]
        await asyncio.wait_for(asyncio.gather(*(p.start() for p in processes)), 30)

        proxy = RoundRobinProxy([("127.0.0.1", p.port) for p in processes])
        await asyncio.wait_for(proxy.__aenter__(), 5)
        print(f"redis-server on {local.url}")
        print(f"hubs on ports {[p.port for p in processes]}, the balancer on {proxy.port}")
        """
    ),
    md(
        """
        ## One client, through the balancer

        A WebSocket connection with a short heartbeat and backoff, so that the
        kill is noticed and repaired quickly. The hub its link lands on is the
        balancer's last choice. `conn.session_id` names its session for
        `hub.send`; `Tally` (what `demo --cluster` counts with) notes every
        arrival, and `arrivals` when it came.
        """
    ),
    code(
        """
        conn = rxconn.Connection(
            rxconn.websocket(proxy.url("ws", "/rx/ws"), heartbeat=0.5),
            backoff=rxconn.Backoff(initial=0.05, max_delay=0.5),
            idle_timeout=2.0,
        )

        loop = asyncio.get_running_loop()
        t0 = loop.time()


        def now():
            return round(loop.time() - t0, 3)


        RATE, COUNT = 50, 150  # 50 numbered messages a second each way, for 3 s
        echoes, pushed = Tally("c"), Tally("h")  # client -> hub (echoed), hub -> client
        arrivals = {"c": [], "h": []}  # (time, number) of every arrival
        timeline = []  # (time, state)
        all_arrived = asyncio.Event()


        def on_message(payload):
            tally = echoes if payload.startswith("c") else pushed
            tally.take(payload)
            arrivals[tally.prefix].append((now(), tally.received[-1]))
            if len(echoes.received) >= COUNT and len(pushed.received) >= COUNT:
                all_arrived.set()


        subscriptions = [
            conn.state.subscribe(lambda state: timeline.append((now(), state))),
            conn.messages.subscribe(on_message),
        ]
        connected = conn.state.pipe(ops.first(lambda s: isinstance(s, rxconn.Connected)))
        await asyncio.wait_for(connected, 20)

        holder = proxy.chosen[-1]  # the hub the balancer gave this link to
        print(f"session {conn.session_id} on hub {holder + 1} (port {processes[holder].port})")
        """
    ),
    md(
        """
        A fourth hub, in this notebook: it serves no links, it only sends.
        `await hub.send(session_id, payload)` returns once Redis has numbered
        the message; the hub that holds the session's link (whichever it is by
        then) delivers it.
        """
    ),
    code(
        """
        hub = Hub(backplane=local.url)
        await asyncio.wait_for(hub.open_backplane(), 10)
        """
    ),
    md(
        """
        ## Stream both ways, and kill the client's hub

        Number `n` goes both ways at once: `c<n>` from the client (its hub
        echoes it) and `h<n>` from the notebook's hub. At a third of the way
        the hub process that holds the link gets `SIGKILL`: no goodbye, no
        flush.
        """
    ),
    code(
        """
        sent = []  # (time, number)
        marks = {}  # what happened, and when


        async def stream():
            start = loop.time()
            for n in range(1, COUNT + 1):
                await asyncio.sleep(max(0.0, start + n / RATE - loop.time()))  # pacing only
                conn.send(f"c{n}")
                await asyncio.wait_for(hub.send(conn.session_id, f"h{n}"), 5)
                sent.append((now(), n))
                echoes.sent = pushed.sent = n
                if n == COUNT // 3:
                    processes[holder].kill()
                    marks[f"hub {holder + 1} killed (kill -9)"] = now()


        await asyncio.wait_for(stream(), 2 * COUNT / RATE + 10)
        try:
            await asyncio.wait_for(all_arrived.wait(), 10)
        except TimeoutError:
            print("not everything arrived within 10 s")  # the summary below counts it

        (killed,) = marks.values()
        back = next(t for t, s in timeline if t > killed and isinstance(s, rxconn.Connected))
        moved = proxy.chosen[-1]
        marks[f"reconnected to hub {moved + 1}"] = back
        for t, state in timeline:
            print(f"{t:6.2f} s  {state}")
        print(f"back {back - killed:.2f} s after the kill, on hub {moved + 1}")
        """
    ),
    md(
        """
        ## Every message, once, in order

        Each number against the time it was sent (grey) and the times it
        arrived, both ways. Messages sent while the link was down wait (in the
        client's outbox, and in Redis for the hub's) and arrive in a burst as
        soon as the client is back, on another hub: a step, not a gap.
        (The drawing code is in `notebooks/plots.py`.)
        """
    ),
    code(
        """
        draw_arrivals(sent, arrivals["c"], arrivals["h"], marks, end=now())
        """
    ),
    code(
        """
        print("client -> hub (echoed):", echoes.report())
        print("hub -> client (hub.send):", pushed.report())
        lost = echoes.lost + pushed.lost
        duplicated = echoes.duplicated + pushed.duplicated
        in_order = echoes.out_of_order == pushed.out_of_order == 0
        resets = conn.session_resets
        order = "kept" if in_order else "broken"
        print(f"lost {lost} / duplicated {duplicated} / order {order} / session resets {resets}")
        assert (lost, duplicated, in_order, resets) == (0, 0, True, 0)
        """
    ),
    md(
        """
        ## Clean up

        Close the connection, disconnect the notebook's hub from Redis, stop the
        balancer and the hub processes (the killed one is only reaped), stop
        `redis-server` and delete its directory.
        """
    ),
    code(
        """
        for subscription in subscriptions:
            subscription.dispose()
        conn.close()
        await asyncio.wait_for(hub.close_backplane(), 10)
        await asyncio.wait_for(rxconn.aio.drain(), 10)  # the link's and the hub's tasks
        await asyncio.wait_for(proxy.__aexit__(None, None, None), 10)
        await asyncio.wait_for(asyncio.gather(*(p.stop() for p in processes)), 30)
        await asyncio.wait_for(local.stop(), 10)
        local.cleanup()

        assert not local.running and all(p.process is None for p in processes)
        print("redis-server and the hub processes are stopped")
        """
    ),
]


NOTEBOOKS: dict[str, list[Cell]] = {
    "01-quickstart.ipynb": QUICKSTART,
    "02-fallback-and-upgrade.ipynb": FALLBACK,
    "03-marble-testing.ipynb": MARBLES,
    "04-hubs-on-redis.ipynb": CLUSTER,
}

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


# --------------------------------------------------------------------------
# building and executing
# --------------------------------------------------------------------------


def build(name: str) -> object:
    """A fresh notebook (no outputs) from the cells of ``NOTEBOOKS[name]``."""
    import nbformat.v4 as v4

    stem = name.split("-", 1)[0]
    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for index, (kind, source) in enumerate(NOTEBOOKS[name]):
        make = v4.new_markdown_cell if kind == "markdown" else v4.new_code_cell
        nb.cells.append(make(source, id=f"nb{stem}-{index:02d}"))
    return nb


@contextmanager
def this_interpreter_kernel() -> Iterator[None]:
    """Make the ``python3`` kernelspec run this interpreter, whatever else is installed.

    A ``python3`` kernelspec registered by another environment (``ipykernel
    install --user``) would otherwise run the notebooks without rxconn. The spec
    written here comes first on ``JUPYTER_PATH``.
    """
    saved = {key: os.environ.get(key) for key in ("JUPYTER_PATH", "JUPYTER_PLATFORM_DIRS")}
    with tempfile.TemporaryDirectory() as tmp:
        # Before jupyter_core.paths is imported: older jupyter_core 5.x warn otherwise.
        os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [tmp, saved["JUPYTER_PATH"]]))
        try:
            from ipykernel.kernelspec import write_kernel_spec

            write_kernel_spec(Path(tmp, "kernels", "python3"))
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def execute(nb: object) -> None:
    """Run every cell in a fresh kernel, in ``notebooks/``; raise on the first error."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,  # type: ignore[arg-type]
        timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(HERE)}},
        record_timing=False,
    )
    client.execute()
    nb.metadata["language_info"] = {"name": "python"}  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="build only notebooks whose name contains these")
    parser.add_argument("--no-execute", action="store_true", help="write the sources only")
    args = parser.parse_args(argv)

    import nbformat

    names = [n for n in NOTEBOOKS if not args.names or any(part in n for part in args.names)]
    if not names:
        parser.error(f"no notebook matches {args.names}; known: {', '.join(NOTEBOOKS)}")
    with this_interpreter_kernel():
        for name in names:
            nb = build(name)
            started = time.perf_counter()
            if not args.no_execute:
                execute(nb)
            nbformat.validate(nb)
            nbformat.write(nb, HERE / name)  # type: ignore[arg-type]
            print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
