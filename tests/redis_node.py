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
  from ``await wsapp.count(g)`` (``g`` may be null), or the error as for ``broadcast``;
- ``{"do": "join_and_burst", "group": g, "targets": [t, ...], "burst": n, "turns": m, "tag": x}``:
  in one plain (not async) handler, this connection joins ``g``, then ``n`` broadcasts are made
  without await, then one more on each of the next ``m`` turns of the event loop (from plain
  callbacks), so that some are made while the join's subscription is answered. The ``i``-th
  (from 0, in call order) is ``"x i"`` to ``targets[i % len(targets)]`` (a group, or everyone
  for null). The reply is ``{"reply": "join_and_burst"}``, sent after the first ``n`` calls.

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


def on_burst(conn: Connection, message: str | bytes) -> None:
    """Run ``join_and_burst`` (a plain handler: nothing in it is awaited)."""
    command = _command(message)
    if command is None or command.get("do") != "join_and_burst":
        return
    conn.join(command["group"])
    targets: list[str | None] = command["targets"]
    burst: int = command["burst"]
    last = burst + command["turns"]

    def broadcast(index: int) -> None:
        conn.app.broadcast(f"{command['tag']} {index}", group=targets[index % len(targets)])

    def on_next_turn(index: int) -> None:
        broadcast(index)
        if index + 1 < last:
            asyncio.get_running_loop().call_soon(on_next_turn, index + 1)

    for index in range(burst):
        broadcast(index)
    if burst < last:
        asyncio.get_running_loop().call_soon(on_next_turn, burst)


def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
    """Run every message through :func:`on_burst` then :func:`on_message`."""
    conn.on("message", on_burst)
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
