"""The tasks a connection owns (``conn.spawn``): they end before the connection's ``finish``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["OwnedTasks"]

T = TypeVar("T")

Failed = Callable[[BaseException], Coroutine[Any, Any, None] | None]
"""Told of a task's exception; returns what reports it (a coroutine), or ``None`` to ignore it."""


class OwnedTasks:
    """Tasks that one connection owns: each is cancelled and awaited when the connection ends.

    When a task raises, ``failed(exc)`` decides what happens: the coroutine it returns (reporting
    the error and closing the connection) runs as a task of its own, which :meth:`end` awaits
    too, rather than cancels. The exception is retrieved either way, so that asyncio does not
    warn that nobody did; whoever awaits the task still gets it.
    """

    __slots__ = ("_failed", "_loop", "_reports", "_tasks")

    def __init__(self, failed: Failed) -> None:
        self._loop = asyncio.get_running_loop()
        self._failed: Failed | None = failed
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reports: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as an owned task; return the task."""
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None or self._failed is None:
            return
        report = self._failed(exc)
        if report is not None:
            reporting = self._loop.create_task(report)
            self._reports.add(reporting)
            reporting.add_done_callback(self._reports.discard)

    async def end(self) -> None:
        """Cancel every task and wait for them, then for the reports of their errors."""
        tasks = tuple(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        while self._reports:
            await asyncio.wait(tuple(self._reports))
        self._failed = None  # the connection's method: no cycle through the connection
