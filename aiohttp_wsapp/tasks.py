"""The tasks a connection owns (``conn.spawn``): they end before the connection's ``finish``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import WSCloseCode

from .closing import CLOSED, OPEN, Closing
from .errors import ConnectionClosed
from .events import Events, Registration
from .sending import Sender

__all__ = ["OwnedTasks"]

logger = logging.getLogger("aiohttp_wsapp")

T = TypeVar("T")


class OwnedTasks:
    """Tasks that one connection owns: each is cancelled and awaited when the connection ends.

    A task that raises is a failure of the connection, as a ``message`` handler's exception is:
    its ``error`` handlers (``events``) get the exception, or it is logged at ERROR, and the
    connection is closed with 1011 (through ``sender``). A :exc:`ConnectionClosed` raised once
    the connection is closing (``closing``) is no error. The report runs as a task of its own,
    which :meth:`end` awaits too, rather than cancels. The exception is retrieved either way,
    so that asyncio does not warn that nobody did; whoever awaits the task still gets it.
    """

    __slots__ = ("_closing", "_ended", "_events", "_loop", "_reports", "_sender", "_tasks")

    def __init__(self, closing: Closing, events: Events, sender: Sender) -> None:
        self._loop = asyncio.get_running_loop()
        self._closing = closing
        self._events = events
        self._sender = sender
        self._ended = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reports: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as an owned task (cancelled at once if the connection finished); return
        the task."""
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        if self._closing.state is CLOSED:
            task.cancel()
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None or self._ended:
            return
        report = self._report_of(exc)
        if report is not None:
            reporting = self._loop.create_task(report)
            self._reports.add(reporting)
            reporting.add_done_callback(self._reports.discard)

    def _report_of(self, exc: BaseException) -> Coroutine[Any, Any, None] | None:
        """Return what reports a task's exception, if it is an error."""
        state = self._closing.state
        if isinstance(exc, ConnectionClosed) and state is not OPEN:
            return None
        if state is CLOSED:  # it raised while it was being cancelled
            owner = self._events.owner
            logger.error("a task of %r raised while it was cancelled", owner, exc_info=exc)
            return None
        return self._report(exc, self._events.error)  # the handlers of now

    async def _report(self, exc: BaseException, handlers: tuple[Registration, ...]) -> None:
        if not handlers:
            logger.error("a task of %r raised", self._events.owner, exc_info=exc)
        else:
            await self._events.report(handlers, exc)
        self._sender.close(WSCloseCode.INTERNAL_ERROR)

    async def end(self) -> None:
        """Cancel every task and wait for them, then for the reports of their errors."""
        tasks = tuple(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        while self._reports:
            await asyncio.wait(tuple(self._reports))
        self._ended = True
