"""A chat server: one page, and one WebSocket room per sub-path of ``/ws``.

Start it with one command, from the repository root::

    python examples/chat/server.py

and open the URL it prints in two browser windows. Pick a name and a room in each; what one
types, everyone in the same room sees. Rooms are the sub-path of the endpoint
(``ws://HOST:PORT/ws/<room>?name=<name>``); the name is checked in the handshake, so a bad one
is refused with ``400 Bad Request`` before the WebSocket opens.

Options: ``--host`` (default 127.0.0.1), ``--port`` (default 8080), and ``--redis URL``, which
carries every broadcast through Redis (install ``aiohttp-wsapp[redis]``) so that several
processes share their rooms::

    python examples/chat/server.py --port 8080 --redis redis://localhost:6379
    python examples/chat/server.py --port 8081 --redis redis://localhost:6379

Restart a server while pages are open: they reconnect by themselves, with backoff, and get
what they missed meanwhile. The rooms keep their recent broadcasts
(``history=History(...)``): the page (``static/wsapp-client.js``, the reference client) sends
the last position it received in its query string (``since.<room>=<position>``), and the server
joins the room since that position, so that the page shows every message once, in order, even
after its server died and it reconnected to another one. When the history no longer reaches back
that far, the page says that it missed messages.

The page shows how many are in the room, counted in every process with ``await
wsapp.count(room)``: with ``--redis``, the people in the room on the other servers count too.

Messages are JSON text frames. The page sends ``{"type": "message", "text": "..."}``; the room
gets, in the history's default envelope (``{"group": room, "position": "...", "data": event}``,
``event`` a JSON text), ``{"type": "join" | "leave", "name": "..."}``, each followed by
``{"type": "presence", "count": n}`` (how many are in the room now), and ``{"type": "message",
"name": "...", "text": "..."}``. One connection only gets ``{"type": "error", "text": "..."}``,
and, after a join since a position, ``{"group": room, "position": "..."}``: where the room is,
so that the page learns at once whether it missed something.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import WSCloseCode, web

from aiohttp_wsapp import BrokerError, Connection, History, WebSocketApp, WebSocketServer
from aiohttp_wsapp.history import since_positions

__all__ = ["ROOMS", "main", "make_app"]

STATIC = Path(__file__).resolve().parent / "static"
MAX_TEXT = 2000
"""Longest chat message, in characters; the page's input has the same ``maxlength``."""

# \w is Unicode-aware for str patterns: names like "José" or "李雷" are fine. The page's
# input patterns say the same thing in JavaScript's terms.
_NAME = re.compile(r"[\w .'-]{1,32}")
_ROOM = re.compile(r"[\w-]{1,32}")

log = logging.getLogger("chat")

ROOMS = web.AppKey("rooms", WebSocketApp)
"""The endpoint of the rooms, on the application that :func:`make_app` returns."""


@dataclass(frozen=True, slots=True)
class Member:
    """Who is on a connection, and where: the handshake's result."""

    name: str
    room: str


def check_member(request: web.Request, response: web.WebSocketResponse) -> Member:
    """The ``handshake`` callback: accept a valid ``?name=`` in a valid room, else answer 400."""
    name = request.query.get("name", "").strip()
    room = request.match_info.get("tail", "").strip("/")
    if not _NAME.fullmatch(name):
        raise web.HTTPBadRequest(
            text="name: 1 to 32 letters, digits, spaces, or . ' - _ characters"
        )
    if not _ROOM.fullmatch(room):
        raise web.HTTPBadRequest(text="room: 1 to 32 letters, digits, or - _ characters")
    return Member(name, room)


