"""Real Redis for the tests, and the processes that share it: one place that starts them.

:class:`RedisServer` runs ``redis-server`` without persistence, and can kill and restart it on
the same port; :class:`RedisCluster` runs six of them as a Redis Cluster. :class:`Node` runs
``tests/redis_node.py`` in another OS process: an endpoint with a ``RedisBroker`` (or a
``RedisClusterBroker``, with history or without) that its clients (``tests/node_clients.py``)
drive with JSON commands; :func:`starting_nodes` starts them for a test.
:class:`ServerProcess` is what a server in a process of its own shares with the others (the
chat example's, in its browser test).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from support import TIMEOUT

from aiohttp_wsapp import History

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "ClusterNode",
    "Node",
    "RedisCluster",
    "RedisServer",
    "ServerProcess",
    "StartNode",
    "free_port",
    "redis_client",
    "starting_nodes",
    "stop_process",
    "wait_for_count",
    "wait_until",
]

STARTUP_TIMEOUT = 10.0
"""How long a server or a node may take to accept connections."""

COUNTED_WITHIN = 1.0
"""SPEC §5: with a Redis broker, a join or leave counts in every process within a second."""

NODE_SCRIPT = Path(__file__).with_name("redis_node.py")
CLUSTER_NODE_TIMEOUT_MS = 2000
"""A cluster's ``cluster-node-timeout``: a primary silent this long is failed over."""


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A loopback port for a cluster node: free, with its bus port (10,000 higher) free too."""
    while True:
        with socket.socket() as sock, socket.socket() as bus:
            port = random.randrange(20000, 55535)
            try:
                sock.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port


def redis_server_command(program: str, port: int, directory: Path, *options: str) -> list[str]:
    """The command line of ``redis-server`` on ``127.0.0.1:port``, without persistence, logging
    to ``redis.log`` in ``directory``, with more ``options``."""
    return [
        program,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        *options,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--logfile",
        "redis.log",
    ]


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


class ServerProcess:
    """A server in its own OS process on ``127.0.0.1`` and a fixed free port.

    A subclass's ``start`` runs it with :meth:`spawn`, then waits with :meth:`serves`.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The ``http://`` URL of the server (a subclass that speaks another protocol says so)."""
        return f"http://127.0.0.1:{self.port}/"

    async def spawn(
        self, *command: str, stdout: int, stderr: int | None = None
    ) -> asyncio.subprocess.Process:
        """Run ``command`` (no input; ``stdout`` and ``stderr`` as for ``asyncio``'s) as the
        server's process; return it."""
        self.process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
        return self.process

    async def serves(self, answers: Callable[[], Awaitable[bool]]) -> bool:
        """Poll ``answers()`` until it holds: ``True``; ``False`` if the process exits or
        :data:`STARTUP_TIMEOUT` passes first."""
        assert self.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT
        while not await answers():
            if self.process.returncode is not None or loop.time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def accepts_connections(self) -> bool:
        """Whether the server accepts a TCP connection (closed at once)."""
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would, and wait until it is gone."""
        if self.process is not None:
            await stop_process(self.process, signal.SIGKILL)

    async def stop(self) -> None:
        """Stop the process (SIGTERM: a graceful shutdown) and wait until it is gone."""
        if self.process is not None:
            await stop_process(self.process)


class RedisServer(ServerProcess):
    """``redis-server`` on ``127.0.0.1`` and a fixed free port, with no persistence."""

    def __init__(self, program: str, directory: Path) -> None:
        super().__init__()
        self.program = program
        self.directory = directory

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start the server and wait until it answers ``PING``."""
        await self.spawn(
            *redis_server_command(self.program, self.port, self.directory),
            stdout=asyncio.subprocess.DEVNULL,
        )
        if not await self.serves(self._answers_ping):
            log_file = self.directory / "redis.log"
            log = log_file.read_text(errors="replace") if log_file.exists() else ""
            await self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")

    async def stop(self) -> None:
        """Stop the server (SIGTERM; a paused one is resumed first) and wait until it is gone."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.resume()
        await super().stop()

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


class Node(ServerProcess):
    """An endpoint with a ``RedisBroker`` (or ``RedisClusterBroker``), and history or not, in
    its own OS process (``tests/redis_node.py``)."""

    def __init__(
        self,
        redis_url: str,
        *,
        prefix: str = "aiohttp_wsapp",
        cluster: bool = False,
        history: History | None = None,
    ) -> None:
        super().__init__()
        self.redis_url = redis_url
        self.prefix = prefix
        self.cluster = cluster
        """Whether the node uses ``RedisClusterBroker`` (``redis_url`` is a cluster node's)."""
        self.history = history
        """The node's history (its size and ttl; the envelope is the default one), or none."""

    def options(self) -> list[str]:
        """The command-line options of ``tests/redis_node.py`` for this node."""
        options = ["--prefix", self.prefix]
        if self.cluster:
            options.append("--cluster")
        if self.history is not None:
            options += ["--history", str(self.history.size), str(self.history.ttl)]
        return options

    async def start(self) -> None:
        """Start the process and wait until it serves (its broker connected to Redis)."""
        process = await self.spawn(
            sys.executable,
            str(NODE_SCRIPT),
            self.redis_url,
            str(self.port),
            *self.options(),
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT)
        except asyncio.TimeoutError:
            line = b""
        if line.strip() != b"ready":
            await self.stop()
            raise RuntimeError(f"the node on port {self.port} did not start: {line!r}")

    async def stop(self) -> None:
        """Stop the process (SIGTERM: a graceful shutdown) and wait until it is gone."""
        await super().stop()
        if self.process is not None:
            assert self.process.stdout is not None
            await self.process.stdout.read()


@contextlib.asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[Redis]:
    """A ``redis.asyncio`` client of the Redis at ``url``, closed on the way out."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


StartNode = Callable[..., Awaitable[Node]]
"""``start(**options)``: start a :class:`Node` with these options, once it serves."""


@contextlib.asynccontextmanager
async def starting_nodes(redis_url: str, **defaults: Any) -> AsyncIterator[StartNode]:
    """Start nodes on ``redis_url``, each with ``Node`` options (over ``defaults``); stop them
    all on the way out."""
    started: list[Node] = []

    async def start(**options: Any) -> Node:
        node = Node(redis_url, **{**defaults, **options})
        started.append(node)
        await node.start()
        return node

    yield start
    await asyncio.gather(*(node.stop() for node in started))


class ClusterNode:
    """One ``redis-server`` of a :class:`RedisCluster`, in cluster mode, in a directory of its
    own (its ``nodes.conf`` survives a kill, so a restarted node rejoins as what it was)."""

    def __init__(self, program: str, directory: Path) -> None:
        self.program = program
        self.port = free_cluster_port()
        self.directory = directory / str(self.port)
        self.directory.mkdir()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:port``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The ``redis://`` URL of this node."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server (without waiting for it)."""
        self.process = subprocess.Popen(
            redis_server_command(
                self.program,
                self.port,
                self.directory,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(CLUSTER_NODE_TIMEOUT_MS),
                # A shard without a primary leaves the others serving (and count() counting).
                "--cluster-require-full-coverage",
                "no",
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and wait until it is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM the server and wait until it is gone (SIGKILL after 10 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10.0)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def running(self) -> bool:
        """Whether the process runs."""
        return self.process is not None and self.process.poll() is None

    def command(self, *args: str) -> str:
        """Run ``redis-cli`` against this node; return its output."""
        done = subprocess.run(
            [self.cli, "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT,
        )
        return done.stdout

    cli = "redis-cli"


class RedisCluster:
    """Six ``redis-server`` in cluster mode on loopback: three primaries with a replica each.

    Synchronous (for a module-scoped fixture): :meth:`start` runs the nodes, ``redis-cli
    --cluster create`` and waits for ``cluster_state:ok``.
    """

    def __init__(self, program: str, cli: str, directory: Path, size: int = 6) -> None:
        ClusterNode.cli = cli
        self.cli = cli
        self.nodes = [ClusterNode(program, directory) for _ in range(size)]

    @property
    def url(self) -> str:
        """A URL of one node: the broker finds the others."""
        return self.nodes[0].url

    def start(self) -> None:
        """Start the nodes, make them a cluster, and wait until it serves every slot."""
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            self._wait(lambda node=node: node.command("PING").strip() == "PONG", "PING")
        done = subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(node.address for node in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        self.wait_healthy()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def node(self, address: str) -> ClusterNode:
        """The node at ``address`` (``host:port``)."""
        return next(node for node in self.nodes if node.address == address)

    def topology(self) -> dict[str, list[str]]:
        """Each live primary's address, and its replicas' addresses, as a live node sees them."""
        for node in self.nodes:
            if node.running:
                lines = node.command("CLUSTER", "NODES").splitlines()
                if lines:
                    break
        primaries: dict[str, list[str]] = {}
        ids: dict[str, str] = {}
        replicas: list[tuple[str, str]] = []
        for line in lines:
            fields = line.split()
            node_id, address, flags, master = (
                fields[0],
                fields[1].split("@")[0],
                fields[2],
                fields[3],
            )
            if "fail" in flags.split(",") or "fail?" in flags.split(","):
                continue
            if "master" in flags:
                primaries[address] = []
                ids[node_id] = address
            elif master != "-":
                replicas.append((master, address))
        for master, address in replicas:
            if master in ids:
                primaries[ids[master]].append(address)
        return primaries

    def primary_of(self, slot: int) -> str:
        """The address of the primary that serves ``slot``, as a live node sees it."""
        for node in self.nodes:
            if node.running:
                for line in node.command("CLUSTER", "NODES").splitlines():
                    fields = line.split()
                    if "master" not in fields[2] or "fail" in fields[2]:
                        continue
                    for ranges in fields[8:]:
                        first, _, last = ranges.partition("-")
                        if first.isdigit() and int(first) <= slot <= int(last or first):
                            return fields[1].split("@")[0]
        raise AssertionError(f"no primary serves slot {slot}")

    def wait_healthy(self) -> None:
        """Wait until every node runs, every slot is served, and every node agrees."""

        def healthy() -> bool:
            for node in self.nodes:
                info = node.command("CLUSTER", "INFO")
                if "cluster_state:ok" not in info or "cluster_known_nodes:6" not in info:
                    return False
                if any(
                    " fail" in line or ",fail" in line
                    for line in node.command("CLUSTER", "NODES").splitlines()
                ):
                    return False
            return len(self.topology()) == 3

        self._wait(healthy, "cluster_state:ok", timeout=60.0)

    @staticmethod
    def _wait(condition: Any, what: str, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis cluster did not reach {what} within {timeout} s")
            time.sleep(0.05)


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {condition.__name__}")
        await asyncio.sleep(0.02)


async def wait_for_count(
    count: Callable[[], Awaitable[int]], expected: int, timeout: float = COUNTED_WITHIN
) -> float:
    """Poll ``count()`` until it returns ``expected``; return how long that took.

    Fails after ``timeout`` seconds, showing the last count.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    last = None
    while (last := await count()) != expected:
        if loop.time() - start > timeout:
            raise AssertionError(f"counted {last}, not {expected}, after {timeout} s")
        await asyncio.sleep(0.01)
    return loop.time() - start
