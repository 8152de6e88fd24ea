"""Clients of the endpoint processes of the Redis tests (``tests/redis_node.py``, started by
:class:`redis_server.Node`): they send the node's JSON commands and keep apart its replies and
what else arrives. :func:`connecting` opens them for a test; :class:`NodeClient` talks to a node
without history, :class:`HistoryClient` to one with history (what arrives is an envelope).
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any, Generic, TypeVar

import aiohttp
from aiohttp import WSMsgType
from redis_server import Node
from support import TIMEOUT

from aiohttp_wsapp import Position
from aiohttp_wsapp.history import read_envelope

__all__ = [
    "Client",
    "Connect",
    "ConnectHistory",
    "Envelope",
    "HistoryClient",
    "NodeClient",
    "burst_received_by",
    "connecting",
    "receive_all",
]

MessageT = TypeVar("MessageT")
Envelope = tuple[str, Position, str | bytes]
"""A group broadcast as a node with history sends it: its group, position and data."""


class Client(ABC, Generic[MessageT]):
    """A client of a :class:`Node`: sends commands, keeps apart replies and what else arrives
    (as a subclass :meth:`reads` it)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        self.ws = ws
        self.replies: deque[dict[str, Any]] = deque()
        self.received: deque[MessageT] = deque()
        self.joins: list[dict[str, Any]] = []
        """The node's replies to the joins of the query string."""

    @abstractmethod
    def reads(self, data: str | bytes) -> MessageT:
        """What a message that is not a reply means."""

    async def command(self, do: str, **fields: Any) -> dict[str, Any]:
        """Send a command; return its reply (keeping what arrives before it for :meth:`next`)."""
        await self.ws.send_str(json.dumps({"do": do, **fields}))
        return await self.reply()

    async def reply(self) -> dict[str, Any]:
        """The next reply (what arrives before it is kept for :meth:`next`)."""
        while not self.replies:
            await self._receive()
        return self.replies.popleft()

    async def next(self) -> MessageT:
        """The next message that is not a reply (replies before it are kept for :meth:`reply`)."""
        while not self.received:
            await self._receive()
        return self.received.popleft()

    async def joined(self) -> dict[str, Any]:
        """The next reply, which says that a join succeeded."""
        reply = await self.reply()
        assert reply["reply"] == "joined", reply
        return reply

    async def closed_with(self) -> int | None:
        """Read until the server closes; return its close code."""
        while True:
            message = await self.ws.receive(timeout=TIMEOUT)
            if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return self.ws.close_code

    async def _receive(self) -> None:
        message = await self.ws.receive(timeout=TIMEOUT)
        assert message.type in (WSMsgType.TEXT, WSMsgType.BINARY), message
        if isinstance(message.data, str) and message.data.startswith('{"reply"'):
            self.replies.append(json.loads(message.data))
        else:
            self.received.append(self.reads(message.data))


class NodeClient(Client[str | bytes]):
    """A client of a :class:`Node` without history: what is not a reply is a message's data."""

    def reads(self, data: str | bytes) -> str | bytes:
        """The data itself."""
        return data

    async def count(self, group: str | None = None) -> int:
        """What ``await wsapp.count(group)`` returns in the node; fail if it raised."""
        reply = await self.command("count", group=group)
        assert reply["reply"] == "count", reply
        count: int = reply["count"]
        return count

    async def broadcast(self, data: str, **options: Any) -> None:
        """Make the node broadcast ``data``; fail if it could not."""
        assert await self.command("broadcast", data=data, **options) == {"reply": "broadcast"}


class HistoryClient(Client[Envelope]):
    """A client of a :class:`Node` with history: what is not a reply is an envelope."""

    def reads(self, data: str | bytes) -> Envelope:
        """The envelope's group, position and data."""
        return read_envelope(data)

    async def broadcast(self, group: str, data: str) -> Position:
        """Make the node broadcast ``data`` to ``group``; return its position."""
        reply = await self.command("broadcast", group=group, data=data)
        assert reply["reply"] == "broadcast", reply
        return Position.parse(reply["position"])


ClientT = TypeVar("ClientT", bound=Client[Any])


Connect = Callable[..., Awaitable[NodeClient]]
"""``connect(node, join=(), since=None)`` of :func:`connecting` for :class:`NodeClient`."""
ConnectHistory = Callable[..., Awaitable[HistoryClient]]
"""``connect(node, join=(), since=None)`` of :func:`connecting` for :class:`HistoryClient`."""


@contextlib.asynccontextmanager
async def connecting(
    kind: Callable[[aiohttp.ClientWebSocketResponse[bool]], ClientT],
) -> AsyncIterator[Callable[..., Awaitable[ClientT]]]:
    """Open clients (``kind``) to nodes, with ``connect(node, join=(), since=None)``; close
    them on the way out.

    ``join`` (group names) and ``since`` (positions by group) are the query string's joins;
    ``connect`` returns once the node replied to each, the replies in the client's ``joins``.
    """
    clients: list[ClientT] = []
    async with aiohttp.ClientSession() as session:

        async def connect(
            node: Node, join: tuple[str, ...] = (), since: dict[str, Position] | None = None
        ) -> ClientT:
            query = [("join", group) for group in join]
            query += [(f"since.{group}", str(p)) for group, p in (since or {}).items()]
            client = kind(await session.ws_connect(node.url, params=query))
            clients.append(client)
            for _ in range(len(query)):
                client.joins.append(await client.joined())
            return client

        yield connect
        for client in clients:
            await client.ws.close()


def burst_received_by(
    tag: str, targets: Sequence[str | None], total: int, groups: Collection[str | None]
) -> list[str]:
    """What a member of ``groups`` (``None``: everyone) receives of a node's ``join_and_burst``
    (see ``tests/redis_node.py``), in call order."""
    return [f"{tag} {i}" for i in range(total) if targets[i % len(targets)] in groups]


async def receive_all(client: Client[MessageT], count: int) -> list[MessageT]:
    """The next ``count`` messages (not replies) that ``client`` receives."""
    return [await client.next() for _ in range(count)]
