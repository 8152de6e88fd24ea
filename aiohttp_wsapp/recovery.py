"""The endpoint's side of history: group broadcasts numbered, wrapped, replayed, and never skipped.

:class:`GroupHistories` is what an endpoint with ``history=History(...)`` adds to its broadcast
path, for groups only (broadcasts to everyone are neither kept nor wrapped):

- **Without a broker** it keeps every group's history in this process (:class:`.LocalHistory`):
  a broadcast gets its position and its envelope at once, and a join since a position replays
  what it missed in the same step as it joins: nothing can come in between.
- **With a broker** the broker numbers and keeps the broadcasts (in Redis) and hands them back
  with their position. A join since a position follows the order that leaves no gap and no
  double: the member joins at once, and what arrives for it is held back; once the broker's
  subscription to the group is confirmed, the history after the position is read in one atomic
  step, up to the group's latest offset C; the replay goes out, then what was held back above C;
  and the member keeps a floor at C until a broadcast above C reaches it, because copies at or
  below C published before the read may still arrive after it.
- **No skipped offset.** With a broker, this process remembers the last position it delivered
  to each group. A broadcast that does not follow it (after the broker lost Redis for a while, or
  Redis lost its data) is a gap: the missing broadcasts are read from the history and delivered
  first, in order, while later arrivals wait; when the history no longer covers them, every
  member of the group here is closed with 1012 (service restart), so that its client rejoins
  with ``since`` and learns whether it must reload. When the broker connects again after a
  loss, every group is checked at once, without waiting for its next broadcast.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Hashable,
    Iterable,
    Sequence,
)
from typing import Any, Final, Generic, Protocol, TypeVar

from aiohttp import WSCloseCode

from .broker import Broadcast, Broker, Kept
from .errors import BrokerError
from .frames import BroadcastFrames, Opcode
from .history import History, Position, Recovery
from .local_history import LocalHistory
from .stats import Counters

__all__ = ["GroupHistories", "HistoryMember", "check_since"]

logger = logging.getLogger("aiohttp_wsapp")

_GAP_REASON = "missed broadcasts"
"""The close reason of a member whose missed broadcasts the history no longer holds."""


class HistoryMember(Hashable, Protocol):
    """What :class:`GroupHistories` needs of a connection."""

    @property
    def id(self) -> str:
        """Names the connection across every process that shares the broker."""

    @property
    def groups(self) -> frozenset[str]:
        """The groups the connection is in."""

    def send_broadcast(self, frames: BroadcastFrames) -> bool:
        """Send one broadcast message, in the frame its peers of a kind share; tell whether it
        went out. Not counted: the caller counts."""

    def send_replay(self, messages: Sequence[BroadcastFrames]) -> None:
        """Send broadcast messages one after the other, in one write."""

    def leave(self, name: str) -> None:
        """Leave the group ``name``."""

    def close(self, code: int = ..., reason: str = ...) -> Awaitable[None]:
        """Start the closing handshake."""


M = TypeVar("M", bound=HistoryMember)
T = TypeVar("T")


class GroupHistories(Generic[M]):
    """Numbering, envelopes, replays and gap fills of the group broadcasts of one endpoint.

    :param history: the settings.
    :param broker: keeps the history (in Redis) and numbers the broadcasts; ``None`` keeps it
        in this process.
    :param members: a group's members in this process now.
    :param counters: count the broadcast frames sent (a replay counts in the sender).
    """

    def __init__(
        self,
        history: History,
        broker: Broker | None,
        members: Callable[[str], Iterable[M]],
        counters: Counters,
    ) -> None:
        self._counters = counters
        self._history = history
        self._envelope = history.envelope
        self._broker = broker
        self._local = LocalHistory(history) if broker is None else None
        self._members = members
        # With a broker: the last position delivered to each group with members here...
        self._last: dict[str, Position] = {}
        # ... the groups whose gap is being filled, with what arrived for them meanwhile ...
        self._filling: dict[str, list[Broadcast]] = {}
        # ... and the members still catching up after a join since a position.
        self._catching_up: dict[str, dict[M, _CatchUp]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- broadcast ----------------------------------------------------------------------------

    async def publish(self, data: str | bytes, group: str, exclude: frozenset[str]) -> Position:
        """Number, keep and publish one broadcast to ``group`` through the broker; return its
        position. Every process, this one included, sends it when the broker brings it back.

        :raises BrokerError: the broker cannot publish it.
        """
        assert self._broker is not None
        return await self._broker.publish_kept(Broadcast(data, group, exclude), self._history)

    def send_here(self, data: str | bytes, group: str, exclude: frozenset[str]) -> Position:
        """Number, keep and send one broadcast to ``group``, without a broker: at once, so that
        a broadcast that is not awaited still happens in call order. Return its position."""
        local = self._local
        assert local is not None
        position, envelope = local.append(group, data)
        frames = _frames(envelope)
        reached = 0
        for member in self._members(group):
            if member.id not in exclude and member.send_broadcast(frames):
                reached += 1
        self._counters.broadcast_sent(reached, frames.payload)
        return position

    async def position(self, group: str) -> Position:
        """Return ``group``'s latest position.

        :raises BrokerError: the broker cannot read it.
        """
        if self._local is not None:
            return self._local.position(group)
        return (await self._read(group, None)).position

    # -- delivery of what the broker brings ---------------------------------------------------

    def deliver(self, broadcast: Broadcast) -> None:
        """Send a numbered broadcast that the broker brought to the group's members here, in
        offset order: fill a gap first, drop what was delivered already."""
        group, position = broadcast.group, broadcast.position
        assert group is not None
        assert position is not None
        filling = self._filling.get(group)
        if filling is not None:
            filling.append(broadcast)
            return
        last = self._last.get(group)
        if last is None or (last.epoch == position.epoch and position.offset == last.offset + 1):
            self._last[group] = position
            self._send(
                group,
                position,
                _frames(self._envelope(position, group, broadcast.data)),
                broadcast.exclude,
            )
        elif last.epoch != position.epoch or position.offset > last.offset:
            self._filling[group] = arrived = [broadcast]
            self._start(self._fill(group, last, arrived))
        # else: at or below the last position, delivered already by a gap fill.

    def check_gaps(self) -> None:
        """The broker connected again after a loss: fill every group's gap from the history (or
        close its members), without waiting for the group's next broadcast."""
        for group, last in tuple(self._last.items()):
            if group not in self._filling:
                arrived: list[Broadcast] = []
                self._filling[group] = arrived
                self._start(self._fill(group, last, arrived))

    def forget(self, group: str) -> None:
        """``group`` has no member left here: what this process knew of it is stale (and a gap
        fill under way has no one to fill for)."""
        self._last.pop(group, None)
        self._filling.pop(group, None)

    def _send(
        self, group: str, position: Position, frames: BroadcastFrames, exclude: frozenset[str]
    ) -> None:
        catching_up = self._catching_up.get(group)
        reached = 0
        for member in self._members(group):
            if member.id in exclude:
                continue
            catch_up = catching_up.get(member) if catching_up else None
            if catch_up is None:
                if member.send_broadcast(frames):
                    reached += 1
            elif catch_up.offer(member, position, frames, self._counters):
                self._stop_catching_up(group, member, catch_up)
        self._counters.broadcast_sent(reached, frames.payload)

    async def _fill(self, group: str, last: Position, arrived: list[Broadcast]) -> None:
        """Deliver what the group missed after ``last``, then what ``arrived`` meanwhile; close
        the members here if the history no longer holds it."""
        try:
            kept = await self._read(group, last)
        except BrokerError as exc:
            logger.warning("cannot fill a gap in group %r: %s", group, exc)
            kept = None
        if self._filling.get(group) is not arrived:
            return  # the group lost its last member here meanwhile: nothing to fill
        del self._filling[group]
        if kept is None or not kept.recovered:
            self._last.pop(group, None)
            self._close_members(group)
            return
        offset = last.offset
        for data in kept.data:
            offset += 1
            position = Position(kept.position.epoch, offset)
            self._send(group, position, _frames(self._envelope(position, group, data)), frozenset())
        self._last[group] = kept.position
        for broadcast in arrived:
            self.deliver(broadcast)

    def _close_members(self, group: str) -> None:
        members = tuple(self._members(group))
        if members:
            logger.warning(
                "group %r missed broadcasts that its history no longer holds: closing its %d "
                "members here with 1012, to rejoin",
                group,
                len(members),
            )
        for member in members:
            member.close(WSCloseCode.SERVICE_RESTART, _GAP_REASON)

    # -- joining since a position -------------------------------------------------------------

    def join_since(self, member: M, group: str, since: Position) -> Awaitable[Recovery]:
        """Replay to ``member`` (which has just joined ``group``) what the group missed after
        ``since``; live broadcasts follow, none lost and none twice."""
        local = self._local
        if local is not None:
            # One step: no broadcast can come between the replay and the live ones.
            replay = local.since(group, since)
            member.send_replay([_frames(envelope) for envelope in replay.frames])
            return _Ready(Recovery(replay.recovered, replay.position, len(replay.frames)))
        catch_up = _CatchUp()
        self._catching_up.setdefault(group, {})[member] = catch_up
        task = self._start(self._recover(member, group, since, catch_up))
        return _Recovering(task)

    async def _recover(
        self, member: M, group: str, since: Position, catch_up: _CatchUp
    ) -> Recovery:
        assert self._broker is not None
        try:
            await self._broker.subscribed(group)
            kept = await self._read(group, since)
        except BaseException:
            self._stop_catching_up(group, member, catch_up)
            member.leave(group)  # SPEC: not joined when the history cannot be read
            raise
        if group not in member.groups:  # it left meanwhile
            self._stop_catching_up(group, member, catch_up)
            return Recovery(False, kept.position, 0)
        epoch, first = kept.position.epoch, since.offset + 1
        member.send_replay(
            [
                _frames(self._envelope(Position(epoch, offset), group, data))
                for offset, data in enumerate(kept.data, first)
            ]
        )
        if catch_up.release(member, kept.position, self._counters):
            self._stop_catching_up(group, member, catch_up)
        return Recovery(kept.recovered, kept.position, len(kept.data))

    def _stop_catching_up(self, group: str, member: M, catch_up: _CatchUp) -> None:
        catching_up = self._catching_up.get(group)
        if catching_up is not None and catching_up.get(member) is catch_up:
            del catching_up[member]
            if not catching_up:
                del self._catching_up[group]

    # -- tasks --------------------------------------------------------------------------------

    async def _read(self, group: str, since: Position | None) -> Kept:
        assert self._broker is not None
        return await self._broker.read_kept(group, since, self._history)

    def _start(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        """Cancel the replays and gap fills under way, and wait for them."""
        tasks = tuple(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


def check_since(since: object, histories: GroupHistories[Any] | None) -> None:
    """Check the ``since`` of a join.

    :raises TypeError: ``since`` is not a :class:`Position`.
    :raises ValueError: the endpoint keeps no history (``histories`` is ``None``).
    """
    if not isinstance(since, Position):
        raise TypeError(f"since must be a Position, not {type(since).__name__}")
    if histories is None:
        raise ValueError("join(since=...) needs an endpoint with history=History(...)")


class _CatchUp:
    """A member that joined since a position: what arrived for it before its replay was sent,
    then its floor."""

    __slots__ = ("floor", "held")

    def __init__(self) -> None:
        self.held: list[tuple[Position, BroadcastFrames]] | None = []
        self.floor: Position | None = None

    def offer(
        self,
        member: HistoryMember,
        position: Position,
        frames: BroadcastFrames,
        counters: Counters,
    ) -> bool:
        """A broadcast for the member: hold it, drop it or send it (and count it); return
        whether the member has caught up (nothing more to hold or drop)."""
        if self.held is not None:
            self.held.append((position, frames))
            return False
        floor = self.floor
        if floor is not None and floor.epoch == position.epoch and position.offset <= floor.offset:
            return False
        if member.send_broadcast(frames):
            counters.broadcast_sent(1, frames.payload)
        return True

    def release(self, member: HistoryMember, replayed_up_to: Position, counters: Counters) -> bool:
        """The replay went out up to ``replayed_up_to``: send what was held above it, and keep
        the floor there; return whether the member has caught up."""
        held, self.held = self.held or [], None
        self.floor = replayed_up_to
        caught_up = False
        for position, frames in held:
            caught_up = self.offer(member, position, frames, counters) or caught_up
        return caught_up


_TEXT: Final = Opcode.TEXT  # read once: see connection.py
_BINARY: Final = Opcode.BINARY


def _frames(envelope: str | bytes) -> BroadcastFrames:
    """The frames of one envelope: text for ``str``, binary for ``bytes``."""
    if isinstance(envelope, str):
        return BroadcastFrames(_TEXT, envelope.encode())
    if isinstance(envelope, bytes | bytearray | memoryview):
        return BroadcastFrames(_BINARY, bytes(envelope))
    raise TypeError(f"an envelope must return str or bytes, not {type(envelope).__name__}")


class _Ready:
    """An awaitable whose result is there already."""

    __slots__ = ("_value",)

    def __init__(self, value: Recovery) -> None:
        self._value = value

    def __await__(self) -> Generator[Any, None, Recovery]:
        return self._value
        yield  # pragma: no cover - makes this a generator


class _Recovering:
    """The replay of a join since a position, under way: awaiting it waits for its
    :class:`Recovery`. Not awaited, a failure is logged at WARNING (and the member is not
    joined)."""

    __slots__ = ("_awaited", "_task")

    def __init__(self, task: asyncio.Task[Recovery]) -> None:
        self._task = task
        self._awaited = False
        task.add_done_callback(self._done)

    def __await__(self) -> Generator[Any, None, Recovery]:
        self._awaited = True
        return (yield from self._task.__await__())

    def _done(self, task: asyncio.Task[Recovery]) -> None:
        if task.cancelled():
            return
        exc = task.exception()  # retrieved: never "exception was never retrieved"
        if exc is not None and not self._awaited:
            logger.warning("a join since a position failed: %s", exc)
