"""HubProcess: ``python -m rxconn serve --port 0 ...`` as a child process, its port read
from its banner. ``demo --cluster``, the cluster tests and ``bench/bench_cluster.py``
start their hubs with it (and kill, pause or stop them)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Final


__all__ = ["HubProcess"]

BANNER: Final = b"rxconn hub on http://127.0.0.1:"
START_TIMEOUT: Final = 20.0
STOP_TIMEOUT: Final = 10.0


class HubProcess:
    """One hub process: ``serve`` with ``options`` (``--redis URL``, ``--echo``, ...).

    Args:
        options: Arguments after ``serve --port 0``.
        python: Interpreter options (``-W error``, ``-X faulthandler``).
    """

    def __init__(self, options: Sequence[str], *, python: Sequence[str] = ()) -> None:
        self.args = [sys.executable, *python, "-m", "rxconn", "serve", "--port", "0", *options]
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    async def start(self) -> None:
        """Start it and wait for its banner (``RuntimeError`` if it does not come)."""
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(
            asyncio.to_thread(self.process.stdout.readline), START_TIMEOUT
        )
        if not line.startswith(BANNER):
            await self.stop()
            raise RuntimeError(f"a hub process did not start: {line.decode(errors='replace')!r}")
        self.port = int(line[len(BANNER) :].split(b"/")[0])

    def kill(self) -> None:
        """SIGKILL: as abrupt as a crash."""
        self._signal(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: the process stops running (the kernel still accepts connections)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)

    async def stop(self) -> bool:
        """SIGTERM (SIGKILL after a bound), reap it and close its pipe; idempotent.

        Returns False if it had to be killed (it did not stop within the bound).
        """
        process, self.process = self.process, None
        if process is None:
            return True
        clean = True
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused process could not stop
            process.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), STOP_TIMEOUT)
            except TimeoutError:
                clean = False
                process.kill()
                await asyncio.to_thread(process.wait)
        if process.stdout is not None:
            process.stdout.close()
        return clean

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None:
            self.process.send_signal(sig)
