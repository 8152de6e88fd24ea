"""Presence: this process's counts in Redis, and the sum of every process's.

Every process keeps its counts in a hash, ``{prefix}:presence:{process id}`` (see
:class:`.names.PresenceKeys`), with the field ``t`` for its open connections and ``g:{name}`` for
the members of each group it has members in, and its id in the set ``{prefix}:presence``. It
rewrites the hash as soon as its counts change (at most four times a second: the changes made
meanwhile go together), and every :attr:`Presence.refresh` seconds (5); the hash expires
:attr:`Presence.ttl` seconds (14) after the last write, so a process that dies stops counting
within 14 s (SPEC: within 15 s), and a process that stops deletes its hash at once. ``count`` adds
up the live hashes of the other processes in one Lua script (which also drops the ids of expired
hashes from the set), and this process's own counts, read when it is called.

Writes are Lua scripts too, so that they are atomic on one Redis and on a cluster alike (where
every key of a prefix's presence has the same hash tag, so one slot).

This module is package-internal: its names are public for the other modules of
``aiohttp_wsapp.redis``, not for users.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final

from ..broker import Counts
from .client import ANSWER_TIMEOUT, LOST, Backoff, reason, timeout
from .names import GROUP_FIELD, TOTAL_FIELD, PresenceKeys, utf8

__all__ = ["Presence", "RunScript"]

logger = logging.getLogger("aiohttp_wsapp")

RunScript = Callable[..., Awaitable[Any]]
"""Runs a Lua script: ``(script, number of keys, *keys, *args)``, as redis-py's ``eval``."""

_PAUSE: Final = 0.25
"""After writing this process's counts, the writer waits this long: the changes made meanwhile go
together in the next write."""
_WITHDRAW_TIMEOUT: Final = 1.0
"""How long a stopping broker tries to delete its counts (they expire anyway)."""
_MAX_COUNTING: Final = 4
"""How many ``count`` calls of one process query Redis at a time; the others wait their turn."""

# KEYS[1]: the set of process ids. ARGV: the start of a process's hash key, the field to add up,
# this process's id (left out: its counts are read live). A hash that has expired is the hash of
# a process that died: its id leaves the set.
_COUNT_SCRIPT: Final = """
local sum = 0
for _, id in ipairs(redis.call("SMEMBERS", KEYS[1])) do
  if id ~= ARGV[3] then
    local values = redis.call("HMGET", ARGV[1] .. id, "t", ARGV[2])
    if not values[1] then
      redis.call("SREM", KEYS[1], id)
    elseif values[2] then
      sum = sum + tonumber(values[2])
    end
  end
end
return sum
"""

# KEYS[1]: this process's hash, KEYS[2]: the set of process ids. ARGV: the expiry in ms, this
# process's id, then field, value, field, value... (at least the total's pair). HSET takes them
# a thousand at a time: Lua's unpack has a limit.
_WRITE_SCRIPT: Final = """
redis.call("DEL", KEYS[1])
for first = 3, #ARGV, 2000 do
  redis.call("HSET", KEYS[1], unpack(ARGV, first, math.min(first + 1999, #ARGV)))
end
redis.call("PEXPIRE", KEYS[1], ARGV[1])
redis.call("SADD", KEYS[2], ARGV[2])
"""

# KEYS[1]: this process's hash, KEYS[2]: the set of process ids. ARGV[1]: this process's id.
_WITHDRAW_SCRIPT: Final = """
redis.call("DEL", KEYS[1])
redis.call("SREM", KEYS[2], ARGV[1])
"""


