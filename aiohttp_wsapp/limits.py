"""What a connection's peer must keep to: ``idle_timeout``, ``max_lifetime``, ``max_message_rate``.

A :class:`Limits` exists only for a connection whose endpoint sets one of them, so that the others
pay nothing: their connections hold ``None`` and test it once per message. With limits, a message
costs one mark (``idle_timeout``: no timer is reset per message, a periodic check reads the mark)
and, with ``max_message_rate``, one token taken from a bucket.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Final

from aiohttp import WSCloseCode

from .closing import OPEN, Closing
from .sending import Sender
from .server import WebSocketServer
from .stats import IDLE_TIMEOUT, MAX_LIFETIME, RATE_LIMIT

__all__ = ["Limits"]

logger = logging.getLogger("aiohttp_wsapp")

_IDLE_CHECKS: Final = 8
"""How many times per ``idle_timeout`` a connection is checked: it closes at most a quarter late."""


class Limits:
    """The limits of one connection, counted from its establishment (when this is made).

    A limit passed closes the connection through ``sender``: 1001 for ``idle timeout`` and
    ``max lifetime``, 1008 for ``rate limit``, the cause as the reason. Nothing happens once the
    closing started.
    """

    __slots__ = (
        "_capacity",
        "_closing",
        "_idle_check",
        "_idle_timeout",
        "_lifetime_end",
        "_loop",
        "_rate",
        "_sender",
        "_spoke",
        "_spoke_at",
        "_tokens",
        "_tokens_at",
    )

    def __init__(self, settings: WebSocketServer, closing: Closing, sender: Sender) -> None:
        """Start the limits of ``settings``; :meth:`of` makes none when none is set."""
        loop = self._loop = asyncio.get_running_loop()
        self._closing = closing
        self._sender = sender
        self._idle_timeout = settings.idle_timeout
        self._idle_check: asyncio.TimerHandle | None = None
        self._spoke = False  # marked per message, read by the idle check
        self._spoke_at = loop.time()  # no earlier than the peer's last message
        self._lifetime_end: asyncio.TimerHandle | None = None
        self._rate = settings.max_message_rate
        self._capacity = 0.0 if self._rate is None else max(self._rate, 1.0)
        self._tokens = self._capacity
        self._tokens_at = self._spoke_at
        if self._idle_timeout is not None:
            self._idle_check = loop.call_later(self._idle_timeout / _IDLE_CHECKS, self._check_idle)
        if settings.max_lifetime is not None:
            # Up to a tenth more, so that connections opened together do not close together.
            lifetime = settings.max_lifetime * (1 + random.random() / 10)
            self._lifetime_end = loop.call_later(lifetime, self._close, MAX_LIFETIME)

    @classmethod
    def of(cls, settings: WebSocketServer, closing: Closing, sender: Sender) -> Limits | None:
        """Start the limits of a connection established now; ``None`` if ``settings`` set none."""
        if (
            settings.idle_timeout is None
            and settings.max_lifetime is None
            and settings.max_message_rate is None
        ):
            return None
        return cls(settings, closing, sender)

    def admit(self) -> bool:
        """Note a message from the peer; tell whether the rate limit lets it through.

        The message that finds the bucket empty is refused, and the connection closed.
        """
        self._spoke = True
        if self._rate is None:
            return True
        now = self._loop.time()
        tokens = min(self._tokens + (now - self._tokens_at) * self._rate, self._capacity)
        self._tokens_at = now
        if tokens < 1:
            self._tokens = tokens
            self._close(RATE_LIMIT)
            return False
        self._tokens = tokens - 1
        return True

    def stop(self) -> None:
        """Check nothing more: the connection finished."""
        if self._idle_check is not None:
            self._idle_check.cancel()
            self._idle_check = None
        if self._lifetime_end is not None:
            self._lifetime_end.cancel()
            self._lifetime_end = None

    def _check_idle(self) -> None:
        """Close the connection if its peer has sent no message for ``idle_timeout`` seconds.

        A message only marks ``_spoke``; this check turns the mark into a time no earlier than
        the message's, so the connection never closes early, and at most two checks late.
        """
        assert self._idle_timeout is not None
        if self._closing.state is not OPEN:
            return
        now = self._loop.time()
        if self._spoke:
            self._spoke = False
            self._spoke_at = now
        elif now - self._spoke_at >= self._idle_timeout:
            self._close(IDLE_TIMEOUT)
            return
        self._idle_check = self._loop.call_later(
            self._idle_timeout / _IDLE_CHECKS, self._check_idle
        )

    def _close(self, cause: str) -> None:
        if self._closing.state is not OPEN:
            return
        code = WSCloseCode.POLICY_VIOLATION if cause == RATE_LIMIT else WSCloseCode.GOING_AWAY
        logger.info("%r closed with %s: %s", self._sender.owner, int(code), cause)
        self._sender.close(code, cause, cause=cause)
