"""python-socketio on aiohttp: an ``echo`` event answered with ``emit`` to the sender.

Run: ``python -m benchmarks.servers.socketio_aiohttp --port 8765``.
Socket.IO is not plain WebSocket: the load client connects to
``/socket.io/?EIO=4&transport=websocket``, joins the default namespace (``40``), answers the
engine.io pings (``2`` -> ``3``) and sends ``42["echo", data]``; binary data goes as a
``451-["echo",{"_placeholder":true,"num":0}]`` header frame followed by one binary frame.
"""

from __future__ import annotations

import socketio
from aiohttp import web

from benchmarks.common import parse_server_args, run_aiohttp

sio = socketio.AsyncServer(async_mode="aiohttp")


async def echo(sid: str, data: str | bytes) -> None:
    """Send the event's data back to its sender, text as text and bytes as bytes."""
    await sio.emit("echo", data, to=sid)


def make_app() -> web.Application:
    """An aiohttp application with the Socket.IO server attached at ``/socket.io/``."""
    app = web.Application()
    sio.on("echo", echo)
    sio.attach(app)
    return app


def main() -> None:
    """Serve until interrupted."""
    options = parse_server_args(__doc__ or "")
    run_aiohttp(make_app(), options)


if __name__ == "__main__":
    main()
