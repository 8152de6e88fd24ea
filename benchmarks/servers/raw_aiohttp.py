"""Raw aiohttp: a ``WebSocketResponse`` and an ``async for`` loop, as the aiohttp docs show it.

Run: ``python -m benchmarks.servers.raw_aiohttp --port 8765 [--broadcast]``.
With ``--broadcast`` the broadcast is a loop of ``await ws.send_str(...)`` over every peer.
"""

from __future__ import annotations

import time

from aiohttp import WSMsgType, web

from benchmarks.common import (
    BROADCAST_COMMAND,
    BROADCAST_PAYLOAD,
    TOOK_PREFIX,
    ServerOptions,
    parse_server_args,
    run_aiohttp,
)

PEERS = web.AppKey("peers", set[web.WebSocketResponse])


async def echo(request: web.Request) -> web.WebSocketResponse:
    """Send every text and binary message back to its sender."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def send_to_all(peers: set[web.WebSocketResponse]) -> float:
    """Send the broadcast payload to every peer with a ``send_str`` loop; return the seconds."""
    start = time.perf_counter()
    for peer in tuple(peers):
        await peer.send_str(BROADCAST_PAYLOAD)
    return time.perf_counter() - start


async def broadcaster(request: web.Request) -> web.WebSocketResponse:
    """Keep the connection in the peer set; broadcast when asked to."""
    peers = request.app[PEERS]
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    peers.add(ws)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and msg.data == BROADCAST_COMMAND:
                took = await send_to_all(peers)
                await ws.send_str(f"{TOOK_PREFIX}{took}")
    finally:
        peers.discard(ws)
    return ws


def make_app(options: ServerOptions) -> web.Application:
    """The application: one route that answers every path."""
    app = web.Application()
    app[PEERS] = set()
    app.router.add_get("/{tail:.*}", broadcaster if options.broadcast else echo)
    return app


def main() -> None:
    """Serve until interrupted."""
    options = parse_server_args(__doc__ or "")
    run_aiohttp(make_app(options), options)


if __name__ == "__main__":
    main()
