"""The wire format of a broadcast on a Redis channel.

One message: a header, the ids of the excluded connections, then the payload as it is. The group
is not in the message: it is the channel's (see :mod:`.names`).

=========  ==========================================================================
1 byte     kind: 1 (the payload is UTF-8 text) or 2 (bytes)
4 bytes    n, the number of excluded connection ids (big-endian)
n times    1 byte, the length of the id, then the id (UTF-8)
the rest   the payload
=========  ==========================================================================

This module is package-internal: its names are public for the other modules of
``aiohttp_wsapp.redis`` and for the tests, not for users.
"""

from __future__ import annotations

import logging
import struct
from typing import Final, Protocol

from ..broker import Broadcast

__all__ = ["ChannelNames", "decode", "encode", "receive"]

logger = logging.getLogger("aiohttp_wsapp")

_HEADER: Final = struct.Struct("!BI")
_TEXT: Final = 1
_BINARY: Final = 2


class ChannelNames(Protocol):
    """What :func:`receive` needs of a prefix's channel names."""

    def group(self, channel: bytes) -> str | None:
        """The group that ``channel`` carries; ``ValueError`` for a channel of another prefix."""


def encode(broadcast: Broadcast) -> bytes:
    """Encode a broadcast's payload and excluded ids as one channel message.

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
    parts.append(payload)
    return b"".join(parts)


def decode(message: bytes, group: str | None) -> Broadcast:
    """Decode a channel message made by :func:`encode`, received on the channel of ``group``.

    :raises ValueError: the message is malformed.
    """
    try:
        kind, count = _HEADER.unpack_from(message)
    except struct.error:
        raise ValueError("message shorter than its header") from None
    if kind not in (_TEXT, _BINARY):
        raise ValueError(f"unknown message kind {kind}")
    position = _HEADER.size
    exclude = []
    for _ in range(count):
        if position >= len(message):
            raise ValueError("message shorter than its list of excluded ids")
        end = position + 1 + message[position]
        if end > len(message):
            raise ValueError("message shorter than its list of excluded ids")
        exclude.append(message[position + 1 : end].decode())
        position = end
    payload = message[position:]
    data: str | bytes = payload.decode() if kind == _TEXT else payload
    return Broadcast(data, group, frozenset(exclude))


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
