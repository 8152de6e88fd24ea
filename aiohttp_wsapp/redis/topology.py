"""A Redis Cluster's map: which primary serves each slot, read with ``CLUSTER SLOTS``.

This module is package-internal: its names are public for the other modules of
``aiohttp_wsapp.redis``, not for users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final

from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

from .client import LOST, timeout

__all__ = ["SLOTS", "Topology", "read_topology"]

SLOTS: Final = 16384
"""How many slots a Redis Cluster has."""
_ASK_TIMEOUT: Final = 1.0
"""How long one node may take to answer ``CLUSTER SLOTS`` before the next is asked."""


class Topology:
    """Which primary (``host:port``) serves each slot, and every node the cluster named."""

    def __init__(self, owners: Sequence[str | None], nodes: Iterable[str]) -> None:
        self.owners: Final = tuple(owners)
        """The address of the primary of each slot; ``None`` for a slot no one serves."""
        self.primaries: Final = frozenset(owner for owner in owners if owner is not None)
        """The addresses of the primaries that serve a slot."""
        self.nodes: Final = tuple(dict.fromkeys(nodes))
        """Every node's address, primaries and replicas, the primaries first."""

    @classmethod
    def parse(cls, reply: Sequence[Sequence[object]], default_host: str) -> Topology:
        """The topology a ``CLUSTER SLOTS`` reply describes (RESP2, undecoded).

        A node announced without a host (``""`` or ``"?"``) is taken to be on ``default_host``,
        the host that answered.
        """
        owners: list[str | None] = [None] * SLOTS
        primaries: list[str] = []
        replicas: list[str] = []
        for first, last, primary, *others in reply:
            address = _address(primary, default_host)
            primaries.append(address)
            replicas += (_address(replica, default_host) for replica in others)
            assert isinstance(first, int)
            assert isinstance(last, int)
            owners[first : last + 1] = [address] * (last + 1 - first)
        return cls(owners, [*primaries, *replicas])

    def owner(self, key: bytes) -> str | None:
        """The address of the primary that serves ``key``'s slot (``None``: no one)."""
        return self.owners[key_slot(key)]


async def read_topology(
    make_connection: Callable[[str], AbstractConnection], addresses: Iterable[str]
) -> Topology:
    """Ask the nodes at ``addresses`` in turn for the cluster's map; return the first answer.

    :raises redis.exceptions.RedisError, OSError, asyncio.TimeoutError: no node answered (the
        last one's error).
    """
    error: BaseException = OSError("no address of a Redis Cluster node to ask")
    for address in addresses:
        connection = make_connection(address)
        try:
            async with timeout(_ASK_TIMEOUT):
                await connection.send_command("CLUSTER", "SLOTS")  # connects first
                reply = await connection.read_response(disable_decoding=True)
        except LOST as exc:
            error = exc
            continue
        finally:
            await connection.disconnect()
        if not isinstance(reply, list):
            error = OSError(f"Redis at {address} answered CLUSTER SLOTS with {reply!r}")
            continue
        return Topology.parse(reply, address.rpartition(":")[0])
    raise error


def _address(node: object, default_host: str) -> str:
    """``host:port`` of a node as ``CLUSTER SLOTS`` describes it: ``[host, port, id, ...]``."""
    assert isinstance(node, list)
    host, port = node[0], node[1]
    text = host.decode() if isinstance(host, bytes) else str(host)
    return f"{text if text not in ('', '?') else default_host}:{port}"
