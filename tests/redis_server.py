"""A real ``redis-server`` on a free loopback port, and the endpoint processes that share it.

:class:`RedisServer` runs ``redis-server`` without persistence, and can kill and restart it on
the same port. :class:`Node` runs ``tests/redis_node.py`` in another OS process: an endpoint with
a ``RedisBroker`` that its clients drive with JSON commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from pathlib import Path

__all__ = ["Node", "RedisServer", "free_port", "stop_process"]

STARTUP_TIMEOUT = 10.0
"""How long a server or a node may take to accept connections."""

NODE_SCRIPT = Path(__file__).with_name("redis_node.py")


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def stop_process(process: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to ``process`` (if it still runs) and wait for it; SIGKILL it after 10 s."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            await asyncio.wait_for(process.wait(), 10.0)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


class RedisServer:
    """``redis-server`` on ``127.0.0.1`` and a fixed free port, with no persistence."""

    def __init__(self, program: str, directory: Path) -> None:
        self.program = program
        self.directory = directory
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start the server and wait until it answers ``PING``."""
        self.process = await asyncio.create_subprocess_exec(
            self.program,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            "redis.log",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT
        while not await self._answers_ping():
            if self.process.returncode is not None or loop.time() > deadline:
                log_file = self.directory / "redis.log"
                log = log_file.read_text(errors="replace") if log_file.exists() else ""
                await self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            await asyncio.sleep(0.02)

    async def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would, and wait until it is gone."""
        if self.process is not None:
            await stop_process(self.process, signal.SIGKILL)

    async def stop(self) -> None:
        """Stop the server (SIGTERM; a paused one is resumed first) and wait until it is gone."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.resume()
            await stop_process(self.process)

    def pause(self) -> None:
        """Stop the server's process (SIGSTOP): it keeps its sockets but answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    async def _answers_ping(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            return await asyncio.wait_for(reader.readline(), 1.0) == b"+PONG\r\n"
        except (OSError, asyncio.TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class Node:
    """An endpoint with a ``RedisBroker`` in its own OS process (``tests/redis_node.py``)."""

    def __init__(self, redis_url: str, *, prefix: str = "aiohttp_wsapp") -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The ``http://`` URL clients connect to (every path is the endpoint)."""
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        """Start the process and wait until it serves (its broker connected to Redis)."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(NODE_SCRIPT),
            self.redis_url,
            str(self.port),
            self.prefix,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), STARTUP_TIMEOUT)
        except asyncio.TimeoutError:
            line = b""
        if line.strip() != b"ready":
            await self.stop()
            raise RuntimeError(f"the node on port {self.port} did not start: {line!r}")

    async def stop(self) -> None:
        """Stop the process (SIGTERM: a graceful shutdown) and wait until it is gone."""
        if self.process is not None:
            await stop_process(self.process)
            assert self.process.stdout is not None
            await self.process.stdout.read()
