"""Broadcasts through Redis: the broker's throughput, and the fan-out latency of one broadcast.

Run with ``python benchmarks/redis_fanout.py`` (``--quick`` for a smoke run;
``--scenarios throughput`` or ``--scenarios fanout`` for one part). It needs ``redis-server`` on
the PATH (``apt-get install redis-server``) and the ``redis`` extra (the ``hiredis`` extra for
the rows that use hiredis), starts its own Redis on a free loopback port, and prints markdown
tables.

**Throughput** (issue 15): one process with an endpoint and no client connections, in which
``--publishers`` tasks (50) each ``await wsapp.broadcast(...)`` of a 100-byte text one after
the other, ``--broadcasts`` in all; a broadcast counts when the process has delivered it (with
Redis: when it came back from Redis). The publishers stand for the handlers of many client
connections: with one broadcast in flight per publisher, the rate is bounded by their number
over the round trip to Redis, so ``--publishers 200`` shows more of what the broker can do. The
table gives
broadcasts per second (first call to last delivery) and the process's CPU time (user + system)
per broadcast, the median of ``--repeat`` runs, each in a fresh process; runs of the variants
alternate, so that the drift of a shared machine hits all of them alike. With ``taskset``, the
process runs on core 0 and Redis on core 1. Rows:

- *local delivery*: no broker, the reference;
- *RedisBroker*, with redis-py's pure-Python parser, and with hiredis's (when installed).

(The rows of 0.1's broker and of each lever alone, in ``RESULTS.md``'s issue 15 section, came
from subclasses that replaced the broker's private methods; the ``aiohttp_wsapp.redis``
package has no such seams since issue 19, and those rows went with them. The commit that
measured them has them.)

**Fan-out**, each scenario with the same number of client connections:

- *one process*: one endpoint process without a broker holds every connection;
- *two processes + Redis*: two endpoint processes with a ``RedisBroker`` on the same Redis hold
  half of the connections each.

A control connection to the first process asks it for a broadcast of a 100-byte text message;
the latency of a connection is the time from that request to the message's arrival on that
connection, as seen by this (the client) process. Each round waits until every connection has
its message; the table gives the percentiles over every connection of every measured round, and
of the time the last connection of a round waited. All processes share the machine's cores, so
the numbers include the client's own work of reading thousands of frames.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import os
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PAYLOAD_SIZE = 100
CONNECT_PARALLELISM = 100
ROUND_TIMEOUT = 30.0
STARTUP_TIMEOUT = 20.0


# -- the endpoint processes ----------------------------------------------------------------------


def serve(port: int, redis_url: str | None) -> None:
    """Serve an endpoint on ``port`` (with a ``RedisBroker`` when ``redis_url`` is given).

    A text message ``broadcast <n>`` from any connection broadcasts a 100-byte text message
    that starts with ``<n>`` to every connection.
    """
    from aiohttp import web

    from aiohttp_wsapp import Connection, WebSocketServer, create_app

    broker: Any = None
    if redis_url is not None:
        from aiohttp_wsapp.redis import RedisBroker

        broker = RedisBroker(redis_url, prefix="fanout")

    async def on_message(conn: Connection, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("broadcast "):
            number = message.split()[1]
            await conn.app.broadcast(number.ljust(PAYLOAD_SIZE, "."))

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        conn.on("message", on_message)

    async def main() -> None:
        app = create_app(
            on_establish, websocket_server=WebSocketServer(heartbeat=None), broker=broker
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
            print("ready", flush=True)
            stopping = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
            await stopping.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


# -- throughput of the broker path ---------------------------------------------------------------


@dataclass
class Variant:
    """One row of the throughput table: local delivery (no ``broker``), or a broker's."""

    name: str
    broker: str | None = None
    """``"redis"`` (``RedisBroker``), ``"cluster"`` (``RedisClusterBroker``) or ``None``."""
    hiredis: bool = False
    """Whether redis-py may use hiredis's parser (when it is installed)."""


VARIANTS = (
    Variant("local delivery (no broker)"),
    Variant("RedisBroker, pure-Python parser", broker="redis"),
    Variant("RedisBroker (with hiredis)", broker="redis", hiredis=True),
)


