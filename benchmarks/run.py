"""Run every scenario against every server, interleaved, and write benchmarks/RESULTS.md.

Usage: ``python -m benchmarks [--quick] [--servers raw_aiohttp,aiohttp_wsapp] [--output PATH]``
``[--scenarios deflate]``.

Each server runs in its own process pinned to one core (``taskset``), the picows load client
(for the browser scenarios, the deflate client) in another process pinned to the other core.
Every round starts every server afresh, in the same order (A B C ... A B C ...), so drift on a
shared machine hits all of them alike; the report shows the median over rounds and the ratio to
raw aiohttp. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.machine import busy_seconds
from benchmarks.profiles import FULL, QUICK, Profile
from benchmarks.report import Results, write_report
from benchmarks.servers import SERVERS, ServerSpec

__all__ = ["main", "run_suite"]

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SERVER_CORE = 0
CLIENT_CORE = 1
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
CLIENT_TIMEOUT = 300.0
#: Cores of other work during a measurement above which the runner measures again.
NOISY = 0.3
MAX_RETRIES = 2
#: The servers the client-bottleneck check runs against: the baseline and the fastest.
BOTTLENECK_SERVERS = ("raw_aiohttp", "picows")


#: How the deflate scenarios' clients connect: offering permessage-deflate, or not.
PEER_KINDS = ("deflate", "plain")
DEFLATE_PARTS = ("deflate_echo", "deflate_broadcast")
DEFLATE_CLIENT = "benchmarks.deflate_client"


class QuietGate:
    """Waits, before each job, until the machine is nearly idle, within a total time budget.

    On a shared machine other work takes CPU from the server and the client (and, on a VM
    whose two cores share one physical core, slows a busy core down by being busy on the
    other). Waiting for a quiet moment keeps that out of most measurements; the budget, which
    discarded measurements are charged to as well, bounds the run's length.
    """

    THRESHOLD = 0.25  # cores busy with other work
    SAMPLE = 0.5  # seconds per sample

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.waited = 0.0

    @property
    def spent(self) -> bool:
        """Whether the budget is used up."""
        return self.waited >= self.budget

    def charge(self, seconds: float) -> None:
        """Count ``seconds`` (a discarded measurement) against the budget."""
        self.waited += seconds

    def wait(self) -> None:
        """Return once the machine is quiet, or at once when the budget is spent."""
        while not self.spent:
            before = busy_seconds()
            time.sleep(self.SAMPLE)
            self.waited += self.SAMPLE
            if (busy_seconds() - before) / self.SAMPLE < self.THRESHOLD:
                return


class ServerFailed(RuntimeError):
    """A server process did not start, or a client run against it failed."""


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    """Return once the server accepts connections; raise if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"server exited with {process.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
        except OSError:
            time.sleep(0.1)
        else:
            return
    raise ServerFailed("server did not start listening")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Interrupt the server (graceful shutdown), then kill it if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class RunningServer:
    """A started server process: its spec, port and process."""

    spec: ServerSpec
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        """The WebSocket URL the client connects to."""
        return f"ws://{HOST}:{self.port}{self.spec.path}"

    def log_tail(self) -> str:
        """The last lines the server wrote, for error messages."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])


@contextmanager
def server(spec: ServerSpec, *, broadcast: bool = False) -> Iterator[RunningServer]:
    """Start ``spec``'s server pinned to the server core; stop it afterwards."""
    port = free_port()
    command = ["taskset", "-c", str(SERVER_CORE), sys.executable, "-m", spec.module]
    command += ["--host", HOST, "--port", str(port), *spec.args]
    command += ["--broadcast"] if broadcast else []
    with tempfile.NamedTemporaryFile(prefix=f"bench-{spec.name}-", suffix=".log") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        running = RunningServer(spec, port, process, Path(log.name))
        try:
            wait_for_port(port, process)
            yield running
        except ServerFailed as exc:
            raise ServerFailed(f"{spec.name}: {exc}\n{running.log_tail()}") from None
        finally:
            stop(process)


