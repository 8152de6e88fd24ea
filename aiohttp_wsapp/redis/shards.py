"""The shards of a Redis Cluster as one process sees them: a subscriber, a publisher, a client and
the histories per primary, and which shard each channel is on.

This module is package-internal: its names are public for the other modules of
``aiohttp_wsapp.redis``, not for users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

from ..errors import BrokerError
from .client import Backoff
from .history import RedisHistory
from .names import TaggedChannels
from .publisher import Publisher
from .subscriber import Receive, Subscriber
from .topology import Topology

__all__ = ["CLUSTER_MAX_RETRY_DELAY", "Shard", "Shards"]

CLUSTER_MAX_RETRY_DELAY = 0.5
"""The longest wait between two attempts to reach a shard's primary (or to read the cluster's
map): short, so that delivery resumes within a second of a failover."""


class Shard:
    """One primary: a subscriber to the channels of its slots, a publisher, a client for scripts
    (presence, history reads), each on connections of their own to that primary, and the history
    of the groups of its slots (their keys are in their channel's slot)."""

    def __init__(
        self,
        pool: ConnectionPool,
        receive: Receive,
        channels: TaggedChannels,
        *,
        on_lost: Callable[[BaseException], None],
        on_connected: Callable[[], None],
        ping_interval: float,
    ) -> None:
        kwargs = pool.connection_kwargs
        self.where = f"redis://{kwargs['host']}:{kwargs['port']}"
        """The primary, as shown in logs and errors."""
        self.subscriber = Subscriber(
            pool.make_connection,
            receive,
            where=self.where,
            sharded=True,
            on_lost=on_lost,
            on_connected=on_connected,
            backoff=Backoff(longest=CLUSTER_MAX_RETRY_DELAY),
        )
        self.subscriber.ping_interval = ping_interval
        make_connection: Callable[[], AbstractConnection] = pool.make_connection
        self.publisher = Publisher(
            lambda: self.history.prepare(make_connection()),
            command=b"SPUBLISH",
            where=self.where,
            subscriber=self.subscriber,
        )
        self.client = Redis(connection_pool=pool)
        """For commands whose replies matter (the presence scripts, the history reads)."""
        self.history = RedisHistory(
            channels,
            self.client,
            self.publisher.submit,
            where=self.where,
            publish_command=b"SPUBLISH",
        )
        """Numbers, keeps and publishes (through the publisher's outbox) and reads the histories
        of the groups of this primary's slots."""

    def start(self) -> None:
        """Connect (in the background) and serve."""
        self.subscriber.start()
        self.publisher.start()

    async def stop(self) -> None:
        """Close every connection to this primary; wait until that is done."""
        await self.subscriber.stop()
        await self.publisher.stop()
        await self.client.aclose(close_connection_pool=True)

    async def publish(self, channel: bytes, message: bytes) -> None:
        """``SPUBLISH`` once this shard's subscriptions made so far are settled; in the order
        of the calls (it enters the outbox before its first await).

        :raises BrokerError: the primary is unreachable, or refused (``MOVED``: the caller reads
            the cluster's map again).
        """
        subscriber = self.subscriber
        if not subscriber.connected:
            raise BrokerError(f"no connection to the primary at {self.where}")
        await self.publisher.publish(channel, message)


class Shards:
    """The shard of every primary, and the shard that listens to each channel wanted here.

    :param make_pool: the connection pool for a node's address (``host:port``).
    :param on_connected: called whenever a shard's subscriber is (re)connected and subscribed.
    """

    def __init__(
        self,
        make_pool: Callable[[str], ConnectionPool],
        receive: Receive,
        channels: TaggedChannels,
        *,
        on_lost: Callable[[BaseException], None],
        on_connected: Callable[[], None],
        ping_interval: float,
    ) -> None:
        self._make_pool = make_pool
        self._receive = receive
        self._channels = channels
        self._on_lost = on_lost
        self._on_connected = on_connected
        self._ping_interval = ping_interval
        self.topology = Topology([None], ())
        """The cluster's map as last read."""
        self._shards: dict[str, Shard] = {}
        self._by_slot: list[Shard | None] = []
        self._wanted: set[bytes] = set()
        self._placed: dict[bytes, Shard] = {}

    def apply(self, topology: Topology) -> list[Shard]:
        """Follow ``topology``: a shard for each new primary, each wanted channel on the shard
        of its slot. Return the shards of the nodes that are primaries no more, to stop."""
        self.topology = topology
        for address in topology.primaries - self._shards.keys():
            shard = Shard(
                self._make_pool(address),
                self._receive,
                self._channels,
                on_lost=self._on_lost,
                on_connected=self._on_connected,
                ping_interval=self._ping_interval,
            )
            self._shards[address] = shard
            shard.start()
        self._by_slot = [
            None if owner is None else self._shards[owner] for owner in topology.owners
        ]
        for channel in self._wanted:
            self._place(channel)
        retired = [self._shards.pop(a) for a in self._shards.keys() - topology.primaries]
        return retired

    def shard_of(self, key: bytes) -> Shard:
        """The shard that serves ``key``'s slot.

        :raises BrokerError: no primary serves it.
        """
        shard = self._by_slot[key_slot(key)] if self._by_slot else None
        if shard is None:
            raise BrokerError(f"no primary of the Redis Cluster serves {key!r}")
        return shard

    def subscribe(self, channel: bytes) -> None:
        """Listen to ``channel`` from now on, on its slot's shard (whichever it is then)."""
        self._wanted.add(channel)
        self._place(channel)

    def unsubscribe(self, channel: bytes) -> None:
        """Stop listening to ``channel``."""
        self._wanted.discard(channel)
        shard = self._placed.pop(channel, None)
        if shard is not None:
            shard.subscriber.unsubscribe(channel)

    @property
    def settled(self) -> bool:
        """Whether every primary's shard is connected, every channel listened to."""
        return all(shard.subscriber.connected for shard in self._shards.values())

    def all(self) -> Iterable[Shard]:
        """Every shard."""
        return list(self._shards.values())

    def _place(self, channel: bytes) -> None:
        """Listen to ``channel`` on the shard of its slot, and on no other."""
        shard = self._by_slot[key_slot(channel)] if self._by_slot else None
        placed = self._placed.get(channel)
        if placed is shard:
            return
        if placed is not None:
            # A node that lost the slot has already dropped the subscription.
            placed.subscriber.forget(channel)
        if shard is None:
            self._placed.pop(channel, None)
        else:
            self._placed[channel] = shard
            shard.subscriber.subscribe(channel)