def throughput_worker(
    broker_kind: str | None,
    url: str | None,
    hiredis: bool,
    broadcasts: int,
    publishers: int,
    groups: int = 0,
) -> None:
    """Measure one variant in this process; print ``broadcasts/s CPU-µs-per-broadcast``.

    With ``groups``, publisher ``k`` broadcasts to the group ``g{k % groups}``, of which this
    process is a member (as far as its broker knows), rather than to everyone.
    """
    if not hiredis:
        sys.modules["hiredis"] = None  # type: ignore[assignment]  # redis-py sees none
    from aiohttp_wsapp import WebSocketApp
    from aiohttp_wsapp.broker import Broadcast

    broker = _broker(broker_kind, url)
    wsapp = WebSocketApp(lambda *args: None, broker=broker)
    send = wsapp.deliver
    payload = "x" * PAYLOAD_SIZE

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        delivered = 0
        expected = 0
        all_delivered = loop.create_future()

        def deliver(broadcast: Broadcast) -> None:
            nonlocal delivered
            send(broadcast)
            delivered += 1
            if delivered == expected and not all_delivered.done():
                all_delivered.set_result(None)

        async def publisher(count: int, group: str | None) -> None:
            for _ in range(count):
                await wsapp.broadcast(payload, group=group)

        async def run(count: int) -> None:
            nonlocal expected, all_delivered
            expected, all_delivered = delivered + count, loop.create_future()
            share = count // publishers
            await asyncio.gather(
                *(publisher(share, f"g{k % groups}" if groups else None) for k in range(publishers))
            )
            await asyncio.wait_for(all_delivered, ROUND_TIMEOUT)

        expected = publishers * (broadcasts // publishers)
        if broker is None:
            wsapp.deliver = deliver  # type: ignore[method-assign]  # count what broadcast sends
        else:
            await broker.start(deliver)  # as the application's startup would
            for k in range(groups):
                broker.group_joined(f"g{k}")  # as a first member's join would
        try:
            await run(min(broadcasts, 2000))  # warm up: connections, caches
            started, cpu = time.perf_counter(), time.process_time()
            await run(broadcasts)
            return time.perf_counter() - started, time.process_time() - cpu
        finally:
            if broker is not None:
                await broker.stop()

    wall, cpu = asyncio.run(main())
    done = publishers * (broadcasts // publishers)
    print(f"{done / wall:.1f} {cpu / done * 1e6:.2f}", flush=True)


def _broker(kind: str | None, url: str | None) -> Any:
    """The broker of a variant: ``None``, a ``RedisBroker`` or a ``RedisClusterBroker``."""
    if kind is None:
        return None
    assert url is not None
    if kind == "redis":
        from aiohttp_wsapp.redis import RedisBroker

        return RedisBroker(url, prefix="throughput")
    from aiohttp_wsapp.redis import RedisClusterBroker

    return RedisClusterBroker(url, prefix="throughput")


Runs = dict[str, list["tuple[float, float] | str"]]
"""Each variant's runs: (broadcasts/s, CPU µs per broadcast), or the error that ended the run."""


def run_throughput(redis_url: str, broadcasts: int, publishers: int, repeat: int) -> Runs:
    """Run every variant ``repeat`` times, alternating; return the runs of each."""
    hiredis = importlib.util.find_spec("hiredis") is not None
    variants = [v for v in VARIANTS if hiredis or not v.hiredis]
    runs: Runs = {v.name: [] for v in variants}
    for _ in range(repeat):
        for variant in variants:
            command = [*_pin(0), sys.executable, __file__, "--throughput-worker"]
            command += ["--broadcasts", str(broadcasts), "--publishers", str(publishers)]
            if variant.hiredis:
                command.append("--hiredis")
            if variant.broker is not None:
                command += ["--broker", variant.broker, "--redis", redis_url]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode == 0:
                rate, cpu = map(float, done.stdout.split())
                runs[variant.name].append((rate, cpu))
                print(f"  {variant.name}: {rate:,.0f}/s, {cpu:.1f} µs", file=sys.stderr)
            else:  # 0.1's pool, for one, runs out of connections past 100 publishers
                error = (done.stderr.strip().splitlines() or ["no output"])[-1]
                runs[variant.name].append(error)
                print(f"  {variant.name}: failed: {error}", file=sys.stderr)
    if not hiredis:
        print("hiredis is not installed: its rows are left out", file=sys.stderr)
    return runs


def print_throughput(runs: Runs, broadcasts: int, publishers: int) -> None:
    """Print the throughput table: medians, and the CPU time against local delivery's."""
    print(
        f"Broker throughput: {broadcasts:,} broadcasts of 100 bytes from {publishers} "
        f"concurrent publishers, median of {len(next(iter(runs.values())))} runs\n"
    )
    print("| variant | broadcasts/s | CPU µs per broadcast | CPU vs local | runs (broadcasts/s) |")
    print("| --- | ---: | ---: | ---: | --- |")
    local_cpu: float | None = None
    for name, results in runs.items():
        measured = [result for result in results if not isinstance(result, str)]
        errors = sorted({result for result in results if isinstance(result, str)})
        if not measured:
            print(f"| {name} | fails | | | {'; '.join(errors)} |")
            continue
        rate = statistics.median(rate for rate, _ in measured)
        cpu = statistics.median(cpu for _, cpu in measured)
        local_cpu = cpu if local_cpu is None else local_cpu  # the first row is local delivery
        each = ", ".join(f"{rate:,.0f}" for rate, _ in measured)
        if errors:
            each += f"; {len(results) - len(measured)} failed: {'; '.join(errors)}"
        print(f"| {name} | {rate:,.0f} | {cpu:.1f} | {cpu / local_cpu:.1f}x | {each} |")
    print()


def _pin(core: int) -> list[str]:
    """The ``taskset`` prefix that runs a command on ``core`` (none without taskset or cores)."""
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(core)]


# -- a lean WebSocket client ---------------------------------------------------------------------


class Client(asyncio.Protocol):
    """One client connection that records when each broadcast arrives; no task per connection."""

    def __init__(self, arrivals: dict[int, list[float]], waiting: dict[int, int]) -> None:
        self.arrivals = arrivals
        self.waiting = waiting
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data
        if not self.upgraded.done():
            head, separator, rest = self.buffer.partition(b"\r\n\r\n")
            if not separator:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(head.decode(errors="replace")))
                return
            self.upgraded.set_result(None)
            self.buffer = rest
        while len(self.buffer) >= 2:
            length = self.buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                (length,) = struct.unpack_from("!H", self.buffer, 2)
                start = 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                (length,) = struct.unpack_from("!Q", self.buffer, 2)
                start = 10
            if len(self.buffer) < start + length:
                return
            opcode = self.buffer[0] & 0x0F
            payload = self.buffer[start : start + length]
            self.buffer = self.buffer[start + length :]
            if opcode == 0x1:
                self._arrived(int(payload[:8].split(b".")[0]), now)

    def _arrived(self, number: int, now: float) -> None:
        self.arrivals.setdefault(number, []).append(now)
        self.waiting[number] -= 1
        if self.waiting[number] == 0 and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def send_text(self, text: str) -> None:
        """Send a masked text frame (``text`` shorter than 126 bytes)."""
        assert self.transport is not None
        payload = text.encode()
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.transport.write(bytes((0x81, 0x80 | len(payload))) + mask + masked)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass
class Result:
    """The latencies of one scenario, in seconds."""

    name: str
    connections: str
    arrivals: list[float]
    last_arrivals: list[float]


