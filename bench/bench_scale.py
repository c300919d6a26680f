"""Hub at scale: 10,000 idle connections in one hub process, and session echo for 100 clients.

Issue 18, "Scale". One ``rxconn.server.Hub`` runs in a child process (this
script with ``--serve``) under ``rxconn.server.serve(hub, "127.0.0.1", 0)``;
the clients run in ``--clients`` other processes (``bench/_scale_client.py``),
each opening its share of ``rxconn.Connection`` s with the public API. Every
process talks to this one (the parent) in JSON lines over stdin/stdout, and
every process lifts its ``RLIMIT_NOFILE`` soft limit to the hard limit.

**Part 1, scale** (``Hub(ping_interval=15.0)``; default heartbeats and
``idle_timeout`` on the clients):

* the hub's RSS (``VmRSS``, after a ``gc.collect()``) idle (after one warm-up
  connection of each kind has come and gone), with all WebSocket connections
  (half of ``--connections``: ``Connection(websocket(url + "/ws"))``), and with
  the SSE half too (``Connection(http(url + "/events"))``): KiB per connection
  for each kind and overall, the Python heap blocks per connection
  (``sys.getallocatedblocks()``), and the object types that grew most (a
  ``gc.get_objects()`` census; sizes are ``sys.getsizeof``, not deep);
* the hub's CPU seconds per second at idle, over one whole heartbeat period
  (``--idle-seconds``, default 15 s = ``ping_interval``, so that every
  connection contributes exactly one hub ping and one client ping whatever
  the phase of its timers; SSE links get one ping comment), with the time in
  the garbage collector (``gc.callbacks``) and the clients' CPU over the same
  window; then the same window again under the hub's cProfile;
* broadcast latency: ``hub.broadcast()`` of a 100 B payload stamped with the
  hub's ``time.time()``; every client stamps each copy on arrival (same host,
  same clock). Per broadcast: p50 / p99 / max of send -> receive over all
  copies (and the p50 of each kind); on the hub, how long ``broadcast()``
  took, when the last copy had been handed to its socket (every link's
  cursor past the broadcast, polled every millisecond; also when the last
  WebSocket copy had), and the hub's CPU and gc time until then. The first
  broadcast after connecting is shown as "cold" and left out of the medians
  over the next ``--broadcasts``; one more broadcast runs under the hub's
  cProfile.

**Part 2, hub throughput** (``Hub(echo=True)`` in a fresh child): the client
processes open ``--echo-clients`` WebSocket and as many HTTP (SSE + POST)
connections; in each run the connections of one kind keep ``--window``
100 B messages each in flight (a new one for each echo) for 0.5 s of
warm-up and ``--echo-seconds`` timed; echoes per second are counted on the
clients. WebSocket and HTTP runs alternate (``--rounds`` each); best and
median are reported, with the hub's CPU use (busy fraction of its CPU, and
CPU microseconds per echoed message, counted with the sessions' inbound
numbers, and of that the gc's). Then one more run of each kind under the
hub's cProfile.

**Profiles** run in the hub process with the garbage collector off (a
collection is charged to whichever function happened to allocate; gc time
is reported from the unprofiled runs instead), with cProfile's wall clock.
Own time is grouped:

* read: ``socket.recv``, asyncio's ``_read_ready``, the protocols'
  ``data_received``, aiohttp's WebSocket ``receive()`` handing frames on;
* decode: aiohttp's WebSocket frame reader and HTTP parser, ``rxconn.wire``
  decoding, JSON decoding;
* protocol: ``rxconn.session`` and ``rxconn/server`` (sessions, replay log,
  registry, the endpoints' loops, acks), reactivex and rxconn's multicast;
* encode: ``rxconn.wire`` encoding, SSE event encoding, JSON encoding;
* write: aiohttp's WebSocket and HTTP writers (``send_str``, frame building,
  ``StreamResponse.write``), asyncio's transport ``write``, ``socket.send``;
* http: the rest of aiohttp's web server (request handling, routing,
  responses: mostly the POST side of the HTTP transport);
* loop: asyncio's event loop, tasks, futures, events, timers and timeouts;
* epoll wait: time blocked in ``epoll.poll``, shown but not counted.

Other builtins are charged to the group of the Python functions that called
them, in proportion. "~real" scales each group by unprofiled / profiled CPU
time (gc excluded) of the same work.

Run from the repository root (the default run takes about 2-3 minutes)::

    python -W error bench/bench_scale.py                 # 10,000 connections, 4 client processes
    python -W error bench/bench_scale.py --quick         # 1,000 connections, 2 client processes
    python -W error bench/bench_scale.py --part scale    # or --part echo

Nothing is asserted about timings. The run fails if a process does not exit
cleanly, a connection does not come up, a client reconnects while idle, or a
broadcast copy goes missing.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import json
import os
import pstats
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import _harness  # first: it puts the repository root on sys.path
from _scale_client import raise_fd_limit, rss_bytes

from rxconn.server import Hub, serve


HERE = Path(__file__).resolve().parent
CLIENT_SCRIPT = HERE / "_scale_client.py"
COMMAND_TIMEOUT = 90.0
"""Seconds the parent waits for any one answer from a child."""
LISTEN_BACKLOG = 128
"""The hub's listen backlog (``LimitedSite``'s default): connects in flight stay under it."""
PAYLOAD_SIZE = 100
GROUPS = ("read", "decode", "protocol", "encode", "write", "http", "loop", "other", "idle")


# ===================================================================== the hub


def group_of(filename: str, func: str) -> str:
    """Which cost group a Python function's own time belongs to (see the module docstring)."""
    path = filename.replace("\\", "/")
    name = path.rsplit("/", 1)[-1]
    if "/rxconn/" in path:
        if name == "wire.py":
            if func.startswith(("encode", "_encode")):
                return "encode"
            if func.startswith(("decode", "_decode", "_loads", "_object", "_text", "_count")):
                return "decode"
            return "protocol"
        if name in ("sse.py", "_events.py"):
            return "encode"
        return "protocol"  # sessions, registry, endpoints, replay log, acks, multicast
    if "/reactivex/" in path:
        return "protocol"
    if "/aiohttp/" in path:
        if "/_websocket/reader" in path or name == "http_parser.py":
            return "decode"
        if "/_websocket/writer" in path or name == "http_writer.py":
            return "write"
        if name == "web_ws.py":
            if func in ("receive", "__anext__", "receive_str", "_receive"):
                return "read"
            if func.startswith(("send", "_send", "write")):
                return "write"
            return "http"
        if name == "web_response.py" and func in ("write", "_write", "drain"):
            return "write"
        if name in ("base_protocol.py", "streams.py"):
            return "read" if func in ("data_received", "feed_data") else "write"
        if name == "web_protocol.py" and func == "data_received":
            return "read"
        return "http"
    if "/json/" in path:
        return "encode" if "encoder" in name else "decode"
    if "/asyncio/" in path:
        if name == "selector_events.py":
            if func in ("write", "_write_ready", "_write_send", "writelines"):
                return "write"
            if func.startswith("_read_ready"):
                return "read"
        return "loop"
    if name == "selectors.py":
        return "loop"
    return "other"


