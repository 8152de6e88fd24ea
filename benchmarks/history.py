"""History's costs: broadcast CPU with and without history, replay time, memory per kept message.

Run with ``python -m benchmarks.history`` (``--quick`` for a smoke run). It needs
``redis-server`` on the PATH and the ``redis`` extra for the Redis rows, starts its own Redis on a
free loopback port, and prints markdown tables.

- **Broadcast CPU**: an endpoint process (pinned to core 0 with ``taskset`` when there is one)
  with ``--peers`` client connections (100) in one group, held by this process; the endpoint
  makes ``--broadcasts`` awaited 100-byte text broadcasts to the group, one after the other; the
  row gives the endpoint process's CPU time (user + system) per broadcast, from the first call
  until every peer has every broadcast, the median of ``--repeat`` runs, the variants
  alternating. Without history, with history; in one process, then with a ``RedisBroker``.
- **Replay**: the group has 1,000 kept broadcasts of 100 bytes; one client connects and joins
  since the position before them: the time ``await conn.join(group, since=...)`` takes in the
  endpoint (all 1,000 handed to the socket) and the endpoint's CPU time meanwhile, and the time
  until the client has the last one.
- **Memory per kept message**: in one process (``tracemalloc`` around a ``LocalHistory`` filled
  with 1,000 broadcasts in each of 100 groups), and in Redis (``used_memory`` before and after
  1,000 kept broadcasts in each of 20 groups; ``MEMORY USAGE`` of one group's stream and hash).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

import aiohttp
from aiohttp import web

PAYLOAD = "x" * 100
GROUP = "g"


# -- the endpoint process ------------------------------------------------------------------------


def serve(port: int, redis_url: str | None, history: bool) -> None:
    """Serve an endpoint that joins every connection to the group and runs the control's orders.

    The control connection (path ``/control``) sends ``broadcast <n>`` (answered with the CPU
    seconds they took, once the peers said they have them all: ``done``), ``fill <n>`` and
    ``replay`` (a join of the next connection to ``/replay`` since the position before the last
    fill; answered with the seconds ``await conn.join`` took).
    """
    from aiohttp_wsapp import Connection, History, Position, WebSocketApp

    broker = None
    if redis_url is not None:
        from aiohttp_wsapp.redis import RedisBroker

        broker = RedisBroker(redis_url, prefix="bench-history")
    replays: asyncio.Queue[Connection] = asyncio.Queue()
    start_cpu = 0.0
    filled_from: Position | None = None

    async def control(conn: Connection, message: str | bytes) -> None:
        nonlocal start_cpu, filled_from
        assert isinstance(message, str)
        order, _, argument = message.partition(" ")
        wsapp = conn.app
        if order == "broadcast":
            start_cpu = _cpu()
            for _ in range(int(argument)):
                await wsapp.broadcast(PAYLOAD, group=GROUP)
        elif order == "done":
            await conn.send(str(_cpu() - start_cpu))
        elif order == "fill":
            filled_from = await wsapp.position(GROUP)
            for _ in range(int(argument)):
                await wsapp.broadcast(PAYLOAD, group=GROUP)
            await conn.send("filled")
        elif order == "replay":
            joining = await replays.get()
            assert filled_from is not None
            started, cpu = time.perf_counter(), _cpu()
            recovery = await joining.join(GROUP, since=filled_from)
            elapsed = [time.perf_counter() - started, _cpu() - cpu]
            await conn.send(json.dumps([*elapsed, recovery.replayed]))

    async def on_establish(conn: Connection, request: web.Request, results: Any) -> None:
        path = request.match_info.get("tail", "")
        if path == "control":
            conn.on("message", control)
        elif path == "replay":
            replays.put_nowait(conn)
        else:
            conn.join(GROUP)

    wsapp = WebSocketApp(
        on_establish, broker=broker, history=History(size=1000) if history else None
    )
    web.run_app(wsapp.to_app(), host="127.0.0.1", port=port, print=None)


def free_port() -> int:
    """A loopback TCP port that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the measuring process -----------------------------------------------------------------------


async def _start_endpoint(
    port: int, redis_url: str | None, history: bool
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "benchmarks.history", "serve", str(port)]
    command += ["--redis", redis_url] if redis_url else []
    command += ["--history"] if history else []
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        command = ["taskset", "-c", "0", *command]
    process = subprocess.Popen(command)  # noqa: ASYNC220 - started once, before measuring
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
        else:
            writer.close()
            return process
    process.kill()
    raise RuntimeError("the endpoint did not start")


async def _broadcast_cpu(
    session: aiohttp.ClientSession, url: str, peers: int, broadcasts: int
) -> float:
    sockets = [await session.ws_connect(url + "peer") for _ in range(peers)]
    control = await session.ws_connect(url + "control")
    await asyncio.sleep(0.2)  # the joins reach Redis's subscription

    async def read_all(ws: aiohttp.ClientWebSocketResponse) -> None:
        for _ in range(broadcasts):
            await ws.receive(timeout=60)

    readers = [asyncio.ensure_future(read_all(ws)) for ws in sockets]
    await control.send_str(f"broadcast {broadcasts}")
    await asyncio.gather(*readers)
    await control.send_str("done")
    cpu = float(await control.receive_str(timeout=60))
    for ws in [*sockets, control]:
        await ws.close()
    return cpu / broadcasts


