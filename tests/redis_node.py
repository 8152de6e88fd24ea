"""One endpoint process of the Redis broker tests, driven by its WebSocket clients.

Run as ``python tests/redis_node.py REDIS_URL PORT PREFIX [cluster]``. It serves
``create_app(on_establish, broker=RedisBroker(REDIS_URL, prefix=PREFIX))`` (with ``cluster``:
``RedisClusterBroker``) on
``127.0.0.1:PORT``, prints ``ready`` once its broker is connected, and shuts down gracefully on
SIGTERM.

A client sends commands as JSON text messages, and gets a JSON answer ``{"reply": ...}``:

- ``{"do": "join", "group": g}`` and ``{"do": "leave", "group": g}``: this connection joins or
  leaves ``g``;
- ``{"do": "broadcast", "data": d, "binary": b, "group": g, "exclude_self": e}``: broadcast ``d``
  (as bytes when ``b``) to ``g`` (or everyone when null), excluding this connection when ``e``.
  The reply is ``{"reply": "broadcast"}``, or ``{"reply": "error", "error": ...}`` when
  ``broadcast`` raised ``BrokerError``;
- ``{"do": "count", "group": g}``: the reply is ``{"reply": "count", "count": n}`` with ``n``
  from ``await wsapp.count(g)`` (``g`` may be null), or the error as for ``broadcast``.

Any other message is echoed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

from aiohttp import web

from aiohttp_wsapp import BrokerError, Connection, create_app
from aiohttp_wsapp.redis import RedisBroker, RedisClusterBroker


async def on_message(conn: Connection, message: str | bytes) -> None:
    """Run a command, or echo the message."""
    command = _command(message)
    if command is None:
        await conn.send(message)
        return
    action = command.get("do")
    if action == "join":
        conn.join(command["group"])
    elif action == "leave":
        conn.leave(command["group"])
    elif action == "count":
        try:
            count = await conn.app.count(command.get("group"))
        except BrokerError as exc:
            await conn.send_json({"reply": "error", "error": f"BrokerError: {exc}"})
        else:
            await conn.send_json({"reply": "count", "count": count})
        return
    elif action == "broadcast":
        data: str | bytes = command["data"]
        if command.get("binary"):
            data = str(data).encode()
        try:
            await conn.app.broadcast(
                data,
                group=command.get("group"),
                exclude=conn if command.get("exclude_self") else None,
            )
        except BrokerError as exc:
            await conn.send_json({"reply": "error", "error": f"BrokerError: {exc}"})
            return
    await conn.send_json({"reply": action})


def _command(message: str | bytes) -> dict[str, Any] | None:
    if not isinstance(message, str) or not message.startswith('{"do"'):
        return None
    command = json.loads(message)
    return command if isinstance(command, dict) else None


def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
    """Run every message through :func:`on_message`."""
    conn.on("message", on_message)


async def main(redis_url: str, port: int, prefix: str, cluster: bool) -> None:
    """Serve until SIGTERM."""
    kind = RedisClusterBroker if cluster else RedisBroker
    broker = kind(redis_url, prefix=prefix)
    app = create_app(on_establish, broker=broker)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        await stopping.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    redis_url, port, prefix, *kind = sys.argv[1:]
    asyncio.run(main(redis_url, int(port), prefix, kind == ["cluster"]))
