"""History and recovery of group broadcasts: the settings, positions, and the default envelope.

With ``WebSocketApp(..., history=History())`` every broadcast to a group is kept for a while and
gets a :class:`Position`; a client that reconnects joins with ``since=`` its last position and
first receives what it missed (a :class:`Recovery` says whether it could). Peers learn positions
from the frames themselves: a group broadcast reaches them wrapped by the history's envelope.

The default envelope (:func:`default_envelope`) is made for browsers:

- ``str`` data goes out as a text frame holding one JSON object::

      {"group": "room-1", "position": "k3Jx9aQ2Zr0_.42", "data": "hello"}

  parsed with ``JSON.parse(event.data)``.
- ``bytes`` data goes out as a binary frame: the same JSON object without ``data``, one newline
  (byte 10), then the data unchanged::

      {"group": "room-1", "position": "k3Jx9aQ2Zr0_.42"}\\n<the bytes>

  Compact JSON never holds a raw newline, and UTF-8 puts byte 10 nowhere but there, so the first
  byte 10 ends the header: ``const i = bytes.indexOf(10)``; the header is
  ``JSON.parse(new TextDecoder().decode(bytes.subarray(0, i)))`` and the data
  ``bytes.subarray(i + 1)``. Binary data is neither copied into text nor inflated by base64.

:func:`read_envelope` reads either back, for Python clients and tests.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "Envelope",
    "History",
    "Position",
    "Recovery",
    "default_envelope",
    "new_epoch",
    "read_envelope",
    "since_positions",
]

_EPOCH = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What an epoch may be: letters, digits, ``-`` and ``_``, safe in a URL as they are."""
_OFFSET = re.compile(r"0|[1-9][0-9]{0,18}")
"""An offset as ``str(position)`` writes it: decimal, no sign, no leading zero, at most 2**63-1."""
_MAX_OFFSET = 2**63 - 1
"""Redis counts offsets in a signed 64-bit integer."""