def client_command(
    target: RunningServer, plan: list[dict[str, Any]], module: str = "benchmarks.client"
) -> list[str]:
    """The command line of one load-client process (``module``), pinned to the client core."""
    return [
        "taskset", "-c", str(CLIENT_CORE), sys.executable, "-m", module,
        "--url", target.url, "--framing", target.spec.framing,
        "--server-pid", str(target.process.pid), "--plan", json.dumps(plan),
    ]  # fmt: skip


def run_clients(
    target: RunningServer,
    plan: list[dict[str, Any]],
    processes: int = 1,
    module: str = "benchmarks.client",
) -> list[list[dict[str, Any]]]:
    """Run the plan in ``processes`` client processes at once; one result list per process."""
    command = client_command(target, plan, module)
    children = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(processes)
    ]
    outputs = []
    for child in children:
        try:
            out, err = child.communicate(timeout=CLIENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
        if child.returncode != 0:
            message = err.decode(errors="replace")[-2000:]
            raise ServerFailed(f"client failed against {target.spec.name}:\n{message}")
        outputs.append(json.loads(out))
    return outputs


def echo_step(profile: Profile, connections: int, *, size: int, binary: bool) -> dict[str, Any]:
    """A plan step: round trips on ``connections`` connections."""
    return {
        "kind": "echo", "connections": connections, "size": size, "binary": binary,
        "warmup": profile.warmup, "duration": profile.duration,
    }  # fmt: skip


def throughput_plan(profile: Profile) -> list[dict[str, Any]]:
    """Scenarios (1), (2) and (3): echo at each concurrency, streaming, handshakes."""
    plan = [echo_step(profile, n, size=profile.echo_size, binary=False)
            for n in profile.echo_connections]  # fmt: skip
    stream = echo_step(profile, 1, size=profile.stream_size, binary=True)
    plan.append(stream | {"window": profile.stream_window})
    plan.append({"kind": "handshake", "openers": profile.openers,
                 "warmup": profile.warmup, "duration": profile.duration})  # fmt: skip
    return plan


ECHO_FIELDS = ("messages_per_s", "p50_us", "p99_us", "server_cpu", "client_cpu", "other_cpu")
CPU_FIELDS = ("server_cpu", "client_cpu", "other_cpu")


def record_throughput(results: Results, name: str, outcome: list[dict[str, Any]]) -> None:
    """File one throughput run's numbers under their metric keys."""
    *echoes, stream, handshake = outcome
    for connections, echo in zip(results.profile.echo_connections, echoes, strict=True):
        for field in ECHO_FIELDS:
            results.add(f"echo{connections}.{field}", name, echo[field])
    results.add("stream.mb_per_s", name, stream["mb_per_s"])
    results.add("handshake.per_s", name, handshake["handshakes_per_s"])
    for key, step in (("stream", stream), ("handshake", handshake)):
        for field in CPU_FIELDS:
            results.add(f"{key}.{field}", name, step[field])


def record_idle(results: Results, name: str, outcome: list[dict[str, Any]]) -> None:
    """File one memory run's growth per connection."""
    results.add("idle.kib_per_conn", name, outcome[0]["kib_per_conn"])


def record_broadcast(results: Results, name: str, outcome: list[dict[str, Any]]) -> None:
    """File one broadcast run's timings, in milliseconds."""
    step = outcome[0]
    for took, end_to_end, client in zip(
        step["server_s"], step["end_to_end_s"], step["client_s"], strict=True
    ):
        results.add("broadcast.server_ms", name, took * 1e3)
        results.add("broadcast.end_to_end_ms", name, end_to_end * 1e3)
        results.add("broadcast.client_ms", name, client * 1e3)
    for field in CPU_FIELDS:
        results.add(f"broadcast.{field}", name, step[field])


def deflate_echo_plan(profile: Profile) -> list[dict[str, Any]]:
    """Scenario (6): each message echoed at 50 connections by clients that offer deflate."""
    return [
        {"kind": "echo", "connections": profile.deflate_echo_connections, "message": name,
         "deflate": True, "warmup": profile.warmup, "duration": profile.duration}
        for name in profile.deflate_messages
    ]  # fmt: skip


def deflate_broadcast_plan(profile: Profile, peers: str) -> list[dict[str, Any]]:
    """Scenarios (8), then (7), on connections of one kind (deflate or plain).

    (8): the server's RSS per connection, opened, after a few broadcasts, after an echo each;
    (7): then each payload broadcast to the same connections, timed.
    """
    return [{
        "kind": "broadcast", "connections": profile.deflate_broadcast_connections,
        "deflate": peers == "deflate", "payloads": list(profile.deflate_payloads), "gap": 0.2,
        "repeats": profile.broadcast_repeats, "warmup_repeats": profile.broadcast_warmups,
        "settle": profile.settle, "memory": True,
        "memory_payload": profile.deflate_memory_payload,
        "memory_broadcasts": profile.deflate_memory_broadcasts,
    }]  # fmt: skip


DEFLATE_ECHO_FIELDS = (*ECHO_FIELDS, "wire_bytes")


def record_deflate_echo(results: Results, name: str, outcome: list[dict[str, Any]]) -> None:
    """File one run of (6) under ``deflate_echo_<message>.<field>``."""
    for message, echo in zip(results.profile.deflate_messages, outcome, strict=True):
        for field in DEFLATE_ECHO_FIELDS:
            results.add(f"deflate_echo_{message}.{field}", name, echo[field])
        results.negotiated[name] = echo["negotiated"]


def record_deflate_broadcast(
    results: Results, name: str, peers: str, outcome: list[dict[str, Any]]
) -> None:
    """File one run of (8) and (7): ``deflate_mem_<peers>.<stage>_kib`` and
    ``deflate_bcast_<peers>_<payload>.<field>``, times in ms."""
    if peers == "deflate":
        results.negotiated[name] = outcome[0]["negotiated"]
    for stage in ("opened", "after", "echoed"):
        results.add(f"deflate_mem_{peers}.{stage}_kib", name, outcome[0][f"{stage}_kib_per_conn"])
    for payload, step in outcome[0]["payloads"].items():
        key = f"deflate_bcast_{peers}_{payload}"
        for field in ("server", "end_to_end", "client"):
            for seconds in step[f"{field}_s"]:
                results.add(f"{key}.{field}_ms", name, seconds * 1e3)
        results.add(f"{key}.wire_bytes", name, statistics.mean(step["wire_bytes"]))
        for field in CPU_FIELDS:
            results.add(f"{key}.{field}", name, step[field])


def progress(message: str) -> None:
    """One line of progress on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


Outcome = list[dict[str, Any]]


def other_load(outcome: Outcome) -> float:
    """The most CPU that other work took during any measured window of an outcome."""
    return max((step.get("other_cpu", 0.0) for step in outcome), default=0.0)


@dataclass
class Suite:
    """One run: the profile, the servers, the numbers collected so far."""

    profile: Profile
    specs: list[ServerSpec]
    results: Results
    gate: QuietGate

    def job(
        self,
        label: str,
        spec: ServerSpec,
        measure: Callable[[], Outcome],
        record: Callable[[Outcome], None],
    ) -> None:
        """Measure after a quiet moment, again if other work was busy meanwhile; record it.

        A measurement during which other work took more than ``NOISY`` cores is repeated (with
        a fresh server) up to ``MAX_RETRIES`` times while the quiet budget lasts. A failure is
        noted in the results, and the run goes on with the next job.
        """
        progress(f"{label}: {spec.name}")
        try:
            for attempt in range(MAX_RETRIES + 1):
                self.gate.wait()
                started = time.monotonic()
                outcome = measure()
                if attempt == MAX_RETRIES or other_load(outcome) <= NOISY or self.gate.spent:
                    break
                self.gate.charge(time.monotonic() - started)
                self.results.retries += 1
                progress(f"{label}: {spec.name}: other work took CPU, measuring again")
            record(outcome)
        except ServerFailed as exc:
            self.results.failures.append(f"{label} / {spec.name}: {exc}")
            progress(f"FAILED {label} / {spec.name}: {str(exc).splitlines()[0]}")

    def throughput_rounds(self) -> None:
        """Scenarios (1)-(3), every server once per round."""
        plan = throughput_plan(self.profile)
        for round_no in range(1, self.profile.rounds + 1):
            for spec in (s for s in self.specs if s.echo):
                measure = partial(measure_once, spec, plan)
                record = partial(record_throughput, self.results, spec.name)
                self.job(f"throughput round {round_no}", spec, measure, record)

    def memory_rounds(self) -> None:
        """Scenario (4): server RSS per idle connection, a fresh server each time."""
        profile = self.profile
        step = {"kind": "idle", "connections": profile.idle_connections, "settle": profile.settle}
        for round_no in range(1, profile.memory_rounds + 1):
            for spec in (s for s in self.specs if s.echo):
                measure = partial(measure_once, spec, [step])
                record = partial(record_idle, self.results, spec.name)
                self.job(f"memory round {round_no}", spec, measure, record)

    def broadcast_rounds(self) -> None:
        """Scenario (5): a 100-byte text to every connection, for the servers that broadcast."""
        profile = self.profile
        step = {"kind": "broadcast", "connections": profile.broadcast_connections, "gap": 0.2,
                "repeats": profile.broadcast_repeats, "settle": profile.settle,
                "warmup_repeats": profile.broadcast_warmups}  # fmt: skip
        for round_no in range(1, profile.broadcast_rounds + 1):
            for spec in (s for s in self.specs if s.broadcast):
                measure = partial(measure_once, spec, [step], broadcast=True)
                record = partial(record_broadcast, self.results, spec.name)
                self.job(f"broadcast round {round_no}", spec, measure, record)

    def deflate_specs(self, peers: str = "deflate") -> list[ServerSpec]:
        """The servers of (6)-(8); with plain peers, aiohttp_wsapp's modes are one: once."""
        return [
            spec for spec in self.specs
            if spec.deflate and (peers == "deflate" or spec.name != "aiohttp_wsapp_dedicated")
        ]  # fmt: skip

    def deflate_echo_rounds(self) -> None:
        """Scenario (6): echo through clients that negotiate permessage-deflate."""
        plan = deflate_echo_plan(self.profile)
        for round_no in range(1, self.profile.rounds + 1):
            for spec in self.deflate_specs():
                measure = partial(measure_once, spec, plan, module=DEFLATE_CLIENT)
                record = partial(record_deflate_echo, self.results, spec.name)
                self.job(f"deflate echo round {round_no}", spec, measure, record)

    def deflate_broadcast_rounds(self) -> None:
        """Scenarios (8) and (7): deflate peers, then plain ones, server by server."""
        for round_no in range(1, self.profile.deflate_broadcast_rounds + 1):
            for spec in self.deflate_specs():
                for peers in PEER_KINDS:
                    if spec not in self.deflate_specs(peers):
                        continue
                    plan = deflate_broadcast_plan(self.profile, peers)
                    measure = partial(
                        measure_once, spec, plan, broadcast=True, module=DEFLATE_CLIENT
                    )
                    record = partial(record_deflate_broadcast, self.results, spec.name, peers)
                    self.job(f"deflate broadcast round {round_no} ({peers})", spec, measure, record)

    def client_check(self) -> None:
        """Is the client the bottleneck? Echo at 50 connections from one process, then two.

        Both client processes share the client core; if one client process were the limit, two
        would not do better on that core either, so the report also shows each side's CPU use.
        """
        profile = self.profile
        one = [echo_step(profile, 50, size=profile.echo_size, binary=False)]
        two = [echo_step(profile, 25, size=profile.echo_size, binary=False)]
        for spec in (s for s in self.specs if s.name in BOTTLENECK_SERVERS):

            def measure(spec: ServerSpec = spec) -> Outcome:
                with server(spec) as target:
                    single = run_clients(target, one)[0]
                    pair = [out[0] for out in run_clients(target, two, processes=2)]
                for this, sibling in zip(pair, reversed(pair), strict=True):
                    # Each client process counts its sibling as "other" work: take it out.
                    this["other_cpu"] = max(0.0, this["other_cpu"] - sibling["client_cpu"])
                return single + pair

            def record(outcome: Outcome, spec: ServerSpec = spec) -> None:
                self.results.client_check[spec.name] = {"one": outcome[0], "two": outcome[1:]}

            self.job("client check", spec, measure, record)


def measure_once(
    spec: ServerSpec, plan: Outcome, *, broadcast: bool = False, module: str = "benchmarks.client"
) -> Outcome:
    """Start a fresh server, run the plan from one client process (``module``), stop the server."""
    with server(spec, broadcast=broadcast) as target:
        return run_clients(target, plan, module=module)[0]


def run_suite(
    profile: Profile, specs: list[ServerSpec], scenarios: list[str] | None = None
) -> Results:
    """Run the scenarios (all by default) for every server; return the collected numbers.

    ``scenarios`` names parts of the suite: ``throughput`` (1)-(3), ``memory`` (4),
    ``broadcast`` (5), ``client`` (the client-bottleneck check), and the browser scenarios
    ``deflate_echo`` (6) and ``deflate_broadcast`` (7) and (8); ``deflate`` is both of these.
    """
    results = Results(profile=profile, servers=specs, started=time.time())
    results.load_before = os.getloadavg()
    suite = Suite(profile, specs, results, QuietGate(profile.quiet_budget))
    parts = {
        "throughput": suite.throughput_rounds,
        "memory": suite.memory_rounds,
        "broadcast": suite.broadcast_rounds,
        "client": suite.client_check,
        "deflate_echo": suite.deflate_echo_rounds,
        "deflate_broadcast": suite.deflate_broadcast_rounds,
    }
    wanted: list[str] = []
    for name in scenarios or list(parts):
        for part in DEFLATE_PARTS if name == "deflate" else (name,):
            if part not in parts:
                raise SystemExit(f"unknown scenario {part!r}; known: deflate, {', '.join(parts)}")
            if part not in wanted:
                wanted.append(part)
    for name in wanted:
        parts[name]()
    results.load_after = os.getloadavg()
    results.quiet_wait = suite.gate.waited
    results.finished = time.time()
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The runner's command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (a few minutes)")
    parser.add_argument("--servers", help="comma-separated subset, e.g. raw_aiohttp,picows")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument(
        "--scenarios",
        help="comma-separated subset of throughput,memory,broadcast,client,deflate_echo,"
        "deflate_broadcast; deflate is the last two (default: all)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write every round's raw numbers here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the suite and write the report; the exit status is 0 even if some server failed."""
    args = parse_args(argv)
    profile = QUICK if args.quick else FULL
    if args.rounds:
        rounds = args.rounds
        profile = replace(
            profile,
            rounds=rounds,
            memory_rounds=rounds,
            broadcast_rounds=rounds,
            deflate_broadcast_rounds=rounds,
        )
    specs = [spec for spec in SERVERS if not spec.optional]
    if args.servers:
        wanted = set(args.servers.split(","))
        specs = [spec for spec in SERVERS if spec.name in wanted]
    if os.cpu_count() is not None and (os.cpu_count() or 0) < 2:
        print("warning: fewer than 2 cores; server and client share one", file=sys.stderr)
    scenarios = args.scenarios.split(",") if args.scenarios else None
    results = run_suite(profile, specs, scenarios)
    write_report(results, args.output)
    if args.json:
        args.json.write_text(json.dumps(results.values, indent=1))
    progress(f"wrote {args.output} in {results.finished - results.started:.0f} s")
    return 0
