"""ns/event of :class:`rxconn.sse.SSEDecoder` on the common stream shapes (a script, not a test).

Issue 18 asks for a spec-exact decoder at about 2x the speed of the one it replaced,
measured for 200,000 events of ~100 B fed in 64 KiB chunks. This script feeds each
stream shape, chunked once up front, to three parsers in the same run:

* ``rxconn``: :class:`rxconn.sse.SSEDecoder`, a fresh one per run;
* ``split``: the least a parser can do for that one shape, written as tightly as
  possible: cut the bytes at blank lines, strip the field prefixes, decode UTF-8.
  It handles nothing else of the format (comments, CR line ends, multi-line data,
  ``retry``, BOM, dispatch rules) and returns strings or tuples, not event objects;
* ``httpx-sse``: httpx-sse's own sans-I/O pieces (``SSELineDecoder`` +
  ``SSEDecoder``) behind an incremental UTF-8 decoder, which is what its
  ``aiter_sse()`` runs per chunk (skipped if httpx-sse is not installed).

Shapes: ``data: X`` blocks and ``id: N`` + ``data: X`` blocks (the hub's shape, ids like
``Ab3dEf9hIjKlMnOp:12345``), the two the decoder recognises as a whole; then slower
paths for comparison: typed events (``event: T`` + ``data: X``, read line by line), CRLF
line ends (normalised first), 10 KiB events (long lines), and the hub's shape with a
``: ping`` comment block after every 50th event (one odd block per run of regular ones:
the per-block loop). The references cannot parse that last stream correctly, so it
times rxconn alone.

Variants run interleaved (round 1: A, B, C; round 2: A, B, C; ...) so slow drifts of a
shared machine hit all of them alike. The report gives best and median ns/event, and
ratios as best/best and as the paired median (the median of the per-round ratios). The
garbage collector stays on, as in real use. Nothing here asserts a timing; the event
counts are checked so that a parser that silently drops events cannot look fast.

Run from the repository root::

    python -W error bench/bench_sse_decoder.py [--rounds N] [--events N]
"""

from __future__ import annotations

import argparse
import codecs
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rxconn.sse import SSEDecoder  # noqa: E402


try:  # in the dev extra; the comparison is skipped without it
    from httpx_sse._decoders import SSEDecoder as HttpxEventDecoder
    from httpx_sse._decoders import SSELineDecoder as HttpxLineDecoder
except ImportError:  # pragma: no cover - depends on the environment
    HttpxEventDecoder = None  # type: ignore[assignment,misc]
    HttpxLineDecoder = None  # type: ignore[assignment,misc]


CHUNK = 64 * 1024
EVENTS = 200_000
ROUNDS = 7
PAYLOAD = b'{"seq":%07d,"topic":"prices","body":"' + b"x" * 58 + b'"}'

Feed = Callable[[bytes], Sequence[object]]


# ============================================================ stream shapes


def _payload(i: int) -> bytes:
    return PAYLOAD % i


def _data(i: int) -> bytes:
    return b"data: " + _payload(i) + b"\n\n"


def _id_data(i: int) -> bytes:
    return b"id: Ab3dEf9hIjKlMnOp:%d\ndata: " % (i + 1) + _payload(i) + b"\n\n"


def _event_data(i: int) -> bytes:
    return b"event: tick\ndata: " + _payload(i) + b"\n\n"


def _data_crlf(i: int) -> bytes:
    return b"data: " + _payload(i) + b"\r\n\r\n"


def _id_data_pings(i: int) -> bytes:
    return _id_data(i) + (b": ping\n\n" if i % 50 == 49 else b"")


def _data_10k(i: int) -> bytes:
    return b"data: " + (b"%07d" % i) + b"y" * (10 * 1024 - 7) + b"\n\n"


# ============================================================ reference parsers


class SplitParser:
    """Cut at blank lines, strip the prefixes, decode: one tight ``feed`` per shape."""

    def __init__(self, separator: bytes = b"\n\n") -> None:
        """Start with an empty carry-over buffer; ``separator`` is the blank-line bytes."""
        self._buf = b""
        self._sep = separator

    def feed_data(self, chunk: bytes) -> list[str]:
        """``data: X`` blocks: return the payloads."""
        blocks = (self._buf + chunk).split(self._sep)
        self._buf = blocks.pop()
        return [block[6:].decode() for block in blocks]

    def feed_fields(self, chunk: bytes) -> list[tuple[str, str]]:
        """``<field>: V\\ndata: X`` blocks: return ``(V, X)`` pairs."""
        blocks = (self._buf + chunk).split(self._sep)
        self._buf = blocks.pop()
        out = []
        for block in blocks:
            head, _, data = block.partition(b"\ndata: ")
            out.append((head[head.index(b":") + 2 :].decode(), data.decode()))
        return out


