"""The publisher: one connection that sends commands in the order they are given, many per write.

Every broadcast goes through an ordered outbox: :meth:`Publisher.publish` (or, for any other
command whose reply the caller wants, :meth:`Publisher.submit`) appends to it, and one task sends
all that waits at once, in one write, then reads the replies in order. A quiet process publishes
each broadcast at once, a busy one many per round trip. The order of the outbox is the order in
which Redis runs the commands: a scripted publish (``EVALSHA`` that numbers a broadcast and
publishes it) goes through :meth:`Publisher.submit` and keeps its place like any other.

Publish after subscribe: each entry carries the subscriber's mark at the call
(:attr:`.subscriber.Subscriber.requested`), and is written only once the subscription changes up
to that mark are answered; the entries behind it wait with it. So a broadcast made right after a
join reaches the joining process, and the broadcasts still leave in the order of the calls: an
entry enters the outbox at the call, never later.

This module is package-internal: its names are public for the other modules of
``aiohttp_wsapp.redis``, not for users.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from ..errors import BrokerError
from .client import ANSWER_TIMEOUT, LOST, reason, timeout
from .subscriber import Subscriber

__all__ = ["Publisher"]

logger = logging.getLogger("aiohttp_wsapp")

_Entry = tuple[Sequence[bytes], "asyncio.Future[Any]", int]
"""A command waiting in the outbox: its RESP bytes, the future of its reply, and the mark of the
subscription changes it waits for."""


class Publisher:
    """Sends commands on a connection of its own, in order, all those waiting in one write.

    :param make_connection: makes the (not yet connected) connection; it connects on the first
        write, and again after a failure.
    :param command: ``b"PUBLISH"``, or ``b"SPUBLISH"`` on a cluster.
    :param where: the server, as shown in errors (``redis://host:port/0``).
    :param subscriber: the subscriber whose changes made before a call are answered before that
        call's command is written (``None``: write at once).
    """

    def __init__(
        self,
        make_connection: Callable[[], AbstractConnection],
        *,
        command: bytes = b"PUBLISH",
        where: str,
        subscriber: Subscriber | None = None,
    ) -> None:
        self._make_connection = make_connection
        self._command = command
        self._subscriber = subscriber
        self.where = where
        """The server, as shown in errors."""
        self._outbox: list[_Entry] = []
        self._filled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the task that sends the outbox."""
        self._filled = asyncio.Event()  # of the running loop
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"Redis publisher {self.where}"
        )

    async def stop(self) -> None:
        """Stop sending; the commands still waiting raise :class:`BrokerError`."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                logger.error("the Redis publisher failed", exc_info=task.exception())
        outbox, self._outbox = self._outbox, []
        _fail(outbox, f"the broker of {self.where} stopped")

    def publish(self, channel: bytes, message: bytes) -> asyncio.Future[Any]:
        """Queue ``PUBLISH channel message`` (or ``SPUBLISH``); return the future of its reply.

        The future raises :class:`BrokerError` when the command could not be sent or Redis
        refused it.
        """
        command = self._command
        header = b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n" % (
            len(command),
            command,
            len(channel),
            channel,
            len(message),
        )
        return self.submit((header, message, b"\r\n"))

    def submit(self, packed: Sequence[bytes]) -> asyncio.Future[Any]:
        """Queue one command, packed in RESP (as redis-py's ``Connection.pack_command`` packs
        it); return the future of its reply. Commands go out in the order of the calls, each
        once the subscriber's changes made before the call are answered.

        The future raises :class:`BrokerError` when the subscriber's connection is lost before
        those changes are answered."""
        if self._task is None:
            raise BrokerError(f"the broker of {self.where} is not started")
        reply = asyncio.get_running_loop().create_future()
        mark = 0 if self._subscriber is None else self._subscriber.requested
        self._outbox.append((packed, reply, mark))
        self._filled.set()
        return reply

    async def _run(self) -> None:
        """Send the outbox in order: all the commands ready at once, one batch at a time."""
        connection = self._make_connection()
        try:
            while True:
                await self._filled.wait()
                self._filled.clear()
                while self._outbox:
                    batch = self._take_ready()
                    if batch:
                        await self._send(connection, batch)
                    elif self._outbox:
                        await self._wait_for_first()
        finally:
            await connection.disconnect()

    def _ready(self, mark: int) -> bool:
        return self._subscriber is None or self._subscriber.answered(mark)

    def _take_ready(self) -> list[_Entry]:
        """Take the entries at the front of the outbox whose subscriptions are answered (the
        marks grow along the outbox: the first that is not ready holds back the rest)."""
        outbox = self._outbox
        taken = 0
        while taken < len(outbox) and self._ready(outbox[taken][2]):
            taken += 1
        batch, self._outbox = outbox[:taken], outbox[taken:]
        return [entry for entry in batch if not entry[1].done()]  # not cancelled

    async def _wait_for_first(self) -> None:
        """Wait until the first entry's subscriptions are answered; if the subscriber's
        connection is lost first, fail every entry that waits for them."""
        assert self._subscriber is not None
        try:
            await self._subscriber.answered_up_to(self._outbox[0][2])
        except BrokerError as exc:
            failed = [entry for entry in self._outbox if not self._ready(entry[2])]
            self._outbox = [entry for entry in self._outbox if self._ready(entry[2])]
            _fail(failed, str(exc))

    async def _send(self, connection: AbstractConnection, batch: list[_Entry]) -> None:
        """Send ``batch`` in one write, read the replies, settle each."""
        data: list[bytes] = []
        for packed, _, _ in batch:
            data += packed
        try:
            async with timeout(ANSWER_TIMEOUT):
                # Connects first if need be (after a failure).
                await connection.send_packed_command(data, check_health=False)
                for _, reply, _ in batch:
                    _settle(reply, await _read_reply(connection))
        except BaseException as exc:
            # A reply of this batch may still be on its way: the next batch must not read it.
            await connection.disconnect()
            if not isinstance(exc, Exception):
                _fail(batch, f"the broker of {self.where} stopped")
                raise  # cancelled by stop()
            if not isinstance(exc, LOST):
                logger.exception("publishing to Redis failed")
            _fail(batch, f"cannot publish to Redis at {self.where}: {reason(exc)}", exc)


async def _read_reply(connection: AbstractConnection) -> Any:
    """The next reply on ``connection``; an error reply is returned, not raised."""
    try:
        return await connection.read_response(disconnect_on_error=False)
    except ResponseError as error:
        return error


def _settle(reply: asyncio.Future[Any], value: Any) -> None:
    if reply.done():
        return
    if isinstance(value, ResponseError):
        error = BrokerError(f"Redis refused a command: {reason(value)}")
        error.__cause__ = value
        reply.set_exception(error)
    else:
        reply.set_result(value)


def _fail(entries: list[_Entry], message: str, cause: BaseException | None = None) -> None:
    """Make every entry of ``entries`` still waiting raise ``BrokerError(message)``."""
    for _, reply, _ in entries:
        if not reply.done():
            error = BrokerError(message)
            error.__cause__ = cause
            reply.set_exception(error)
