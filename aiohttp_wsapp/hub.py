"""``Hub``: an endpoint's open connections in this process, its groups, and broadcast.

It is what a connection's handlers reach as :attr:`Connection.app`: :class:`WebSocketApp` is a
hub that also answers handshakes. The hub knows its connections only as :class:`Member` objects,
so that it sits below the connection's module and both can name it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable, Iterator, Mapping, Set
from typing import Generic, Protocol, TypeVar

from .broker import Broadcast, Broker
from .frames import BroadcastFrames, Opcode
from .groups import Groups
from .server import WebSocketServer

__all__ = ["Hub", "Member"]

_HOLD_LIMIT = 0.001
"""Seconds that awaited broadcasts may hold the event loop before they let other tasks run."""


class Member(Hashable, Protocol):
    """What a hub needs of a connection."""

    @property
    def id(self) -> str:
        """Names the connection across every process that shares the broker."""

    def send_broadcast(self, frames: BroadcastFrames) -> None:
        """Send one broadcast message, in the frame its peers of a kind share."""


Connection = TypeVar("Connection", bound=Member)
"""The type of the hub's connections: :class:`aiohttp_wsapp.Connection` for an endpoint."""


class _ConnectionsView(Set[Connection]):
    """A read-only, live view of an endpoint's open connections."""

    __slots__ = ("_connections",)

    def __init__(self, connections: set[Connection]) -> None:
        self._connections = connections

    def __len__(self) -> int:
        return len(self._connections)

    def __iter__(self) -> Iterator[Connection]:
        return iter(tuple(self._connections))

    def __contains__(self, item: object) -> bool:
        return item in self._connections


class Hub(Generic[Connection]):
    """The open connections of an endpoint in this process, its groups, and broadcast.

    ``broker`` carries broadcasts to (and counts from) the other processes that serve the
    endpoint; ``None`` keeps both within this process. The endpoint (its subclass) adds each
    connection with :meth:`_add`; a connection joins and leaves groups through :attr:`_groups`
    and reports its end to :meth:`_forget`.
    """

    def __init__(self, websocket_server: WebSocketServer, broker: Broker | None) -> None:
        self._server = websocket_server
        self._broker = broker
        self._connections: set[Connection] = set()
        self._connections_view = _ConnectionsView(self._connections)
        self._groups: Groups[Connection] = Groups(
            self._group_created, self._group_emptied, self._counts_changed
        )
        self._last_turn = 0.0

    @property
    def websocket_server(self) -> WebSocketServer:
        """The handshake and protocol settings."""
        return self._server

    @property
    def connections(self) -> Set[Connection]:
        """The open connections: a read-only, live set-like view."""
        return self._connections_view

    @property
    def groups(self) -> Mapping[str, frozenset[Connection]]:
        """This process's groups: a read-only, live mapping of name → frozenset of open members.

        A group without members is absent. For counts across processes, see :meth:`count`.
        """
        return self._groups.view

    async def count(self, group: str | None = None) -> int:
        """Return how many connections are open (in ``group``), across every process that
        shares the broker; without a broker, in this process.

        :raises BrokerError: the broker cannot count them.
        """
        if self._broker is not None:
            return await self._broker.count(group)
        if group is None:
            return len(self._connections)
        return self._groups.sizes.get(group, 0)

    # -- broadcast --------------------------------------------------------------------------

    async def broadcast(
        self,
        data: str | bytes,
        *,
        group: str | None = None,
        exclude: Connection | Iterable[Connection] | None = None,
    ) -> None:
        """Send ``data`` to every open connection, or to the members of ``group``.

        ``str`` goes as a text frame, ``bytes`` as a binary one, to every target but those in
        ``exclude`` (a connection or an iterable of them). Where no compression was negotiated
        the frame is built once and the same bytes are handed to every peer. A slow peer delays
        no other: frames are written without waiting, and a peer whose unsent data passes its
        ``send_buffer_limit`` is dropped.

        With a broker, the broadcast goes through it to every process that shares it. Either
        way, awaiting it lets other tasks run: a loop of broadcasts does not hold the event loop.

        :raises TypeError: ``data`` is neither ``str`` nor ``bytes``.
        :raises BrokerError: the broker cannot deliver it.
        """
        if isinstance(data, bytearray | memoryview):
            data = bytes(data)
        if not isinstance(data, str | bytes):
            raise TypeError(f"broadcast() takes str or bytes, not {type(data).__name__}")
        message = Broadcast(data, group, _member_ids(exclude))
        if self._broker is None:
            self.deliver(message)
            await self._let_others_run()
        else:
            await self._broker.publish(message)

    async def _let_others_run(self) -> None:
        # A turn of the event loop costs about as much as a small broadcast: take one only
        # when broadcasts have held the loop for a while.
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_turn >= _HOLD_LIMIT:
            await asyncio.sleep(0)
            self._last_turn = loop.time()

    def deliver(self, broadcast: Broadcast) -> None:
        """Send ``broadcast`` to this process's own connections (a broker calls this)."""
        if broadcast.group is None:
            targets: Iterable[Connection] = tuple(self._connections)
        else:
            targets = self._groups.members(broadcast.group)
        data = broadcast.data
        frames = (
            BroadcastFrames(Opcode.TEXT, data.encode())
            if isinstance(data, str)
            else BroadcastFrames(Opcode.BINARY, data)
        )
        exclude = broadcast.exclude
        for connection in targets:
            if connection.id not in exclude:
                connection.send_broadcast(frames)

    # -- membership, and the counts a broker reads ------------------------------------------

    def _add(self, connection: Connection) -> None:
        """``connection`` is open."""
        self._connections.add(connection)
        self._counts_changed()

    def _forget(self, connection: Connection) -> None:
        """``connection`` has finished."""
        self._connections.discard(connection)
        self._counts_changed()

    def _group_created(self, name: str) -> None:
        if self._broker is not None:
            self._broker.group_joined(name)

    def _group_emptied(self, name: str) -> None:
        if self._broker is not None:
            self._broker.group_left(name)

    def _counts_changed(self) -> None:
        if self._broker is not None:
            self._broker.counts_changed()

    def _counts(self) -> tuple[int, Mapping[str, int]]:
        """This process's open connections, and group name → its open members here (live)."""
        return len(self._connections), self._groups.sizes


def _member_ids(exclude: Member | Iterable[Member] | None) -> frozenset[str]:
    if exclude is None:
        return frozenset()
    if isinstance(exclude, Iterable):
        return frozenset(member.id for member in exclude)
    return frozenset((exclude.id,))
