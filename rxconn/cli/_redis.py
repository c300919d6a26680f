"""LocalRedis: a throwaway ``redis-server`` on 127.0.0.1 (a free port, a temp dir, no persistence).

``demo --cluster`` starts one, and the Redis hub's tests start theirs with it
(killing it, restarting it empty on the same port).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import tempfile


__all__ = ["LocalRedis"]

START_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalRedis:
    """One ``redis-server`` process on 127.0.0.1 that a test can stop and start again."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="rxconn-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    async def start(self) -> None:
        """Start the server (empty: no persistence) and wait until it answers PING."""
        args = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir.name,
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self._dir.name
        )
        async with asyncio.timeout(START_TIMEOUT):
            while not await self._answers():
                if self._process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self._process.returncode}")
                await asyncio.sleep(0.02)

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return (await reader.readline()).startswith(b"+PONG")
        finally:
            writer.close()
            await writer.wait_closed()

    async def stop(self) -> None:
        """Kill the server (SIGKILL: as abrupt as a crash) and reap it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused server is killed all the same
            process.kill()
            await asyncio.to_thread(process.wait)

    def pause(self) -> None:
        """Stop the server answering (SIGSTOP), keeping its data: a brief outage."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server answer again (SIGCONT)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    async def restart_empty(self) -> None:
        """Stop, then start again on the same port with no data (Redis "lost everything")."""
        await self.stop()
        await self.start()

    def cleanup(self) -> None:
        self._dir.cleanup()
