"""Outgoing WebSocket frames, built without I/O (RFC 6455 §5.2, RFC 7692).

aiohttp parses what comes in and negotiates permessage-deflate; the frames that go out are built
here so that a frame exists as bytes before it is written. That lets ``send`` write at once without
a task, and lets a broadcast build one frame and hand the same bytes to every peer.
"""

from __future__ import annotations

import enum
import struct
import zlib

__all__ = ["Deflater", "Opcode", "Payload", "encode_frame", "frame_header"]

Payload = bytes | bytearray | memoryview
"""What a frame can carry."""

_RSV1 = 0x40
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
_PACK_SHORT = struct.Struct("!BB").pack
_PACK_MEDIUM = struct.Struct("!BBH").pack
_PACK_LONG = struct.Struct("!BBQ").pack


class Opcode(enum.IntEnum):
    """The opcodes of the frames a server sends."""

    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


def frame_header(opcode: int, length: int, *, compressed: bool = False) -> bytes:
    """Return the header of one final, unmasked frame (a server never masks)."""
    first = 0x80 | opcode | (_RSV1 if compressed else 0)
    if length < 126:
        return _PACK_SHORT(first, length)
    if length < 65536:
        return _PACK_MEDIUM(first, 126, length)
    return _PACK_LONG(first, 127, length)


def encode_frame(opcode: int, payload: Payload, *, compressed: bool = False) -> bytes:
    """Return one final, unmasked frame carrying ``payload``."""
    return frame_header(opcode, len(payload), compressed=compressed) + payload


class Deflater:
    """Compresses messages for one connection as permessage-deflate negotiated them.

    Compression runs on the event loop, as in ``websockets``: a very large message blocks the
    loop while it is compressed. Turn ``compress`` off for endpoints that send such messages.
    """

    __slots__ = ("_compressor", "_flush_mode")

    def __init__(self, window_bits: int, *, no_context_takeover: bool) -> None:
        self._compressor = zlib.compressobj(zlib.Z_BEST_SPEED, zlib.DEFLATED, -window_bits)
        # A full flush empties the window, so the peer needs no context from earlier messages.
        self._flush_mode = zlib.Z_FULL_FLUSH if no_context_takeover else zlib.Z_SYNC_FLUSH

    def compress(self, payload: Payload) -> bytes:
        """Return the compressed payload of one message, without the deflate tail."""
        data = self._compressor.compress(payload) + self._compressor.flush(self._flush_mode)
        return data.removesuffix(_DEFLATE_TAIL)