def new_epoch() -> str:
    """Return a new random epoch: 12 characters, 72 random bits."""
    return secrets.token_urlsafe(9)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a group's broadcasts have got to: ``epoch`` names the history, ``offset`` counts
    the broadcasts to the group (0 before the first).

    Positions of one epoch are ordered by offset; positions of different epochs are not ordered
    (comparing them raises :class:`TypeError`), since the history between them was lost.
    ``str(position)`` is ``"<epoch>.<offset>"``, made only of characters that a query string
    carries as they are; :meth:`parse` reads it back.

    :raises TypeError: ``epoch`` is not a ``str`` or ``offset`` not an ``int``.
    :raises ValueError: ``epoch`` holds other characters than letters, digits, ``-`` and ``_``
        (or is empty, or longer than 64), or ``offset`` is negative or above ``2**63 - 1``.
    """

    epoch: str
    offset: int

    def __post_init__(self) -> None:
        if not isinstance(self.epoch, str):
            raise TypeError(f"epoch must be a str, not {type(self.epoch).__name__}")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int):
            raise TypeError(f"offset must be an int, not {type(self.offset).__name__}")
        if not _EPOCH.fullmatch(self.epoch):
            raise ValueError(f"epoch must be 1 to 64 letters, digits, '-' or '_': {self.epoch!r}")
        if not 0 <= self.offset <= _MAX_OFFSET:
            raise ValueError(f"offset must be between 0 and 2**63 - 1: {self.offset}")

    def __str__(self) -> str:
        return f"{self.epoch}.{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Read a position written by ``str(position)``.

        :raises ValueError: ``text`` is not such a position (``TypeError`` if not a ``str``).
        """
        if not isinstance(text, str):
            raise TypeError(f"Position.parse() takes a str, not {type(text).__name__}")
        epoch, dot, offset = text.rpartition(".")
        if (
            not dot
            or not _EPOCH.fullmatch(epoch)
            or not _OFFSET.fullmatch(offset)
            or int(offset) > _MAX_OFFSET
        ):
            raise ValueError(f"not a position: {text[:100]!r}")
        return cls(epoch, int(offset))

    def _offset_in_epoch_of(self, other: object) -> int:
        if not isinstance(other, Position):
            raise TypeError(f"cannot compare a Position with {type(other).__name__}")
        if other.epoch != self.epoch:
            raise TypeError(f"positions of different epochs are not ordered: {self}, {other}")
        return other.offset

    def __lt__(self, other: object) -> bool:
        return self.offset < self._offset_in_epoch_of(other)

    def __le__(self, other: object) -> bool:
        return self.offset <= self._offset_in_epoch_of(other)

    def __gt__(self, other: object) -> bool:
        return self.offset > self._offset_in_epoch_of(other)

    def __ge__(self, other: object) -> bool:
        return self.offset >= self._offset_in_epoch_of(other)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What ``await conn.join(group, since=...)`` did.

    ``recovered``: every broadcast after ``since`` was sent (false when the history no longer
    reached back to it: trimmed, expired, or another epoch; then nothing was replayed and the
    client should reload its state). ``position``: where the replay ended; later broadcasts
    arrive live. ``replayed``: how many broadcasts the replay sent.
    """

    recovered: bool
    position: Position
    replayed: int


Envelope = Callable[[Position, str, "str | bytes"], "str | bytes"]
"""``envelope(position, group, data)``: the frame a group broadcast reaches its peers as; a
``str`` goes as a text frame, ``bytes`` as a binary one."""


def default_envelope(position: Position, group: str, data: str | bytes) -> str | bytes:
    """Wrap a group broadcast for its peers (see the module's documentation for the format).

    ``str`` data → a text frame of JSON ``{"group", "position", "data"}``; ``bytes`` data → a
    binary frame: the JSON header ``{"group", "position"}``, a newline, the data.
    """
    head = f'{{"group":{_json(group)},"position":"{position}"'
    if isinstance(data, str):
        return f'{head},"data":{_json(data)}}}'
    return f"{head}}}\n".encode() + data


_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
"""Compact JSON, characters beyond ASCII as they are (smaller frames, and no newline ever)."""


def read_envelope(frame: str | bytes) -> tuple[str, Position, str | bytes]:
    """Read a frame made by :func:`default_envelope`: return its group, position and data.

    :raises ValueError: ``frame`` is not such a frame.
    """
    try:
        if isinstance(frame, str):
            fields = json.loads(frame)
            data: str | bytes = fields["data"]
            if not isinstance(data, str):
                raise TypeError("data")
        else:
            head, newline, data = bytes(frame).partition(b"\n")
            if not newline:
                raise ValueError("no header")
            fields = json.loads(head)
        group = fields["group"]
        if not isinstance(group, str):
            raise TypeError("group")
        return group, Position.parse(fields["position"]), data
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not an envelope: {frame[:100]!r}") from exc


def since_positions(query: Mapping[str, str]) -> dict[str, Position]:
    """Read the positions a client sent in its query string: group → the last position it has.

    The reference browser client (``examples/chat/static/wsapp-client.js``) sends one parameter
    per group, ``since.<group>=<position>``; pass ``request.query``. A parameter whose value is
    not a position is left out, as if the client had none for that group.
    """
    positions = {}
    for name, value in query.items():
        if name.startswith("since."):
            try:
                positions[name[6:]] = Position.parse(value)
            except ValueError:
                continue
    return positions


class History:
    """Keep every group's recent broadcasts so that a client that reconnects can catch up.

    For every group, the last ``size`` broadcasts not older than ``ttl`` seconds are kept: in
    this process without a broker (a restart is a new epoch), in Redis with ``RedisBroker``.
    Every broadcast to a group then reaches its peers as ``envelope(position, group, data)``,
    built once per broadcast; broadcasts to everyone are neither kept nor wrapped.

    :param size: how many broadcasts to keep per group, at least 1.
    :param ttl: how many seconds a broadcast is kept, more than 0.
    :param envelope: ``envelope(position, group, data) -> str | bytes``; ``None`` is
        :func:`default_envelope`.
    :raises TypeError: ``size`` is not an int, ``ttl`` not a number, ``envelope`` not callable.
    :raises ValueError: ``size`` below 1, ``ttl`` not a positive finite number.
    """

    __slots__ = ("envelope", "size", "ttl")

    def __init__(
        self, size: int = 1000, ttl: float = 300.0, envelope: Envelope | None = None
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int, not {type(size).__name__}")
        if size < 1:
            raise ValueError(f"size must be at least 1: {size}")
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
        if not (ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"ttl must be a positive, finite number of seconds: {ttl}")
        if envelope is not None and not callable(envelope):
            raise TypeError("envelope must be callable")
        self.size: int = size
        """How many broadcasts are kept per group."""
        self.ttl: float = float(ttl)
        """How many seconds a broadcast is kept."""
        self.envelope: Envelope = envelope or default_envelope
        """``envelope(position, group, data)``: the frame a group broadcast goes out as."""

    def __repr__(self) -> str:
        return f"History(size={self.size}, ttl={self.ttl}, envelope={self.envelope!r})"
