"""Draining an endpoint before a deploy: its connections closed a few at a time (``drain``)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Iterable
from typing import Protocol

from aiohttp import WSCloseCode

__all__ = ["DRAIN_REASON", "Drain", "Drained", "check_period"]

DRAIN_REASON = "server restarting"
"""The close reason of a connection closed by a drain (close code 1012, service restart)."""


class Drained(Protocol):
    """What a drain needs of a connection."""

    def close(self, code: int = WSCloseCode.OK, reason: str = "") -> Awaitable[None]:
        """Start the closing handshake."""

    @property
    def finished(self) -> asyncio.Future[None]:
        """Done once the connection finished and its ``finish`` handlers returned."""


def check_period(over: object) -> float:
    """Return ``over``, the seconds a drain may take; raise TypeError or ValueError if it is not."""
    if isinstance(over, bool) or not isinstance(over, int | float):
        raise TypeError(f"over must be a number of seconds, not {type(over).__name__}")
    if not over >= 0:
        raise ValueError(f"over must be a number of seconds, at least 0, not {over!r}")
    return float(over)


class Drain:
    """One drain: closes connections with 1012, spread evenly over ``over`` seconds from now."""

    __slots__ = ("_ends_at", "_late", "_loop", "_over")

    def __init__(self, over: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._over = over
        self._ends_at = self._loop.time() + over
        self._late: list[asyncio.Future[None]] = []

    def retry_after(self) -> str:
        """The ``Retry-After`` of a refused handshake: the whole seconds left, at least 1."""
        return str(max(1, math.ceil(self._ends_at - self._loop.time())))

    def close_late(self, connection: Drained) -> None:
        """Close at once a connection established while the drain runs (its 101 was on its way);
        :meth:`run` waits for it too."""
        connection.close(WSCloseCode.SERVICE_RESTART, DRAIN_REASON)
        self._late.append(connection.finished)

    async def run(self, connections: Iterable[Drained]) -> None:
        """Close ``connections`` one per slot of ``over / len(connections)`` seconds, the first at
        once; return when every one (and every late one) has finished.

        Connections that finish sooner (closed by their peer, or by the application's shutdown)
        are not waited for: the drain ends with the last of them, not with its schedule.
        """
        connections = tuple(connections)
        start = self._loop.time()
        step = self._over / len(connections) if connections else 0.0
        closes = [
            self._loop.call_at(start + index * step, _close, connection)
            for index, connection in enumerate(connections)
        ]
        try:
            finishes = [connection.finished for connection in connections]
            while finishes:
                await asyncio.wait(finishes)
                finishes, self._late = self._late, []
        finally:
            for close in closes:
                close.cancel()
            self._ends_at = min(self._ends_at, self._loop.time())  # nothing left to wait for


def _close(connection: Drained) -> None:
    connection.close(WSCloseCode.SERVICE_RESTART, DRAIN_REASON)
