"""How ``RedisClusterBroker`` reaches a cluster's nodes, and keeps the cluster's map current.

This module is package-internal: its names are public for the other modules of
``aiohttp_wsapp.redis``, not for users.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection

from .client import CLIENT_OPTIONS, LOST, Backoff, reason
from .shards import CLUSTER_MAX_RETRY_DELAY, Shards
from .topology import Topology, read_topology

__all__ = ["ClusterMap"]

logger = logging.getLogger("aiohttp_wsapp")


class ClusterMap:
    """The nodes of one cluster, reached with the settings of ``url``, and the cluster's map.

    :raises ValueError: ``url`` names a database other than 0, or a Unix socket.
    """

    def __init__(self, url: str) -> None:
        seed = ConnectionPool.from_url(url, **CLIENT_OPTIONS)
        self._connection_class = seed.connection_class
        self._settings = seed.connection_kwargs
        if self._settings.get("db", 0) != 0:
            raise ValueError("a Redis Cluster has only the database 0")
        if "path" in self._settings:
            raise ValueError("RedisClusterBroker needs a redis:// or rediss:// url")
        host = self._settings.get("host", "localhost")
        self._seed = f"{host}:{self._settings.get('port', 6379)}"
        self._stale = asyncio.Event()

    def pool(self, address: str) -> ConnectionPool:
        """A connection pool to the node at ``address``, with the url's other settings."""
        return ConnectionPool(connection_class=self._connection_class, **self._node(address))

    def connection(self, address: str) -> AbstractConnection:
        """A (not yet connected) connection to the node at ``address``."""
        connection: AbstractConnection = self._connection_class(**self._node(address))
        return connection

    async def read(self) -> Topology:
        """Read the map from the node the url names; forget that the map was stale.

        :raises redis.exceptions.RedisError, OSError, asyncio.TimeoutError: it did not answer.
        """
        self._stale = asyncio.Event()  # of the running loop
        return await read_topology(self.connection, [self._seed])

    def mark_stale(self) -> None:
        """The map may be out of date (a lost primary, ``MOVED``): :meth:`follow` reads it."""
        self._stale.set()

    async def follow(self, shards: Shards) -> None:
        """Read the map again whenever it may be stale, and apply it to ``shards``, until every
        primary is connected; run until cancelled."""
        backoff = Backoff(longest=CLUSTER_MAX_RETRY_DELAY)
        while True:
            await self._stale.wait()
            self._stale.clear()
            await backoff.wait()
            try:
                topology = await read_topology(
                    self.connection, [*shards.topology.nodes, self._seed]
                )
            except LOST as exc:
                logger.debug("cannot read the Redis Cluster's map: %s", reason(exc))
                self._stale.set()
                continue
            for shard in shards.apply(topology):
                await shard.stop()
            if not shards.settled:
                self._stale.set()  # a primary is still unreachable: look again soon
            else:
                backoff.reset()

    def _node(self, address: str) -> dict[str, Any]:
        host, _, port = address.rpartition(":")
        return {**self._settings, "host": host, "port": int(port)}
