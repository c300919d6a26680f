"""Throughput benchmark for :class:`rxconn.sse.SSEDecoder` (a script, not a test).

Feeds streams of 100-byte and 10 KiB single-line ``data:`` events in 16 KiB chunks and
compares against a minimal baseline parser (split on ``b"\\n\\n"``, strip ``"data: "``,
decode UTF-8) timed in the same run. Run from the repository root::

    python bench/bench_sse.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rxconn.sse import SSEDecoder  # noqa: E402


CHUNK = 16 * 1024
STREAM_BYTES = 16 * 1024 * 1024
REPEATS = 5


class BaselineParser:
    """The least a parser can do: cut blocks at blank lines and strip the data prefix."""

    def __init__(self) -> None:
        """Start with an empty carry-over buffer."""
        self._buf = b""

    def feed(self, chunk: bytes) -> list[str]:
        """Return the payloads of the blocks completed by ``chunk``."""
        blocks = (self._buf + chunk).split(b"\n\n")
        self._buf = blocks.pop()
        return [block.removeprefix(b"data: ").decode("utf-8") for block in blocks]


def make_stream(payload_size: int) -> tuple[bytes, int]:
    """Build a stream of ``data: <payload>`` events of about STREAM_BYTES in total."""
    block = b"data: " + b"x" * (payload_size - 1) + b"~" + b"\n\n"
    count = max(1, STREAM_BYTES // len(block))
    return block * count, count


def run(feed_factory: Callable[[], Callable[[bytes], Sequence[object]]], stream: bytes) -> float:
    """Feed the whole stream in CHUNK-sized pieces; return the best wall time in seconds."""
    chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]
    best = float("inf")
    for _ in range(REPEATS):
        feed = feed_factory()
        count = 0
        start = time.perf_counter()
        for chunk in chunks:
            count += len(feed(chunk))
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Benchmark both parsers for each event size and print the comparison."""
    print(f"chunk size {CHUNK} B, stream ~{STREAM_BYTES >> 20} MiB, best of {REPEATS}")
    for payload_size in (100, 10 * 1024):
        stream, count = make_stream(payload_size)
        check = SSEDecoder().feed(stream)
        assert len(check) == count and len(check[0].data) == payload_size
        results = {
            "SSEDecoder": run(lambda: SSEDecoder().feed, stream),
            "baseline": run(lambda: BaselineParser().feed, stream),
        }
        mib = len(stream) / (1024 * 1024)
        for name, secs in results.items():
            print(
                f"{payload_size:>6} B events  {name:<10}  {count / secs:>12,.0f} events/s"
                f"  {mib / secs:>8.1f} MiB/s"
            )
        ratio = results["SSEDecoder"] / results["baseline"]
        print(f"{payload_size:>6} B events  SSEDecoder time / baseline time = {ratio:.2f}x")


if __name__ == "__main__":
    main()
