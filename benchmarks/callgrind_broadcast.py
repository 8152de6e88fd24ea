"""Instructions per broadcast frame, counted by valgrind's callgrind: a broadcast's cost per peer.

Run: ``python -m benchmarks.callgrind_broadcast [--peers 100] [--broadcasts 200] [--phases 3]``
``[--targets floor,raw,wsapp]``. It prints a Markdown table and writes nothing.

Each server runs under callgrind as in :mod:`benchmarks.callgrind` (instrumentation switched on
after a warm-up, each phase counted apart, an empty phase taken off). The client, in this
process, holds ``--peers`` connections; for each broadcast the first sends the command
(``broadcast``), the server sends the 100-byte text to every peer and then answers the first
with the seconds it took, and the next broadcast starts once every peer has the text and the
answer came. The figure is the instructions per broadcast divided by the peers: what one more
peer costs, with the command's own cost spread over them.

The servers: ``floor`` writes one prebuilt frame to every transport in a bare loop (no asyncio
server does less); ``raw`` is raw aiohttp's loop of ``await ws.send_str(...)``; ``wsapp`` is
``await wsapp.broadcast(...)`` to every connection.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from picows import WSFrame, WSMsgType

from benchmarks.callgrind import STEP_TIMEOUT, Callgrind, Target, count_phases, progress
from benchmarks.client import Peer, close_all, connect_many
from benchmarks.common import BROADCAST_COMMAND

__all__ = ["TARGETS", "main"]

TARGETS: tuple[Target, ...] = (
    Target("floor", "the floor: a `transport.write` loop", "benchmarks.servers.broadcast_floor",
           ("--broadcast",)),
    Target("raw", "raw aiohttp: a loop of `await ws.send_str`", "benchmarks.servers.raw_aiohttp",
           ("--broadcast",)),
    Target("wsapp", "aiohttp_wsapp: `await wsapp.broadcast`", "benchmarks.servers.wsapp",
           ("--broadcast",)),
)  # fmt: skip

_COMMAND = ((WSMsgType.TEXT, BROADCAST_COMMAND.encode()),)


class Round:
    """What one broadcast must bring back: the text to every peer, and the answer to the first."""

    def __init__(self, peers: int) -> None:
        self.peers = peers
        self.left = 0
        self.done: asyncio.Future[None] | None = None

    def start(self) -> asyncio.Future[None]:
        """Expect a new broadcast."""
        self.left = self.peers + 1
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def arrived(self) -> None:
        """One of the frames came."""
        self.left -= 1
        if self.left == 0 and self.done is not None:
            self.done.set_result(None)


class BroadcastPeer(Peer):
    """Counts every frame it receives into the round."""

    def __init__(self, round_: Round) -> None:
        super().__init__(socketio=False)
        self.round = round_

    def on_reply(self, frame: WSFrame) -> None:
        """A broadcast's text, or (for the first peer) the server's answer."""
        self.round.arrived()


async def broadcasts(trigger: Peer, round_: Round, count: int) -> None:
    """``count`` broadcasts, one after the other."""
    for _ in range(count):
        done = round_.start()
        trigger.send_frames(_COMMAND)
        await asyncio.wait_for(done, STEP_TIMEOUT)


async def measure_target(
    target: Target, peers: int, count: int, phases: int, outdir: Path
) -> dict[str, Any]:
    """Start ``target`` under callgrind; count its broadcasts to ``peers`` connections."""
    server = Callgrind(target, outdir, dump_instr=False)
    try:
        server.wait_listening()
        round_ = Round(peers)
        clients = await connect_many(server.url, lambda: BroadcastPeer(round_), peers)
        await broadcasts(clients[0], round_, 100)
        server.instrument()
        await broadcasts(clients[0], round_, 10)
        result = await count_phases(
            server, lambda n: broadcasts(clients[0], round_, n), count, phases
        )
        await close_all(clients)
    except Exception as exc:
        raise RuntimeError(f"{target.name}: {exc}\n{server.log_tail()}") from exc
    finally:
        server.stop()
    return result


def main(argv: list[str] | None = None) -> None:
    """Count every target named, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--targets", default=",".join(target.name for target in TARGETS))
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--broadcasts", type=int, default=200)
    parser.add_argument("--phases", type=int, default=3)
    options = parser.parse_args(argv)
    chosen = [t for name in options.targets.split(",") for t in TARGETS if t.name == name]
    rows = []
    with tempfile.TemporaryDirectory(prefix="callgrind-broadcast-") as outdir:
        for target in chosen:
            progress(f"{target.name}: counting broadcasts under callgrind")
            result = asyncio.run(
                measure_target(
                    target, options.peers, options.broadcasts, options.phases, Path(outdir)
                )
            )
            per_peer = result["per_unit"] / options.peers
            low, high = (value / options.peers for value in result["spread"])
            rows.append(f"| {target.label} | {per_peer:,.0f} ({low:,.0f}-{high:,.0f}) |")
    print(f"Instructions per peer of a 100-byte broadcast to {options.peers} connections")
    print(f"(mean of {options.phases} phases of {options.broadcasts} broadcasts)\n")
    print("| server | instructions per peer |\n| --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
