"""Starlette: a ``WebSocketEndpoint`` on uvicorn.

uvicorn runs on the stdlib asyncio loop with httptools and its websockets-sansio protocol.

Run: ``python -m benchmarks.servers.starlette_uvicorn --port 8765``.
uvicorn's keepalive pings are off, as in raw aiohttp's default.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from benchmarks.common import BACKLOG, parse_server_args


class Echo(WebSocketEndpoint):
    """Send every text and binary message back to its sender."""

    encoding = None

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        """Answer text with text and bytes with bytes."""
        if isinstance(data, str):
            await websocket.send_text(data)
        else:
            await websocket.send_bytes(data)


app = Starlette(routes=[WebSocketRoute("/", Echo)])


def main() -> None:
    """Serve until interrupted."""
    options = parse_server_args(__doc__ or "")
    uvicorn.run(
        app,
        host=options.host,
        port=options.port,
        loop="asyncio",
        ws_ping_interval=None,
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=BACKLOG,
    )


if __name__ == "__main__":
    main()