def builtin_group(func: str) -> str | None:
    """The group of a builtin regardless of its caller (socket calls, compiled aiohttp), or None."""
    if "'poll' of 'select.epoll'" in func:
        return "idle"  # waiting for the sockets: not work, left out of the totals
    if "'send' of '_socket.socket'" in func or "'sendmsg'" in func:
        return "write"
    if "'recv' of '_socket.socket'" in func or "'recv_into'" in func:
        return "read"
    if "reader_c" in func or "_http_parser" in func or "websocket_mask" in func:
        return "decode"
    if "_http_writer" in func:
        return "write"
    return None


def group_profile(profiler: cProfile.Profile, top: int = 12) -> dict[str, Any]:
    """Own time per group (builtins charged to their callers' groups) and the top functions."""
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    groups: Counter[str] = Counter()
    own: list[tuple[float, str, str]] = []
    for (filename, line, func), (_, _, tottime, _, callers) in stats.items():
        if filename == "~":
            fixed = builtin_group(func)
            if fixed is not None:
                groups[fixed] += tottime
                own.append((tottime, fixed, func))
                continue
            # Charge the builtin to its callers, in proportion to the time spent under each.
            spent = sum(c[3] for c in callers.values())
            for (c_file, _, c_func), c in callers.items():
                share = c[3] / spent if spent else 1.0 / len(callers)
                caller_group = "loop" if c_file == "~" else group_of(c_file, c_func)
                groups[caller_group] += tottime * share
            own.append((tottime, "(builtin)", func))
            continue
        group = group_of(filename, func)
        groups[group] += tottime
        own.append((tottime, group, f"{Path(filename).name}:{line}({func})"))
    own.sort(reverse=True)
    return {
        "groups": {g: groups.get(g, 0.0) for g in GROUPS},
        "top": [[t, g, where] for t, g, where in own if g != "idle"][:top],
    }


