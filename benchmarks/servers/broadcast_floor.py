"""The floor of scenario (5): raw aiohttp whose broadcast is a bare loop of ``transport.write``.

Run: ``python -m benchmarks.servers.broadcast_floor --port 8765 --broadcast``.
The frame is built once and written to every peer's transport, with no check and no framework
between: no asyncio server can hand a frame to 5,000 transports in less time than this loop.
It shows how much of a broadcast's time is the sockets' own. Without ``--broadcast`` it echoes
like raw aiohttp.
"""

from __future__ import annotations

import time

from aiohttp_wsapp.frames import Opcode, encode_frame
from benchmarks.common import parse_server_args, run_aiohttp
from benchmarks.servers.raw_aiohttp import Peers, make_app


async def write_to_all(peers: Peers, payload: str) -> float:
    """Write one prebuilt frame of ``payload`` to every peer's transport; return the seconds."""
    frame = encode_frame(Opcode.TEXT, payload.encode())
    start = time.perf_counter()
    for transport in tuple(peers.values()):
        transport.write(frame)
    return time.perf_counter() - start


def main() -> None:
    """Serve until interrupted."""
    options = parse_server_args(__doc__ or "")
    run_aiohttp(make_app(options, write_to_all), options)


if __name__ == "__main__":
    main()
