"""The history of every group kept in this process, for an endpoint without a broker."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from .history import History, Position, new_epoch

__all__ = ["LocalHistory", "Replay"]


@dataclass(frozen=True, slots=True)
class Replay:
    """What a group's history holds after a position.

    ``recovered``: ``frames`` are every broadcast after it (else the history no longer reaches
    back to it, and ``frames`` is empty); ``position``: the group's latest position.
    """

    recovered: bool
    position: Position
    frames: tuple[str | bytes, ...]


class LocalHistory:
    """Every group's offset and last broadcasts (as the envelopes its peers received).

    A new instance is a new epoch: a restarted process cannot replay what the last one sent.
    A group's offset is kept for as long as the process runs, even when its broadcasts have
    expired, so that a client that missed nothing recovers with nothing to replay. Expired
    broadcasts are released on the next broadcast to any group, or read of the group.

    ``clock`` gives the time in seconds (``time.monotonic``), for tests.
    """

    def __init__(self, history: History, clock: Callable[[], float] = time.monotonic) -> None:
        self.epoch = new_epoch()
        """This process's epoch."""
        self._size = history.size
        self._ttl = history.ttl
        self._envelope = history.envelope
        self._clock = clock
        self._offsets: dict[str, int] = {}
        self._kept: dict[str, deque[tuple[int, float, str | bytes]]] = {}
        """Group → its kept broadcasts, oldest first: (offset, time kept, envelope)."""
        self._by_age: deque[tuple[float, str]] = deque()
        """(time kept, group) for every broadcast kept, oldest first."""

    def append(self, group: str, data: str | bytes) -> tuple[Position, str | bytes]:
        """Give a broadcast to ``group`` its position and keep it; return the position and the
        envelope its peers receive."""
        now = self._clock()
        self._expire(now)
        offset = self._offsets.get(group, 0) + 1
        self._offsets[group] = offset
        position = Position(self.epoch, offset)
        frame = self._envelope(position, group, data)
        kept = self._kept.get(group)
        if kept is None:
            kept = self._kept[group] = deque(maxlen=self._size)
        kept.append((offset, now, frame))
        self._by_age.append((now, group))
        return position, frame

    def __len__(self) -> int:
        """How many broadcasts are kept, in every group."""
        return sum(map(len, self._kept.values()))

    def position(self, group: str) -> Position:
        """Return ``group``'s latest position (offset 0 before its first broadcast)."""
        return Position(self.epoch, self._offsets.get(group, 0))

    def since(self, group: str, position: Position) -> Replay:
        """Return the broadcasts to ``group`` after ``position``, if the history still holds them
        all."""
        self._expire(self._clock())
        latest = self.position(group)
        if position.epoch != self.epoch or position.offset > latest.offset:
            return Replay(False, latest, ())
        missed = latest.offset - position.offset
        if missed == 0:
            return Replay(True, latest, ())
        kept = self._kept.get(group, ())
        if len(kept) < missed:
            return Replay(False, latest, ())
        frames = tuple(frame for _, _, frame in islice(kept, len(kept) - missed, None))
        return Replay(True, latest, frames)

    def _expire(self, now: float) -> None:
        """Release every broadcast older than ``ttl``."""
        oldest_allowed = now - self._ttl
        by_age = self._by_age
        while by_age and by_age[0][0] < oldest_allowed:
            _, group = by_age.popleft()
            kept = self._kept.get(group)
            if kept is None:
                continue
            while kept and kept[0][1] < oldest_allowed:
                kept.popleft()
            if not kept:  # an empty deque still costs 600 bytes: a silent group keeps its offset
                del self._kept[group]
