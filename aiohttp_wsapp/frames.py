"""Outgoing WebSocket frames, built without I/O (RFC 6455 §5.2, RFC 7692).

aiohttp parses what comes in and negotiates permessage-deflate; the frames that go out are built
here so that a frame exists as bytes before it is written. That lets ``send`` write at once without
a task, and lets a broadcast build one frame and hand the same bytes to every peer.

Compression (RFC 7692) comes in two modes, chosen per endpoint by :class:`Compression`:

- **shared** (the default): no compression state per connection. One :class:`SharedDeflater` per
  negotiated window size serves every connection of the endpoint, compressing each message on its
  own, so one broadcast is compressed once for all of them (:class:`BroadcastFrames`).
- **dedicated**: a :class:`DedicatedDeflater` per connection keeps its context across messages:
  small, similar messages shrink far more, at the price of memory for every connection.

Compression runs on the event loop, as in ``websockets``: a very large message blocks the loop
while it is compressed.
"""

from __future__ import annotations

import enum
import struct
import zlib
from typing import Final, Literal, Protocol, TypeAlias

__all__ = [
    "DEDICATED_COMPRESS_THRESHOLD",
    "DEFAULT_COMPRESS_WINDOW_BITS",
    "SHARED_COMPRESS_THRESHOLD",
    "SHORT_HEADERS",
    "BroadcastFrames",
    "Compression",
    "CompressionMode",
    "DedicatedDeflater",
    "MessageDeflater",
    "Opcode",
    "Payload",
    "SharedDeflater",
    "encode_frame",
    "frame_header",
    "plain_frame",
]

Payload: TypeAlias = bytes | bytearray | memoryview
"""What a frame can carry."""

CompressionMode: TypeAlias = Literal["shared", "dedicated"]
"""How an endpoint compresses: one deflater for all its connections, or one for each."""

SHARED_COMPRESS_THRESHOLD: Final = 128
"""In shared mode, messages shorter than this many bytes go uncompressed.

Compressed on its own, a shorter JSON message shrinks by 13-17% (7-19 bytes) for the fixed cost
of a compression, about 10 times the cost of sending it plain; from 128 bytes on, by 21% and
more (``benchmarks/compression.py``).
"""

DEDICATED_COMPRESS_THRESHOLD: Final = 0
"""In dedicated mode every message but an empty one is compressed.

In context, even a 50-byte chat event shrinks by four fifths, for less CPU than compressing it on
its own (``benchmarks/compression.py``).
"""

DEFAULT_COMPRESS_WINDOW_BITS: Final = 12
"""The largest window of a dedicated deflater: 4 KiB, as in ``websockets``.

About 29 KiB per connection once its window is full; 13 bits (45 KiB) suit documents of 4 KiB
and more that resemble the previous one (``benchmarks/compression.py``).
"""

# zlib settings, chosen by benchmarks/compression.py. A shared deflater compresses each message
# on its own, at level 1: on short JSON, higher levels save nothing; on a 4 KiB document, level 6
# saves 15% more bytes for nearly twice the CPU. It exists at most once per window size, so its
# memory does not matter; memLevel 5 compresses as well as 8 and keeps small negotiated windows
# fast (zlib rehashes its whole hash table each time the window slides). A dedicated deflater
# exists once per connection: memLevel 4 keeps it small, and level 3 finds the longer matches
# that context offers (7% fewer bytes than level 1 for the same CPU).
_SHARED_LEVEL: Final = 1
_SHARED_MEM_LEVEL: Final = 5
_DEDICATED_LEVEL: Final = 3
_DEDICATED_MEM_LEVEL: Final = 4

