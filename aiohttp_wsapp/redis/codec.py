"""The wire format of a broadcast on a Redis channel.

One message: a header, the ids of the excluded connections, then the payload as it is. The group
is not in the message: it is the channel's (see :mod:`.names`).

=========  ==========================================================================
1 byte     kind: 1 (the payload is UTF-8 text) or 2 (bytes)
4 bytes    n, the number of excluded connection ids (big-endian)
n times    1 byte, the length of the id, then the id (UTF-8)
the rest   the payload
=========  ==========================================================================

A broadcast with history (see :mod:`.history`) is published by a script that puts its position
first: one byte :data:`KEPT` (3), the position as ``str(position)`` writes it, a newline, then
the message above. The entries of a group's stream hold the kind byte, then the payload
(:func:`entry_data`).

This module is package-internal: its names are public for the other modules of
``aiohttp_wsapp.redis`` and for the tests, not for users.
"""

from __future__ import annotations

import logging
import struct
from typing import Final, Protocol

from ..broker import Broadcast
from ..history import Position

__all__ = ["KEPT", "ChannelNames", "decode", "encode", "encode_head", "entry_data", "receive"]

logger = logging.getLogger("aiohttp_wsapp")

_HEADER: Final = struct.Struct("!BI")
_TEXT: Final = 1
_BINARY: Final = 2
KEPT: Final = 3
"""The first byte of a message that carries its position: a broadcast with history."""


class ChannelNames(Protocol):
    """What :func:`receive` needs of a prefix's channel names."""

    def group(self, channel: bytes) -> str | None:
        """The group that ``channel`` carries; ``ValueError`` for a channel of another prefix."""


def encode(broadcast: Broadcast) -> bytes:
    """Encode a broadcast's payload and excluded ids as one channel message.

    :raises ValueError: an excluded connection id is longer than 255 bytes.
    """
    head, payload = encode_head(broadcast)
    return head + payload


def encode_head(broadcast: Broadcast) -> tuple[bytes, bytes]:
    """Encode a broadcast as :func:`encode` does, in two parts: the header with the excluded ids
    (its first byte is the kind of the payload), and the payload.

    :raises ValueError: an excluded connection id is longer than 255 bytes.
    """
    data = broadcast.data
    kind, payload = (_TEXT, data.encode()) if isinstance(data, str) else (_BINARY, data)
    parts = [_HEADER.pack(kind, len(broadcast.exclude))]
    for connection_id in broadcast.exclude:
        raw = connection_id.encode()
        if len(raw) > 255:
            raise ValueError(f"connection id too long: {connection_id!r}")
        parts += (bytes((len(raw),)), raw)
    return b"".join(parts), payload


def entry_data(entry: bytes) -> str | bytes:
    """The data of a history entry: its kind byte, then the payload.

    :raises ValueError: the kind is unknown.
    """
    kind = entry[:1]
    if kind == bytes((_TEXT,)):
        return entry[1:].decode()
    if kind == bytes((_BINARY,)):
        return entry[1:]
    raise ValueError(f"a history entry of unknown kind {kind!r}")


def decode(message: bytes, group: str | None) -> Broadcast:
    """Decode a channel message made by :func:`encode`, received on the channel of ``group``.

    :raises ValueError: the message is malformed.
    """
    position = None
    if message[:1] == bytes((KEPT,)):
        position, message = _split_kept(message)
    try:
        kind, count = _HEADER.unpack_from(message)
    except struct.error:
        raise ValueError("message shorter than its header") from None
    if kind not in (_TEXT, _BINARY):
        raise ValueError(f"unknown message kind {kind}")
    index = _HEADER.size
    exclude = []
    for _ in range(count):
        if index >= len(message):
            raise ValueError("message shorter than its list of excluded ids")
        end = index + 1 + message[index]
        if end > len(message):
            raise ValueError("message shorter than its list of excluded ids")
        exclude.append(message[index + 1 : end].decode())
        index = end
    payload = message[index:]
    data: str | bytes = payload.decode() if kind == _TEXT else payload
    return Broadcast(data, group, frozenset(exclude), position)


def _split_kept(message: bytes) -> tuple[Position, bytes]:
    """The position that a message of a broadcast with history starts with, and the rest."""
    newline = message.find(b"\n", 1, 100)
    if newline < 0:
        raise ValueError("a broadcast with history without its position")
    return Position.parse(message[1:newline].decode("ascii")), message[newline + 1 :]


def receive(channels: ChannelNames, channel: bytes, message: bytes) -> Broadcast | None:
    """The broadcast that ``message`` on ``channel`` carries; ``None`` for one to ignore.

    A message on a channel of another prefix is ignored (nothing subscribes to one); a malformed
    message is ignored with a warning.
    """
    try:
        group = channels.group(channel)
    except ValueError:
        return None
    try:
        return decode(message, group)
    except ValueError as exc:
        logger.warning("ignored a malformed message on Redis channel %r: %s", channel, exc)
        return None
