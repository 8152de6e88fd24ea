"""Two servers measured at the same time: the ratio that survives a noisy machine.

Usage: ``python -m benchmarks.pair [--baseline raw_aiohttp] [--contender aiohttp_wsapp_defaults]
[--connections 1,50,500] [--rounds 5] [--seconds 3] [--deflate MESSAGE]``.

With ``--deflate text32`` (or ``json4k``) the load clients are the browser-like ones of
``benchmarks.deflate_client``, which negotiate permessage-deflate, echoing that message.

Sequential rounds on a shared VM swing by ±25 %, enough to turn a slower server into a faster
one. Here both servers run at once, pinned to the same core, and each gets its own load client,
both pinned to the other core, for the same seconds: the scheduler splits the cores between
them, and whatever else the machine does hits both alike. The round-trip ratio is reproducible
to about ±2 %. Nothing here asserts a timing: it prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from contextlib import ExitStack
from typing import Any

from benchmarks.run import (
    DEFLATE_CLIENT,
    FULL,
    ROOT,
    ServerFailed,
    client_command,
    echo_step,
    server,
)
from benchmarks.servers import SERVERS

__all__ = ["main", "measure_pair"]


def measure_pair(
    baseline: str, contender: str, connections: int, seconds: float, deflate: str | None = None
) -> tuple[float, float]:
    """Echo round trips/s of both servers, measured at the same time on shared cores."""
    specs = {spec.name: spec for spec in SERVERS}
    profile = FULL
    step = echo_step(profile, connections, size=profile.echo_size, binary=False)
    module = "benchmarks.client"
    if deflate is not None:
        step |= {"message": deflate, "deflate": True}
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
    rates = [json.loads(output)[0]["messages_per_s"] for output in outputs]
    return rates[0], rates[1]


def main() -> None:
    """Measure the pair at each concurrency, round after round, and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default="raw_aiohttp")
    parser.add_argument("--contender", default="aiohttp_wsapp_defaults")
    parser.add_argument("--connections", default="1,50,500")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--deflate", help="echo this message through deflate clients: text32, ...")
    args = parser.parse_args()
    summary: dict[int, Any] = {}
    for connections in (int(n) for n in args.connections.split(",")):
        ratios = []
        for _ in range(args.rounds):
            base, other = measure_pair(
                args.baseline, args.contender, connections, args.seconds, args.deflate
            )
            ratios.append(other / base)
            print(
                f"{connections:4} connections: {args.baseline} {base:9.0f}/s, "
                f"{args.contender} {other:9.0f}/s, ratio {other / base:.3f}",
                file=sys.stderr,
            )
        summary[connections] = {"median": statistics.median(ratios), "ratios": ratios}
    for connections, result in summary.items():
        spread = ", ".join(f"{ratio:.3f}" for ratio in result["ratios"])
        print(
            f"{args.contender} / {args.baseline} at {connections} connections: "
            f"median {result['median']:.3f} ({spread})"
        )


if __name__ == "__main__":
    main()