class HttpxSSEParser:
    """httpx-sse's line and event decoders, fed what ``aiter_sse()`` would feed them."""

    def __init__(self) -> None:
        """One incremental UTF-8 decoder, line decoder and event decoder per stream."""
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        self._lines = HttpxLineDecoder().decode
        self._events = HttpxEventDecoder().decode

    def feed(self, chunk: bytes) -> list[object]:
        """Return the events completed by ``chunk``."""
        out = []
        decode = self._events
        for line in self._lines(self._text(chunk)):
            event = decode(line)
            if event is not None:
                out.append(event)
        return out


class Shape:
    """One benchmarked stream: its blocks, how many, and its split reference."""

    def __init__(
        self,
        name: str,
        block: Callable[[int], bytes],
        count: int,
        split: Callable[[], Feed] | None,
    ) -> None:
        """Build the stream and cut it into CHUNK-sized pieces once."""
        self.name = name
        self.count = count
        stream = b"".join(block(i) for i in range(count))
        self.size = len(stream)
        self.chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]
        self.split = split


def shapes(events: int) -> list[Shape]:
    """The measured shapes: the two common ones first, then the slower paths."""
    return [
        Shape("data: X", _data, events, lambda: SplitParser().feed_data),
        Shape("id: N + data: X", _id_data, events, lambda: SplitParser().feed_fields),
        Shape("event: T + data: X", _event_data, events, lambda: SplitParser().feed_fields),
        Shape("data: X, CRLF", _data_crlf, events, lambda: SplitParser(b"\r\n\r\n").feed_data),
        Shape("data: 10 KiB", _data_10k, max(1, events // 100), lambda: SplitParser().feed_data),
        # The references would count the pings as events (httpx-sse dispatches a phantom
        # event for each once an id was seen), so this one times rxconn alone.
        Shape("id+data, ping/50", _id_data_pings, events, None),
    ]


# ============================================================ timing


def run_once(factory: Callable[[], Feed], chunks: list[bytes]) -> tuple[float, int]:
    """Feed every chunk to a fresh parser; return (seconds, events)."""
    feed = factory()
    count = 0
    start = time.perf_counter()
    for chunk in chunks:
        count += len(feed(chunk))
    return time.perf_counter() - start, count


def measure(shape: Shape, rounds: int) -> dict[str, list[float]]:
    """ns/event per parser over interleaved rounds (one warm-up round first)."""
    parsers: dict[str, Callable[[], Feed]] = {"rxconn": lambda: SSEDecoder().feed}
    if shape.split is not None:
        parsers["split"] = shape.split
    if HttpxLineDecoder is not None and shape.split is not None:
        parsers["httpx-sse"] = lambda: HttpxSSEParser().feed
    times: dict[str, list[float]] = {name: [] for name in parsers}
    for round_ in range(rounds + 1):
        for name, factory in parsers.items():
            secs, count = run_once(factory, shape.chunks)
            if count != shape.count:
                raise RuntimeError(f"{name}: {count} events of {shape.count} ({shape.name})")
            if round_:
                times[name].append(secs * 1e9 / shape.count)
    return times


def ratio(a: list[float], b: list[float]) -> str:
    """``best/best (paired median)`` of two ns/event series."""
    paired = statistics.median(x / y for x, y in zip(a, b, strict=True))
    return f"{min(a) / min(b):.2f}x (paired {paired:.2f}x)"


def main() -> None:
    """Measure every shape and print ns/event and the time ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="measured rounds")
    parser.add_argument("--events", type=int, default=EVENTS, help="events per shape")
    args = parser.parse_args()
    print(
        f"Python {sys.version.split()[0]}, {args.events:,} events of ~100 B per shape, "
        f"{CHUNK // 1024} KiB chunks, {args.rounds} interleaved rounds after one warm-up"
    )
    print("ns/event: best / median; ratio = rxconn time / other time (lower is better)")
    for shape in shapes(args.events):
        times = measure(shape, args.rounds)
        cells = "  ".join(
            f"{name} {min(ts):7,.0f} / {statistics.median(ts):7,.0f}" for name, ts in times.items()
        )
        print(f"{shape.name:<20} ({shape.count:,} events, {shape.size >> 20} MiB)  {cells}")
        line = f"{'':<20}"
        if "split" in times:
            line += f" rxconn/split {ratio(times['rxconn'], times['split'])}"
        if "httpx-sse" in times:
            line += f"  rxconn/httpx-sse {ratio(times['rxconn'], times['httpx-sse'])}"
        if line.strip():
            print(line)


if __name__ == "__main__":
    main()
