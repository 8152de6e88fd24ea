"""``RedisBroker``: broadcasts shared by every process through one Redis server's pub/sub.

The broker joins the package's parts: a :class:`.subscriber.Subscriber` listens to the channels
this process needs (see :mod:`.names`), a :class:`.publisher.Publisher` sends the broadcasts in
order (encoded by :mod:`.codec`), and :class:`.presence.Presence` keeps this process's counts.
With history, :class:`.history.RedisHistory` numbers and keeps group broadcasts through the same
publisher, and reads the groups' histories.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from ..broker import Broadcast, Broker, Counts, Deliver, Kept
from ..errors import BrokerError
from ..history import History, Position
from .client import CLIENT_OPTIONS, LOST, check_arguments, reason, without_password
from .codec import encode, receive
from .history import RedisHistory
from .names import Channels, PresenceKeys
from .presence import Presence
from .publisher import Publisher
from .subscriber import Subscriber

__all__ = ["RedisBroker"]


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
    a second, a process that dies stops counting within 15 s (its counts expire 14 s after
    their last write, rewritten every 5 s), one that stops at once. While Redis is unreachable,
    it raises :class:`BrokerError`.

    Each process holds two connections to Redis: one subscribed to its channels, one that
    publishes; its counts take one more now and then. With the ``hiredis`` extra
    (``pip install aiohttp-wsapp[hiredis]``), redis-py parses Redis's replies in C, which halves
    the CPU time a broadcast costs.
    """

    ping_interval: float = 5.0
    """Package-internal tuning (tests shorten it on an instance before ``start``): a PING goes out
    on a subscription silent for this long; silent as long again, the connection is lost."""
    presence_ttl: float = 14.0
    """Package-internal tuning: this process's counts expire this long after their last write."""
    presence_refresh: float = 5.0
    """Package-internal tuning: this process's counts are rewritten at least this often."""
    keeps_history = True

    def __init__(self, url: str, *, prefix: str = "aiohttp_wsapp") -> None:
        check_arguments("RedisBroker", url, prefix)
        self._url = url
        self._safe_url = without_password(url)
        self._prefix = prefix
        self._channels = Channels(prefix)
        self._client: Redis | None = None
        self._subscriber: Subscriber | None = None
        self._publisher: Publisher | None = None
        self._presence: Presence | None = None
        self._history: RedisHistory | None = None
        self._reconnected: list[Callable[[], None]] = []

    @property
    def url(self) -> str:
        """The Redis URL, with its password (if any) left out."""
        return self._safe_url

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"<RedisBroker {self._safe_url} prefix={self._prefix!r} {state}>"

    @property
    def _connected(self) -> bool:
        return self._subscriber is not None and self._subscriber.connected

    # -- Broker -------------------------------------------------------------------------------

    async def start(self, deliver: Deliver, counts: Counts | None = None) -> None:
        """Connect to Redis and subscribe; from now on call ``deliver`` for every broadcast.

        With ``counts``, keep this process's counts in Redis from now on, for :meth:`count`.

        :raises BrokerError: Redis cannot be reached (the message names the URL).
        :raises RuntimeError: the broker is already started.
        """
        if self._client is not None:
            raise RuntimeError("this RedisBroker is already started")
        self._client = client = Redis.from_url(self._url, **CLIENT_OPTIONS)
        presence = Presence(
            PresenceKeys(self._prefix),
            client.eval,
            ttl=self.presence_ttl,
            refresh=self.presence_refresh,
        )

        subscriber = Subscriber(
            client.connection_pool.make_connection,
            partial(self._receive, deliver),
            where=self._safe_url,
            on_connected=partial(self._connected_again, presence),
            on_lost=self._lost,
        )
        subscriber.ping_interval = self.ping_interval
        subscriber.subscribe(self._channels.all)
        try:
            await subscriber.connect()
        except BaseException as exc:
            self._client = None
            await client.aclose()
            if isinstance(exc, LOST):
                raise BrokerError(
                    f"cannot connect to Redis at {self._safe_url}: {reason(exc)}"
                ) from exc
            raise
        subscriber.start()
        # Outside the pool: the pool's get and release would cost as much as a PUBLISH.
        make_connection: Callable[[], AbstractConnection] = client.connection_pool.make_connection
        publisher = Publisher(
            lambda: history.prepare(make_connection()),
            where=self._safe_url,
            subscriber=subscriber,
        )
        history = RedisHistory(self._channels, client, publisher.submit, where=self._safe_url)
        publisher.start()
        presence.start(counts)
        self._subscriber, self._publisher, self._presence = subscriber, publisher, presence
        self._history = history

    def _lost(self, exc: BaseException) -> None:
        self.counters.errors += 1

    async def stop(self) -> None:
        """Stop listening, close the connections to Redis, and wait until that is done.

        Broadcasts still waiting to be published raise :class:`BrokerError`. This process's
        counts are deleted from Redis: it stops counting at once.
        """
        withdraw = self._connected
        subscriber, publisher, presence = self._subscriber, self._publisher, self._presence
        self._subscriber = self._publisher = self._presence = None
        self._history = None
        if subscriber is not None:
            await subscriber.stop()
        if publisher is not None:
            await publisher.stop()
        if presence is not None:
            await presence.stop(withdraw=withdraw)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

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
        subscriber, publisher = self._subscriber, self._publisher
        if subscriber is None or publisher is None or not subscriber.connected:
            raise BrokerError(f"not connected to Redis at {self._safe_url}")
        # Into the outbox before the first await: the broadcasts leave in the order of the calls.
        await publisher.publish(self._channels.of(broadcast.group), encode(broadcast))

    async def publish_kept(self, broadcast: Broadcast, history: History) -> Position:
        """Number ``broadcast`` (to a group), keep it in the group's stream and publish it with
        its position, in one script that goes through the outbox in order with the plain
        broadcasts; return its position. Every process, this one included, delivers it when it
        comes back from Redis, in offset order.

        :raises BrokerError: this process is not connected to Redis, or the script failed.
        """
        subscriber, keeper = self._subscriber, self._history
        if subscriber is None or keeper is None or not subscriber.connected:
            raise BrokerError(f"not connected to Redis at {self._safe_url}")
        assert broadcast.group is not None
        return await keeper.publish(broadcast, self._channels.of(broadcast.group), history)

    async def read_kept(self, group: str, since: Position | None, history: History) -> Kept:
        """Read ``group``'s epoch, offset and, after ``since``, its kept broadcasts, at once.

        :raises BrokerError: this process is not connected to Redis, or the read failed.
        """
        keeper = self._history
        if keeper is None or not self._connected:
            raise BrokerError(f"not connected to Redis at {self._safe_url}")
        return await keeper.read(group, since, history)

    def on_reconnected(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the subscription connected again after a loss (the
        broadcasts of other processes meanwhile were missed)."""
        self._reconnected.append(callback)

    def _connected_again(self, presence: Presence) -> None:
        presence.changed()  # Redis may have lost the counts, if it restarted
        if self._subscriber is not None:  # not the first connection, made by start()
            self.counters.reconnects += 1
            for callback in self._reconnected:
                callback()

    async def subscribed(self, group: str) -> None:
        """Wait until Redis confirmed this process's subscriptions so far (the group's too).

        :raises BrokerError: this process is not connected to Redis.
        """
        subscriber = self._subscriber
        if subscriber is None or not subscriber.connected:
            raise BrokerError(f"not connected to Redis at {self._safe_url}")
        await subscriber.settled()

    async def count(self, group: str | None = None) -> int:
        """Return how many connections are open (in ``group``) in every process of this prefix.

        This process's own are counted as they are now; the others' as they were written to
        Redis, less than a second ago (a process that died counts until its hash expires).

        :raises BrokerError: this process is not connected to Redis, or the query failed.
        """
        presence = self._presence
        if presence is None or not self._connected:
            raise BrokerError(f"not connected to Redis at {self._safe_url}")
        try:
            return await presence.count(group)
        except LOST as exc:
            raise BrokerError(
                f"cannot count connections in Redis at {self._safe_url}: {reason(exc)}"
            ) from exc

    def counts_changed(self) -> None:
        """This process's counts changed: they are written to Redis soon, with other changes."""
        if self._presence is not None:
            self._presence.changed()

    def group_joined(self, group: str) -> None:
        """Subscribe to the channel of ``group``, which has its first member in this process."""
        if self._subscriber is not None:
            self._subscriber.subscribe(self._channels.of(group))

    def group_left(self, group: str) -> None:
        """Unsubscribe from the channel of ``group``, which has no member left in this process."""
        if self._subscriber is not None:
            self._subscriber.unsubscribe(self._channels.of(group))

    def _receive(self, deliver: Deliver, channel: bytes, message: bytes) -> None:
        broadcast = receive(self._channels, channel, message)
        if broadcast is not None:
            deliver(broadcast)