async def _replay(session: aiohttp.ClientSession, url: str) -> tuple[float, float, float]:
    control = await session.ws_connect(url + "control")
    await control.send_str("fill 1000")
    assert await control.receive_str(timeout=60) == "filled"
    client = await session.ws_connect(url + "replay")
    started = time.perf_counter()
    await control.send_str("replay")
    for _ in range(1000):
        await client.receive(timeout=60)
    received = time.perf_counter() - started
    joined, cpu, replayed = json.loads(await control.receive_str(timeout=60))
    assert replayed == 1000, replayed
    await client.close()
    await control.close()
    return joined, cpu, received


async def _measure(
    redis_url: str | None, history: bool, peers: int, broadcasts: int, repeat: int
) -> tuple[float, tuple[float, float, float] | None]:
    cpu = []
    replay = None
    for _ in range(repeat):
        port = free_port()
        process = await _start_endpoint(port, redis_url, history)
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                url = f"http://127.0.0.1:{port}/"
                cpu.append(await _broadcast_cpu(session, url, peers, broadcasts))
                if history and replay is None:
                    replay = await _replay(session, url)
        finally:
            process.terminate()
            process.wait()
    return statistics.median(cpu), replay


def _local_memory() -> float:
    from aiohttp_wsapp import History
    from aiohttp_wsapp.local_history import LocalHistory

    tracemalloc.start()
    store = LocalHistory(History(size=1000))
    base = tracemalloc.get_traced_memory()[0]
    for group in range(100):
        for _ in range(1000):
            store.append(f"group-{group}", PAYLOAD)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used / 100_000


async def _redis_memory(redis_url: str) -> tuple[float, int, int]:
    from redis.asyncio import Redis

    from aiohttp_wsapp import History
    from aiohttp_wsapp.redis.history import PUBLISH, publish_args
    from aiohttp_wsapp.redis.names import Channels, HistoryKeys

    client = Redis.from_url(redis_url)
    await client.flushall()
    before = (await client.info("memory"))["used_memory"]
    keys = HistoryKeys(Channels("bench-memory"))
    history = History(size=1000)
    for group in range(20):
        for _ in range(1000):
            args = publish_args(history, b"nobody", b"\x01\x00\x00\x00\x00", PAYLOAD.encode())
            await client.eval(PUBLISH, 2, *keys.of(f"group-{group}"), *args)
    used = (await client.info("memory"))["used_memory"] - before
    hash_key, stream_key = keys.of("group-0")
    stream = await client.memory_usage(stream_key, samples=0)
    hash_ = await client.memory_usage(hash_key)
    await client.aclose()
    return used / 20_000, int(stream or 0), int(hash_ or 0)


async def main(arguments: argparse.Namespace) -> None:
    peers, broadcasts, repeat = arguments.peers, arguments.broadcasts, arguments.repeat
    if arguments.quick:
        peers, broadcasts, repeat = 20, 200, 1
    redis = None
    program = shutil.which("redis-server")
    directory = tempfile.mkdtemp()
    if program:
        port = free_port()
        redis = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
            [program, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)
    redis_url = None if redis is None else f"redis://127.0.0.1:{port}/0"
    try:
        print(f"Broadcast CPU, {peers} peers in the group, {broadcasts} broadcasts, ", end="")
        print(f"median of {repeat}\n")
        print("| broker | without history | with history | ratio |")
        print("| --- | --- | --- | --- |")
        replays = {}
        for name, url in (("none (one process)", None), ("RedisBroker", redis_url)):
            if name == "RedisBroker" and url is None:
                print("| RedisBroker | (no redis-server) | | |")
                continue
            without, _ = await _measure(url, False, peers, broadcasts, repeat)
            with_history, replay = await _measure(url, True, peers, broadcasts, repeat)
            replays[name] = replay
            print(
                f"| {name} | {without * 1e6:.1f} µs | {with_history * 1e6:.1f} µs "
                f"| {with_history / without:.2f}x |"
            )
        print("\nReplay of 1,000 missed 100-byte broadcasts to one client\n")
        print("| broker | `await conn.join(since=...)` | its CPU time | until the last arrives |")
        print("| --- | --- | --- | --- |")
        for name, replay in replays.items():
            assert replay is not None
            wall, cpu, received = (value * 1e3 for value in replay)
            print(f"| {name} | {wall:.1f} ms | {cpu:.1f} ms | {received:.1f} ms |")
        print("\nMemory per kept 100-byte broadcast\n")
        print(f"- in one process: {_local_memory():.0f} bytes")
        if redis_url is not None:
            per, stream, hash_ = await _redis_memory(redis_url)
            print(
                f"- in Redis: {per:.0f} bytes (one group of 1,000: stream {stream} bytes, "
                f"hash {hash_} bytes)"
            )
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="measure", choices=["measure", "serve"])
    parser.add_argument("port", nargs="?", type=int)
    parser.add_argument("--redis")
    parser.add_argument("--history", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--broadcasts", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()
    if arguments.command == "serve":
        serve(arguments.port, arguments.redis, arguments.history)
    else:
        asyncio.run(main(arguments))