_RSV1 = 0x40
# RFC 7692 §7.2.1: a flushed deflate block ends with an empty stored block, whose last four
# octets the sender removes and the receiver puts back before inflating.
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
_TAIL_LENGTH = len(_DEFLATE_TAIL)
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
    """Return the header of one final, unmasked frame (a server never masks).

    ``compressed`` sets RSV1, which RFC 7692 §6 puts on the first frame of a compressed message.
    """
    first = 0x80 | opcode | (_RSV1 if compressed else 0)
    if length < 126:
        return _PACK_SHORT(first, length)
    if length < 65536:
        return _PACK_MEDIUM(first, 126, length)
    return _PACK_LONG(first, 127, length)


SHORT_HEADERS: Final = tuple(
    tuple(frame_header(opcode, length) for length in range(126))
    for opcode in range(Opcode.BINARY + 1)
)
"""``SHORT_HEADERS[opcode][length]``: the header of an uncompressed data frame (text, binary) of
up to 125 bytes. Looked up instead of packed: a fifteenth of the instructions per message."""


def plain_frame(opcode: int, payload: Payload) -> bytes:
    """Return one final, unmasked, uncompressed data frame (text, binary) carrying ``payload``."""
    length = len(payload)
    if length < 126:
        return SHORT_HEADERS[opcode][length] + payload
    return frame_header(opcode, length) + payload


def encode_frame(opcode: int, payload: Payload, *, compressed: bool = False) -> bytes:
    """Return one final, unmasked frame carrying ``payload``."""
    return frame_header(opcode, len(payload), compressed=compressed) + payload


class _Compressor(Protocol):
    """What :func:`zlib.compressobj` returns."""

    def compress(self, data: Payload, /) -> bytes: ...
    def flush(self, mode: int = ..., /) -> bytes: ...


class SharedDeflater:
    """Compresses messages for every connection that negotiated the same window size.

    Each message is compressed on its own: it never refers to an earlier message, so its frame is
    the same whichever connection it goes to, and no state is kept per connection. That is valid
    whatever context takeover was negotiated: RFC 7692 §7.2.1 compresses a message with any
    DEFLATE stream, §7.2.3.2 shows that a sender *may* refer to earlier messages when takeover
    is allowed, never that it must, and a receiver's window simply goes unused.

    One compressor is reused rather than made per message: a full flush (``Z_FULL_FLUSH``) ends
    each message and resets the compressor's history, so that the next message starts afresh.
    That costs about a microsecond less than a new compressor for each message.

    Messages shorter than ``threshold`` bytes, and messages that compression would not shrink
    (random or already compressed data), go uncompressed with RSV1 clear, which RFC 7692 §6
    allows for any message.

    Use it from one event loop (one thread): a message is compressed by two zlib calls.
    """

    __slots__ = ("_compress", "_flush", "_minimum", "threshold", "window_bits")

    def __init__(
        self,
        window_bits: int,
        *,
        threshold: int = SHARED_COMPRESS_THRESHOLD,
        level: int = _SHARED_LEVEL,
        mem_level: int = _SHARED_MEM_LEVEL,
    ) -> None:
        _check_window_bits(window_bits)
        _check_threshold(threshold)
        self.window_bits = window_bits
        """The LZ77 window, in bits; at most the peer's ``server_max_window_bits`` (§7.1.2.1)."""
        self.threshold = threshold
        """Messages shorter than this many bytes go uncompressed."""
        self._minimum = max(threshold, 1)  # an empty message never shrinks
        compressor = zlib.compressobj(level, zlib.DEFLATED, -window_bits, mem_level)
        self._compress = compressor.compress
        self._flush = compressor.flush

    def __repr__(self) -> str:
        return f"SharedDeflater(window_bits={self.window_bits}, threshold={self.threshold})"

    def compress(self, payload: Payload) -> bytes:
        """Return ``payload`` compressed on its own, without the deflate tail (§7.2.1)."""
        # The full flush ends in an empty stored block, like a sync flush, and also forgets the
        # history, so that no later message refers to this one.
        return (self._compress(payload) + self._flush(zlib.Z_FULL_FLUSH))[:-_TAIL_LENGTH]

    def frame(self, opcode: int, payload: Payload) -> bytes:
        """Return the whole frame of one message: compressed with RSV1 set, or else plain."""
        length = len(payload)
        if length >= self._minimum:
            data = self.compress(payload)
            if len(data) < length:
                return frame_header(opcode, len(data), compressed=True) + data
        return plain_frame(opcode, payload)


