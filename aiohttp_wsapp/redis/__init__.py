"""Brokers on Redis: broadcasts shared by every process that serves an endpoint.

Give every process that serves the endpoint a broker on the same Redis and ``prefix``, and a
broadcast made in any of them reaches the connections of all of them::

    from aiohttp_wsapp import create_app
    from aiohttp_wsapp.redis import RedisBroker

    app = create_app(on_establish, broker=RedisBroker("redis://localhost:6379/0"))

On a Redis Cluster (Redis 7 or later), ``RedisClusterBroker("redis://any-node:7000")`` does the
same through sharded pub/sub.

Install it with the ``redis`` extra: ``pip install aiohttp-wsapp[redis]``, or the ``hiredis``
extra, which also brings redis-py's parser in C: ``pip install aiohttp-wsapp[hiredis]``.

Delivery guarantee: Redis pub/sub delivers *at most once*. A broadcast published while a process
is disconnected from Redis is lost for that process: it is not replayed when the broker
reconnects. While this process is disconnected, ``broadcast`` raises :class:`BrokerError` (the
broadcast reaches no one) and the broker reconnects by itself. Broadcasts that one process makes
one after the other reach every process, itself included, in that order.

The package, one job per module (all but :mod:`.broker` and :mod:`.cluster` are
package-internal):

- :mod:`.broker`: :class:`RedisBroker`, which joins the parts below;
- :mod:`.cluster`: :class:`RedisClusterBroker`, the same on a Redis Cluster, with
  :mod:`.topology` (which primary serves each slot), :mod:`.nodes` (reaching the nodes, and
  reading the map again when it may be stale) and :mod:`.shards` (a subscriber, a publisher
  and a client per primary);
- :mod:`.names`: the channel and key names of a prefix;
- :mod:`.codec`: a broadcast as a channel message, and back;
- :mod:`.subscriber`: the connection that listens, reconnects, and settles subscriptions;
- :mod:`.publisher`: the ordered outbox and the connection that publishes it in batches;
- :mod:`.presence`: this process's counts in Redis, and the sum of every process's;
- :mod:`.client`: timeouts, backoff, and what a lost connection raises.
"""

from .broker import RedisBroker
from .cluster import RedisClusterBroker

__all__ = ["RedisBroker", "RedisClusterBroker"]
