"""``Hub``: an endpoint's open connections in this process, its groups, and broadcast.

It is what a connection's handlers reach as :attr:`Connection.app`: :class:`WebSocketApp` is a
hub that also answers handshakes. The hub knows its connections only as :class:`Member` objects,
so that it sits below the connection's module and both can name it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Generator, Hashable, Iterable, Iterator, Mapping, Set
from typing import Any, Generic, Protocol, TypeVar

from .broker import Broadcast, Broker, attach, detach
from .frames import BroadcastFrames, Opcode
from .groups import Groups
from .server import WebSocketServer

__all__ = ["Hub", "Member"]

logger = logging.getLogger("aiohttp_wsapp")

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
        self._turn = _Turn(self)
        self._broker_started = False
        self._publications: set[asyncio.Task[None]] = set()

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

        :raises RuntimeError: the endpoint has a broker that was never started.
        :raises BrokerError: the broker cannot count them.
        """
        if self._broker is not None:
            self._check_broker_started()
            return await self._broker.count(group)
        if group is None:
            return len(self._connections)
        return self._groups.sizes.get(group, 0)

    # -- broadcast --------------------------------------------------------------------------

    def broadcast(
        self,
        data: str | bytes,
        *,
        group: str | None = None,
        exclude: Connection | Iterable[Connection] | None = None,
    ) -> Awaitable[None]:
        """Send ``data`` to every open connection, or to the members of ``group``.

        ``str`` goes as a text frame, ``bytes`` as a binary one, to every target but those in
        ``exclude`` (a connection or an iterable of them). Where no compression was negotiated
        the frame is built once and the same bytes are handed to every peer. A slow peer delays
        no other: frames are written without waiting, and a peer whose unsent data passes its
        ``send_buffer_limit`` is dropped.

        With a broker, the broadcast goes through it to every process that shares it.

        Like :meth:`Connection.send`, it need not be awaited: called from a plain function it
        still happens, in call order (delivered here at once; with a broker, published in call
        order), and a failure is logged at WARNING. Awaited, it raises the failure; and awaiting
        lets other tasks run, so that a loop of broadcasts does not hold the event loop.

        :raises TypeError: ``data`` is neither ``str`` nor ``bytes``.
        :raises RuntimeError: the endpoint has a broker that was never started (see
            :meth:`WebSocketApp.setup`).
        :raises BrokerError: when awaited, if the broker cannot deliver it.
        """
        if isinstance(data, bytearray | memoryview):
            data = bytes(data)
        if not isinstance(data, str | bytes):
            raise TypeError(f"broadcast() takes str or bytes, not {type(data).__name__}")
        message = Broadcast(data, group, _member_ids(exclude))
        broker = self._broker
        if broker is None:
            self.deliver(message)
            return self._turn
        self._check_broker_started()
        task = asyncio.get_running_loop().create_task(broker.publish(message))
        return _Publication(task, self._publications)

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

    # -- the broker's life: the endpoint's startup and cleanup call these ------------------

    async def _start_broker(self) -> None:
        """Connect the broker, for this endpoint alone."""
        broker = self._broker
        if broker is None:
            return
        attach(broker, self)
        try:
            await broker.start(self.deliver, self._counts)
        except BaseException:
            detach(broker, self)
            raise
        self._broker_started = True

    async def _stop_broker(self) -> None:
        """Let the broadcasts under way go out (for ``close_timeout`` at most); disconnect."""
        broker = self._broker
        if broker is None:
            return
        if self._publications:
            await asyncio.wait(tuple(self._publications), timeout=self._server.close_timeout)
        try:
            await broker.stop()
        finally:
            detach(broker, self)

    def _check_broker_started(self) -> None:
        if not self._broker_started:
            raise RuntimeError(
                "the broker of this endpoint was never started: an endpoint with a broker starts "
                "with its application. Mount it (app.add_subapp(path, wsapp.to_app())), run it "
                "(web.run_app(wsapp.to_app())), or, when you route to wsapp.call yourself, call "
                "wsapp.setup(app) before the application starts."
            )

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


class _Turn:
    """What a broadcast without a broker returns: delivered already, awaiting it lets other
    tasks run now and then."""

    __slots__ = ("_hub",)

    def __init__(self, hub: Hub[Any]) -> None:
        self._hub = hub

    def __await__(self) -> Generator[Any, None, None]:
        return self._hub._let_others_run().__await__()


class _Publication:
    """What a broadcast through a broker returns: its publication, under way in a task.

    Awaiting it waits for the publication and raises its failure; a failure that nobody awaited
    is logged at WARNING.
    """

    __slots__ = ("_awaited", "_task")

    def __init__(self, task: asyncio.Task[None], running: set[asyncio.Task[None]]) -> None:
        self._task = task
        self._awaited = False
        running.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(running.discard)
        task.add_done_callback(self._finished)

    def __await__(self) -> Generator[Any, None, None]:
        self._awaited = True
        return self._task.__await__()

    def _finished(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()  # retrieved here: awaited or not, it is reported once
        if error is not None and not self._awaited:
            logger.warning("a broadcast that was not awaited failed: %s", error, exc_info=error)


def _member_ids(exclude: Member | Iterable[Member] | None) -> frozenset[str]:
    if exclude is None:
        return frozenset()
    if isinstance(exclude, Iterable):
        return frozenset(member.id for member in exclude)
    return frozenset((exclude.id,))
