"""``Hub``: an endpoint's open connections in this process, its groups, and broadcast.

It is what a connection's handlers reach as :attr:`Connection.app`: :class:`WebSocketApp` is a
hub that also answers handshakes. The hub knows its connections only as :class:`Member` objects,
so that it sits below the connection's module and both can name it.

With history, group broadcasts take the path of :class:`~.recovery.GroupHistories` (numbered,
kept, wrapped in the envelope); everything else goes as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Generator, Hashable, Iterable, Iterator, Mapping, Set
from typing import Any, Generic, Protocol, TypeVar

from .broker import Broadcast, Broker, attach, detach
from .errors import BrokerError
from .frames import BroadcastFrames, Opcode
from .groups import Groups
from .history import History, Position
from .recovery import GroupHistories, HistoryMember
from .server import WebSocketServer
from .stats import Counters, Stats

__all__ = ["Hub", "Member"]

logger = logging.getLogger("aiohttp_wsapp")

_HOLD_LIMIT = 0.001
"""Seconds that awaited broadcasts may hold the event loop before they let other tasks run."""


class Member(HistoryMember, Hashable, Protocol):
    """What a hub needs of a connection (with history: what its replays and gap fills need)."""


Connection = TypeVar("Connection", bound=Member)
T = TypeVar("T")
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
    endpoint; ``None`` keeps both within this process. ``history`` keeps every group's recent
    broadcasts (:attr:`_histories`). The endpoint (its subclass) adds each connection with
    :meth:`_add`; a connection joins and leaves groups through :attr:`_groups` and reports its
    end to :meth:`_forget`. ``counters`` count what the endpoint does, for :meth:`stats`: the
    hub counts broadcasts and the broker's publications, the connections and the endpoint the
    rest.
    """

    def __init__(
        self,
        websocket_server: WebSocketServer,
        broker: Broker | None,
        counters: Counters,
        history: History | None = None,
    ) -> None:
        self._server = websocket_server
        self._broker = broker
        self._counters = counters
        self._connections: set[Connection] = set()
        self._connections_view = _ConnectionsView(self._connections)
        self._groups: Groups[Connection] = Groups(
            self._group_created, self._group_emptied, self._counts_changed
        )
        self._histories: GroupHistories[Connection] | None = None
        if history is not None:
            self._histories = GroupHistories(history, broker, self._groups.members, self._counters)
            if broker is not None:
                broker.on_reconnected(self._histories.check_gaps)
        self._last_turn = 0.0
        self._turn = _Turn(self)
        self._broker_started = False
        self._publications: set[asyncio.Task[Any]] = set()

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
    ) -> Awaitable[Position | None]:
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

        With history, a broadcast to a group is numbered, kept, and sent through the history's
        envelope: it returns the broadcast's :class:`Position`. Otherwise it returns ``None``.

        :raises TypeError: ``data`` is neither ``str`` nor ``bytes``.
        :raises RuntimeError: the endpoint has a broker that was never started (see
            :meth:`WebSocketApp.setup`).
        :raises BrokerError: when awaited, if the broker cannot deliver it.
        """
        if isinstance(data, bytearray | memoryview):
            data = bytes(data)
        if not isinstance(data, str | bytes):
            raise TypeError(f"broadcast() takes str or bytes, not {type(data).__name__}")
        exclude_ids = _member_ids(exclude)
        broker = self._broker
        histories = self._histories
        self._counters.broadcasts += 1
        if group is not None and histories is not None:
            if broker is None:
                return _Turn(self, histories.send_here(data, group, exclude_ids))
            self._check_broker_started()
            kept = asyncio.get_running_loop().create_task(
                _counted(broker, histories.publish(data, group, exclude_ids))
            )
            return _Publication(kept, self._publications)
        message = Broadcast(data, group, exclude_ids)
        if broker is None:
            self.deliver(message)
            return self._turn
        self._check_broker_started()
        task = asyncio.get_running_loop().create_task(_counted(broker, broker.publish(message)))
        return _Publication(task, self._publications)

    async def position(self, group: str) -> Position:
        """Return the latest :class:`Position` of ``group``'s history (offset 0 before its first
        broadcast).

        Take it before reading your application's state from its database, then join with
        ``since=`` it: nothing is missed in between.

        :raises ValueError: the endpoint has no history.
        :raises BrokerError: the broker cannot read it.
        """
        if not isinstance(group, str):
            raise TypeError("a group name is a str")
        if self._histories is None:
            raise ValueError("position() needs an endpoint with history=History(...)")
        return await self._histories.position(group)

    async def _let_others_run(self) -> None:
        # A turn of the event loop costs about as much as a small broadcast: take one only
        # when broadcasts have held the loop for a while.
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_turn >= _HOLD_LIMIT:
            await asyncio.sleep(0)
            self._last_turn = loop.time()

    def deliver(self, broadcast: Broadcast) -> None:
        """Send ``broadcast`` to this process's own connections (a broker calls this)."""
        if self._broker is not None:
            self._broker.counters.received += 1
        if broadcast.position is not None and self._histories is not None:
            self._histories.deliver(broadcast)
            return
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
        reached = 0  # counted here, once per broadcast, rather than once per peer
        if not exclude:  # no connection's id to read
            for connection in targets:
                if connection.send_broadcast(frames):
                    reached += 1
        else:
            for connection in targets:
                if connection.id not in exclude and connection.send_broadcast(frames):
                    reached += 1
        self._counters.broadcast_sent(reached, frames.payload)

    # -- figures ----------------------------------------------------------------------------

    def stats(self) -> Stats:
        """Return what this endpoint did in this process since it started, as a :class:`Stats`.

        A snapshot: it does not change once taken. Counting costs next to nothing: the figures
        are integers incremented where each event happens, and copied only here.
        """
        broker = None if self._broker is None else self._broker.counters
        return self._counters.snapshot(len(self._connections), broker)

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
        if self._broker is not None:
            self._broker.counts_changed()

    def _forget(self, connection: Connection) -> None:
        """``connection`` has finished."""
        self._connections.discard(connection)
        if self._broker is not None:
            self._broker.counts_changed()

    def _group_created(self, name: str) -> None:
        if self._broker is not None:
            self._broker.group_joined(name)

    def _group_emptied(self, name: str) -> None:
        if self._histories is not None:
            self._histories.forget(name)
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
    tasks run now and then, and gives the broadcast's position (``None`` without history)."""

    __slots__ = ("_hub", "_position")

    def __init__(self, hub: Hub[Any], position: Position | None = None) -> None:
        self._hub = hub
        self._position = position

    def __await__(self) -> Generator[Any, None, Position | None]:
        yield from self._hub._let_others_run().__await__()
        return self._position


