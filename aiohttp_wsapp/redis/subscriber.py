"""The subscriber: one connection that listens to a set of channels, and keeps listening.

:class:`Subscriber` keeps a connection to one Redis server subscribed to the channels it is asked
for, hands every message received to its ``receive`` callback, notices a silent server (a PING
after ``ping_interval`` of silence, given as long again to answer), and reconnects by itself with
backoff, subscribing again to every channel. It reads the replies from the connection itself,
past redis-py's ``PubSub``: the replies already received are read one after the other without
waiting, and a reply costs no timer.

Publish after subscribe: every change (subscribe or unsubscribe one channel) is one command with
one answer, in order. :meth:`Subscriber.settled` waits for the answers to the changes made so
far; :meth:`Subscriber.answered_up_to` for those up to a mark (:attr:`Subscriber.requested` at
some moment). The publisher holds each broadcast until the changes made before its call are
answered (see :mod:`.publisher`), so that a process that has just joined a group is subscribed
to the group's channel before its own broadcast to that group goes out, and gets it back.

This module is package-internal: its names are public for the other modules of
``aiohttp_wsapp.redis``, not for users.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import BrokerError
from .client import ANSWER_TIMEOUT, LOST, Backoff, reason, timeout

__all__ = ["ChannelLost", "Subscriber"]

logger = logging.getLogger("aiohttp_wsapp")

_YIELD_EVERY: Final = 64
"""The subscriber lets the event loop run other tasks after this many replies in a row."""

Receive = Callable[[bytes, bytes], None]
"""Called with the channel and the message of every message received."""


class ChannelLost(RedisConnectionError):
    """The server dropped a subscription that was not given up (a cluster moved its slot)."""


class Subscriber:
    """Keeps one connection subscribed to :attr:`channels` and hands on what it receives.

    :param make_connection: makes a (not yet connected) connection to the server.
    :param receive: called with (channel, message) for every message.
    :param where: the server, as shown in logs and errors.
    :param sharded: ``SSUBSCRIBE`` (a cluster's sharded pub/sub) instead of ``SUBSCRIBE``.
    :param on_connected: called whenever the connection is (re)established and subscribed.
    :param on_lost: called whenever the connection is lost, with what ended it.
    """

    ping_interval: float = 5.0
    """A PING goes out on a connection silent for this long; silent as long again, it is lost."""

    def __init__(
        self,
        make_connection: Callable[[], AbstractConnection],
        receive: Receive,
        *,
        where: str,
        sharded: bool = False,
        on_connected: Callable[[], None] = lambda: None,
        on_lost: Callable[[BaseException], None] = lambda exc: None,
        backoff: Backoff | None = None,
    ) -> None:
        self._make_connection = make_connection
        self._receive_message = receive
        self.where = where
        """The server, as shown in logs and errors."""
        self._subscribe = b"SSUBSCRIBE" if sharded else b"SUBSCRIBE"
        self._unsubscribe = b"SUNSUBSCRIBE" if sharded else b"UNSUBSCRIBE"
        self._messages = (b"smessage",) if sharded else (b"message",)
        self._answers = (b"ssubscribe", b"sunsubscribe", b"subscribe", b"unsubscribe")
        self._sharded = sharded
        self._on_connected = on_connected
        self._on_lost = on_lost
        self._backoff = backoff or Backoff()
        self.channels: set[bytes] = set()
        """The channels to listen to (subscribed, or to be once connected)."""
        self.connected = False
        """Whether the connection is up and subscribed to every channel asked for before."""
        self._changes: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
        # Every change is one command with one answer, in order: settled() waits for the
        # answers to the changes made before it.
        self._requested = 0
        self._answered = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._heard = False  # set by _receive on every reply, cleared by _watch at every look
        self._connection: AbstractConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._up = asyncio.Event()  # set while connected

    # -- what the broker asks for -------------------------------------------------------------

    def subscribe(self, channel: bytes) -> None:
        """Listen to ``channel`` from now on (the command is sent soon, in order)."""
        self.channels.add(channel)
        self._request(self._subscribe, channel)

    def unsubscribe(self, channel: bytes) -> None:
        """Stop listening to ``channel`` (the command is sent soon, in order)."""
        self.channels.discard(channel)
        self._request(self._unsubscribe, channel)

    def forget(self, channel: bytes) -> None:
        """Drop ``channel`` without a command: it is another connection's now."""
        self.channels.discard(channel)

    @property
    def requested(self) -> int:
        """How many changes were made so far: the mark that :meth:`answered_up_to` waits for."""
        return self._requested

    def answered(self, mark: int) -> bool:
        """Whether the server has answered the first ``mark`` changes (or a connection made
        after them covered them)."""
        return self._answered >= mark

    async def answered_up_to(self, mark: int) -> None:
        """Wait until :meth:`answered` is true for ``mark``.

        :raises BrokerError: the connection is lost, or was lost meanwhile.
        """
        if self.answered(mark):
            return
        if not self.connected:
            raise BrokerError(f"lost the connection to Redis at {self.where}")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((mark, waiter))
        await waiter

    async def settled(self) -> None:
        """Wait until the server has answered every change made so far.

        :raises BrokerError: the connection was lost meanwhile.
        """
        await self.answered_up_to(self._requested)

    async def until_connected(self) -> None:
        """Wait until the connection is up and subscribed."""
        await self._up.wait()

    # -- life -----------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and subscribe to every channel, confirmed by the server (then :meth:`start`).

        :raises redis.exceptions.RedisError, OSError, asyncio.TimeoutError: it failed.
        """
        # This connection covers every change made so far; later ones queue for _apply_changes.
        self._changes = asyncio.Queue()
        requested = self._requested
        channels = list(self.channels)
        connection = self._make_connection()
        try:
            async with timeout(ANSWER_TIMEOUT):
                await _connect(connection)
                if self._sharded:  # one slot per SSUBSCRIBE
                    for channel in channels:
                        await connection.send_command(self._subscribe, channel)
                elif channels:
                    await connection.send_command(self._subscribe, *channels)
                unconfirmed = set(channels)
                while unconfirmed:
                    reply = await connection.read_response(disable_decoding=True)
                    if isinstance(reply, list) and reply[0] in self._answers:
                        unconfirmed.discard(reply[1])
        except BaseException:
            await connection.disconnect()
            raise
        self._connection = connection
        self._answered = requested
        self._backoff.reset()
        self.connected = True
        self._up.set()
        self._on_connected()

    def start(self) -> None:
        """Listen on the connection :meth:`connect` made (or connect first, trying until it
        succeeds), and reconnect when it is lost."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"Redis subscriber {self.where}"
        )

    async def stop(self) -> None:
        """Stop listening and close the connection; wait until that is done."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                logger.error("the Redis subscriber failed", exc_info=task.exception())
        self._disconnected()
        await self._close()  # the task may have been cancelled before it began

    async def _run(self) -> None:
        """Listen on the connection; when it is lost, connect again."""
        while True:
            if self._connection is None:
                await self._reconnect()
            assert self._connection is not None
            try:
                await self._serve(self._connection)
            except LOST as exc:
                logger.warning("lost the connection to Redis at %s: %s", self.where, reason(exc))
                self._on_lost(exc)
            except Exception as exc:
                logger.exception("the Redis subscriber failed; reconnecting")
                self._on_lost(exc)
            finally:
                self._disconnected()
                await self._close()
            await self._backoff.wait()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect()

    async def _reconnect(self) -> None:
        """Connect, trying again after each failure, waiting longer each time."""
        while True:
            try:
                await self.connect()
            except LOST as exc:
                logger.debug(
                    "Redis at %s still unreachable (%s); next attempt in %.1f s",
                    self.where,
                    reason(exc),
                    self._backoff.delay,
                )
                await self._backoff.wait()
            else:
                logger.info("connected to Redis at %s", self.where)
                return

    async def _serve(self, connection: AbstractConnection) -> None:
        """Receive messages, send changes and watch for silence, until one of them fails."""
        loop = asyncio.get_running_loop()
        tasks = (
            loop.create_task(self._receive(connection)),
            loop.create_task(self._apply_changes(connection)),
            loop.create_task(self._watch(connection)),
        )
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        for task in tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def _receive(self, connection: AbstractConnection) -> None:
        """Hand on every message, and count the answers to changes."""
        receive = self._receive_message
        read = connection.read_response
        messages, answers = self._messages, self._answers
        for received in itertools.count(1):
            # In RESP2: [b"message", channel, data], [b"subscribe", channel, count], ...
            reply = await read(disable_decoding=True)
            self._heard = True
            if not isinstance(reply, list):
                continue  # +PONG: subscribed to nothing yet, the connection is not in pub/sub mode
            if received % _YIELD_EVERY == 0:
                # A read that finds its reply already received does not yield to the loop:
                # without this, a backlog would hold it for as long as its delivery takes.
                await asyncio.sleep(0)
            kind = reply[0]
            if kind in messages:
                try:
                    receive(reply[1], reply[2])
                except Exception:
                    logger.exception("delivering a broadcast failed")
            elif kind in answers:
                if self._sharded and kind == b"sunsubscribe" and reply[1] in self.channels:
                    # Not asked for: the slot of the channel moved to another node.
                    raise ChannelLost(f"Redis at {self.where} dropped {reply[1]!r}")
                self._answer()

    async def _watch(self, connection: AbstractConnection) -> None:
        """PING a connection silent for ``ping_interval``; silent as long again, it is lost.

        A host that vanished sends no reset: without the PING, ``_receive`` would wait forever.
        """
        interval = self.ping_interval
        pinged = False
        while True:
            self._heard = False
            await asyncio.sleep(interval)
            if self._heard:
                pinged = False
            elif pinged:
                raise RedisTimeoutError(f"Redis did not answer a PING within {interval:g} s")
            else:
                await connection.send_command(b"PING")
                pinged = True

    async def _apply_changes(self, connection: AbstractConnection) -> None:
        """Send the subscription changes, in the order they were made."""
        changes = self._changes
        while True:
            command, channel = await changes.get()
            await connection.send_command(command, channel)

    def _request(self, command: bytes, channel: bytes) -> None:
        # The broker's hooks are synchronous: the change waits in a queue for _apply_changes,
        # which sends the changes in the order they were made.
        self._requested += 1
        self._changes.put_nowait((command, channel))

    def _answer(self) -> None:
        """The server answered the oldest change not yet answered."""
        self._answered += 1
        # The marks are not in order: settled() may wait for a later mark than a publication
        # made before it and still waiting to be sent.
        answered = self._answered
        if any(mark <= answered for mark, _ in self._waiters):
            waiting = self._waiters
            self._waiters = [(mark, waiter) for mark, waiter in waiting if mark > answered]
            for mark, waiter in waiting:
                if mark <= answered and not waiter.done():
                    waiter.set_result(None)

    def _disconnected(self) -> None:
        self.connected = False
        self._up.clear()
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            if not waiter.done():
                waiter.set_exception(BrokerError(f"lost the connection to Redis at {self.where}"))


async def _connect(connection: AbstractConnection) -> None:
    connect: Callable[[], Awaitable[None]] = connection.connect  # not annotated in redis-py
    await connect()