class Load:
    """Client connections spread over endpoints, and the rounds of broadcasts they measure."""

    def __init__(self) -> None:
        self.arrivals: dict[int, list[float]] = {}
        self.waiting: dict[int, int] = {}
        self.clients: list[Client] = []

    async def connect(self, port: int, count: int) -> None:
        """Open ``count`` connections to the endpoint on ``port``."""
        loop = asyncio.get_running_loop()
        semaphore = asyncio.Semaphore(CONNECT_PARALLELISM)

        async def one() -> None:
            async with semaphore:
                _, client = await loop.create_connection(
                    lambda: Client(self.arrivals, self.waiting), "127.0.0.1", port
                )
                await asyncio.wait_for(client.upgraded, STARTUP_TIMEOUT)
                self.clients.append(client)

        await asyncio.gather(*(one() for _ in range(count)))

    async def round(self, control: Client, number: int) -> tuple[list[float], float]:
        """Ask ``control``'s endpoint for broadcast ``number``; return the latencies."""
        self.waiting[number] = len(self.clients)
        done = asyncio.get_running_loop().create_future()
        for client in self.clients:
            client.done = done
        started = time.perf_counter()
        control.send_text(f"broadcast {number}")
        await asyncio.wait_for(done, ROUND_TIMEOUT)
        latencies = [arrival - started for arrival in self.arrivals.pop(number)]
        return latencies, max(latencies)

    async def close(self) -> None:
        """Close every connection."""
        for client in self.clients:
            assert client.transport is not None
            client.transport.close()
        await asyncio.gather(*(client.closed for client in self.clients))