class DedicatedDeflater:
    """Compresses the messages of one connection, each one referring back to earlier ones.

    The compressor is made on the first message that is compressed, so a connection that only
    sends short messages costs nothing. It keeps the last ``2 ** window_bits`` bytes of compressed
    messages as context (context takeover, RFC 7692 §7.2.3.2): a message like an earlier one
    shrinks to a few bytes. Messages shorter than ``threshold`` bytes go uncompressed, with RSV1
    clear (§6), and stay out of the context, as they do on the peer's side. A message that
    compression does not shrink goes uncompressed too, and the compressor is dropped (its context
    holds what the peer never saw): the next one starts afresh, as a sender always may.

    Use it from one event loop (one thread), like its connection.
    """

    __slots__ = ("_compressor", "_level", "_mem_level", "_minimum", "threshold", "window_bits")

    def __init__(
        self,
        window_bits: int = DEFAULT_COMPRESS_WINDOW_BITS,
        *,
        threshold: int = DEDICATED_COMPRESS_THRESHOLD,
        level: int = _DEDICATED_LEVEL,
        mem_level: int = _DEDICATED_MEM_LEVEL,
    ) -> None:
        _check_window_bits(window_bits)
        _check_threshold(threshold)
        self.window_bits = window_bits
        """The LZ77 window, in bits: ``2 ** window_bits`` bytes of context."""
        self.threshold = threshold
        """Messages shorter than this many bytes go uncompressed."""
        self._minimum = max(threshold, 1)  # an empty message never shrinks
        self._level = level
        self._mem_level = mem_level
        self._compressor: _Compressor | None = None

    def __repr__(self) -> str:
        return f"DedicatedDeflater(window_bits={self.window_bits}, threshold={self.threshold})"

    def compress(self, payload: Payload) -> bytes:
        """Return ``payload`` compressed in this connection's context, without the tail (§7.2.1).

        The peer must receive it: its decompressor's context has to follow this one's.
        """
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = zlib.compressobj(
                self._level, zlib.DEFLATED, -self.window_bits, self._mem_level
            )
        return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-_TAIL_LENGTH]

    def frame(self, opcode: int, payload: Payload) -> bytes:
        """Return the whole frame of one message: compressed with RSV1 set, or else plain."""
        length = len(payload)
        if length >= self._minimum:
            data = self.compress(payload)
            if len(data) < length:
                return frame_header(opcode, len(data), compressed=True) + data
            # The peer never sees this compressed form: forget the context it went into.
            self._compressor = None
        return plain_frame(opcode, payload)


MessageDeflater: TypeAlias = SharedDeflater | DedicatedDeflater
"""What compresses the messages of one connection."""


