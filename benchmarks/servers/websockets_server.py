"""websockets: the asyncio implementation's ``serve`` and an ``async for`` loop.

Run: ``python -m benchmarks.servers.websockets_server --port 8765 [--broadcast]``.
Keepalive pings are off, as in raw aiohttp's default. Compression is websockets' default:
permessage-deflate with a client that offers it (context kept, 12-bit windows, memLevel 5).
With ``--broadcast`` the broadcast is
``websockets.asyncio.server.broadcast(server.connections, ...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve

from benchmarks.common import (
    BACKLOG,
    TOOK_PREFIX,
    ServerOptions,
    broadcast_payload,
    parse_server_args,
)


async def echo(ws: ServerConnection) -> None:
    """Send every text and binary message back to its sender."""
    async for message in ws:
        await ws.send(message)


def send_to_all(server: Server, payload: str) -> float:
    """Broadcast ``payload`` to every open connection; return the seconds the call took."""
    start = time.perf_counter()
    broadcast(server.connections, payload)
    return time.perf_counter() - start


async def broadcaster(ws: ServerConnection) -> None:
    """Broadcast when asked to, and report the seconds; echo any other message."""
    async for message in ws:
        payload = broadcast_payload(message)
        if payload is None:
            await ws.send(message)
        else:
            await ws.send(f"{TOOK_PREFIX}{send_to_all(ws.server, payload)}")


async def serve_forever(options: ServerOptions) -> None:
    """Serve until cancelled."""
    handler = broadcaster if options.broadcast else echo
    async with serve(
        handler, options.host, options.port, ping_interval=None, backlog=BACKLOG
    ) as server:
        await server.serve_forever()


def main() -> None:
    """Serve until interrupted."""
    options = parse_server_args(__doc__ or "")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(options))


if __name__ == "__main__":
    main()