def census() -> dict[str, list[int]]:
    """Count and shallow size of every gc-tracked object, by type name."""
    gc.collect()
    counts: dict[str, list[int]] = {}
    for obj in gc.get_objects():
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        entry = counts.get(name)
        if entry is None:
            entry = counts[name] = [0, 0]
        entry[0] += 1
        entry[1] += sys.getsizeof(obj)
    return counts


class GcClock:
    """Time spent in the garbage collector, and collections per generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1


class HubControl:
    """The child's side: answers the parent's commands about its hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.gc = GcClock()
        self.profiler: cProfile.Profile | None = None
        self.snapshot: tracemalloc.Snapshot | None = None

    def stats(self, collect: bool) -> dict[str, Any]:
        if collect:
            gc.collect()
        hub = self.hub
        by_transport = Counter(link.transport for link in hub.links)  # type: ignore[attr-defined]
        return {
            "rss": rss_bytes(),
            "cpu": time.process_time(),
            "wall": time.monotonic(),
            "sessions": len(hub.live_sessions),
            "links": dict(by_transport),
            "blocks": sys.getallocatedblocks(),
            "fds": len(os.listdir("/proc/self/fd")),
            # The loop's timer heap (a private attribute, read for the report only).
            "timers": len(getattr(asyncio.get_running_loop(), "_scheduled", ())),
            "received": sum(s.inbound.received for s in hub.live_sessions),
            "gc_s": self.gc.seconds,
            "gc_n": list(self.gc.collections),
        }

    def trace(self) -> dict[str, Any]:
        """Without a stored snapshot: store one. With one: the growth since, by file."""
        if not tracemalloc.is_tracing():
            return {"tracing": False}
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        if self.snapshot is None:
            self.snapshot = snapshot
            return {"tracing": True}
        diff = snapshot.compare_to(self.snapshot, "filename")
        self.snapshot = None
        rows = [[str(d.traceback[0].filename), d.size_diff, d.count_diff] for d in diff]
        return {"tracing": True, "top": rows, "total": sum(d.size_diff for d in diff)}

    async def broadcast(self, ident: int, profile: bool) -> dict[str, Any]:
        """Broadcast a stamped payload; when every link had written it, and the CPU it took."""
        hub = self.hub
        links = list(hub.links)
        before = {link: link.cursor for link in links}  # type: ignore[attr-defined]
        head = f"{ident} "
        profiler = cProfile.Profile() if profile else None
        gc_s, gc_n = self.gc.seconds, list(self.gc.collections)
        cpu = time.process_time()
        if profiler is not None:
            gc.disable()  # a collection would be charged to whichever function allocated
            profiler.enable()
        sent = time.time()
        text = f"{head}{sent!r} "
        reached = hub.broadcast(text + "x" * max(PAYLOAD_SIZE - len(text), 0))
        called = time.time()
        pending = links
        kinds = {link.transport for link in links}  # type: ignore[attr-defined]
        done: dict[str, float] = {}  # transport -> when its last copy was written
        deadline = time.monotonic() + 30.0
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
            pending = [link for link in pending if link.cursor == before[link]]  # type: ignore[attr-defined]
            left = {link.transport for link in pending}  # type: ignore[attr-defined]
            for kind in kinds - left - done.keys():
                done[kind] = time.time() - sent
        written = time.time()
        if profiler is not None:
            profiler.disable()
            gc.enable()
        return {
            "sent": sent,
            "reached": reached,
            "call_s": called - sent,
            "written_s": written - sent,
            "written_by": done,
            "unwritten": len(pending),
            "cpu_s": time.process_time() - cpu,
            "gc_s": self.gc.seconds - gc_s,
            "gc_n": [a - b for a, b in zip(self.gc.collections, gc_n, strict=True)],
            "profile": group_profile(profiler) if profiler is not None else None,
        }

    def profile(self, action: str) -> dict[str, Any]:
        if action == "start":
            self.profiler = cProfile.Profile()
            gc.disable()  # a collection would be charged to whichever function allocated
            self.profiler.enable()
            return {}
        assert self.profiler is not None
        self.profiler.disable()
        gc.enable()
        result = group_profile(self.profiler, top=15)
        self.profiler = None
        return result