async def on_establish(
    conn: Connection, request: web.Request, handshake_results: tuple[object, ...]
) -> None:
    """Put the connection in its room, announce it there, and relay what it says.

    A page that reconnects sends the last position it received: it joins since that position,
    gets what it missed, and is not announced again.
    """
    (member,) = handshake_results
    assert isinstance(member, Member)
    since = since_positions(request.query).get(member.room)
    if since is not None:
        try:
            recovery = await conn.join(member.room, since=since)
        except BrokerError as exc:
            log.warning("cannot read the history of room %r: %s", member.room, exc)
            await conn.close(WSCloseCode.TRY_AGAIN_LATER, "history unreachable")
            return
        # Where the room is: the page compares it with its own last position.
        conn.send_json({"group": member.room, "position": str(recovery.position)})
    else:
        conn.join(member.room)

    async def on_message(conn: Connection, message: str | bytes) -> None:
        text = _chat_text(message)
        if text is None:
            # Keep the connection: a page with a bug should see why, not loop on reconnects.
            conn.send_json({"type": "error", "text": "expected a chat message"})
            return
        await _announce(conn, member.room, {"type": "message", "name": member.name, "text": text})

    async def on_finish(conn: Connection) -> None:
        # The closed connection has left the room already: this reaches the others only, and
        # the count leaves it out.
        await _announce(conn, member.room, {"type": "leave", "name": member.name})
        await _announce_presence(conn, member.room)

    conn.on(message=on_message, finish=on_finish)
    if since is None:
        await _announce(conn, member.room, {"type": "join", "name": member.name})
    await _announce_presence(conn, member.room)


def _chat_text(message: str | bytes) -> str | None:
    """The text of a ``{"type": "message", "text": ...}`` frame, or None if it is not one."""
    if isinstance(message, bytes):
        return None
    try:
        event = json.loads(message)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("type") != "message":
        return None
    text = event.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        return None
    return text


async def _announce_presence(conn: Connection, room: str) -> None:
    """Tell ``room`` how many are in it now, in every process."""
    try:
        count = await conn.app.count(room)
    except BrokerError as exc:
        log.warning("cannot count room %r: %s", room, exc)  # the next join or leave will
        return
    await _announce(conn, room, {"type": "presence", "count": count})


async def _announce(conn: Connection, room: str, event: dict[str, str | int]) -> None:
    """Broadcast ``event`` to ``room``; when the broker is down, tell ``conn`` (if still open)."""
    try:
        await conn.app.broadcast(json.dumps(event), group=room)
    except BrokerError as exc:
        # Expected while Redis is down (the broker reconnects by itself): no traceback.
        log.warning("cannot broadcast to room %r: %s", room, exc)
        # Not awaited: on a connection that has closed meanwhile, this is dropped silently.
        conn.send_json({"type": "error", "text": "the chat is unreachable, try again soon"})


async def index(request: web.Request) -> web.FileResponse:
    """The chat page."""
    return web.FileResponse(STATIC / "index.html")


def make_app(redis_url: str | None = None) -> web.Application:
    """Build the chat application: the page at ``/``, its assets, the rooms under ``/ws/``.

    With ``redis_url``, broadcasts go through Redis, shared by every process using that URL.
    """
    broker = None
    if redis_url is not None:
        # Imported only here, so that the redis package is needed only with --redis.
        from aiohttp_wsapp.redis import RedisBroker

        broker = RedisBroker(redis_url, prefix="aiohttp_wsapp.examples.chat")
    # The messages are small; a larger frame is not from our page.
    server = WebSocketServer(handshake=check_member, max_payload_size=16 * 1024)
    # Each room keeps its last 1,000 messages for 5 minutes: a page away for less gets them.
    rooms = WebSocketApp(
        on_establish, websocket_server=server, broker=broker, history=History(size=1000, ttl=300)
    )
    app = web.Application()
    app[ROOMS] = rooms
    app.router.add_get("/", index)
    app.router.add_static("/static", STATIC)
    app.add_subapp("/ws", rooms.to_app())
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve the chat until interrupted."""
    parser = argparse.ArgumentParser(description="Serve the aiohttp-wsapp chat example.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument("--redis", metavar="URL", help="share rooms through Redis at URL")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # run_app prints the URL it serves on ("======== Running on http://... ========").
    web.run_app(make_app(args.redis), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
