"""How the brokers talk to Redis: what a lost connection raises, how long an answer may take,
how long to wait before trying again, and the URL as it may be shown.

This module is package-internal: its names are public for the other modules of
``aiohttp_wsapp.redis``, not for users.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Final

from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from yarl import URL

if sys.version_info >= (3, 11):
    from asyncio import timeout
else:  # pragma: no cover - Python 3.10
    from async_timeout import timeout

__all__ = [
    "ANSWER_TIMEOUT",
    "CLIENT_OPTIONS",
    "FIRST_RETRY_DELAY",
    "LOST",
    "MAX_RETRY_DELAY",
    "Backoff",
    "check_arguments",
    "reason",
    "timeout",
    "without_password",
]

LOST: Final = (RedisError, OSError, asyncio.TimeoutError)
"""What a lost, refused or silent connection to Redis raises."""

FIRST_RETRY_DELAY: Final = 0.1
"""Seconds to wait after a lost connection before the first attempt to connect again."""
MAX_RETRY_DELAY: Final = 5.0
"""The longest wait between two attempts: the wait doubles after each failed one, up to this."""
ANSWER_TIMEOUT: Final = 5.0
"""How long connecting, subscribing or publishing may take before the connection counts as lost."""

CLIENT_OPTIONS: Final[dict[str, Any]] = {
    "socket_connect_timeout": ANSWER_TIMEOUT,
    # The timeouts are ours (ANSWER_TIMEOUT, and the subscriber's PING): redis-py sends through
    # asyncio.wait_for when it has a socket_timeout, which on Python < 3.12 may swallow the
    # cancellation that stopping a broker relies on.
    "socket_timeout": None,
    # No retry inside redis-py: a lost connection surfaces, and the broker reconnects itself.
    "retry": Retry(NoBackoff(), 0),
    "protocol": 2,  # the subscriber reads RESP2; recent redis-py speaks RESP3 by default
}
"""The options every broker gives redis-py's connections."""


class Backoff:
    """The waits between attempts to reconnect: ``first``, then twice as long each time, up to
    ``longest``; :meth:`reset` after a success."""

    def __init__(self, first: float = FIRST_RETRY_DELAY, longest: float = MAX_RETRY_DELAY) -> None:
        self.first = first
        self.longest = longest
        self.delay = first
        """The wait before the next attempt."""

    async def wait(self) -> None:
        """Wait before the next attempt; the one after it waits twice as long."""
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.longest)

    def reset(self) -> None:
        """The attempt succeeded: the next failure waits ``first`` again."""
        self.delay = self.first


def check_arguments(kind: str, url: object, prefix: object) -> None:
    """Refuse what a broker cannot use as its ``url`` and ``prefix``.

    :raises TypeError: ``url`` or ``prefix`` is not a str.
    :raises ValueError: ``url`` is not a Redis URL, asks for RESP3, or ``prefix`` is empty.
    """
    if not isinstance(url, str):
        raise TypeError("url must be a str such as 'redis://localhost:6379/0'")
    # parse_url raises ValueError for a URL that is not Redis's.
    if parse_url(url).get("protocol", 2) != 2:
        # The subscriber reads RESP2's pub/sub replies; RESP3 would bring nothing to a broker.
        raise ValueError(f"{kind} speaks RESP2: leave protocol=3 out of the url")
    if not isinstance(prefix, str):
        raise TypeError("prefix must be a str")
    if not prefix:
        raise ValueError("prefix must not be empty")


def reason(exc: BaseException) -> str:
    """What went wrong, in a few words, for a log or an error message."""
    return str(exc) or type(exc).__name__


def without_password(url: str) -> str:
    """``url`` with its password (if any) left out, fit for logs and messages."""
    parsed = URL(url)
    return str(parsed.with_password(None)) if parsed.password else url