class Compression:
    """An endpoint's compression settings: hands each connection the deflater it uses.

    In ``"shared"`` mode every connection that negotiated the same window size gets the same
    :class:`SharedDeflater`, made on first use. In ``"dedicated"`` mode each connection gets its
    own :class:`DedicatedDeflater`, with a window of ``min(negotiated, window_bits)`` bits; a
    connection whose client asked for ``server_no_context_takeover`` (RFC 7692 §7.1.1.1) may keep
    no context, so it gets the shared deflater of its window size instead, at no memory cost.

    ``threshold`` ``None`` is the mode's own: :data:`SHARED_COMPRESS_THRESHOLD` or
    :data:`DEDICATED_COMPRESS_THRESHOLD`.

    :raises ValueError: ``mode`` is neither ``"shared"`` nor ``"dedicated"``, ``threshold`` is
        negative, or ``window_bits`` is outside 9-15.
    :raises TypeError: ``threshold`` or ``window_bits`` is not an ``int``.
    """

    __slots__ = ("_shared", "mode", "threshold", "window_bits")

    def __init__(
        self,
        mode: CompressionMode = "shared",
        *,
        threshold: int | None = None,
        window_bits: int = DEFAULT_COMPRESS_WINDOW_BITS,
    ) -> None:
        if mode == "shared":
            default_threshold = SHARED_COMPRESS_THRESHOLD
        elif mode == "dedicated":
            default_threshold = DEDICATED_COMPRESS_THRESHOLD
        else:
            raise ValueError(f"compress must be True, False, 'shared' or 'dedicated', not {mode!r}")
        if threshold is None:
            threshold = default_threshold
        _check_threshold(threshold)
        _check_window_bits(window_bits)
        self.mode: CompressionMode = mode
        self.threshold = threshold
        """Messages shorter than this many bytes go uncompressed."""
        self.window_bits = window_bits
        """The largest window of a dedicated deflater, in bits."""
        self._shared: dict[int, SharedDeflater] = {}

    def __repr__(self) -> str:
        return (
            f"Compression({self.mode!r}, threshold={self.threshold}, "
            f"window_bits={self.window_bits})"
        )

    def deflater(self, window_bits: int, *, no_context_takeover: bool) -> MessageDeflater:
        """Return the deflater of a connection that negotiated permessage-deflate so.

        ``window_bits`` is the negotiated ``server_max_window_bits`` (15 when the client did not
        limit it: aiohttp's ``WebSocketResponse.compress``), ``no_context_takeover`` whether the
        client asked for ``server_no_context_takeover``. The deflater never uses a larger window
        than negotiated (§7.1.2.1); a smaller one is always allowed.

        :raises ValueError: ``window_bits`` is outside 9-15 (zlib cannot write 8-bit windows).
        """
        if self.mode == "dedicated" and not no_context_takeover:
            _check_window_bits(window_bits)
            return DedicatedDeflater(min(window_bits, self.window_bits), threshold=self.threshold)
        shared = self._shared.get(window_bits)
        if shared is None:
            shared = self._shared[window_bits] = SharedDeflater(
                window_bits, threshold=self.threshold
            )
        return shared


class BroadcastFrames:
    """The frames of one message sent to many connections, each one built at most once.

    Connections without compression share one plain frame, connections with the same
    :class:`SharedDeflater` share one compressed frame; a :class:`DedicatedDeflater` builds its
    own. The frames live as long as this object: make one per broadcast.
    """

    __slots__ = ("_frames", "_plain", "opcode", "payload")

    def __init__(self, opcode: int, payload: bytes) -> None:
        self.opcode = opcode
        self.payload = payload
        self._plain: bytes | None = None
        self._frames: dict[SharedDeflater, bytes] = {}

    def frame(self, deflater: MessageDeflater | None) -> bytes:
        """Return the frame for a connection that compresses with ``deflater`` (or not: None)."""
        if deflater is None:
            plain = self._plain
            if plain is None:
                plain = self._plain = plain_frame(self.opcode, self.payload)
            return plain
        if type(deflater) is SharedDeflater:
            frame = self._frames.get(deflater)
            if frame is None:
                frame = self._frames[deflater] = deflater.frame(self.opcode, self.payload)
            return frame
        return deflater.frame(self.opcode, self.payload)


def _check_window_bits(window_bits: int) -> None:
    # RFC 7692 §7.1.2 allows 8 to 15, but zlib writes no 8-bit window (it would use 9).
    if type(window_bits) is not int:
        raise TypeError(f"window bits must be an int, not {type(window_bits).__name__}")
    if not 9 <= window_bits <= 15:
        raise ValueError(f"window bits must be 9 to 15, not {window_bits}")


def _check_threshold(threshold: int) -> None:
    if type(threshold) is not int:
        raise TypeError(f"compress_threshold must be an int, not {type(threshold).__name__}")
    if threshold < 0:
        raise ValueError(f"compress_threshold must not be negative, not {threshold}")
