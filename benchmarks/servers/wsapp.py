"""aiohttp_wsapp: ``create_app(on_establish)`` with a ``message`` handler that calls ``conn.send``.

Run: ``python -m benchmarks.servers.wsapp --port 8765 [--broadcast] [--handler lambda|def|async]``.
``--handler`` picks the form of the echo handler, as users write it (see :data:`ECHO_HANDLERS`):
``lambda`` (the default) is the README's ``lambda conn, message: conn.send(message)``, which
returns ``send``'s awaitable to the dispatch loop; ``def`` a function that calls ``conn.send``
and returns nothing; ``async`` a coroutine function that awaits ``conn.send``. The heartbeat is
off, as in raw aiohttp's default; compression stays at its default (shared mode), negotiated only
with a client that offers permessage-deflate (``benchmarks.deflate_client``; the picows load
client does not).
With ``--broadcast`` the broadcast is ``await wsapp.broadcast(...)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from aiohttp_wsapp import WSAPP_KEY, Connection, WebSocketApp, WebSocketServer, create_app
from benchmarks.common import (
    TOOK_PREFIX,
    ServerOptions,
    broadcast_payload,
    parse_server_args,
    run_aiohttp,
)

SERVER = WebSocketServer(heartbeat=None)


def echo(conn: Connection, message: str | bytes) -> None:
    """Send the message back to its sender, without waiting for the socket to drain."""
    conn.send(message)


async def echo_awaiting(conn: Connection, message: str | bytes) -> None:
    """Send the message back to its sender and wait until the socket has room again."""
    await conn.send(message)


#: The echo handler by form, the README's lambda first (the default).
ECHO_HANDLERS: dict[str, Callable[[Connection, str | bytes], Any]] = {
    "lambda": lambda conn, message: conn.send(message),
    "def": echo,
    "async": echo_awaiting,
}


def echoing(
    handler: Callable[[Connection, str | bytes], Any],
) -> Callable[[Connection, web.Request, tuple[Any, ...]], None]:
    """An ``on_establish`` that makes ``handler`` every new connection's ``message`` handler."""

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        conn.on("message", handler)

    return on_establish


async def broadcast_on_command(conn: Connection, message: str | bytes) -> None:
    """Broadcast when asked to, and report the seconds; echo any other message."""
    payload = broadcast_payload(message)
    if payload is None:
        conn.send(message)
        return
    wsapp = conn.app
    start = time.perf_counter()
    await wsapp.broadcast(payload)
    took = time.perf_counter() - start
    conn.send(f"{TOOK_PREFIX}{took}")


def on_establish_broadcast(
    conn: Connection, request: web.Request, results: tuple[Any, ...]
) -> None:
    """Let the new connection trigger broadcasts."""
    conn.on("message", broadcast_on_command)


def make_app(options: ServerOptions, server: WebSocketServer = SERVER) -> web.Application:
    """The endpoint as a standalone application: it answers every path."""
    if options.broadcast:
        on_establish = on_establish_broadcast
    else:
        on_establish = echoing(ECHO_HANDLERS[options.handler or "lambda"])
    app = create_app(on_establish, websocket_server=server)
    assert isinstance(app[WSAPP_KEY], WebSocketApp)
    return app


def main() -> None:
    """Serve until interrupted."""
    options = parse_server_args(__doc__ or "", tuple(ECHO_HANDLERS))
    run_aiohttp(make_app(options), options)


if __name__ == "__main__":
    main()
