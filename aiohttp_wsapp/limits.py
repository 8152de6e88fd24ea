"""What a connection's peer must keep to: ``idle_timeout``, ``max_lifetime``, ``max_message_rate``.

A :class:`Limits` exists only for a connection whose endpoint sets one of them, so that the others
pay nothing: their connections hold ``None`` and test it once per message. With limits, a message
costs one mark (``idle_timeout``: no timer is reset per message, a periodic check reads the mark)
and, with ``max_message_rate``, one token taken from a bucket.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Final

from .server import WebSocketServer
from .stats import IDLE_TIMEOUT, MAX_LIFETIME

__all__ = ["Limits"]

_IDLE_CHECKS: Final = 8
"""How many times per ``idle_timeout`` a connection is checked: it closes at most a quarter late."""

CloseFor = Callable[[str], None]
"""Closes the connection for a cause: ``IDLE_TIMEOUT``, ``MAX_LIFETIME`` or ``RATE_LIMIT``."""


class Limits:
    """The limits of one connection; ``close_for(cause)`` closes it when one is passed."""

    __slots__ = (
        "_capacity",
        "_close_for",
        "_idle_check",
        "_idle_timeout",
        "_lifetime_end",
        "_loop",
        "_rate",
        "_spoke",
        "_spoke_at",
        "_tokens",
        "_tokens_at",
    )

    def __init__(self, settings: WebSocketServer, close_for: CloseFor) -> None:
        """Limits by ``settings``; prefer :meth:`of`, which makes none when none is set."""
        loop = self._loop = asyncio.get_running_loop()
        self._close_for: CloseFor | None = close_for
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
    def of(cls, settings: WebSocketServer, close_for: CloseFor) -> Limits | None:
        """Start counting the limits of a connection established now; ``None`` if it has none."""
        if (
            settings.idle_timeout is None
            and settings.max_lifetime is None
            and settings.max_message_rate is None
        ):
            return None
        return cls(settings, close_for)

    def admit(self) -> bool:
        """Note a message from the peer; tell whether the rate limit lets it through."""
        self._spoke = True
        if self._rate is None:
            return True
        now = self._loop.time()
        tokens = min(self._tokens + (now - self._tokens_at) * self._rate, self._capacity)
        self._tokens_at = now
        if tokens < 1:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1
        return True

    def stop(self) -> None:
        """The connection is closing: check nothing more."""
        self._close_for = None  # no cycle through the connection
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
        if self._close_for is not None:
            self._close_for(cause)
