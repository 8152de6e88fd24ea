"""Broadcasts through a Redis Cluster: ``RedisClusterBroker`` against ``RedisBroker`` (issue 23).

Run with ``python benchmarks/redis_cluster.py`` (``--quick`` for a smoke run). It needs
``redis-server`` and ``redis-cli`` on the PATH and the ``redis`` extra (the ``hiredis`` extra for
the rows that use hiredis). It starts, on free loopback ports and without persistence:

- one plain Redis, for ``RedisBroker``;
- a cluster of one primary and its replica (``CLUSTER ADDSLOTSRANGE 0 16383``, ``REPLICATE``);
- a cluster of three primaries with a replica each (``redis-cli --cluster create``);

and measures, in a fresh process per run (``redis_fanout.py --throughput-worker``), the broker
path alone: ``--publishers`` tasks (50) each ``await wsapp.broadcast(...)`` of a 100-byte text
one after the other, ``--broadcasts`` in all, each publisher to one of ``--groups`` groups (30)
that the process is a member of, so that the groups spread over the shards; a broadcast counts
when the process has delivered it (when it came back from Redis). Runs of the variants
alternate, ``--repeat`` times (5), and the table gives medians: broadcasts per second, the
process's CPU time per broadcast, the ratio of the throughput to ``RedisBroker``'s (same parser),
and each Redis node's CPU time per broadcast (``INFO cpu`` before and after the run; primaries
first, ``r`` marks a replica). With ``taskset``, the process runs on core 0, every Redis on
core 1.

A second table gives what a broadcast costs Redis as the number of processes that listen to its
channel grows (the sizing arithmetic of ``docs/howto/scaling.rst`` uses it): ``--subscribers``
raw connections subscribe to one channel (``SUBSCRIBE`` on the plain Redis, ``SSUBSCRIBE`` on
the three-primary cluster's primary of that channel), one more connection publishes
``--fanout-messages`` 100-byte messages, pipelined, and the table gives the server's CPU time
per message (on the cluster: the primary's, and its replica's, to which sharded messages are
propagated).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

WORKER = Path(__file__).with_name("redis_fanout.py")
STARTUP_TIMEOUT = 30.0


@dataclass
class Server:
    """One ``redis-server`` process (in cluster mode or not)."""

    port: int
    process: subprocess.Popen[bytes]
    replica: bool = False

    def command(self, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True
        )
        return done.stdout

    def cpu(self) -> float:
        """The server's CPU seconds so far (user + system)."""
        info = self.command("INFO", "cpu")
        user = float(re.search(r"used_cpu_user:([\d.]+)", info).group(1))  # type: ignore[union-attr]
        system = float(re.search(r"used_cpu_sys:([\d.]+)", info).group(1))  # type: ignore[union-attr]
        return user + system


@dataclass
class Target:
    """What a variant's broker connects to: a URL and the servers behind it."""

    name: str
    broker: str
    servers: list[Server] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.servers[0].port}"


def free_port() -> int:
    """A free loopback port whose cluster bus port (10,000 higher) is free too."""
    while True:
        with socket.socket() as sock, socket.socket() as bus:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            if port > 55535:
                continue
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port