class Presence:
    """This process's counts, kept in Redis, and the count of every process's.

    :param keys: the prefix's presence keys.
    :param run_script: runs a Lua script on the Redis (or the cluster) that holds them.
    :param ttl: seconds after its last write that this process's hash expires.
    :param refresh: seconds between two writes when nothing changes (below ``ttl``).
    """

    def __init__(
        self, keys: PresenceKeys, run_script: RunScript, *, ttl: float, refresh: float
    ) -> None:
        if not 0 < refresh < ttl:
            raise ValueError("the presence refresh must be shorter than its expiry")
        self._keys = keys
        self._run_script = run_script
        self.ttl = ttl
        self.refresh = refresh
        self.process_id = secrets.token_hex(8)
        """This process's id among those sharing the prefix."""
        self._counts: Counts | None = None
        self._stale = asyncio.Event()
        self._counting = asyncio.Semaphore(_MAX_COUNTING)
        self._writer: asyncio.Task[None] | None = None

    @property
    def counts(self) -> Counts | None:
        """How to read this process's counts; ``None``: it counts for nothing."""
        return self._counts

    def start(self, counts: Counts | None) -> None:
        """With ``counts``, keep this process's counts in Redis from now on."""
        self._counts = counts
        self._stale = asyncio.Event()  # of the running loop
        self._counting = asyncio.Semaphore(_MAX_COUNTING)
        if counts is not None:
            self._stale.set()
            self._writer = asyncio.get_running_loop().create_task(
                self._write(counts), name="Redis presence writer"
            )

    async def stop(self, *, withdraw: bool) -> None:
        """Stop writing; with ``withdraw``, delete this process's counts (it stops counting)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            await asyncio.wait([writer])
            if not writer.cancelled() and writer.exception() is not None:
                logger.error("the Redis presence writer failed", exc_info=writer.exception())
        if withdraw and self._counts is not None:
            await self._withdraw()
        self._counts = None

    def changed(self) -> None:
        """This process's counts changed (or Redis may have lost them): write them soon."""
        self._stale.set()

    async def count(self, group: str | None) -> int:
        """The open connections (of ``group``) of every process: the others' as written to
        Redis, this one's as they are now.

        :raises redis.exceptions.RedisError, OSError, asyncio.TimeoutError: Redis failed.
        """
        field = TOTAL_FIELD if group is None else GROUP_FIELD + utf8(group)
        keys = self._keys
        async with timeout(ANSWER_TIMEOUT), self._counting:
            others = await self._run_script(
                _COUNT_SCRIPT, 1, keys.registry, keys.start, field, self.process_id
            )
        counts = self._counts
        if counts is None:
            return int(others)
        total, groups = counts()
        return int(others) + (total if group is None else groups.get(group, 0))

    async def _write(self, counts: Counts) -> None:
        """Rewrite this process's counts when stale, and every ``refresh`` seconds. A failed
        write is tried again, waiting longer after each failure."""
        stale = self._stale
        backoff = Backoff()
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                async with timeout(self.refresh):
                    await stale.wait()
            stale.clear()
            try:
                async with timeout(ANSWER_TIMEOUT):
                    await self._send(counts)
            except Exception as exc:
                stale.set()
                if isinstance(exc, LOST):
                    logger.debug("cannot write this process's counts to Redis: %s", reason(exc))
                else:
                    logger.exception("writing this process's counts to Redis failed")
                await backoff.wait()
            else:
                backoff.reset()
                await asyncio.sleep(_PAUSE)

    async def _send(self, counts: Counts) -> None:
        """Replace this process's hash with its counts now, atomically."""
        total, groups = counts()
        fields: list[bytes | int] = [TOTAL_FIELD, total]
        for group, members in groups.items():
            fields += (GROUP_FIELD + utf8(group), members)
        keys = self._keys
        await self._run_script(
            _WRITE_SCRIPT,
            2,
            keys.of(self.process_id),
            keys.registry,
            round(self.ttl * 1000),
            self.process_id,
            *fields,
        )

    async def _withdraw(self) -> None:
        """Delete this process's counts; if Redis does not answer soon, they expire anyway."""
        keys = self._keys
        try:
            async with timeout(_WITHDRAW_TIMEOUT):
                await self._run_script(
                    _WITHDRAW_SCRIPT, 2, keys.of(self.process_id), keys.registry, self.process_id
                )
        except LOST as exc:
            logger.debug("cannot delete this process's counts from Redis: %s", reason(exc))
