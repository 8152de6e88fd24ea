"""Raw aiohttp: a ``WebSocketResponse`` and an ``async for`` loop, as the aiohttp docs show it.

Run: ``python -m benchmarks.servers.raw_aiohttp --port 8765 [--broadcast]``.
With ``--broadcast`` the broadcast is a loop of ``await ws.send_str(...)`` over every peer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from benchmarks.common import (
    BROADCAST_COMMAND,
    BROADCAST_PAYLOAD,
    TOOK_PREFIX,
    ServerOptions,
    parse_server_args,
    run_aiohttp,
)

Peers = dict[web.WebSocketResponse, asyncio.Transport]
"""Every open connection's response, with its transport (which only the floor writes to)."""

PEERS = web.AppKey("peers", Peers)
SendToAll = Callable[[Peers], Awaitable[float]]


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


async def send_to_all(peers: Peers) -> float:
    """Send the broadcast payload to every peer with a ``send_str`` loop; return the seconds."""
    start = time.perf_counter()
    for peer in tuple(peers):
        await peer.send_str(BROADCAST_PAYLOAD)
    return time.perf_counter() - start


def broadcaster(send: SendToAll) -> Callable[[web.Request], Awaitable[web.WebSocketResponse]]:
    """A handler that keeps its connection among the peers and calls ``send`` when asked to."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        peers = request.app[PEERS]
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        assert request.transport is not None
        peers[ws] = request.transport
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT and msg.data == BROADCAST_COMMAND:
                    took = await send(peers)
                    await ws.send_str(f"{TOOK_PREFIX}{took}")
        finally:
            del peers[ws]
        return ws

    return handle


def make_app(options: ServerOptions, send: SendToAll = send_to_all) -> web.Application:
    """The application: one route that answers every path; ``send`` broadcasts."""
    app = web.Application()
    app[PEERS] = {}
    app.router.add_get("/{tail:.*}", broadcaster(send) if options.broadcast else echo)
    return app


def main() -> None:
    """Serve until interrupted."""
    options = parse_server_args(__doc__ or "")
    run_aiohttp(make_app(options), options)


if __name__ == "__main__":
    main()
