"""Where a handshake or an echo goes, per Python function: bytecodes executed, and cyclic garbage.

Run: ``python -m benchmarks.bytecodes [--targets raw,lambda] [--kind handshake|message]``
``[--units N] [--top N] [--garbage]``.

callgrind (``benchmarks.callgrind``) counts machine instructions exactly, but by C function: the
interpreter, not the Python function it runs. This counts, for the same work and the same
servers (``benchmarks.callgrind.TARGETS``), the bytecodes each Python function executes itself
and its calls, per unit of work, and prints the functions of each target against the first
(raw aiohttp), largest difference first. The count is exact and repeatable; bytecodes are not
instructions (a bytecode that calls into C costs what the C costs), but the difference in
instructions that callgrind measures divides over them roughly evenly.

With ``--garbage`` it prints instead the objects that only the cyclic garbage collector freed,
by type, per unit: objects kept alive by a reference cycle until the collector runs, whose
passes callgrind shows as ``gc_collect_main`` and the ``*_traverse`` functions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from benchmarks.callgrind import (
    HOST,
    ROOT,
    TARGETS,
    EchoBatch,
    EchoPeer,
    Target,
    free_port,
    handshakes,
    server_env,
)
from benchmarks.client import close_all, connect_many

__all__ = ["count", "main"]

WARM_UNITS = {"handshake": 300, "message": 4000}
CONNECTIONS = 50
CONCURRENCY = 10
START_TIMEOUT = 30.0


async def work(
    port: int, kind: str, warm: int, units: int, server: subprocess.Popen[bytes]
) -> None:
    """Warm the server up, then do ``units`` of ``kind`` between SIGUSR1 and SIGUSR2."""
    if kind == "handshake":
        await handshakes(port, warm, CONCURRENCY)
        await counted(server, handshakes(port, units, CONCURRENCY))
        return
    batch = EchoBatch(32)
    peers = await connect_many(f"ws://{HOST}:{port}/", lambda: EchoPeer(batch), CONNECTIONS)
    await batch.run(peers, warm)
    await counted(server, batch.run(peers, units))
    await close_all(peers)


async def counted(server: subprocess.Popen[bytes], job: Awaitable[None]) -> None:
    """Run ``job`` with the server's count switched on."""
    server.send_signal(signal.SIGUSR1)
    await asyncio.sleep(0.5)  # the signal handler runs between two of the server's bytecodes
    await job
    server.send_signal(signal.SIGUSR2)


def count(target: Target, mode: str, kind: str, units: int) -> dict[str, Any]:
    """Run ``target`` under ``benchmarks.traced_server`` and return its count."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bytecodes-") as scratch:
        out = Path(scratch) / "count.json"
        command = [
            sys.executable, "-m", "benchmarks.traced_server", mode, str(out), target.module,
            "--host", HOST, "--port", str(port), *target.args,
        ]  # fmt: skip
        server = subprocess.Popen(command, cwd=ROOT, env=server_env())
        try:
            wait_listening(port, server)
            asyncio.run(work(port, kind, WARM_UNITS[kind], units, server))
            deadline = time.monotonic() + 60
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.2)  # let the writer finish
            return dict(json.loads(out.read_text()))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)


def wait_listening(port: int, server: subprocess.Popen[bytes]) -> None:
    """Wait until the server accepts connections."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and server.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the server on port {port} did not start")


def short(function: str) -> str:
    """A function's key without the directories of its file."""
    path, _, rest = function.partition(":")
    for marker in ("site-packages/", "/lib/python3.", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3.":
                path = path.split("/", 1)[1]
    return f"{path}:{rest}"


def bytecode_table(base: dict[str, Any], other: dict[str, Any], units: int, top: int) -> str:
    """The functions of ``other`` against ``base``: calls and own bytecodes per unit."""
    names = sorted(
        set(base) | set(other),
        key=lambda name: -abs(other.get(name, [0, 0, 0])[1] - base.get(name, [0, 0, 0])[1]),
    )
    total_base = sum(row[1] for row in base.values()) / units
    total_other = sum(row[1] for row in other.values()) / units
    lines = [
        f"bytecodes per unit: {total_other:,.0f} against {total_base:,.0f} "
        f"({total_other - total_base:+,.0f})",
        f"{'extra':>8} {'own':>8} {'calls':>6} {'base':>6} {'with callees':>12}  function",
    ]
    for name in names[:top]:
        calls, own, cumulative = (value / units for value in other.get(name, [0, 0, 0]))
        base_calls, base_own, _ = (value / units for value in base.get(name, [0, 0, 0]))
        lines.append(
            f"{own - base_own:+8.1f} {own:8.1f} {calls:6.2f} {base_calls:6.2f} "
            f"{cumulative:12.1f}  {short(name)}"
        )
    return "\n".join(lines)


def garbage_table(counts: dict[str, int], units: int) -> str:
    """Objects freed only by the collector, by type, per unit."""
    rows = sorted(counts.items(), key=lambda item: -item[1])
    total = sum(counts.values()) / units
    lines = [f"cyclic garbage per unit: {total:.2f} objects"]
    lines += [f"{number / units:8.2f}  {name}" for name, number in rows if number / units >= 0.05]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Count each target and print the tables."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--targets", default="raw,lambda", help="the first is the baseline")
    parser.add_argument("--kind", choices=("handshake", "message"), default="handshake")
    parser.add_argument("--units", type=int, default=500, help="handshakes or echoes counted")
    parser.add_argument("--top", type=int, default=40, help="functions shown")
    parser.add_argument("--garbage", action="store_true", help="count cyclic garbage instead")
    args = parser.parse_args(argv)
    by_name = {target.name: target for target in TARGETS}
    targets = [by_name[name] for name in args.targets.split(",")]
    mode = "garbage" if args.garbage else "bytecodes"
    counts = {target.name: count(target, mode, args.kind, args.units) for target in targets}
    base = targets[0].name
    for target in targets:
        print(f"\n== {target.name}: {target.label}, per {args.kind}")
        if args.garbage:
            print(garbage_table(counts[target.name], args.units))
        elif target.name != base:
            print(bytecode_table(counts[base], counts[target.name], args.units, args.top))
        else:
            total = sum(row[1] for row in counts[base].values()) / args.units
            print(f"bytecodes per unit: {total:,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
