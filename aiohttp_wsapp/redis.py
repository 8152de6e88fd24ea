"""``RedisBroker``: broadcasts shared by every process through Redis pub/sub.

Give every process that serves the endpoint a broker on the same Redis and ``prefix``, and a
broadcast made in any of them reaches the connections of all of them::

    from aiohttp_wsapp import create_app
    from aiohttp_wsapp.redis import RedisBroker

    app = create_app(on_establish, broker=RedisBroker("redis://localhost:6379/0"))

Install it with the ``redis`` extra: ``pip install aiohttp-wsapp[redis]``, or the ``hiredis``
extra, which also brings redis-py's parser in C: ``pip install aiohttp-wsapp[hiredis]``.

Channels: ``{prefix}:all`` carries the broadcasts to every connection, ``{prefix}:group:{name}``
those to the group ``name``. In the prefix, ``%`` is written ``%25`` and ``:`` is written ``%3A``,
so the first ``:`` of a channel name ends its prefix and no two prefixes share a channel
(``app:group``'s broadcasts to everyone go to ``app%3Agroup:all``, not to the channel of
``app``'s group ``all``, ``app:group:all``). A process listens to ``{prefix}:all`` while it runs,
and to a group's channel only while it has a member in that group.

Presence: every process keeps its counts in a hash, ``{prefix}:presence:{process id}``, with the
field ``t`` for its open connections and ``g:{name}`` for the members of each group it has
members in, and its id in the set ``{prefix}:presence``. It rewrites the hash as soon as its
counts change (at most four times a second: the changes made meanwhile go together), and every
5 s; the hash expires 15 s after the last write, so a process that dies stops counting then, and
a process that stops deletes its hash at once. ``count`` adds up the live hashes of the other
processes in one Lua script (which also drops the ids of expired hashes from the set), and this
process's own counts, read when it is called.

Delivery guarantee: Redis pub/sub delivers *at most once*. A broadcast published while a process
is disconnected from Redis is lost for that process: it is not replayed when the broker
reconnects. While this process is disconnected, ``broadcast`` raises :class:`BrokerError` (the
broadcast reaches no one) and the broker reconnects by itself. Broadcasts that one process makes
one after the other reach every process, itself included, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import struct
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from yarl import URL

from .broker import Broadcast, Broker, Counts, Deliver
from .errors import BrokerError

if sys.version_info >= (3, 11):
    from asyncio import timeout
else:  # pragma: no cover - Python 3.10
    from async_timeout import timeout

__all__ = ["RedisBroker"]

logger = logging.getLogger("aiohttp_wsapp")

_LOST: Final = (RedisError, OSError, asyncio.TimeoutError)
"""What a lost, refused or silent connection to Redis raises."""

_FIRST_RETRY_DELAY: Final = 0.1
_MAX_RETRY_DELAY: Final = 5.0
_ANSWER_TIMEOUT: Final = 5.0
"""How long connecting, subscribing or publishing may take before the connection counts as lost."""
_YIELD_EVERY: Final = 64
"""The subscriber lets the event loop run other tasks after this many replies in a row."""
_PRESENCE_PAUSE: Final = 0.25
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

# One message on a channel: a header, the ids of the excluded connections, then the payload as it
# is. The group is not in the message: it is the channel's.
#   1 byte    kind: _TEXT (the payload is UTF-8) or _BINARY
#   4 bytes   n, the number of excluded connection ids (big-endian)
#   n times   1 byte, the length of the id, then the id (UTF-8)
#   the rest  the payload
_HEADER: Final = struct.Struct("!BI")
_TEXT: Final = 1
_BINARY: Final = 2


_Outbox = list[tuple[bytes, bytes, "asyncio.Future[None]"]]
"""Broadcasts waiting to be published: (channel, message, settled once published)."""


class RedisBroker(Broker):
    """Carries every broadcast through Redis pub/sub to the processes that share ``url``.

    :param url: the Redis server, as ``redis://[[user]:password@]host[:port][/db]``,
        ``rediss://…`` (TLS) or ``unix:///path/to/socket``.
    :param prefix: the start of every channel name. Processes with the same Redis and prefix share
        their broadcasts; another prefix is another, separate set of endpoints.
    :raises ValueError: ``url`` is not a Redis URL, asks for RESP3 (``protocol=3``), or
        ``prefix`` is empty.

    The broker connects when the application starts (and the startup fails with
    :class:`BrokerError` if Redis cannot be reached) and disconnects when it stops. If the
    connection is lost later, ``broadcast`` raises :class:`BrokerError` while the broker
    reconnects by itself, waiting 0.1 s after the loss, then twice as long after each failed
    attempt, up to 5 s, and subscribes again to every channel this process needs. Connections
    of this process are served as before meanwhile, but the broadcasts made by other processes
    during that time are lost for this one (at most once, as Redis pub/sub).

    :meth:`count` adds up the counts of every process: a join or leave counts everywhere within
    a second, a process that dies stops counting within 15 s, one that stops at once. While
    Redis is unreachable, it raises :class:`BrokerError`.

    Each process holds two connections to Redis: one subscribed to its channels, one that
    publishes; its counts take one more now and then. With the ``hiredis`` extra
    (``pip install aiohttp-wsapp[hiredis]``), redis-py parses Redis's replies in C, which halves
    the CPU time a broadcast costs.
    """

    # A PING goes out on a subscription silent for this long; silent as long again, it is lost.
    _ping_interval: float = 5.0
    # This process's counts expire this long after their last write, rewritten every third of it.
    _presence_ttl: float = 15.0

    def __init__(self, url: str, *, prefix: str = "aiohttp_wsapp") -> None:
        if not isinstance(url, str):
            raise TypeError("url must be a str such as 'redis://localhost:6379/0'")
        # parse_url raises ValueError for a URL that is not Redis's.
        if parse_url(url).get("protocol", 2) != 2:
            # _receive reads RESP2's pub/sub replies; RESP3 would bring nothing to a broker.
            raise ValueError("RedisBroker speaks RESP2: leave protocol=3 out of the url")
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        if not prefix:
            raise ValueError("prefix must not be empty")
        self._url = url
        self._safe_url = _without_password(url)
        self._prefix = prefix
        self._channels = _Channels(prefix)
        self._client: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._deliver: Deliver | None = None
        self._connected = False
        # Groups with a member here, and the changes of that set still to send to Redis.
        self._groups: set[str] = set()
        self._changes: asyncio.Queue[tuple[bool, str]] = asyncio.Queue()
        # Every change is one (UN)SUBSCRIBE with one answer, in order: publish waits for the
        # answers to the changes made before it (see publish).
        self._requested = 0
        self._answered = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        # Broadcasts waiting for _publish_outbox: (channel, message, settled when published).
        self._outbox: _Outbox = []
        self._outbox_filled = asyncio.Event()
        # Set by _receive on every reply, cleared by _watch at every look.
        self._heard = False
        # This process's counts: how to read them, the task that writes them, set when stale.
        self._presence = _PresenceKeys(prefix)
        self._presence_id = ""
        self._counts: Counts | None = None
        self._presence_writer: asyncio.Task[None] | None = None
        self._counts_stale = asyncio.Event()
        self._counting = asyncio.Semaphore(_MAX_COUNTING)

    @property
    def url(self) -> str:
        """The Redis URL, with its password (if any) left out."""
        return self._safe_url

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"<RedisBroker {self._safe_url} prefix={self._prefix!r} {state}>"

    # -- Broker -------------------------------------------------------------------------------

    async def start(self, deliver: Deliver, counts: Counts | None = None) -> None:
        """Connect to Redis and subscribe; from now on call ``deliver`` for every broadcast.

        With ``counts``, keep this process's counts in Redis from now on, for :meth:`count`.

        :raises BrokerError: Redis cannot be reached (the message names the URL).
        :raises RuntimeError: the broker is already started.
        """
        if self._client is not None:
            raise RuntimeError("this RedisBroker is already started")
        self._deliver = deliver
        self._counts = counts
        self._client = Redis.from_url(
            self._url,
            socket_connect_timeout=_ANSWER_TIMEOUT,
            # The timeouts are ours (see _ANSWER_TIMEOUT and _receive): redis-py sends through
            # asyncio.wait_for when it has a socket_timeout, which on Python < 3.12 may swallow
            # the cancellation that stop() relies on.
            socket_timeout=None,
            # No retry inside redis-py: a lost connection surfaces here, and _run reconnects.
            retry=Retry(NoBackoff(), 0),
            protocol=2,  # _receive reads RESP2; recent redis-py speaks RESP3 by default
        )
        try:
            pubsub = await self._subscribe()
        except BaseException as exc:
            client, self._client = self._client, None
            await client.aclose()
            if isinstance(exc, _LOST):
                raise BrokerError(
                    f"cannot connect to Redis at {self._safe_url}: {_reason(exc)}"
                ) from exc
            raise
        loop = asyncio.get_running_loop()
        self._outbox_filled = asyncio.Event()  # of this loop
        self._task = loop.create_task(self._run(pubsub), name=f"RedisBroker {self._safe_url}")
        self._publisher = loop.create_task(
            self._publish_outbox(), name=f"RedisBroker {self._safe_url} publisher"
        )
        self._presence_id = secrets.token_hex(8)
        self._counts_stale = asyncio.Event()  # of this loop
        self._counting = asyncio.Semaphore(_MAX_COUNTING)
        if counts is not None:
            self._counts_stale.set()
            self._presence_writer = loop.create_task(
                self._write_presence(counts), name=f"RedisBroker {self._safe_url} presence"
            )

    async def stop(self) -> None:
        """Stop listening, close the connections to Redis, and wait until that is done.

        Broadcasts still waiting to be published raise :class:`BrokerError`. This process's
        counts are deleted from Redis: it stops counting at once.
        """
        withdraw = self._counts is not None and self._connected
        tasks = [
            task
            for task in (self._task, self._publisher, self._presence_writer)
            if task is not None
        ]
        self._task = self._publisher = self._presence_writer = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                logger.error("the Redis broker failed", exc_info=task.exception())
        outbox, self._outbox = self._outbox, []
        _fail(outbox, f"the broker of {self._safe_url} stopped")
        if withdraw:
            await self._withdraw_presence()
        self._counts = None
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        self._disconnected()
        self._deliver = None

    async def publish(self, broadcast: Broadcast) -> None:
        """Publish ``broadcast`` on its channel, for every process to deliver.

        This process delivers its own broadcasts as it delivers the others': when they come back
        from Redis. So every process, this one included, delivers the broadcasts of every
        publisher in the order Redis received them, and a broadcast that raised reached no
        connection at all, here or elsewhere. The price is a round trip to Redis before the
        connections of this process get it.

        Broadcasts go out in the order of the calls, on one connection: those made while
        earlier ones are on their way to Redis go together in the next write, so that a busy
        process pays one round trip for many of them.

        A process that has just joined a group is subscribed to its channel before its own
        broadcasts go out: ``conn.join("room")`` then ``broadcast(..., group="room")`` reaches
        ``conn``.

        :raises BrokerError: this process is not connected to Redis, or the publication failed.
        """
        client = self._client
        if client is None or not self._connected:
            raise BrokerError(f"not connected to Redis at {self._safe_url}")
        if self._answered < self._requested:
            await self._subscriptions_settled(self._requested)
        published = asyncio.get_running_loop().create_future()
        self._outbox.append((self._channels.of(broadcast.group), _encode(broadcast), published))
        self._outbox_filled.set()
        await published

    async def count(self, group: str | None = None) -> int:
        """Return how many connections are open (in ``group``) in every process of this prefix.

        This process's own are counted as they are now; the others' as they were written to
        Redis, less than a second ago (a process that died counts until its hash expires).

        :raises BrokerError: this process is not connected to Redis, or the query failed.
        """
        client = self._client
        if client is None or not self._connected:
            raise BrokerError(f"not connected to Redis at {self._safe_url}")
        field = _TOTAL_FIELD if group is None else _GROUP_FIELD + _utf8(group)
        keys = self._presence
        try:
            async with timeout(_ANSWER_TIMEOUT), self._counting:
                others = await client.eval(
                    _COUNT_SCRIPT, 1, keys.registry, keys.start, field, self._presence_id
                )
        except _LOST as exc:
            raise BrokerError(
                f"cannot count connections in Redis at {self._safe_url}: {_reason(exc)}"
            ) from exc
        counts = self._counts
        if counts is None:
            return int(others)
        total, groups = counts()
        return int(others) + (total if group is None else groups.get(group, 0))

    def counts_changed(self) -> None:
        """This process's counts changed: they are written to Redis soon, with other changes."""
        self._counts_stale.set()

    def group_joined(self, group: str) -> None:
        """Subscribe to the channel of ``group``, which has its first member in this process."""
        self._groups.add(group)
        self._request(True, group)

    def group_left(self, group: str) -> None:
        """Unsubscribe from the channel of ``group``, which has no member left in this process."""
        self._groups.discard(group)
        self._request(False, group)

    # -- subscriptions ----------------------------------------------------------------------

    def _request(self, subscribe: bool, group: str) -> None:
        # The hooks are synchronous: the change waits in a queue for _apply_changes, which sends
        # the changes in the order they were made.
        self._requested += 1
        self._changes.put_nowait((subscribe, group))

    async def _subscribe(self) -> PubSub:
        """Open a pub/sub connection to every channel this process needs, confirmed by Redis."""
        assert self._client is not None
        # This subscription covers every change made so far; later ones queue for _apply_changes.
        self._changes = asyncio.Queue()
        requested = self._requested
        channels = [self._channels.all, *map(self._channels.of, self._groups)]
        pubsub = self._client.pubsub()
        try:
            async with timeout(_ANSWER_TIMEOUT):
                await pubsub.subscribe(*channels)
                unconfirmed = set(channels)
                while unconfirmed:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message["type"] == "subscribe":
                        unconfirmed.discard(message["channel"])
        except BaseException:
            await _close(pubsub)
            raise
        self._answered = requested
        self._connected = True
        self._counts_stale.set()  # Redis may have lost them, if it restarted
        return pubsub

    async def _subscriptions_settled(self, mark: int) -> None:
        """Wait until Redis has answered the first ``mark`` subscription changes."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((mark, waiter))
        await waiter

    def _answer(self) -> None:
        """Redis answered the oldest subscription change not yet answered."""
        self._answered += 1
        while self._waiters and self._waiters[0][0] <= self._answered:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _disconnected(self) -> None:
        self._connected = False
        waiters, self._waiters = self._waiters, deque()
        for _, waiter in waiters:
            if not waiter.done():
                waiter.set_exception(BrokerError(f"lost the connection to Redis at {self.url}"))

    # -- the broker's task --------------------------------------------------------------------

    async def _run(self, pubsub: PubSub) -> None:
        """Deliver what ``pubsub`` receives; when the connection is lost, reconnect."""
        while True:
            try:
                await self._serve(pubsub)
            except _LOST as exc:
                logger.warning(
                    "lost the connection to Redis at %s: %s", self._safe_url, _reason(exc)
                )
            except Exception:
                logger.exception("the Redis broker failed; reconnecting")
            finally:
                self._disconnected()
                await _close(pubsub)
            pubsub = await self._reconnect()

    async def _reconnect(self) -> PubSub:
        """Subscribe anew, waiting longer after each failed attempt; return the subscription."""
        delay = _FIRST_RETRY_DELAY
        while True:
            await asyncio.sleep(delay)
            try:
                pubsub = await self._subscribe()
            except _LOST as exc:
                delay = min(delay * 2, _MAX_RETRY_DELAY)
                logger.debug(
                    "Redis at %s still unreachable (%s); next attempt in %.1f s",
                    self._safe_url,
                    _reason(exc),
                    delay,
                )
            else:
                logger.info("reconnected to Redis at %s", self._safe_url)
                return pubsub

    async def _serve(self, pubsub: PubSub) -> None:
        """Receive messages and send subscription changes until either fails."""
        loop = asyncio.get_running_loop()
        tasks = (
            loop.create_task(self._receive(pubsub)),
            loop.create_task(self._apply_changes(pubsub)),
            loop.create_task(self._watch(pubsub)),
        )
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        errors = [task.exception() for task in tasks if not task.cancelled()]
        for error in errors:
            if error is not None:
                raise error

    async def _receive(self, pubsub: PubSub) -> None:
        """Deliver every broadcast ``pubsub`` receives, and count the answers to changes.

        The replies are read from the connection itself, past redis-py's ``get_message``: the
        replies already received are read one after the other without waiting, and a reply
        costs no timer (``_watch`` notices a silent Redis).
        """
        deliver = self._deliver
        connection = pubsub.connection
        assert deliver is not None
        assert connection is not None
        read = connection.read_response
        for received in itertools.count(1):
            # In RESP2: [b"message", channel, data], [b"(un)subscribe", channel, count], ...
            reply = await read(disable_decoding=True)
            self._heard = True
            if received % _YIELD_EVERY == 0:
                # A read that finds its reply already received does not yield to the loop:
                # without this, a backlog would hold it for as long as its delivery takes.
                await asyncio.sleep(0)
            kind = reply[0]
            if kind == b"message":
                broadcast = self._decode(reply[1], reply[2])
                if broadcast is not None:
                    try:
                        deliver(broadcast)
                    except Exception:
                        logger.exception("delivering a broadcast failed")
            elif kind in (b"subscribe", b"unsubscribe"):
                self._answer()

    async def _watch(self, pubsub: PubSub) -> None:
        """PING a subscription silent for ``_ping_interval``; silent as long again, it is lost.

        A host that vanished sends no reset: without the PING, ``_receive`` would wait forever.
        """
        interval = self._ping_interval
        pinged = False
        while True:
            self._heard = False
            await asyncio.sleep(interval)
            if self._heard:
                pinged = False
            elif pinged:
                raise RedisTimeoutError(f"Redis did not answer a PING within {interval:g} s")
            else:
                await pubsub.ping()
                pinged = True

    async def _apply_changes(self, pubsub: PubSub) -> None:
        """Send the subscription changes, in the order they were made."""
        changes = self._changes
        while True:
            subscribe, group = await changes.get()
            if subscribe:
                await pubsub.subscribe(self._channels.of(group))
            else:
                await pubsub.unsubscribe(self._channels.of(group))

    # -- the publisher's task ----------------------------------------------------------------

    async def _publish_outbox(self) -> None:
        """Publish the broadcasts of the outbox in order: all those waiting at once.

        One batch is on its way at a time, on a connection of its own, and the broadcasts made
        meanwhile wait for the next: a quiet process publishes each at once, a busy one many
        per round trip.
        """
        assert self._client is not None
        # Outside the pool: the pool's get and release would cost as much as a PUBLISH.
        make: Callable[[], AbstractConnection] = self._client.connection_pool.make_connection
        connection = make()
        try:
            while True:
                await self._outbox_filled.wait()
                self._outbox_filled.clear()
                batch, self._outbox = self._outbox, []
                batch = [entry for entry in batch if not entry[2].done()]  # not cancelled
                if batch:
                    await self._publish_batch(connection, batch)
        finally:
            await connection.disconnect()

    async def _publish_batch(self, connection: AbstractConnection, batch: _Outbox) -> None:
        """Send ``batch`` as PUBLISH commands in one write, read the replies, settle each."""
        commands: list[bytes] = []
        for channel, message, _ in batch:
            commands += (_publish_command(channel, len(message)), message, b"\r\n")
        try:
            async with timeout(_ANSWER_TIMEOUT):
                # Connects first if need be (after a failure).
                await connection.send_packed_command(commands, check_health=False)
                for _ in batch:
                    await connection.read_response()
        except BaseException as exc:
            # A reply of this batch may still be on its way: the next batch must not read it.
            await connection.disconnect()
            if not isinstance(exc, Exception):
                _fail(batch, f"the broker of {self._safe_url} stopped")
                raise  # cancelled by stop()
            if not isinstance(exc, _LOST):
                logger.exception("publishing to Redis failed")
            _fail(batch, f"cannot publish to Redis at {self._safe_url}: {_reason(exc)}", exc)
        else:
            for _, _, published in batch:
                if not published.done():
                    published.set_result(None)

    # -- this process's counts ----------------------------------------------------------------

    async def _write_presence(self, counts: Counts) -> None:
        """Keep this process's counts in Redis: rewritten when stale, and every third of their
        expiry. A failed write is tried again, waiting longer after each failure."""
        stale = self._counts_stale
        refresh = self._presence_ttl / 3
        delay = _FIRST_RETRY_DELAY
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                async with timeout(refresh):
                    await stale.wait()
            stale.clear()
            try:
                async with timeout(_ANSWER_TIMEOUT):
                    await self._send_presence(counts)
            except Exception as exc:
                stale.set()
                if isinstance(exc, _LOST):
                    logger.debug("cannot write this process's counts to Redis: %s", _reason(exc))
                else:
                    logger.exception("writing this process's counts to Redis failed")
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_DELAY)
            else:
                delay = _FIRST_RETRY_DELAY
                await asyncio.sleep(_PRESENCE_PAUSE)

    async def _send_presence(self, counts: Counts) -> None:
        """Replace this process's hash with its counts now, in one transaction."""
        assert self._client is not None
        total, groups = counts()
        fields: dict[bytes, int] = {_TOTAL_FIELD: total}
        for group, members in groups.items():
            fields[_GROUP_FIELD + _utf8(group)] = members
        key = self._presence.of(self._presence_id)
        async with self._client.pipeline(transaction=True) as pipeline:
            pipeline.delete(key)
            pipeline.hset(key, mapping=fields)  # type: ignore[arg-type]
            pipeline.pexpire(key, round(self._presence_ttl * 1000))
            pipeline.sadd(self._presence.registry, self._presence_id)
            await pipeline.execute()

    async def _withdraw_presence(self) -> None:
        """Delete this process's counts; if Redis does not answer soon, they expire anyway."""
        assert self._client is not None
        try:
            async with (
                timeout(_WITHDRAW_TIMEOUT),
                self._client.pipeline(transaction=True) as pipeline,
            ):
                pipeline.delete(self._presence.of(self._presence_id))
                pipeline.srem(self._presence.registry, self._presence_id)
                await pipeline.execute()
        except _LOST as exc:
            logger.debug("cannot delete this process's counts from Redis: %s", _reason(exc))

    def _decode(self, channel: bytes, message: bytes) -> Broadcast | None:
        """The broadcast that ``message`` on ``channel`` carries; ``None`` for one to ignore."""
        try:
            group = self._channels.group(channel)
        except ValueError:
            return None  # not a channel of this prefix: nothing subscribes to one
        try:
            return _decode(message, group)
        except ValueError as exc:
            logger.warning("ignored a malformed message on Redis channel %r: %s", channel, exc)
            return None


