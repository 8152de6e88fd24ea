"""The floor of scenario (5): raw aiohttp whose broadcast is a bare loop of ``transport.write``.

Run: ``python -m benchmarks.servers.broadcast_floor --port 8765 --broadcast``.
The frame is built once and written to every peer's transport, with no check and no framework
between: no asyncio server can hand a frame to 5,000 transports in less time than this loop.
It shows how much of a broadcast's time is the sockets' own. Without ``--broadcast`` it echoes
like raw aiohttp.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import WSMsgType, web

from aiohttp_wsapp.frames import Opcode, encode_frame
from benchmarks.common import (
    BROADCAST_COMMAND,
    BROADCAST_PAYLOAD,
    TOOK_PREFIX,
    ServerOptions,
    parse_server_args,
    run_aiohttp,
)
from benchmarks.servers.raw_aiohttp import echo

FRAME = encode_frame(Opcode.TEXT, BROADCAST_PAYLOAD.encode())
TRANSPORTS = web.AppKey("transports", set[asyncio.Transport])


def write_to_all(transports: set[asyncio.Transport]) -> float:
    """Write the prebuilt frame to every transport; return the seconds."""
    start = time.perf_counter()
    for transport in tuple(transports):
        transport.write(FRAME)
    return time.perf_counter() - start


async def broadcaster(request: web.Request) -> web.WebSocketResponse:
    """Keep the connection's transport in the set; broadcast when asked to."""
    transports = request.app[TRANSPORTS]
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    transport = request.transport
    assert transport is not None
    transports.add(transport)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and msg.data == BROADCAST_COMMAND:
                took = write_to_all(transports)
                await ws.send_str(f"{TOOK_PREFIX}{took}")
    finally:
        transports.discard(transport)
    return ws


def make_app(options: ServerOptions) -> web.Application:
    """The application: one route that answers every path."""
    app = web.Application()
    app[TRANSPORTS] = set()
    app.router.add_get("/{tail:.*}", broadcaster if options.broadcast else echo)
    return app


def main() -> None:
    """Serve until interrupted."""
    options = parse_server_args(__doc__ or "")
    run_aiohttp(make_app(options), options)


if __name__ == "__main__":
    main()
