"""One endpoint process of the Redis tests, driven by its WebSocket clients.

Run as ``python tests/redis_node.py REDIS_URL PORT [--prefix PREFIX] [--cluster]
[--history SIZE TTL]``. It serves ``create_app(on_establish, broker=RedisBroker(REDIS_URL,
prefix=PREFIX))`` (with ``--cluster``: ``RedisClusterBroker``; with ``--history``: and
``history=History(size=SIZE, ttl=TTL)``) on ``127.0.0.1:PORT``, prints ``ready`` once its broker
is connected, and shuts down gracefully on SIGTERM.

A client may join groups with its query string: ``?join=g`` (repeated) joins without a position,
``since.g=<position>`` joins since that position (as the reference browser client does); for
each, in that order, the node then sends ``{"reply": "joined", "group": g, "recovered": ...,
"position": ..., "replayed": ...}`` (after the replay), or ``{"reply": "error", ...}``.

Then it sends commands as JSON text messages, and gets a JSON answer ``{"reply": ...}``:

- ``{"do": "join", "group": g}`` and ``{"do": "leave", "group": g}``: this connection joins or
  leaves ``g`` (not awaited); the reply is ``{"reply": "join"}`` or ``{"reply": "leave"}``;
- ``{"do": "join", "group": g, "since": p}``: joins as in the query string, awaited (``since``
  may be null), and replies as there;
- ``{"do": "broadcast", "data": d, "binary": b, "group": g, "exclude_self": e}``: broadcast ``d``
  (as bytes when ``b``) to ``g`` (or everyone when null), excluding this connection when ``e``.
  The reply is ``{"reply": "broadcast"}``, with ``"position"`` when the broadcast was kept in
  the history;
- ``{"do": "count", "group": g}``: the reply is ``{"reply": "count", "count": n}`` with ``n``
  from ``await wsapp.count(g)`` (``g`` may be null);
- ``{"do": "position", "group": g}``: the reply holds ``await wsapp.position(g)``;
- ``{"do": "groups"}``: the reply holds the connection's groups, sorted;
- ``{"do": "join_and_burst", "group": g, "targets": [t, ...], "burst": n, "turns": m, "tag": x}``:
  in one plain (not async) handler, this connection joins ``g``, then ``n`` broadcasts are made
  without await, then one more on each of the next ``m`` turns of the event loop (from plain
  callbacks), so that some are made while the join's subscription is answered. The ``i``-th
  (from 0, in call order) is ``"x i"`` to ``targets[i % len(targets)]`` (a group, or everyone
  for null; without ``targets``, ``g``). The reply is ``{"reply": "join_and_burst"}``, sent
  after the first ``n`` calls.

A command whose awaited call raised ``BrokerError`` is answered ``{"reply": "error", "error":
...}``. Any other message is echoed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

from aiohttp import web

from aiohttp_wsapp import BrokerError, Connection, History, Position, create_app
from aiohttp_wsapp.history import since_positions
from aiohttp_wsapp.redis import RedisBroker, RedisClusterBroker


async def join(conn: Connection, group: str, since: Position | None) -> None:
    """Join ``group`` (since ``since``), awaited; tell the client how it went."""
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
    """Run a command, or echo the message."""
    command = _command(message)
    if command is None:
        await conn.send(message)
        return
    try:
        await run(conn, command)
    except BrokerError as exc:
        await conn.send_json({"reply": "error", "error": f"BrokerError: {exc}"})


async def run(conn: Connection, command: dict[str, Any]) -> None:
    """Run ``command`` and reply (``join_and_burst`` is run by :func:`on_burst`)."""
    action = command.get("do")
    reply: dict[str, Any] = {"reply": action}
    if action == "join" and "since" in command:
        since = command["since"]
        await join(conn, command["group"], None if since is None else Position.parse(since))
        return
    if action == "join":
        conn.join(command["group"])
    elif action == "leave":
        conn.leave(command["group"])
    elif action == "count":
        reply["count"] = await conn.app.count(command.get("group"))
    elif action == "broadcast":
        position = await conn.app.broadcast(
            str(command["data"]).encode() if command.get("binary") else command["data"],
            group=command.get("group"),
            exclude=conn if command.get("exclude_self") else None,
        )
        if position is not None:
            reply["position"] = str(position)
    elif action == "position":
        reply["position"] = str(await conn.app.position(command["group"]))
    elif action == "groups":
        reply["groups"] = sorted(conn.groups)
    await conn.send_json(reply)


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
    targets: list[str | None] = command.get("targets", [command["group"]])
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


async def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
    """Join what the query string asks for, then run every message through :func:`on_burst`
    then :func:`on_message`."""
    for group in request.query.getall("join", []):
        await join(conn, group, None)
    for group, since in since_positions(request.query).items():
        await join(conn, group, since)
    conn.on("message", on_burst)
    conn.on("message", on_message)


async def main(options: argparse.Namespace) -> None:
    """Serve until SIGTERM."""
    kind = RedisClusterBroker if options.cluster else RedisBroker
    history = None
    if options.history is not None:
        size, ttl = options.history
        history = History(size=int(size), ttl=float(ttl))
    app = create_app(
        on_establish, broker=kind(options.redis_url, prefix=options.prefix), history=history
    )
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", options.port).start()
        print("ready", flush=True)
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        await stopping.wait()
    finally:
        await runner.cleanup()


def parse_options() -> argparse.Namespace:
    """The command line, as the module's docstring gives it."""
    parser = argparse.ArgumentParser(description="An endpoint process of the Redis tests.")
    parser.add_argument("redis_url")
    parser.add_argument("port", type=int)
    parser.add_argument("--prefix", default="aiohttp_wsapp")
    parser.add_argument("--cluster", action="store_true", help="use RedisClusterBroker")
    parser.add_argument(
        "--history",
        nargs=2,
        metavar=("SIZE", "TTL"),
        help="keep history=History(size=SIZE, ttl=TTL)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_options()))