async def serve_hub(cpu: int | None, echo: bool, trace: bool) -> None:
    """The child: a hub on 127.0.0.1, commanded over stdin until stdin closes."""
    _harness.pin(cpu)
    nofile = raise_fd_limit()
    if trace:
        tracemalloc.start()
    hub = Hub(ping_interval=15.0, echo=echo)
    control = HubControl(hub)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin
    )
    try:
        async with serve(hub, "127.0.0.1", 0) as server:
            print(json.dumps({"ok": {"url": server.url, "nofile": nofile}}), flush=True)
            while line := await stdin.readline():
                command = json.loads(line)
                name = command["cmd"]
                try:
                    if name == "stats":
                        answer = control.stats(command.get("gc", False))
                    elif name == "census":
                        answer = census()
                    elif name == "trace":
                        answer = control.trace()
                    elif name == "broadcast":
                        answer = await control.broadcast(command["id"], command["profile"])
                    elif name == "profile":
                        answer = control.profile(command["action"])
                    else:
                        raise ValueError(f"unknown command {name!r}")
                    reply: dict[str, Any] = {"ok": answer}
                except Exception as exc:  # reported to the parent, which stops the run
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                print(json.dumps(reply), flush=True)
    finally:
        transport.close()


# ================================================================= the parent


class Proc:
    """A child process spoken to in JSON lines; ``ready`` is its first answer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def start(self, args: list[str], cpu: int | None) -> Proc:
        env = dict(os.environ)
        if cpu is not None:
            env["RXCONN_BENCH_CPU"] = str(cpu)
        warn = [f"-W{option}" for option in sys.warnoptions]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *warn,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=64 * 1024 * 1024,
        )
        self.ready = await self._answer(30.0)
        return self

    async def _answer(self, timeout: float) -> Any:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(f"{self.name}: no answer within {timeout:g} s") from None
        if not line:
            raise RuntimeError(f"{self.name}: exited (code {await self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {reply['error']}")
        return reply["ok"]

    async def ask(self, cmd: str, timeout: float = COMMAND_TIMEOUT, **args: Any) -> Any:
        assert self.proc is not None and self.proc.stdin is not None
        async with self._lock:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            await self.proc.stdin.drain()
            return await self._answer(timeout)

    async def stop(self, timeout: float = 60.0) -> None:
        """Close stdin (the signal to stop), wait for a clean exit; kill only on a timeout."""
        proc = self.proc
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = None
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.stdout.read(), timeout)
            code = await asyncio.wait_for(proc.wait(), 10.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"{self.name}: did not exit within {timeout:g} s") from None
        if code != 0:
            raise RuntimeError(f"{self.name}: exited with {code}")


class Fleet:
    """The hub process and the client processes of one part of the run."""

    def __init__(self, clients: int, pin: bool, echo: bool, trace: bool) -> None:
        self.n_clients = clients
        self.echo = echo
        self.trace = trace
        client_cpu, server_cpu = _harness.client_and_server_cpus() if pin else (None, None)
        self.client_cpu, self.server_cpu = client_cpu, server_cpu
        self.hub = Proc("hub")
        self.clients = [Proc(f"client {i}") for i in range(clients)]
        self.url = ""

    @property
    def placement(self) -> str:
        if self.server_cpu is None:
            return "processes not pinned"
        return f"hub on CPU {self.server_cpu}, client processes on CPU {self.client_cpu}"

    async def __aenter__(self) -> Fleet:
        try:
            hub_args = [str(Path(__file__).resolve()), "--serve"]
            if self.server_cpu is not None:
                hub_args += ["--cpu", str(self.server_cpu)]
            hub_args += ["--echo"] if self.echo else []
            hub_args += ["--trace-memory"] if self.trace else []
            await self.hub.start(hub_args, None)
            self.url = self.hub.ready["url"]
            client_args = [str(CLIENT_SCRIPT), self.url] + (["--echo"] if self.echo else [])
            await asyncio.gather(*(c.start(client_args, self.client_cpu) for c in self.clients))
        except BaseException:
            await self.stop_all()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop_all()

    async def stop_all(self) -> None:
        results = list(
            await asyncio.gather(*(c.stop() for c in self.clients), return_exceptions=True)
        )
        results += await asyncio.gather(self.hub.stop(), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def all_clients(self, cmd: str, **args: Any) -> list[Any]:
        return list(await asyncio.gather(*(c.ask(cmd, **args) for c in self.clients)))

    async def open(self, kind: str, total: int) -> float:
        """Open ``total`` connections of ``kind`` spread over the client processes; seconds."""
        wave = max(1, (LISTEN_BACKLOG - 8) // self.n_clients)
        shares = split(total, self.n_clients)
        started = time.perf_counter()
        await asyncio.gather(
            *(
                c.ask("open", kind=kind, n=n, wave=wave)
                for c, n in zip(self.clients, shares, strict=True)
                if n
            )
        )
        return time.perf_counter() - started

    async def wait_sessions(self, expected: int, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the hub until it has ``expected`` live sessions; its last stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.hub.ask("stats")
            if stats["sessions"] == expected or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.1)


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def kib(value: float) -> str:
    return f"{value / 1024:,.1f}"


def pct(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def print_groups(title: str, profile: dict[str, Any], n: int, real_ns: float | None) -> None:
    """A grouped profile: ns per unit profiled, share, and scaled to the unprofiled cost.

    ``idle`` (the time blocked in epoll) is shown but left out of the total and shares.
    """
    groups: dict[str, float] = profile["groups"]
    total = sum(t for g, t in groups.items() if g != "idle")
    scale = real_ns / (total / n * 1e9) if real_ns and total else None
    print(
        f"  {title}: {total / n * 1e9:,.0f} ns profiled per unit"
        + (f", {real_ns:,.0f} ns unprofiled (scale {scale:.2f})" if scale else "")
    )
    print(f"    {'group':<9} {'share':>6} {'profiled':>9} {'~real':>7}  (ns per unit)")
    for group in GROUPS:
        ns = groups[group] / n * 1e9
        real = f"{ns * scale:>7,.0f}" if scale else f"{'':>7}"
        if group == "idle":
            print(f"    {'(epoll wait, not counted above:':<34} {ns:>9,.0f} ns profiled)")
            continue
        print(f"    {group:<9} {groups[group] / total:>6.1%} {ns:>9,.0f} {real}")
    print("    top functions by own time (profiled ns per unit, group):")
    for tottime, group, where in profile["top"]:
        print(f"      {tottime / n * 1e9:>9,.0f}  {group:<9} {where}")


async def scale_part(args: Any) -> None:
    total = args.connections
    n_ws = total // 2
    n_sse = total - n_ws
    nofile = raise_fd_limit()
    async with Fleet(args.clients, args.pin, echo=False, trace=args.trace_memory) as fleet:
        hub_nofile = fleet.hub.ready["nofile"]
        client_nofile = fleet.clients[0].ready["nofile"]
        print(
            f"scale: {total:,} connections ({n_ws:,} WebSocket + {n_sse:,} SSE) to one hub, "
            f"{args.clients} client processes; {fleet.placement}"
        )
        print(
            f"  RLIMIT_NOFILE (soft = hard after raising): hub {hub_nofile[0]:,}, "
            f"clients {client_nofile[0]:,}, parent {nofile[0]:,}"
        )
        per_client = max(split(n_ws, args.clients)) + max(split(n_sse, args.clients))
        if hub_nofile[0] < total + 64 or client_nofile[0] < 2 * per_client + 64:
            print(
                f"  WARNING: the file limit is too low for the target (hub needs > {total:,}, "
                f"each client process > {2 * per_client:,})"
            )

        # Warm-up: one connection of each kind comes and goes, so that lazily imported
        # modules and first-use caches are in the idle baseline, not in the growth.
        first = fleet.clients[0]
        await first.ask("open", kind="ws", n=1, wave=1)
        await first.ask("open", kind="sse", n=1, wave=1)
        await first.ask("close")
        await fleet.wait_sessions(0)
        if args.trace_memory:
            await fleet.hub.ask("trace")
        idle = await fleet.hub.ask("stats", gc=True)
        census_idle = await fleet.hub.ask("census") if args.census else {}
        idle = await fleet.hub.ask("stats", gc=True)  # after the census's own garbage

        ws_s = await fleet.open("ws", n_ws)
        with_ws = await fleet.wait_sessions(n_ws)
        with_ws = await fleet.hub.ask("stats", gc=True)
        sse_s = await fleet.open("sse", n_sse)
        await fleet.wait_sessions(total)
        full = await fleet.hub.ask("stats", gc=True)
        if full["sessions"] != total:
            raise RuntimeError(f"the hub has {full['sessions']} sessions, expected {total}")
        print(
            f"  connect: {n_ws:,} WebSocket in {ws_s:.1f} s, {n_sse:,} SSE in {sse_s:.1f} s; "
            f"hub: {full['sessions']:,} sessions, links {full['links']}, {full['fds']:,} fds, "
            f"{full['timers']:,} timers in its loop (idle: {idle['timers']})"
        )
        ws_rss = (with_ws["rss"] - idle["rss"]) / n_ws
        sse_rss = (full["rss"] - with_ws["rss"]) / n_sse
        all_rss = (full["rss"] - idle["rss"]) / total
        print(
            f"  hub RSS: idle {kib(idle['rss'])} KiB, with {n_ws:,} WS {kib(with_ws['rss'])} KiB, "
            f"with all {kib(full['rss'])} KiB"
        )
        print(
            f"  hub RSS per connection: WebSocket {kib(ws_rss)} KiB, SSE {kib(sse_rss)} KiB, "
            f"overall {kib(all_rss)} KiB (goal <= 30 KiB: "
            f"{'met' if all_rss <= 30 * 1024 else 'NOT met'})"
        )
        print(
            "  hub Python heap blocks per connection: WebSocket "
            f"{(with_ws['blocks'] - idle['blocks']) / n_ws:,.0f}, SSE "
            f"{(full['blocks'] - with_ws['blocks']) / n_sse:,.0f}"
        )
        if args.trace_memory:
            traced = await fleet.hub.ask("trace")
            print(
                f"  tracemalloc growth idle -> all: {traced['total'] / total / 1024:,.1f} KiB "
                "per connection; by file of allocation:"
            )
            for filename, size, count in traced["top"][:12]:
                print(
                    f"    {size / total:>9,.0f} B {count / total:>6.1f} blocks  "
                    f"{'/'.join(Path(filename).parts[-2:])}"
                )
            packages: Counter[str] = Counter()
            for filename, size, _ in traced["top"]:
                parts = Path(filename).parts
                package = next(
                    (
                        p
                        for p in ("rxconn", "aiohttp", "asyncio", "multidict", "yarl")
                        if p in parts
                    ),
                    "other",
                )
                packages[package] += size
            print(
                "    by package: "
                + ", ".join(f"{p} {b / total:,.0f} B" for p, b in packages.most_common())
            )
        if args.census:
            census_full = await fleet.hub.ask("census")
            grown = sorted(
                (
                    (
                        size - census_idle.get(name, [0, 0])[1],
                        count - census_idle.get(name, [0, 0])[0],
                        name,
                    )
                    for name, (count, size) in census_full.items()
                ),
                reverse=True,
            )
            tracked = sum(g[0] for g in grown)
            print(
                f"  gc-tracked objects grown (shallow sizes): {tracked / total:,.0f} B per "
                "connection; the largest types (B, objects per connection):"
            )
            for size, count, name in grown[:12]:
                print(f"    {size / total:>7,.0f} B {count / total:>6.2f}  {name}")
            await fleet.hub.ask("stats", gc=True)

        # Idle CPU over one heartbeat period.
        await asyncio.sleep(2.0)
        clients_before = await fleet.all_clients("stats")
        before = await fleet.hub.ask("stats")
        await asyncio.sleep(args.idle_seconds)
        after = await fleet.hub.ask("stats")
        clients_after = await fleet.all_clients("stats")
        wall = after["wall"] - before["wall"]
        hub_cpu = (after["cpu"] - before["cpu"]) / wall
        client_cpu = (
            sum(a["cpu"] - b["cpu"] for a, b in zip(clients_after, clients_before, strict=True))
            / wall
        )
        beats = (2 * n_ws + n_sse) / 15.0
        gc_s = (after["gc_s"] - before["gc_s"]) / wall
        gc_n = tuple(a - b for a, b in zip(after["gc_n"], before["gc_n"], strict=True))
        print(
            f"  idle CPU over {wall:.1f} s: hub {hub_cpu * 1000:.1f} ms/s ({hub_cpu:.1%} of a CPU; "
            f"~{beats:,.0f} heartbeats/s -> {hub_cpu / beats * 1e6:.0f} us each; gc "
            f"{gc_s * 1000:.1f} ms/s, collections by generation {gc_n}); "
            f"client processes {client_cpu * 1000:.1f} ms/s in total"
        )
        # The same window again under the hub's profiler (gc off), per heartbeat.
        await fleet.hub.ask("profile", action="start")
        await asyncio.sleep(args.idle_seconds)
        profile = await fleet.hub.ask("profile", action="stop")
        print_groups(
            f"hub profile of {args.idle_seconds:g} s idle (unit: one heartbeat, "
            f"{beats * args.idle_seconds:,.0f} in all)",
            profile,
            round(beats * args.idle_seconds),
            (hub_cpu - gc_s) / beats * 1e9,
        )
        client_rss = sum(c["rss"] for c in clients_after)
        print(
            f"  client processes: RSS {client_rss / 2**20:,.0f} MiB in total "
            f"({client_rss / total / 1024:,.0f} KiB per connection, client side, incl. the "
            "interpreter)"
        )
        reconnects = sum(c["reconnects"] for c in clients_after)
        connected = sum(c["connected"] for c in clients_after)
        if reconnects or connected != total:
            raise RuntimeError(f"while idle: {connected} connected, {reconnects} reconnects")

        # Broadcasts to everyone: the first after connecting (cold), then the measured
        # ones, then one under the hub's profiler.
        p50s, p99s, copy_ns = [], [], []
        print(
            f"  broadcast of {PAYLOAD_SIZE} B to all {total:,} (send -> receive in ms; "
            "p50 by kind; hub: broadcast() call, last copy written, CPU, of which gc):"
        )
        last = args.broadcasts + 1
        for ident in range(last + 1):
            profile = ident == last
            expects = [asyncio.ensure_future(c.ask("expect", id=ident)) for c in fleet.clients]
            result = await fleet.hub.ask("broadcast", id=ident, profile=profile)
            answers = await asyncio.gather(*expects)
            ws = [d for a in answers for d in a["delays_us"]["ws"]]
            sse = [d for a in answers for d in a["delays_us"]["sse"]]
            delays = ws + sse
            missing = sum(a["missing"] for a in answers)
            if missing or result["reached"] != total:
                raise RuntimeError(
                    f"broadcast {ident}: reached {result['reached']}, {missing} copies missing"
                )
            p50, p99, top = pct(delays, 0.5) / 1000, pct(delays, 0.99) / 1000, max(delays) / 1000
            label = "cold" if ident == 0 else "profiled" if profile else f"#{ident}"
            print(
                f"    {label:>8}: p50 {p50:6.1f} p99 {p99:6.1f} max {top:6.1f} "
                f"(WS {pct(ws, 0.5) / 1000:6.1f}, SSE {pct(sse, 0.5) / 1000:6.1f});  "
                f"hub: {result['call_s'] * 1000:5.1f}, {result['written_s'] * 1000:6.1f} "
                f"(WS {result['written_by'].get('websocket', 0) * 1000:.0f}), "
                f"CPU {result['cpu_s'] * 1000:6.1f}, gc {result['gc_s'] * 1000:5.1f} "
                f"{tuple(result['gc_n'])}"
            )
            if profile:
                real_ns = statistics.median(copy_ns) if copy_ns else None
                print_groups(
                    "hub profile of the broadcast (unit: one copy)",
                    result["profile"],
                    total,
                    real_ns,
                )
            elif ident:
                p50s.append(p50)
                p99s.append(p99)
                copy_ns.append((result["cpu_s"] - result["gc_s"]) / total * 1e9)
            await asyncio.sleep(0.5)
        p50 = statistics.median(p50s)
        print(
            f"  broadcast median of {len(p50s)}: p50 {p50:.1f} ms, p99 "
            f"{statistics.median(p99s):.1f} ms (goal p50 <= 50 ms: "
            f"{'met' if p50 <= 50 else 'NOT met'})"
        )

        close_started = time.perf_counter()
        await fleet.all_clients("close")
        left = await fleet.wait_sessions(0)
        print(
            f"  closed all in {time.perf_counter() - close_started:.1f} s "
            f"(hub sessions left: {left['sessions']})"
        )


async def echo_part(args: Any) -> None:
    n = args.echo_clients
    async with Fleet(min(args.clients, n), args.pin, echo=True, trace=False) as fleet:
        print(
            f"echo: Hub(echo=True), {n} WebSocket + {n} HTTP connections in "
            f"{len(fleet.clients)} client processes; {fleet.placement}"
        )
        await fleet.open("ws", n)
        await fleet.open("sse", n)
        await fleet.wait_sessions(2 * n)

        async def run(kind: str) -> dict[str, Any]:
            before = await fleet.hub.ask("stats")
            answers = await fleet.all_clients(
                "echo", kind=kind, seconds=args.echo_seconds, window=args.window
            )
            after = await fleet.hub.ask("stats")
            echoes = sum(a["echoes"] for a in answers)
            secs = statistics.mean(a["secs"] for a in answers)
            received = after["received"] - before["received"]
            wall = after["wall"] - before["wall"]
            cpu = after["cpu"] - before["cpu"]
            collecting = after["gc_s"] - before["gc_s"]
            return {
                "rate": echoes / secs,
                "busy": cpu / wall,
                "cpu_ns": cpu / received * 1e9 if received else 0.0,
                "gc_ns": collecting / received * 1e9 if received else 0.0,
                "received": received,
                "cpu": cpu,
            }

        kinds = {"ws": "WebSocket", "sse": "HTTP"}
        results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for _ in range(args.rounds):
            for kind in kinds:
                results[kind].append(await run(kind))
        print(
            f"  {args.window} x {PAYLOAD_SIZE} B in flight per connection, "
            f"{args.echo_seconds:g} s timed per run, {args.rounds} runs each, interleaved:"
        )
        for kind, label in kinds.items():
            rates = [r["rate"] for r in results[kind]]
            busy = statistics.median(r["busy"] for r in results[kind])
            cpu_ns = statistics.median(r["cpu_ns"] for r in results[kind])
            gc_ns = statistics.median(r["gc_ns"] for r in results[kind])
            print(
                f"    {label:<9}: best {max(rates):>9,.0f} msg/s, median "
                f"{statistics.median(rates):>9,.0f} msg/s;  hub busy {busy:.0%} of its CPU, "
                f"{cpu_ns / 1000:,.1f} us CPU per echoed message ({gc_ns / 1000:,.1f} us in gc; "
                f"one busy hub CPU would echo ~{1e9 / cpu_ns:,.0f} msg/s)"
            )
        for kind, label in kinds.items():
            # The profile runs with gc off: scale it to the unprofiled CPU minus gc.
            real_ns = statistics.median(r["cpu_ns"] - r["gc_ns"] for r in results[kind])
            await fleet.hub.ask("profile", action="start")
            before = await fleet.hub.ask("stats")
            await fleet.all_clients(
                "echo", kind=kind, seconds=args.echo_seconds, window=args.window
            )
            after = await fleet.hub.ask("stats")
            profile = await fleet.hub.ask("profile", action="stop")
            received = after["received"] - before["received"]
            print_groups(
                f"hub profile, {label} echo (unit: one echoed message)", profile, received, real_ns
            )
        await fleet.all_clients("close")
        await fleet.wait_sessions(0)


def main() -> None:
    parser = _harness.arg_parser(__doc__)
    parser.add_argument("--echo", action="store_true", help="(internal) the hub echoes")
    parser.add_argument("--connections", type=int, default=10_000, help="half WebSocket, half SSE")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--echo-clients", type=int, default=100, help="connections per kind")
    parser.add_argument("--quick", action="store_true", help="1,000 connections, 2 processes")
    parser.add_argument("--part", choices=("scale", "echo", "both"), default="both")
    parser.add_argument("--idle-seconds", type=float, default=15.0)
    parser.add_argument("--broadcasts", type=int, default=5)
    parser.add_argument("--window", type=int, default=10, help="echo messages in flight each")
    parser.add_argument("--echo-seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin CPUs")
    parser.add_argument("--no-census", dest="census", action="store_false")
    parser.add_argument(
        "--trace-memory", action="store_true", help="tracemalloc in the hub (inflates its RSS)"
    )
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_hub(args.cpu, args.echo, args.trace_memory))
        return
    if args.quick:
        args.connections = min(args.connections, 1_000)
        args.clients = min(args.clients, 2)
        args.idle_seconds = min(args.idle_seconds, 15.0)
        args.rounds = min(args.rounds, 2)
        args.echo_seconds = min(args.echo_seconds, 2.0)

    async def run() -> None:
        started = time.perf_counter()
        if args.part in ("scale", "both"):
            await scale_part(args)
        if args.part in ("echo", "both"):
            await echo_part(args)
        print(f"(total {time.perf_counter() - started:.1f} s)")

    asyncio.run(run())


if __name__ == "__main__":
    main()
