"""One endpoint process with history through Redis, for the history tests, driven by its clients.

Run as ``python tests/history_node.py REDIS_URL PORT PREFIX SIZE TTL [cluster]``. It serves
``create_app(on_establish, broker=RedisBroker(REDIS_URL, prefix=PREFIX),
history=History(size=SIZE, ttl=TTL))`` (with ``cluster``: ``RedisClusterBroker``) on
``127.0.0.1:PORT``, prints ``ready`` once its broker is connected, and shuts down gracefully on
SIGTERM.

A client joins groups with its query string: ``?join=g`` (repeated) joins without a position,
``since.g=<position>`` joins since that position (as the reference browser client does); for
each, in that order, the node then sends ``{"reply": "joined", "group": g, "recovered": ...,
"position": ..., "replayed": ...}`` (after the replay), or ``{"reply": "error", ...}``.

Then it sends commands as JSON text messages, and gets a JSON answer ``{"reply": ...}``:

- ``{"do": "broadcast", "group": g, "data": d, "binary": b}``: the reply holds the position;
- ``{"do": "position", "group": g}``: the reply holds ``await wsapp.position(g)``;
- ``{"do": "join", "group": g, "since": p}``: as in the query string (``since`` may be null);
- ``{"do": "groups"}``: the reply holds the connection's groups, sorted;
- ``{"do": "join_and_burst", "group": g, "burst": n, "turns": m, "tag": x}``: in one plain (not
  async) handler, this connection joins ``g``, then ``n`` broadcasts to ``g`` are made without
  await, then one more on each of the next ``m`` turns of the event loop; the ``i``-th (from 0,
  in call order) is ``"x i"``. The reply is ``{"reply": "join_and_burst"}``.

Errors (``BrokerError``) come back as ``{"reply": "error", "error": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

from aiohttp import web

from aiohttp_wsapp import BrokerError, Connection, History, Position, create_app
from aiohttp_wsapp.history import since_positions
from aiohttp_wsapp.redis import RedisBroker, RedisClusterBroker


async def join(conn: Connection, group: str, since: Position | None) -> None:
    """Join ``group`` (since ``since``); tell the client how it went."""
    try:
        if since is None:
            await conn.join(group)
            reply: dict[str, Any] = {"reply": "joined", "group": group, "position": None}
        else:
            recovery = await conn.join(group, since=since)
            reply = {
                "reply": "joined",
                "group": group,
                "recovered": recovery.recovered,
                "position": str(recovery.position),
                "replayed": recovery.replayed,
            }
    except BrokerError as exc:
        reply = {"reply": "error", "error": f"BrokerError: {exc}"}
    await conn.send_json(reply)


async def on_message(conn: Connection, message: str | bytes) -> None:
    """Run a command."""
    assert isinstance(message, str)
    command = json.loads(message)
    action = command["do"]
    try:
        if action == "broadcast":
            data: str | bytes = command["data"]
            if command.get("binary"):
                data = str(data).encode()
            position = await conn.app.broadcast(data, group=command.get("group"))
            await conn.send_json({"reply": "broadcast", "position": str(position)})
        elif action == "position":
            position = await conn.app.position(command["group"])
            await conn.send_json({"reply": "position", "position": str(position)})
        elif action == "groups":
            await conn.send_json({"reply": "groups", "groups": sorted(conn.groups)})
        elif action == "join":
            since = command.get("since")
            await join(conn, command["group"], None if since is None else Position.parse(since))
        elif action == "join_and_burst":
            await conn.send_json({"reply": action})  # done by on_burst
    except BrokerError as exc:
        await conn.send_json({"reply": "error", "error": f"BrokerError: {exc}"})


def on_burst(conn: Connection, message: str | bytes) -> None:
    """Run ``join_and_burst`` (a plain handler: nothing in it is awaited)."""
    if not isinstance(message, str) or not message.startswith('{"do": "join_and_burst"'):
        return
    command = json.loads(message)
    group, tag = command["group"], command["tag"]
    conn.join(group)
    last = command["burst"] + command["turns"]

    def on_next_turn(index: int) -> None:
        conn.app.broadcast(f"{tag} {index}", group=group)
        if index + 1 < last:
            asyncio.get_running_loop().call_soon(on_next_turn, index + 1)

    for index in range(command["burst"]):
        conn.app.broadcast(f"{tag} {index}", group=group)
    if command["burst"] < last:
        asyncio.get_running_loop().call_soon(on_next_turn, command["burst"])


async def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
    """Join what the query string asks for, then run every message through on_message."""
    for group in request.query.getall("join", []):
        await join(conn, group, None)
    for group, since in since_positions(request.query).items():
        await join(conn, group, since)
    conn.on("message", on_burst)
    conn.on("message", on_message)


async def main(
    redis_url: str, port: int, prefix: str, size: int, ttl: float, cluster: bool
) -> None:
    """Serve until SIGTERM."""
    kind = RedisClusterBroker if cluster else RedisBroker
    app = create_app(
        on_establish,
        broker=kind(redis_url, prefix=prefix),
        history=History(size=size, ttl=ttl),
    )
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
    redis_url, port, prefix, size, ttl, *kind = sys.argv[1:]
    asyncio.run(main(redis_url, int(port), prefix, int(size), float(ttl), kind == ["cluster"]))
