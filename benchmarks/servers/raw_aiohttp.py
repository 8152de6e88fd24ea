"""Raw aiohttp: a ``WebSocketResponse`` and an ``async for`` loop, as the aiohttp docs show it.

Run: ``python -m benchmarks.servers.raw_aiohttp --port 8765 [--broadcast]``.
With ``--broadcast`` the broadcast is a loop of ``await ws.send_str(...)`` over every peer.
``WebSocketResponse(compress=True)``, aiohttp's default, negotiates permessage-deflate with a
client that offers it (the load client does not; ``benchmarks.deflate_client`` does): aiohttp then
compresses every message with a compressor per connection (level 1, context kept).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from benchmarks.common import (
    TOOK_PREFIX,
    ServerOptions,
    broadcast_payload,
    parse_server_args,
    run_aiohttp,
)

Peers = dict[web.WebSocketResponse, asyncio.Transport]
"""Every open connection's response, with its transport (which only the floor writes to)."""

PEERS = web.AppKey("peers", Peers)
SendToAll = Callable[[Peers, str], Awaitable[float]]


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


async def send_to_all(peers: Peers, payload: str) -> float:
    """Send ``payload`` to every peer with a ``send_str`` loop; return the seconds."""
    start = time.perf_counter()
    for peer in tuple(peers):
        await peer.send_str(payload)
    return time.perf_counter() - start


def broadcaster(send: SendToAll) -> Callable[[web.Request], Awaitable[web.WebSocketResponse]]:
    """A handler that keeps its connection among the peers and calls ``send`` when asked to.

    Any other message is echoed.
    """

    async def handle(request: web.Request) -> web.WebSocketResponse:
        peers = request.app[PEERS]
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        assert request.transport is not None
        peers[ws] = request.transport
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                payload = broadcast_payload(msg.data)
                if payload is None:
                    await ws.send_str(msg.data)
                else:
                    took = await send(peers, payload)
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