class _Publication:
    """What a broadcast through a broker returns: its publication, under way in a task.

    Awaiting it waits for the publication and raises its failure; a failure that nobody awaited
    is logged at WARNING.
    """

    __slots__ = ("_awaited", "_task")

    def __init__(self, task: asyncio.Task[Any], running: set[asyncio.Task[Any]]) -> None:
        self._task = task
        self._awaited = False
        running.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(running.discard)
        task.add_done_callback(self._finished)

    def __await__(self) -> Generator[Any, None, Any]:
        self._awaited = True
        return self._task.__await__()

    def _finished(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        error = task.exception()  # retrieved here: awaited or not, it is reported once
        if error is not None and not self._awaited:
            logger.warning("a broadcast that was not awaited failed: %s", error, exc_info=error)


async def _counted(broker: Broker, publication: Awaitable[T]) -> T:
    """Await ``publication`` through ``broker``, counting it as published, or as an error."""
    try:
        result = await publication
    except BrokerError:
        broker.counters.errors += 1
        raise
    broker.counters.published += 1
    return result


def _member_ids(exclude: Member | Iterable[Member] | None) -> frozenset[str]:
    if exclude is None:
        return frozenset()
    if isinstance(exclude, Iterable):
        return frozenset(member.id for member in exclude)
    return frozenset((exclude.id,))
