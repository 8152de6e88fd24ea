"""``RedisClusterBroker``: broadcasts shared by every process through a Redis Cluster's sharded
pub/sub (``SPUBLISH``/``SSUBSCRIBE``, Redis 7 or later).

The broker reads the cluster's map (:mod:`.topology`), keeps a :class:`.shards.Shard` per
primary (a subscriber, a publisher, a client: :mod:`.shards`), and reads the map again
(:mod:`.nodes`) whenever a primary's connection is lost or a node answers ``MOVED``, until every
primary's shard is connected again. The names (:class:`.names.TaggedChannels`), the wire format
(:mod:`.codec`) and presence (:mod:`.presence`) are :class:`.broker.RedisBroker`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from redis.exceptions import ResponseError

from ..broker import Broadcast, Broker, Counts, Deliver, Kept
from ..errors import BrokerError
from ..history import History, Position
from .client import ANSWER_TIMEOUT, LOST, check_arguments, reason, timeout, without_password
from .codec import encode, receive
from .names import PresenceKeys, TaggedChannels
from .nodes import ClusterMap
from .presence import Presence
from .shards import Shard, Shards

__all__ = ["RedisClusterBroker"]

logger = logging.getLogger("aiohttp_wsapp")


class RedisClusterBroker(Broker):
    """Carries every broadcast through a Redis Cluster's sharded pub/sub to the processes that
    share it.

    :param url: one node of the cluster, as ``redis://[[user]:password@]host[:port]`` or
        ``rediss://…`` (TLS); the broker finds the others, and uses the same credentials and
        TLS settings for them.
    :param prefix: the start of every channel name, as with ``RedisBroker``.
    :raises ValueError: ``url`` is not a Redis URL, names a database other than 0 (a cluster
        has only one), asks for RESP3, or ``prefix`` is empty.

    A broadcast to a group is published with ``SPUBLISH`` on the channel of the group, which
    the cluster keeps on the shard that owns the channel's slot: every broadcast is handled by
    one shard and never copied between nodes. Each process holds, per primary, a connection
    that listens to the channels of that primary's slots that it needs, one that publishes
    (the broadcasts made while others are on their way go together), and one for its counts
    when that primary holds them.

    Order: broadcasts that one process makes to one group reach every member in that order;
    across groups, the cluster keeps no order (the groups may be on different shards).

    History: a group's history keys are in its channel's slot, so its broadcasts are numbered,
    kept and published by one script on its shard, and read there in one step, as with
    ``RedisBroker``. After a failover, the group keeps its epoch and offset if the replica had
    received them (replication is asynchronous).

    Failover: when a primary's connection is lost, the broker reads the cluster's map again,
    every 0.1 s, then up to every 0.5 s, until the cluster has promoted a replica; delivery to
    that primary's groups resumes within a second of the promotion, without a restart. Meanwhile,
    broadcasts to those groups raise :class:`BrokerError`, and the other groups work. ``count``
    works as with ``RedisBroker``; its keys are on one shard (one hash tag per prefix), so it
    raises :class:`BrokerError` while that shard has no primary.
    """

    ping_interval: float = 5.0
    """Package-internal tuning, as ``RedisBroker.ping_interval``."""
    presence_ttl: float = 14.0
    """Package-internal tuning, as ``RedisBroker.presence_ttl``."""
    presence_refresh: float = 5.0
    """Package-internal tuning, as ``RedisBroker.presence_refresh``."""
    keeps_history = True

    def __init__(self, url: str, *, prefix: str = "aiohttp_wsapp") -> None:
        check_arguments("RedisClusterBroker", url, prefix)
        self._map = ClusterMap(url)
        self._safe_url = without_password(url)
        self._prefix = prefix
        self._channels = TaggedChannels(prefix)
        self._shards: Shards | None = None
        self._presence: Presence | None = None
        self._map_keeper: asyncio.Task[None] | None = None
        self._reconnected: list[Callable[[], None]] = []

    @property
    def url(self) -> str:
        """The URL of the node given, with its password (if any) left out."""
        return self._safe_url

    def __repr__(self) -> str:
        state = "started" if self._shards is not None else "stopped"
        return f"<RedisClusterBroker {self._safe_url} prefix={self._prefix!r} {state}>"

    # -- Broker -------------------------------------------------------------------------------

    async def start(self, deliver: Deliver, counts: Counts | None = None) -> None:
        """Read the cluster's map, connect to every primary, and subscribe; from now on call
        ``deliver`` for every broadcast.

        :raises BrokerError: no node of the cluster answers, or the primary that carries the
            broadcasts to everyone cannot be reached.
        :raises RuntimeError: the broker is already started.
        """
        if self._shards is not None:
            raise RuntimeError("this RedisClusterBroker is already started")
        try:
            topology = await self._map.read()
        except LOST as exc:
            raise BrokerError(
                f"cannot read the Redis Cluster at {self._safe_url}: {reason(exc)}"
            ) from exc
        shards = Shards(
            self._map.pool,
            partial(self._receive, deliver),
            self._channels,
            on_lost=self._lost,
            on_connected=self._connected_again,
            ping_interval=self.ping_interval,
        )
        shards.subscribe(self._channels.all)
        presence = Presence(
            PresenceKeys(self._prefix, tagged=True),
            self._run_script,
            ttl=self.presence_ttl,
            refresh=self.presence_refresh,
        )
        self._shards, self._presence = shards, presence
        shards.apply(topology)
        try:
            first = shards.shard_of(self._channels.all)
            async with timeout(ANSWER_TIMEOUT):
                await first.subscriber.until_connected()
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, asyncio.TimeoutError):
                raise BrokerError(
                    f"cannot connect to the Redis Cluster's primary at {first.where}"
                ) from exc
            raise
        presence.start(counts)
        self._map_keeper = asyncio.get_running_loop().create_task(
            self._map.follow(shards), name=f"RedisClusterBroker {self._safe_url} map"
        )

    async def stop(self) -> None:
        """Stop listening, close every connection, and wait until that is done.

        Broadcasts still waiting to be published raise :class:`BrokerError`; this process's
        counts are deleted (when their shard is reachable).
        """
        keeper, self._map_keeper = self._map_keeper, None
        if keeper is not None:
            keeper.cancel()
            await asyncio.wait([keeper])
        presence, self._presence = self._presence, None
        if presence is not None:
            await presence.stop(withdraw=True)
        shards, self._shards = self._shards, None
        if shards is not None:
            await asyncio.gather(*(shard.stop() for shard in shards.all()))

    async def publish(self, broadcast: Broadcast) -> None:
        """``SPUBLISH`` ``broadcast`` on its group's channel, for every process to deliver.

        As with ``RedisBroker``, this process delivers its own broadcasts when they come back,
        in order per group, and one that raised reached no one; the broadcasts made while others
        are on their way to the same primary go together.

        :raises BrokerError: the group's shard has no reachable primary, or the publication
            failed.
        """
        channel = self._channels.of(broadcast.group)
        shard = self._shard_of(channel)
        try:
            await shard.publish(channel, encode(broadcast))
        except BrokerError as exc:
            if isinstance(exc.__cause__, ResponseError):
                self._map.mark_stale()  # MOVED, CLUSTERDOWN: the map is out of date
            raise

    async def publish_kept(self, broadcast: Broadcast, history: History) -> Position:
        """Number ``broadcast`` (to a group), keep it in the group's stream and ``SPUBLISH`` it
        with its position, in one script on the group's shard (the group's keys are in its
        channel's slot), in order with that shard's plain broadcasts; return its position.

        :raises BrokerError: the group's shard has no reachable primary, or the script failed.
        """
        assert broadcast.group is not None
        channel = self._channels.of(broadcast.group)
        shard = self._shard_of(channel)
        if not shard.subscriber.connected:
            raise BrokerError(f"no connection to the primary at {shard.where}")
        try:
            return await shard.history.publish(broadcast, channel, history)
        except BrokerError as exc:
            if isinstance(exc.__cause__, ResponseError):
                self._map.mark_stale()
            raise

    async def read_kept(self, group: str, since: Position | None, history: History) -> Kept:
        """Read ``group``'s epoch, offset and, after ``since``, its kept broadcasts, at once, on
        the group's shard.

        :raises BrokerError: the group's shard has no reachable primary, or the read failed.
        """
        shard = self._shard_of(self._channels.of(group))
        try:
            return await shard.history.read(group, since, history)
        except BrokerError:
            self._map.mark_stale()  # lost, MOVED or CLUSTERDOWN: the map may be out of date
            raise

    def on_reconnected(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a shard's subscription connected again after a loss, or
        to a new primary after a failover (the broadcasts meanwhile were missed). It may also
        be called once for a shard that connects for the first time after ``start``: the
        endpoint then checks its groups for a gap, and finds none."""
        self._reconnected.append(callback)

    async def subscribed(self, group: str) -> None:
        """Wait until the shard of ``group`` confirmed this process's subscriptions so far.

        :raises BrokerError: the group's shard has no reachable primary.
        """
        shard = self._shard_of(self._channels.of(group))
        if not shard.subscriber.connected:
            raise BrokerError(f"no connection to the primary at {shard.where}")
        await shard.subscriber.settled()

    async def count(self, group: str | None = None) -> int:
        """Return how many connections are open (in ``group``) in every process of this prefix,
        as ``RedisBroker.count`` does.

        :raises BrokerError: the shard that holds the counts is unreachable.
        """
        presence = self._presence
        if presence is None:
            raise BrokerError(f"not connected to the Redis Cluster at {self._safe_url}")
        try:
            return await presence.count(group)
        except (*LOST, BrokerError) as exc:
            raise BrokerError(
                f"cannot count connections in the Redis Cluster at {self._safe_url}: {reason(exc)}"
            ) from exc

    def counts_changed(self) -> None:
        """This process's counts changed: they are written soon, with other changes."""
        if self._presence is not None:
            self._presence.changed()

    def group_joined(self, group: str) -> None:
        """Listen to ``group``'s channel, on the shard of its slot."""
        if self._shards is not None:
            self._shards.subscribe(self._channels.of(group))

    def group_left(self, group: str) -> None:
        """Stop listening to ``group``'s channel."""
        if self._shards is not None:
            self._shards.unsubscribe(self._channels.of(group))

    # -- inside -------------------------------------------------------------------------------

    def _shard_of(self, channel: bytes) -> Shard:
        """The shard that serves ``channel``'s slot.

        :raises BrokerError: the broker is stopped, or no primary serves that slot.
        """
        shards = self._shards
        if shards is None:
            raise BrokerError(f"not connected to the Redis Cluster at {self._safe_url}")
        try:
            return shards.shard_of(channel)
        except BrokerError:
            self._map.mark_stale()  # a slot without a primary: look again
            raise

    def _connected_again(self) -> None:
        """A shard's subscriber connected: the counts may be lost (after a failover), and the
        broadcasts of its groups meanwhile were missed."""
        if self._presence is not None:
            self._presence.changed()
        if self._map_keeper is not None:  # not during start()
            for callback in self._reconnected:
                callback()

    def _lost(self, exc: BaseException) -> None:
        """A primary's subscription was lost: the cluster may be failing it over."""
        self.counters.errors += 1
        self._map.mark_stale()

    async def _run_script(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:
        """Run a presence script on the primary of its keys' slot."""
        shards = self._shards
        if shards is None:
            raise BrokerError(f"not connected to the Redis Cluster at {self._safe_url}")
        shard = shards.shard_of(keys_and_args[0])
        try:
            return await shard.client.eval(script, numkeys, *keys_and_args)
        except LOST:
            self._map.mark_stale()
            raise

    def _receive(self, deliver: Deliver, channel: bytes, message: bytes) -> None:
        broadcast = receive(self._channels, channel, message)
        if broadcast is not None:
            deliver(broadcast)