async def measure(
    name: str, connections: str, ports: Sequence[int], per_port: int, rounds: int, warmup: int
) -> Result:
    """Connect ``per_port`` clients to each port, then run the rounds from the first port."""
    load = Load()
    for port in ports:
        await load.connect(port, per_port)
    control_load = Load()  # the control connection is not measured
    await control_load.connect(ports[0], 1)
    control = control_load.clients[0]
    arrivals: list[float] = []
    last: list[float] = []
    try:
        for number in range(warmup + rounds):
            control_load.waiting[number] = 1
            latencies, slowest = await load.round(control, number)
            control_load.arrivals.pop(number, None)
            if number >= warmup:
                arrivals += latencies
                last.append(slowest)
    finally:
        await load.close()
        await control_load.close()
    return Result(name, connections, arrivals, last)


# -- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raise_nofile_limit() -> None:
    """Raise RLIMIT_NOFILE to its hard limit (the endpoint processes inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_for_line(process: subprocess.Popen[bytes], expected: bytes) -> None:
    """Wait until ``process`` prints ``expected`` (or fail if it exits first)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != expected:
        raise RuntimeError(f"{process.args!r} did not start: {line!r}")


def wait_for_redis(port: int) -> None:
    """Wait until Redis on ``port`` answers PING."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.05)


def start_endpoint(port: int, redis_url: str | None) -> subprocess.Popen[bytes]:
    """Start an endpoint process (this file with ``--serve``) and wait until it serves."""
    command = [sys.executable, __file__, "--serve", str(port)]
    if redis_url is not None:
        command += ["--redis", redis_url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    wait_for_line(process, b"ready")
    return process


def stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Terminate ``processes`` and wait for them (kill one that takes over 10 s)."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main(argv: Sequence[str] | None = None) -> int:
    """Run both scenarios and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=2000, help="in all (default 2000)")
    parser.add_argument("--rounds", type=int, default=200, help="measured broadcasts (200)")
    parser.add_argument("--broadcasts", type=int, default=30000, help="per throughput run")
    parser.add_argument("--publishers", type=int, default=50, help="concurrent (50)")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per variant (3)")
    parser.add_argument(
        "--scenarios", default="throughput,fanout", help="throughput, fanout or both (default)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer connections, rounds, runs")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--throughput-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--broker", choices=("redis", "cluster"), help=argparse.SUPPRESS)
    parser.add_argument("--hiredis", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--groups", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--redis", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.redis)
        return 0
    if args.throughput_worker:
        throughput_worker(
            args.broker, args.redis, args.hiredis, args.broadcasts, args.publishers, args.groups
        )
        return 0
    if args.quick:
        args.connections, args.rounds = 200, 5
        args.broadcasts, args.repeat = 5000, 1
    scenarios = set(args.scenarios.split(","))
    program = shutil.which("redis-server")
    if program is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 1
    raise_nofile_limit()
    half = args.connections // 2
    warmup = 10
    processes: list[subprocess.Popen[bytes]] = []
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as directory:
        redis_port = free_port()
        redis = subprocess.Popen(
            [*_pin(1), program, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory, "--logfile", "redis.log"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_redis(redis_port)
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            if "throughput" in scenarios:
                runs = run_throughput(redis_url, args.broadcasts, args.publishers, args.repeat)
                print_throughput(runs, args.broadcasts, args.publishers)
            if "fanout" not in scenarios:
                return 0
            started = time.monotonic()

            port = free_port()
            processes = [start_endpoint(port, None)]
            results.append(
                asyncio.run(
                    measure(
                        "one process, no broker",
                        f"{2 * half:,}",
                        [port],
                        2 * half,
                        args.rounds,
                        warmup,
                    )
                )
            )
            stop(processes)

            ports = [free_port(), free_port()]
            processes = [start_endpoint(port, redis_url) for port in ports]
            results.append(
                asyncio.run(
                    measure(
                        "two processes + RedisBroker",
                        f"2 x {half:,}",
                        ports,
                        half,
                        args.rounds,
                        warmup,
                    )
                )
            )
            elapsed = time.monotonic() - started
        finally:
            stop(processes)
            stop([redis])
    print(f"Fan-out of one 100-byte broadcast, {args.rounds} rounds ({elapsed:.0f} s in all)\n")
    print("| scenario | connections | p50 | p99 | last connection, median | last, max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for result in results:
        print(
            f"| {result.name} | {result.connections} "
            f"| {percentile(result.arrivals, 0.50) * 1e3:.1f} ms "
            f"| {percentile(result.arrivals, 0.99) * 1e3:.1f} ms "
            f"| {statistics.median(result.last_arrivals) * 1e3:.1f} ms "
            f"| {max(result.last_arrivals) * 1e3:.1f} ms |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
