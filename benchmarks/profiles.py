"""How long and how often the suite runs each scenario: :class:`Profile`, ``FULL`` and ``QUICK``.

Its own module so that the runner, which picks a profile, and the report, which states it,
both import it from below and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FULL", "QUICK", "Profile"]


@dataclass(frozen=True)
class Profile:
    """How long and how often each scenario runs."""

    name: str
    rounds: int
    memory_rounds: int
    warmup: float
    duration: float
    echo_connections: tuple[int, ...] = (1, 50, 500)
    echo_size: int = 32
    stream_size: int = 64 * 1024
    stream_window: int = 4
    openers: int = 50
    idle_connections: int = 5000
    broadcast_connections: int = 5000
    broadcast_rounds: int = 5
    broadcast_repeats: int = 5
    broadcast_warmups: int = 2
    settle: float = 1.0
    quiet_budget: float = 300.0
    #: (6)-(8), permessage-deflate: the messages echoed, at how many connections.
    deflate_echo_connections: int = 50
    deflate_messages: tuple[str, ...] = ("text32", "json4k")
    #: (7) and (8): the payloads broadcast, to how many connections, in how many rounds (the
    #: memory of (8) is read on the same connections first, then broadcasts of one payload).
    deflate_payloads: tuple[str, ...] = ("chat100", "json4k")
    deflate_broadcast_connections: int = 5000
    deflate_broadcast_rounds: int = 3
    deflate_memory_payload: str = "json4k"
    deflate_memory_broadcasts: int = 5


FULL = Profile("full", rounds=8, memory_rounds=3, warmup=0.3, duration=1.0)
QUICK = Profile(
    "quick",
    rounds=1,
    memory_rounds=1,
    warmup=0.2,
    duration=0.5,
    idle_connections=1000,
    broadcast_connections=1000,
    broadcast_rounds=1,
    broadcast_repeats=3,
    broadcast_warmups=1,
    settle=0.3,
    quiet_budget=15.0,
    deflate_broadcast_connections=1000,
    deflate_broadcast_rounds=1,
)
