"""What an endpoint has done: the running counters its events increment, and their snapshot.

Counting must cost next to nothing on the path of a message, so :class:`Counters` is a plain
object of integer attributes that the code where an event happens increments in place
(``counters.messages_received += 1``): no call, no lookup by name, no lock (everything runs
on the event loop), and nothing for Prometheus per message. :meth:`Counters.snapshot` copies
them into a :class:`Stats` when someone asks (``wsapp.stats()``, a Prometheus scrape).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DROP_CAUSES",
    "HEARTBEAT_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_LIFETIME",
    "MESSAGE_TOO_BIG",
    "PROTOCOL_ERROR",
    "RATE_LIMIT",
    "SEND_BUFFER_OVERFLOW",
    "BrokerCounters",
    "Counters",
    "Stats",
]

SEND_BUFFER_OVERFLOW = "send buffer overflow"
"""The peer left more than ``send_buffer_limit`` bytes unread (close code 1008)."""

HEARTBEAT_TIMEOUT = "heartbeat timeout"
"""The peer did not answer the heartbeat's ping in time (close code 1006)."""

IDLE_TIMEOUT = "idle timeout"
"""The peer sent no message for ``idle_timeout`` seconds (close code 1001)."""

MAX_LIFETIME = "max lifetime"
"""The connection was open for ``max_lifetime`` seconds, plus its jitter (close code 1001)."""

RATE_LIMIT = "rate limit"
"""The peer sent messages faster than ``max_message_rate`` allows (close code 1008)."""

MESSAGE_TOO_BIG = "message too big"
"""The peer sent a message larger than ``max_payload_size`` (close code 1009)."""

PROTOCOL_ERROR = "protocol error"
"""The peer broke the WebSocket protocol (close codes 1002, 1007)."""

DROP_CAUSES = (
    SEND_BUFFER_OVERFLOW,
    HEARTBEAT_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_LIFETIME,
    RATE_LIMIT,
    MESSAGE_TOO_BIG,
    PROTOCOL_ERROR,
)
"""Every cause for which the endpoint drops a connection: the keys of :attr:`Stats.dropped`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """What one endpoint did in this process since it started: ``wsapp.stats()``.

    A snapshot: it does not change once taken. Counts never go down. The mappings are plain
    dicts; those whose keys are known in advance (the error strings of a refused handshake, the
    causes of a drop) hold every key from the start, at 0, so that a rate computed from two
    snapshots (or by Prometheus) has a value for each from the first.
    """

    connections_open: int
    """The connections open now."""
    handshakes_accepted: int
    """Handshakes answered with 101: connections established."""
    handshakes_refused: dict[str, int]
    """Error string (``INVALID_REQUEST``, ``TOO_MANY_CONNECTIONS``, ...) → refused handshakes."""
    finished: dict[int, int]
    """Close code → connections that finished with it (1006: without a closing handshake)."""
    messages_received: int
    """Messages received from peers and dispatched (not those dropped as too big or over the
    rate limit)."""
    messages_sent: int
    """Messages sent to peers: each ``send``, and each peer a broadcast or a replay reached."""
    bytes_received: int
    """Payload bytes of the messages received (UTF-8 for text), as inflated."""
    bytes_sent: int
    """Payload bytes of the messages sent, envelopes included, before compression; a broadcast
    counts once per peer."""
    broadcasts: int
    """Calls of ``broadcast`` in this process."""
    broadcast_frames: int
    """Frames broadcasts put on sockets in this process, those that came through the broker
    included."""
    dropped: dict[str, int]
    """Cause (one of :data:`DROP_CAUSES`, e.g. ``"idle timeout"``) → connections dropped for it."""
    broker_published: int | None
    """Broadcasts this process handed to the broker; ``None`` without a broker."""
    broker_received: int | None
    """Broadcasts this process received from the broker; ``None`` without a broker."""
    broker_errors: int | None
    """Failures of the broker (a publish that raised ``BrokerError``, a lost connection);
    ``None`` without a broker."""
    broker_reconnects: int | None
    """Times the broker connected again after losing its server; ``None`` without a broker."""


class BrokerCounters:
    """What a broker has done, for :class:`Stats` (``Broker.counters``).

    The endpoint counts what goes through its hands: ``published`` and the ``errors`` of
    ``publish``, and ``received`` (every broadcast the broker delivers). The broker counts what
    only it sees: the ``errors`` of its connection (a connection lost) and ``reconnects``.
    """

    __slots__ = ("errors", "published", "received", "reconnects")

    def __init__(self) -> None:
        self.published = 0
        """Broadcasts handed to the broker's server."""
        self.received = 0
        """Broadcasts received from the broker's server."""
        self.errors = 0
        """Failures: a publish that failed, a connection lost."""
        self.reconnects = 0
        """Connections made again after one was lost."""


class Counters:
    """The running counts of one endpoint, incremented in place where each event happens.

    The attributes are the :class:`Stats` fields that are counted rather than read (the open
    connections are read from the endpoint, the broker's counts from the broker). Increment the
    integers directly; go through :meth:`refused`, :meth:`finished_with` and :meth:`dropped_for`
    for the mappings, which happen once per connection at most.
    """

    __slots__ = (
        "broadcast_frames",
        "broadcasts",
        "bytes_received",
        "bytes_sent",
        "dropped",
        "finished",
        "handshakes_accepted",
        "handshakes_refused",
        "messages_received",
        "messages_sent",
    )

    def __init__(self, handshake_errors: Iterable[str] = ()) -> None:
        """Start every count at 0; ``handshake_errors`` are the error strings known in advance."""
        self.handshakes_accepted = 0
        self.handshakes_refused: dict[str, int] = dict.fromkeys(handshake_errors, 0)
        self.finished: dict[int, int] = {}
        self.messages_received = 0
        self.messages_sent = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.broadcasts = 0
        self.broadcast_frames = 0
        self.dropped: dict[str, int] = dict.fromkeys(DROP_CAUSES, 0)

    def refused(self, error: str) -> None:
        """Count a handshake refused with the error string ``error``."""
        self.handshakes_refused[error] = self.handshakes_refused.get(error, 0) + 1

    def finished_with(self, code: int) -> None:
        """Count a connection that finished with the close code ``code``."""
        self.finished[code] = self.finished.get(code, 0) + 1

    def broadcast_sent(self, peers: int, payload: bytes) -> None:
        """Count one broadcast message (an envelope, with history) that reached ``peers``."""
        if peers:
            self.messages_sent += peers
            self.bytes_sent += peers * len(payload)
            self.broadcast_frames += peers

    def dropped_for(self, cause: str) -> None:
        """Count a connection dropped for ``cause``, one of :data:`DROP_CAUSES`."""
        self.dropped[cause] += 1

    def snapshot(self, connections_open: int, broker: BrokerCounters | None = None) -> Stats:
        """Return these counts as a :class:`Stats`, with ``connections_open`` and the broker's."""
        return Stats(
            connections_open=connections_open,
            handshakes_accepted=self.handshakes_accepted,
            handshakes_refused=dict(self.handshakes_refused),
            finished=dict(sorted(self.finished.items())),
            messages_received=self.messages_received,
            messages_sent=self.messages_sent,
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
            broadcasts=self.broadcasts,
            broadcast_frames=self.broadcast_frames,
            dropped=dict(self.dropped),
            broker_published=None if broker is None else broker.published,
            broker_received=None if broker is None else broker.received,
            broker_errors=None if broker is None else broker.errors,
            broker_reconnects=None if broker is None else broker.reconnects,
        )
