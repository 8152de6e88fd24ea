"""Brokers: how a broadcast reaches every process that serves the endpoint.

A :class:`WebSocketApp` hands each broadcast to its broker as a :class:`Broadcast`. The broker
carries it to every process that shares it, and each process delivers it to its own connections
through the ``deliver`` callback it gave the broker on start. Without a broker (the default) the
endpoint delivers within its own process.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Broadcast", "Broker", "Deliver"]


@dataclass(frozen=True, slots=True)
class Broadcast:
    """One message for every open connection (of ``group``) but those whose id is in ``exclude``."""

    data: str | bytes
    group: str | None = None
    exclude: frozenset[str] = frozenset()


Deliver = Callable[[Broadcast], None]
"""Sends a broadcast to this process's own connections."""


class Broker(abc.ABC):
    """Carries broadcasts between the processes that share it."""

    @abc.abstractmethod
    async def start(self, deliver: Deliver) -> None:
        """Connect; from now on call ``deliver`` for every broadcast meant for this process."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect and stop delivering."""

    @abc.abstractmethod
    async def publish(self, broadcast: Broadcast) -> None:
        """Send ``broadcast`` to every process; raise :class:`BrokerError` if it cannot."""

    async def count(self, group: str | None = None) -> int:
        """Return how many connections are open (in ``group``) across every process.

        :raises BrokerError: the broker cannot count them.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot count connections")

    def group_joined(self, group: str) -> None:  # noqa: B027 - optional hook
        """This process now has a member in ``group`` (it had none)."""

    def group_left(self, group: str) -> None:  # noqa: B027 - optional hook
        """This process no longer has any member in ``group``."""