def start_server(directory: Path, cluster: bool) -> Server:
    port = free_port()
    workdir = directory / str(port)
    workdir.mkdir()
    command = [*_pin(1), "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    if cluster:
        command += ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    server = Server(port, process)
    _wait(lambda: server.command("PING").strip() == "PONG", "PING")
    return server


def start_one_primary(directory: Path) -> list[Server]:
    """A cluster of one primary (every slot) and its replica."""
    primary, replica = start_server(directory, True), start_server(directory, True)
    primary.command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    replica.command("CLUSTER", "MEET", "127.0.0.1", str(primary.port))
    primary_id = primary.command("CLUSTER", "MYID").strip()
    _wait(lambda: primary_id in replica.command("CLUSTER", "NODES"), "MEET")
    replica.command("CLUSTER", "REPLICATE", primary_id)
    replica.replica = True
    _wait(lambda: "cluster_state:ok" in replica.command("CLUSTER", "INFO"), "cluster_state:ok")
    return [primary, replica]


def start_three_primaries(directory: Path) -> list[Server]:
    """Three primaries with a replica each, as ``redis-cli --cluster create`` makes them."""
    servers = [start_server(directory, True) for _ in range(6)]
    subprocess.run(
        [
            "redis-cli",
            "--cluster",
            "create",
            *(f"127.0.0.1:{s.port}" for s in servers),
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ],
        check=True,
        capture_output=True,
    )
    for server in servers:
        _wait(lambda s=server: "cluster_state:ok" in s.command("CLUSTER", "INFO"), "state ok")
        server.replica = "role:slave" in server.command("INFO", "replication")
    return sorted(servers, key=lambda server: server.replica)


Run = tuple[float, float, list[float]]
"""broadcasts/s, process CPU µs per broadcast, each server's CPU µs per broadcast."""


def run_once(target: Target, hiredis: bool, args: argparse.Namespace) -> Run | str:
    command = [*_pin(0), sys.executable, str(WORKER), "--throughput-worker"]
    command += ["--broadcasts", str(args.broadcasts), "--publishers", str(args.publishers)]
    command += ["--groups", str(args.groups), "--broker", target.broker, "--redis", target.url]
    if hiredis:
        command.append("--hiredis")
    before = [server.cpu() for server in target.servers]
    done = subprocess.run(command, capture_output=True, text=True)
    after = [server.cpu() for server in target.servers]
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["no output"])[-1]
    rate, cpu = map(float, done.stdout.split())
    count = args.publishers * (args.broadcasts // args.publishers)
    # The worker's warm-up round is on the servers' clock too: count it in.
    count += min(args.broadcasts, 2000)
    servers = [(a - b) / count * 1e6 for a, b in zip(after, before, strict=True)]
    return rate, cpu, servers


def fanout_cost(servers: list[Server], subscribers: int, messages: int) -> str:
    """Redis CPU µs per message published to ``subscribers`` listeners (see the docstring).

    ``servers`` is the plain Redis (one server), or a cluster's servers: then the channel's
    primary and its replica are measured.
    """
    channel = b"{fanout}"
    if len(servers) == 1:
        publish, subscribe, measured = b"PUBLISH", b"SUBSCRIBE", servers
    else:
        slot = servers[0].command("CLUSTER", "KEYSLOT", channel.decode()).strip()
        owner = next(s for s in servers if not s.replica and _serves(s, int(slot)))
        replica_of = [s for s in servers if s.replica and _replicates(s, owner)]
        publish, subscribe, measured = b"SPUBLISH", b"SSUBSCRIBE", [owner, *replica_of]
    target = measured[0]
    listeners = []
    for _ in range(subscribers):
        sock = socket.create_connection(("127.0.0.1", target.port))
        sock.sendall(_resp(subscribe, channel))
        sock.recv(1024)
        sock.setblocking(False)
        listeners.append(sock)
    publisher = socket.create_connection(("127.0.0.1", target.port))
    message = _resp(publish, channel, b"x" * 100)
    before = [server.cpu() for server in measured]
    sent = 0
    while sent < messages:
        batch = min(1000, messages - sent)
        publisher.sendall(message * batch)
        received = 0
        while received < batch:  # one ":n\r\n" reply per message, one LF each
            received += publisher.recv(65536).count(b"\n")
        sent += batch
        for sock in listeners:  # keep the listeners' buffers from filling
            with contextlib.suppress(BlockingIOError):
                while sock.recv(1 << 20):
                    pass
    time.sleep(0.2)  # let the replica catch up
    after = [server.cpu() for server in measured]
    for sock in [*listeners, publisher]:
        sock.close()
    costs = [(a - b) / messages * 1e6 for a, b in zip(after, before, strict=True)]
    return " + ".join(f"{cost:.2f}" for cost in costs)


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _serves(server: Server, slot: int) -> bool:
    for line in server.command("CLUSTER", "NODES").splitlines():
        fields = line.split()
        if "myself" in fields[2]:
            for ranges in fields[8:]:
                first, _, last = ranges.partition("-")
                if first.isdigit() and int(first) <= slot <= int(last or first):
                    return True
    return False


def _replicates(replica: Server, primary: Server) -> bool:
    return f"master_port:{primary.port}" in replica.command("INFO", "replication")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broadcasts", type=int, default=30000, help="per run (30000)")
    parser.add_argument("--publishers", type=int, default=50, help="concurrent (50)")
    parser.add_argument("--groups", type=int, default=30, help="broadcast to (30)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per variant (5)")
    parser.add_argument(
        "--subscribers", type=lambda text: [int(n) for n in text.split(",")], default=[1, 20]
    )
    parser.add_argument("--fanout-messages", type=int, default=50000)
    parser.add_argument("--quick", action="store_true", help="fewer broadcasts and runs")
    args = parser.parse_args()
    if args.quick:
        args.broadcasts, args.repeat = 5000, 1
    for program in ("redis-server", "redis-cli"):
        if shutil.which(program) is None:
            print(f"{program} is not installed (apt-get install redis-server)", file=sys.stderr)
            return 1
    parsers = [False, True] if importlib.util.find_spec("hiredis") else [False]
    with tempfile.TemporaryDirectory() as directory:
        targets = [
            Target("RedisBroker, one Redis", "redis"),
            Target("RedisClusterBroker, 1 primary (+1 replica)", "cluster"),
            Target("RedisClusterBroker, 3 primaries (+3 replicas)", "cluster"),
        ]
        try:
            targets[0].servers = [start_server(Path(directory), False)]
            targets[1].servers = start_one_primary(Path(directory))
            targets[2].servers = start_three_primaries(Path(directory))
            runs: dict[tuple[str, bool], list[Run | str]] = {}
            for _ in range(args.repeat):
                for hiredis in parsers:
                    for target in targets:
                        result = run_once(target, hiredis, args)
                        runs.setdefault((target.name, hiredis), []).append(result)
                        print(f"  {target.name}, hiredis={hiredis}: {result}", file=sys.stderr)
            costs = [
                (f"RedisBroker's Redis, {n} subscribing processes", targets[0].servers[:1], n)
                for n in args.subscribers
            ] + [
                (f"cluster primary (+ its replica), {n} subscribing processes", None, n)
                for n in args.subscribers
            ]
            cost_rows = [
                (name, fanout_cost(servers or targets[2].servers, n, args.fanout_messages))
                for name, servers, n in costs
            ]
        finally:
            for target in targets:
                for server in target.servers:
                    server.process.terminate()
                    server.process.wait()
    report(targets, parsers, runs, args)
    print("Redis CPU per published 100-byte message, by the processes that listen to it\n")
    print("| server | CPU µs per message |")
    print("| --- | ---: |")
    for name, cost in cost_rows:
        print(f"| {name} | {cost} |")
    print()
    return 0


def report(
    targets: list[Target],
    parsers: list[bool],
    runs: dict[tuple[str, bool], list[Run | str]],
    args: argparse.Namespace,
) -> None:
    print(
        f"Broker throughput: {args.broadcasts:,} broadcasts of 100 bytes from {args.publishers} "
        f"concurrent publishers to {args.groups} groups, median of {args.repeat} runs\n"
    )
    print(
        "| broker | parser | broadcasts/s | CPU µs per broadcast | throughput vs RedisBroker "
        "| Redis CPU µs per broadcast, per node | runs (broadcasts/s) |"
    )
    print("| --- | --- | ---: | ---: | ---: | --- | --- |")
    for hiredis in parsers:
        reference: float | None = None
        for target in targets:
            results = runs[(target.name, hiredis)]
            measured = [r for r in results if not isinstance(r, str)]
            errors = sorted({r for r in results if isinstance(r, str)})
            parser = "hiredis" if hiredis else "pure Python"
            if not measured:
                print(f"| {target.name} | {parser} | fails | | | | {'; '.join(errors)} |")
                continue
            rate = statistics.median(r[0] for r in measured)
            cpu = statistics.median(r[1] for r in measured)
            reference = rate if reference is None else reference
            nodes = ", ".join(
                f"{statistics.median(r[2][i] for r in measured):.1f}"
                + (" r" if server.replica else "")
                for i, server in enumerate(target.servers)
            )
            each = ", ".join(f"{r[0]:,.0f}" for r in measured)
            if errors:
                each += f"; failed: {'; '.join(errors)}"
            print(
                f"| {target.name} | {parser} | {rate:,.0f} | {cpu:.1f} "
                f"| {rate / reference:.2f}x | {nodes} | {each} |"
            )
    print()


def _pin(core: int) -> list[str]:
    """The ``taskset`` prefix that runs a command on ``core`` (none without taskset or cores)."""
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(core)]


def _wait(condition: object, what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis did not reach {what} within {STARTUP_TIMEOUT} s")
        time.sleep(0.05)


if __name__ == "__main__":
    raise SystemExit(main())