class _Channels:
    """The channel names of one prefix, and the group that each of them carries.

    ``{prefix}:all`` for everyone, ``{prefix}:group:{name}`` for a group, with ``%`` and ``:``
    percent-encoded in the prefix: the first ``:`` ends it, so a channel name tells its prefix
    and group apart, and different (prefix, group) pairs never share a channel. A prefix without
    ``%`` or ``:`` (the default) is written as it is. Names are the UTF-8 bytes of the strings,
    lone surrogates included (``surrogatepass``), as Redis channels are byte strings.
    """

    def __init__(self, prefix: str) -> None:
        base = _escaped(prefix)
        self.all: Final = base + b":all"
        self._group_start: Final = base + b":group:"

    def of(self, group: str | None) -> bytes:
        """The channel of ``group``, or of everyone for ``None``."""
        return self.all if group is None else self._group_start + _utf8(group)

    def group(self, channel: bytes) -> str | None:
        """The group that ``channel`` carries (``None``: everyone).

        :raises ValueError: ``channel`` is not one of this prefix.
        """
        if channel == self.all:
            return None
        if channel.startswith(self._group_start):
            return channel[len(self._group_start) :].decode("utf-8", "surrogatepass")
        raise ValueError(f"not a channel of this prefix: {channel!r}")


