"""Brokers: how a broadcast reaches every process that serves the endpoint.

A :class:`WebSocketApp` hands each broadcast to its broker as a :class:`Broadcast`. The broker
carries it to every process that shares it, and each process delivers it to its own connections
through the ``deliver`` callback it gave the broker on start. Without a broker (the default) the
endpoint delivers within its own process.

With history (:class:`~.history.History`), the broker also numbers and keeps every group
broadcast (:meth:`Broker.publish_kept`), hands each back with its position, and reads a group's
history (:meth:`Broker.read_kept`).

The endpoint also gives the broker a way to read this process's counts (``counts``), and tells it
whenever they change (:meth:`Broker.counts_changed`), so that :meth:`Broker.count` can add up
every process's.
"""

from __future__ import annotations

import abc
import functools
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .history import History, Position
from .stats import BrokerCounters

__all__ = [
    "Broadcast",
    "Broker",
    "BrokerCounters",
    "Counts",
    "Deliver",
    "Kept",
    "attach",
    "detach",
]


@dataclass(frozen=True, slots=True)
class Broadcast:
    """One message for every open connection (of ``group``) but those whose id is in ``exclude``.

    ``position``: where a broker that keeps history numbered it (``None`` without history).
    """

    data: str | bytes
    group: str | None = None
    exclude: frozenset[str] = frozenset()
    position: Position | None = None


@dataclass(frozen=True, slots=True)
class Kept:
    """What a group's history holds after a position (see :meth:`Broker.read_kept`).

    ``recovered``: ``data`` are the broadcasts after it, every one, in order (else the history
    no longer reaches back to it, and ``data`` is empty); ``position``: the group's latest.
    """

    recovered: bool
    position: Position
    data: tuple[str | bytes, ...] = ()


Deliver = Callable[[Broadcast], None]
"""Sends a broadcast to this process's own connections."""

Counts = Callable[[], tuple[int, Mapping[str, int]]]
"""Returns this process's open connections, and a read-only, live mapping: group name → its open
members in this process (a group without members is absent). Cheap: nothing is copied."""


class Broker(abc.ABC):
    """Carries broadcasts between the processes that share it.

    A broker counts what only it sees in :attr:`counters`, for the endpoint's ``stats()``.
    """

    @functools.cached_property
    def counters(self) -> BrokerCounters:
        """What this broker has done. The endpoint counts the broadcasts it publishes (and the
        failures of ``publish``) and those the broker delivers; the broker adds the connections
        it lost (``errors``) and made again (``reconnects``)."""
        return BrokerCounters()

    @abc.abstractmethod
    async def start(self, deliver: Deliver, counts: Counts | None = None) -> None:
        """Connect; from now on call ``deliver`` for every broadcast meant for this process.

        ``counts`` reads this process's counts, for :meth:`count`; without it, this process
        counts for nothing.
        """

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

    def counts_changed(self) -> None:  # noqa: B027 - optional hook
        """This process's counts have changed: a connection opened or finished, joined or left.

        Called on every change, so it must cost next to nothing: mark the counts stale, and send
        them later, many changes at once.
        """

    # -- history: optional, for brokers that keep it ----------------------------------------

    keeps_history: bool = False
    """Whether this broker implements :meth:`publish_kept`, :meth:`read_kept` and
    :meth:`subscribed`, for an endpoint with history."""

    async def publish_kept(self, broadcast: Broadcast, history: History) -> Position:
        """Number ``broadcast`` (to a group), keep it, and send it to every process with its
        position, in one atomic step; return the position.

        Every process, this one included, gets it back through ``deliver`` with its position.

        :raises BrokerError: it could not be published (then it was not kept either).
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no history")

    async def read_kept(self, group: str, since: Position | None, history: History) -> Kept:
        """Read ``group``'s position and, after ``since``, its kept broadcasts, in one atomic
        step (``since=None``: the position only).

        :raises BrokerError: the history cannot be read.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no history")

    def on_reconnected(self, callback: Callable[[], None]) -> None:  # noqa: B027 - optional
        """Call ``callback`` whenever the broker has connected again after losing its
        connection: broadcasts made meanwhile may be missing from what it delivered.

        A broker that keeps history calls it; the endpoint then checks its groups for gaps.
        """

    async def subscribed(self, group: str) -> None:
        """Wait until this process receives every broadcast published to ``group`` from now on.

        :raises BrokerError: the connection was lost meanwhile.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no history")

    def group_joined(self, group: str) -> None:  # noqa: B027 - optional hook
        """This process now has a member in ``group`` (it had none)."""

    def group_left(self, group: str) -> None:  # noqa: B027 - optional hook
        """This process no longer has any member in ``group``."""


_ENDPOINTS: weakref.WeakKeyDictionary[Broker, object] = weakref.WeakKeyDictionary()
"""Each started broker, with the endpoint it serves."""


def attach(broker: Broker, endpoint: object) -> None:
    """Make ``broker`` serve ``endpoint``: an endpoint's startup calls this before ``start``.

    A broker serves one endpoint: it delivers what it receives through one ``deliver`` and
    counts one endpoint's connections.

    :raises RuntimeError: ``broker`` serves another endpoint already.
    """
    owner = _ENDPOINTS.get(broker)
    if owner is not None and owner is not endpoint:
        raise RuntimeError(
            f"this {type(broker).__name__} serves another endpoint already: a broker serves one "
            "endpoint. Give each WebSocketApp a broker of its own (brokers that share a Redis "
            "and a prefix share their broadcasts)."
        )
    _ENDPOINTS[broker] = endpoint


def detach(broker: Broker, endpoint: object) -> None:
    """``broker`` no longer serves ``endpoint`` (its application stopped)."""
    if _ENDPOINTS.get(broker) is endpoint:
        del _ENDPOINTS[broker]
