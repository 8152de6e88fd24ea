"""An echo endpoint run by ``web.run_app``, for the test of shutdown under SIGTERM.

Run as ``python tests/run_app_node.py PORT CLOSE_TIMEOUT``. It serves
``create_app(echo, websocket_server=WebSocketServer(close_timeout=CLOSE_TIMEOUT))`` on
``127.0.0.1:PORT`` with ``web.run_app`` (which stops gracefully on SIGTERM), prints ``ready`` once
it listens, and ``finish CODE`` for each connection that finishes.
"""

from __future__ import annotations

import sys
from typing import Any

from aiohttp import web

from aiohttp_wsapp import Connection, WebSocketServer, create_app


def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
    """Echo every message; say when the connection finishes."""
    conn.on("message", lambda conn, message: conn.send(message))
    conn.on("finish", lambda conn: print(f"finish {conn.close_code}", flush=True))


def main(port: int, close_timeout: float) -> None:
    """Serve until SIGTERM."""
    app = create_app(on_establish, websocket_server=WebSocketServer(close_timeout=close_timeout))
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        print=lambda *args: print("ready", flush=True),
        access_log=None,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