class _PresenceKeys:
    """The keys that hold the counts of one prefix's processes.

    ``{prefix}:presence`` is the set of their ids, ``{prefix}:presence:{id}`` the hash of each,
    with the prefix escaped as in channel names (see :class:`_Channels`): different prefixes
    never share a key.
    """

    def __init__(self, prefix: str) -> None:
        base = _escaped(prefix)
        self.registry: Final = base + b":presence"
        self.start: Final = base + b":presence:"

    def of(self, process_id: str) -> bytes:
        """The key of the hash of the process ``process_id``."""
        return self.start + process_id.encode()


_TOTAL_FIELD: Final = b"t"
"""The field of a process's hash that holds its open connections."""
_GROUP_FIELD: Final = b"g:"
"""The start of the fields of a process's hash that hold its members of each group."""


def _escaped(prefix: str) -> bytes:
    """``prefix`` as the start of a channel or key name: without ``:``, so that it ends at one."""
    return _utf8(prefix).replace(b"%", b"%25").replace(b":", b"%3A")


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _encode(broadcast: Broadcast) -> bytes:
    """Encode a broadcast's payload and excluded ids as one channel message."""
    data = broadcast.data
    kind, payload = (_TEXT, data.encode()) if isinstance(data, str) else (_BINARY, data)
    parts = [_HEADER.pack(kind, len(broadcast.exclude))]
    for connection_id in broadcast.exclude:
        raw = connection_id.encode()
        if len(raw) > 255:
            raise ValueError(f"connection id too long: {connection_id!r}")
        parts += (bytes((len(raw),)), raw)
    parts.append(payload)
    return b"".join(parts)


