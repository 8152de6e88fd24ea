"""Two servers measured at the same time: the ratio that survives a noisy machine.

Usage: ``python -m benchmarks.pair [--baseline raw_aiohttp] [--contender aiohttp_wsapp_defaults]
[--connections 1,50,500] [--rounds 5] [--seconds 3] [--deflate MESSAGE]``.

With ``--deflate text32`` (or ``json4k``) the load clients are the browser-like ones of
``benchmarks.deflate_client``, which negotiate permessage-deflate, echoing that message.

Sequential rounds on a shared VM swing by ±25 %, enough to turn a slower server into a faster
one. Here both servers run at once, pinned to the same core, and each gets its own load client,
both pinned to the other core, for the same seconds: the scheduler splits the cores between
them, and whatever else the machine does hits both alike. The pair that starts first can get
ahead and stay ahead (a server handling more messages per wake-up spends less on each), so the
rounds alternate which one starts first. With the plain client the round-trip ratio is
reproducible to about ±2 %; with the deflate clients, whose loops are busier, single rounds
swing more, and only the median of many rounds is worth quoting. Nothing here asserts a timing:
it prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from benchmarks.profiles import FULL
from benchmarks.run import (
    DEFLATE_CLIENT,
    ROOT,
    ServerFailed,
    client_command,
    echo_step,
    server,
)
from benchmarks.servers import SERVERS

__all__ = ["Echo", "main", "measure_pair"]


@dataclass(frozen=True)
class Echo:
    """One server's part of a round: its round trips/s and its CPU seconds per round trip."""

    rate: float
    cpu_per_message: float

    @classmethod
    def parse(cls, result: dict[str, Any]) -> Echo:
        """From a load client's echo result."""
        rate = result["messages_per_s"]
        return cls(rate, result["server_cpu"] / rate)


def measure_pair(
    baseline: str,
    contender: str,
    connections: int,
    seconds: float,
    deflate: str | None = None,
    rate: float | None = None,
) -> tuple[Echo, Echo]:
    """Echo round trips/s of both servers, measured at the same time on shared cores.

    The baseline's server and load client start first; swap the arguments to start the
    contender first. With ``rate`` each load client offers that many messages/s (deflate
    clients only).
    """
    specs = {spec.name: spec for spec in SERVERS}
    profile = FULL
    step = echo_step(profile, connections, size=profile.echo_size, binary=False)
    module = "benchmarks.client"
    if deflate is not None:
        step |= {"message": deflate, "deflate": True, "rate": rate}
        module = DEFLATE_CLIENT
    plan = [step | {"duration": seconds}]
    with ExitStack() as stack:
        running = [stack.enter_context(server(specs[name])) for name in (baseline, contender)]
        children = [
            subprocess.Popen(
                client_command(target, plan, module), cwd=ROOT, stdout=subprocess.PIPE, text=True
            )
            for target in running
        ]
        outputs = [child.communicate()[0] for child in children]
    if any(child.returncode for child in children):
        raise ServerFailed("a load client failed")
    base, other = (Echo.parse(json.loads(output)[0]) for output in outputs)
    return base, other


def main() -> None:
    """Measure the pair at each concurrency, round after round, and print the ratios.

    Two ratios per round, contender to baseline: round trips/s, and CPU economy (the baseline's
    server CPU seconds per round trip over the contender's). Under ``--rate`` both servers carry
    the same load, so only the economy tells them apart.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default="raw_aiohttp")
    parser.add_argument("--contender", default="aiohttp_wsapp_defaults")
    parser.add_argument("--connections", default="1,50,500")
    parser.add_argument("--rounds", type=int, default=6, help="an even number: half start each")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--deflate", help="echo this message through deflate clients: text32, ...")
    parser.add_argument("--rate", type=float, help="messages/s each deflate client offers")
    args = parser.parse_args()
    for connections in (int(n) for n in args.connections.split(",")):
        rates, economies = [], []
        for round_ in range(args.rounds):
            names = (args.baseline, args.contender)
            first, second = names[::-1] if round_ % 2 else names
            results = dict(
                zip(
                    (first, second),
                    measure_pair(first, second, connections, args.seconds, args.deflate, args.rate),
                    strict=True,
                )
            )
            base, other = results[args.baseline], results[args.contender]
            rates.append(other.rate / base.rate)
            economies.append(base.cpu_per_message / other.cpu_per_message)
            print(
                f"{connections:4} connections, {first} first: "
                f"{args.baseline} {base.rate:7.0f}/s {base.cpu_per_message * 1e6:6.1f} µs, "
                f"{args.contender} {other.rate:7.0f}/s {other.cpu_per_message * 1e6:6.1f} µs",
                file=sys.stderr,
            )
        for label, ratios in (("round trips/s", rates), ("CPU economy", economies)):
            spread = ", ".join(f"{ratio:.3f}" for ratio in ratios)
            print(
                f"{args.contender} / {args.baseline} at {connections} connections, {label}: "
                f"median {statistics.median(ratios):.3f} ({spread})"
            )


if __name__ == "__main__":
    main()
