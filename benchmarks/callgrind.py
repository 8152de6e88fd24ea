"""Instructions per echoed message and per handshake, counted by valgrind's callgrind.

Run: ``python -m benchmarks.callgrind [--targets raw,lambda,def,async] [--messages N]``
``[--handshakes N] [--phases K] [--keep DIR]``; it writes its section of benchmarks/RESULTS.md.

Each server runs under ``valgrind --tool=callgrind --instr-atstart=no``; this process is the
client and is not under valgrind (picows connections for the echoes, a lean asyncio protocol for
the handshakes, as in ``benchmarks.client``). Instructions are counted only over measured
phases, so the start-up cost is in none of them: after a warm-up without instrumentation (the
interpreter's specialisation and every cache settle), ``callgrind_control --instr=on``, a short
warm-up under instrumentation, then for each phase ``--zero``, N units of work, ``--dump``. An
empty phase (``--zero`` then ``--dump``) measures what a phase costs without work, and is taken
off each. The figure is the mean over K phases: the cyclic garbage collector's full passes
(tens of millions of instructions each, every few hundred handshakes) fall into some phases and
not others, and belong to the cost at the rate they happen; the report shows the spread.

Unlike wall time, the count does not depend on how busy the machine is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from picows import WSFrame, WSMsgType

from benchmarks.client import (
    CLOSE_FRAME,
    LeanOpener,
    Peer,
    close_all,
    connect_many,
    upgrade_request,
)
from benchmarks.common import raise_nofile_limit
from benchmarks.sections import replace_section

__all__ = [
    "TARGETS",
    "EchoBatch",
    "EchoPeer",
    "Target",
    "free_port",
    "handshakes",
    "main",
    "measure",
]

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
#: Seconds a server under valgrind may take to start listening, and a step to finish.
START_TIMEOUT = 180.0
STEP_TIMEOUT = 600.0
SECTION = "callgrind"


@dataclass(frozen=True)
class Target:
    """One server to count: how to start it, and how the report names it."""

    name: str
    label: str
    module: str
    args: tuple[str, ...] = ()
    #: Counted only when named with ``--targets``.
    optional: bool = False


#: The servers, raw aiohttp first (the baseline); aiohttp_wsapp with every setting at its
#: default (heartbeat on), once per handler form users write.
TARGETS: tuple[Target, ...] = (
    Target("raw", "raw aiohttp (`async for` + `await send_str`)", "benchmarks.servers.raw_aiohttp"),
    Target(
        "lambda",
        "aiohttp_wsapp, `lambda conn, message: conn.send(message)` (the README's)",
        "benchmarks.servers.wsapp_defaults",
        ("--handler", "lambda"),
    ),
    Target(
        "def",
        "aiohttp_wsapp, `def echo(conn, message): conn.send(message)`",
        "benchmarks.servers.wsapp_defaults",
        ("--handler", "def"),
    ),
    Target(
        "async",
        "aiohttp_wsapp, `async def echo(conn, message): await conn.send(message)`",
        "benchmarks.servers.wsapp_defaults",
        ("--handler", "async"),
    ),
    Target(
        "lambda-no-heartbeat",
        "aiohttp_wsapp, the README's lambda, `heartbeat=None`",
        "benchmarks.servers.wsapp",
        ("--handler", "lambda"),
        optional=True,
    ),
)


@dataclass(frozen=True)
class Plan:
    """How much work each phase does."""

    messages: int
    handshakes: int
    #: Phases of ``messages`` echoes, and of ``handshakes`` handshakes, each counted apart.
    phases: int = 3
    connections: int = 50
    size: int = 32
    concurrency: int = 10
    #: Units of work done before instrumentation is switched on, and after, before counting.
    cold_messages: int = 4000
    warm_messages: int = 500
    cold_handshakes: int = 300
    warm_handshakes: int = 30


class Callgrind:
    """A server process under callgrind, and the commands that control its counting."""

    def __init__(self, target: Target, outdir: Path, dump_instr: bool) -> None:
        self.target = target
        self.port = free_port()
        self.out = outdir / f"callgrind.out.{target.name}"
        self.log = outdir / f"{target.name}.log"
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={self.out}", f"--dump-instr={'yes' if dump_instr else 'no'}",
            sys.executable, "-m", target.module, "--host", HOST, "--port", str(self.port),
            *target.args,
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=server_env()
            )
        self.dumps = 0

    @property
    def url(self) -> str:
        """The URL the client connects to."""
        return f"ws://{HOST}:{self.port}/"

    def wait_listening(self) -> None:
        """Wait until the server accepts connections."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.target.name} exited:\n{self.log_tail()}")
            with socket.socket() as probe:
                if probe.connect_ex((HOST, self.port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.target.name} did not listen within {START_TIMEOUT} s")

    def control(self, *args: str) -> None:
        """Run ``callgrind_control`` on the server with ``args``."""
        subprocess.run(
            ["callgrind_control", *args, str(self.process.pid)],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def instrument(self) -> None:
        """Switch instrumentation on: from now on the server runs (slowly) under callgrind."""
        self.control("--instr=on")

    def zero(self) -> None:
        """Set every counter to zero."""
        self.control("--zero")

    def dump(self) -> int:
        """Write the counters to a new dump file and return its instruction total."""
        self.control("--dump")
        self.dumps += 1
        path = Path(f"{self.out}.{self.dumps}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if path.exists():
                for line in path.read_text().splitlines():
                    if line.startswith("totals:"):
                        return int(line.split()[1])
            time.sleep(0.1)
        raise RuntimeError(f"no dump in {path}")

    def stop(self) -> None:
        """Interrupt the server and wait for it (and valgrind) to exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self) -> str:
        """The end of the server's output, for error messages."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])


def server_env() -> dict[str, str]:
    """The environment of a server: this one, with the repository first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    return env


def free_port() -> int:
    """A TCP port on the loopback interface that nobody listens on now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class EchoPeer(Peer):
    """Sends a message, then the next each time the previous one comes back, ``left`` times."""

    def __init__(self, batch: EchoBatch) -> None:
        super().__init__(socketio=False)
        self.batch = batch
        self.left = 0

    def start(self, count: int) -> None:
        """Send the first of ``count`` messages."""
        self.left = count - 1
        self.send_frames(self.batch.frames)

    def on_reply(self, frame: WSFrame) -> None:
        """Count the echo; send the next message, if any."""
        self.batch.echoed()
        if self.left > 0:
            self.left -= 1
            self.send_frames(self.batch.frames)


class EchoBatch:
    """A fixed number of echoes spread over every connection, one message in flight on each."""

    def __init__(self, size: int) -> None:
        self.frames = ((WSMsgType.TEXT, b"x" * size),)
        self.expected = 0
        self.done: asyncio.Future[None] | None = None

    def echoed(self) -> None:
        """One echo came back."""
        self.expected -= 1
        if self.expected == 0 and self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def run(self, peers: list[EchoPeer], total: int) -> None:
        """``total`` echoes, as evenly over ``peers`` as they divide."""
        per_peer, extra = divmod(total, len(peers))
        self.expected = total
        self.done = asyncio.get_running_loop().create_future()
        for index, peer in enumerate(peers):
            count = per_peer + (index < extra)
            if count:
                peer.start(count)
        await asyncio.wait_for(self.done, STEP_TIMEOUT)


async def handshakes(port: int, total: int, concurrency: int) -> None:
    """``total`` handshakes, ``concurrency`` at a time: open, 101, close, the reply, EOF."""
    loop = asyncio.get_running_loop()
    request = upgrade_request(f"ws://{HOST}:{port}/")
    left = total

    async def opener() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            _, protocol = await loop.create_connection(
                lambda: LeanOpener(request, socketio=False), HOST, port
            )
            await protocol.ready
            assert protocol.transport is not None
            protocol.transport.write(CLOSE_FRAME)
            await asyncio.shield(protocol.lost)  # the server drops the connection

    await asyncio.wait_for(asyncio.gather(*(opener() for _ in range(concurrency))), STEP_TIMEOUT)


async def count_phases(
    server: Callgrind, work: Callable[[int], Awaitable[None]], units: int, phases: int
) -> dict[str, Any]:
    """Count ``phases`` phases of ``units`` units of ``work`` each; the instructions per unit.

    An empty phase (zero, then dump at once) first measures what a phase costs without work:
    the wake-ups that the control commands cause. It is taken off every phase.
    """
    server.zero()
    overhead = server.dump()
    counts = []
    for _ in range(phases):
        server.zero()
        await work(units)
        counts.append(server.dump() - overhead)
    per_phase = [count / units for count in counts]
    return {
        "units": units,
        "overhead": overhead,
        "counts": counts,
        "per_unit": sum(counts) / (units * phases),
        "spread": (min(per_phase), max(per_phase)),
    }


async def measure_target(
    target: Target, plan: Plan, outdir: Path, dump_instr: bool
) -> dict[str, Any]:
    """Start ``target`` under callgrind and count its echoes and its handshakes."""
    server = Callgrind(target, outdir, dump_instr)
    try:
        server.wait_listening()
        batch = EchoBatch(plan.size)
        peers = await connect_many(server.url, lambda: EchoPeer(batch), plan.connections)
        await batch.run(peers, plan.cold_messages)
        await handshakes(server.port, plan.cold_handshakes, plan.concurrency)
        server.instrument()
        await batch.run(peers, plan.warm_messages)
        message = await count_phases(
            server, lambda n: batch.run(peers, n), plan.messages, plan.phases
        )
        await close_all(peers)
        await handshakes(server.port, plan.warm_handshakes, plan.concurrency)
        handshake = await count_phases(
            server,
            lambda n: handshakes(server.port, n, plan.concurrency),
            plan.handshakes,
            plan.phases,
        )
    except Exception as exc:
        raise RuntimeError(f"{target.name}: {exc}\n{server.log_tail()}") from exc
    finally:
        server.stop()
    return {"message": message, "handshake": handshake}


def measure(
    targets: list[Target],
    plan: Plan,
    outdir: Path,
    dump_instr: bool,
    json_path: Path | None = None,
) -> dict[str, Any]:
    """Count every target in turn; results by target name (also to ``json_path`` as they come,
    so that an interrupted run keeps what it counted)."""
    results = {}
    for target in targets:
        progress(f"{target.name}: counting under callgrind")
        started = time.monotonic()
        results[target.name] = asyncio.run(measure_target(target, plan, outdir, dump_instr))
        took = time.monotonic() - started
        progress(f"{target.name}: {summary(results[target.name])} ({took:.0f} s)")
        if json_path is not None:
            json_path.write_text(json.dumps(results, indent=1))
    return results


def summary(result: dict[str, Any]) -> str:
    """One line: instructions per message and per handshake."""
    message, handshake = result["message"]["per_unit"], result["handshake"]["per_unit"]
    return f"{message / 1e3:.1f}k per message, {handshake / 1e3:.0f}k per handshake"


def progress(text: str) -> None:
    """A line of progress on stderr."""
    print(f"[callgrind {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def ratio(value: float, base: float | None) -> str:
    """``value / base`` as ``1.23``, or a dash without a base."""
    return f"{value / base:.2f}" if base else "-"


def section(results: dict[str, Any], plan: Plan) -> str:
    """The Markdown section of RESULTS.md."""
    base = results.get("raw")
    rows = []
    for target in TARGETS:
        result = results.get(target.name)
        if result is None:
            continue
        cells = [target.label]
        for kind, digits in (("message", 1), ("handshake", 0)):
            value, (low, high) = result[kind]["per_unit"], result[kind]["spread"]
            cells.append(
                f"{value / 1e3:.{digits}f}k ({low / 1e3:.{digits}f}-{high / 1e3:.{digits}f}k)"
            )
            cells.append(ratio(value, base and base[kind]["per_unit"]))
        rows.append(f"| {' | '.join(cells)} |")
    versions = ", ".join(f"{name} {version}" for name, version in versions_used())
    when = time.strftime("%Y-%m-%d %H:%M")
    intro = (
        f"Written by `python -m benchmarks.callgrind` on {when} ({versions}). Instructions the "
        f"server process executed, counted by valgrind's callgrind: per echoed {plan.size}-byte "
        f"text message ({plan.connections} connections, one message in flight on each, picows "
        f"client), and per handshake ({plan.concurrency} at a time: open, 101, the client's "
        "close, the close reply, EOF). Every setting at its default: aiohttp_wsapp's heartbeat "
        "on, raw aiohttp's `WebSocketResponse()`. Each figure is the mean over "
        f"{plan.phases} phases of {plan.messages:,} messages or {plan.handshakes:,} handshakes, "
        "each counted apart after a warm-up (`callgrind_control --zero`, the work, `--dump`; "
        "what an empty phase costs is taken off), so no start-up cost is in it; in brackets the "
        "lowest and highest phase (the garbage collector's full passes fall into some phases "
        "only). The client runs in another process, not under valgrind. The count does not "
        "depend on the load of the machine. Ratios are to raw aiohttp (lower is better)."
    )
    header = "| server | instructions per message | ratio | instructions per handshake | ratio |"
    return (
        "\n".join(
            [
                "## Instructions per message and per handshake (callgrind)",
                "",
                textwrap.fill(intro, width=96, break_on_hyphens=False),
                "",
                header,
                "| --- | --- | --- | --- | --- |",
                *rows,
            ]
        )
        + "\n"
    )


def versions_used() -> list[tuple[str, str]]:
    """Python's, aiohttp's, aiohttp_wsapp's and valgrind's versions."""
    import aiohttp

    import aiohttp_wsapp

    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True)
    return [
        ("Python", platform.python_version()),
        ("aiohttp", aiohttp.__version__),
        ("aiohttp_wsapp", aiohttp_wsapp.__version__),
        ("valgrind", valgrind.stdout.strip().removeprefix("valgrind-")),
    ]


def _positive(text: str) -> int:
    """An argument that counts something per unit: zero would divide by zero later."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    names = [target.name for target in TARGETS]
    parser.add_argument(
        "--targets",
        default=",".join(target.name for target in TARGETS if not target.optional),
        help=f"comma-separated, of {','.join(names)} (default: all but the last)",
    )
    parser.add_argument("--messages", type=_positive, default=5000, help="N echoes (default 5,000)")
    parser.add_argument(
        "--handshakes", type=_positive, default=500, help="N handshakes (default 500)"
    )
    parser.add_argument("--phases", type=_positive, default=3, help="phases of each (default 3)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--no-report", action="store_true", help="print only, write no report")
    parser.add_argument("--json", type=Path, help="also write the raw counts here")
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep the callgrind dumps (with --dump-instr=yes) in this directory, "
        "for callgrind_annotate",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Count, print a summary, and write the section of the report."""
    args = parse_args(argv)
    wanted = set(args.targets.split(","))
    unknown = wanted - {target.name for target in TARGETS}
    if unknown:
        raise SystemExit(f"unknown targets: {', '.join(sorted(unknown))}")
    targets = [target for target in TARGETS if target.name in wanted]
    plan = Plan(messages=args.messages, handshakes=args.handshakes, phases=args.phases)
    raise_nofile_limit()
    with tempfile.TemporaryDirectory(prefix="callgrind-") as scratch:
        outdir = args.keep or Path(scratch)
        outdir.mkdir(parents=True, exist_ok=True)
        results = measure(targets, plan, outdir, args.keep is not None, args.json)
    text = section(results, plan)
    print(text)
    if not args.no_report:
        replace_section(args.output, SECTION, text)
        progress(f"wrote the section to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