def _decode(message: bytes, group: str | None) -> Broadcast:
    """Decode a channel message made by :func:`_encode`; raise ValueError if it is malformed."""
    try:
        kind, count = _HEADER.unpack_from(message)
    except struct.error:
        raise ValueError("message shorter than its header") from None
    if kind not in (_TEXT, _BINARY):
        raise ValueError(f"unknown message kind {kind}")
    position = _HEADER.size
    exclude = []
    for _ in range(count):
        if position >= len(message):
            raise ValueError("message shorter than its list of excluded ids")
        end = position + 1 + message[position]
        if end > len(message):
            raise ValueError("message shorter than its list of excluded ids")
        exclude.append(message[position + 1 : end].decode())
        position = end
    payload = message[position:]
    data: str | bytes = payload.decode() if kind == _TEXT else payload
    return Broadcast(data, group, frozenset(exclude))


def _publish_command(channel: bytes, length: int) -> bytes:
    """``PUBLISH channel message`` in RESP, up to the message's own bytes."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n" % (len(channel), channel, length)


def _fail(
    outbox: _Outbox,
    reason: str,
    cause: BaseException | None = None,
) -> None:
    """Make every broadcast of ``outbox`` still waiting raise ``BrokerError(reason)``."""
    for _, _, published in outbox:
        if not published.done():
            error = BrokerError(reason)
            error.__cause__ = cause
            published.set_exception(error)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _close(pubsub: PubSub) -> None:
    aclose: Callable[[], Awaitable[None]] = pubsub.aclose  # not annotated in redis-py
    with contextlib.suppress(Exception):
        await aclose()


def _without_password(url: str) -> str:
    parsed = URL(url)
    return str(parsed.with_password(None)) if parsed.password else url
