"""The one writer of a connection: frames to the socket at once, flow control, overflow.

``send`` builds the frame (:mod:`.frames`) and hands it to the transport without a task; what it
returns is the :class:`Sender` itself, which waits for flow control when awaited: one object per
connection for both jobs, none per message. A peer whose unsent data passes
``send_buffer_limit`` is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, Final

from aiohttp import WSCloseCode
from aiohttp.abc import AbstractStreamWriter

from .closing import OPEN, Closing, check_close_code
from .errors import ConnectionClosed
from .frames import (
    SHORT_HEADERS,
    BroadcastFrames,
    MessageDeflater,
    Opcode,
    Payload,
    encode_frame,
    frame_header,
)
from .stats import SEND_BUFFER_OVERFLOW, Counters

__all__ = ["DONE", "RaiseClosed", "Sender"]

logger = logging.getLogger("aiohttp_wsapp")

_PACK_CLOSE_CODE = struct.Struct("!H").pack
_JOIN_LIMIT: Final = 16 * 1024
"""Payloads up to this size go out joined to their header in one write."""


class RaiseClosed:
    """What an operation on a closed connection returns: awaiting it raises ConnectionClosed."""

    __slots__ = ("_error",)

    def __init__(self, error: ConnectionClosed) -> None:
        self._error = error

    def __await__(self) -> Generator[Any, None, None]:
        raise self._error
        yield  # pragma: no cover - makes this a generator


class _Done:
    """What a close of a closing or closed connection returns: done at once."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator


DONE: Final = _Done()
"""An awaitable that is done at once."""


class Sender:
    """Writes the frames of one connection to its socket; awaited, waits for flow control.

    Every write returns the sender itself. The receive loop recognises it by its type: while
    :attr:`may_wait` is false, awaiting it would return at once, and the loop skips the
    ``await``. ``owner`` names the connection in log lines. ``deflater`` compresses its
    messages, when the peer negotiated permessage-deflate. ``counters`` count the messages sent
    and their bytes.
    """

    __slots__ = (
        "_closing",
        "_counters",
        "_limit",
        "_low_water",
        "_owner",
        "_transport",
        "_watermark",
        "_writer",
        "deflater",
        "may_wait",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        writer: AbstractStreamWriter,
        closing: Closing,
        send_buffer_limit: int,
        deflater: MessageDeflater | None,
        owner: Callable[[], object],
        counters: Counters,
    ) -> None:
        self._transport = transport
        self._writer = writer
        self._closing = closing
        self._counters = counters
        self._limit = send_buffer_limit
        self._low_water = transport.get_write_buffer_limits()[0]
        self._watermark = min(self._low_water, send_buffer_limit)
        self.deflater = deflater
        """What compresses this connection's messages; ``None`` without compression."""
        self._owner = owner  # a weak reference, as the connection's Events holds it
        self.may_wait = False
        """Whether awaiting may wait: a write left more than the low-water mark buffered (a
        paused writer resumes at that mark; at or under it, drain returns at once). Set from the
        buffer size each write reads anyway; a drain clears it."""

    def __await__(self) -> Generator[Any, None, None]:
        return self._drain().__await__()

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError:
            raise self._closing.error() from None
        self.may_wait = False

    @property
    def owner(self) -> object:
        """What log lines name: the connection (``None`` once it is gone)."""
        return self._owner()

    def cannot_send(self) -> bool:
        """Tell whether nothing can be sent: the closing started, or the socket is going.

        The transport may be gone before the receive loop has seen it.
        """
        return self._closing.state is not OPEN or self._transport.is_closing()

    def message(self, opcode: Opcode, payload: Payload) -> Awaitable[None]:
        """Send one message (compressed where negotiated), or drop it if nothing can be sent."""
        if self.cannot_send():
            return self.dropped("send")
        size = len(payload)  # one len() for the count, the header and the join test
        counters = self._counters
        counters.messages_sent += 1
        counters.bytes_sent += size  # before compression
        if self.deflater is not None:
            return self.write(self.deflater.frame(opcode, payload))
        if size < 126:
            return self.write(SHORT_HEADERS[opcode][size] + payload)
        header = frame_header(opcode, size)
        if size <= _JOIN_LIMIT:
            return self.write(header + payload)
        # Joining a large payload to its header would copy it only to save a system call.
        self._transport.write(header)
        return self.write(payload if type(payload) is bytes else bytes(payload))

    def write(self, frame: bytes) -> Awaitable[None]:
        """Write ``frame``; drop the connection if its peer lets the buffer overflow."""
        transport = self._transport
        transport.write(frame)
        buffered = transport.get_write_buffer_size()
        if buffered > self._watermark:  # one test on the common path, for both marks
            self._buffered(buffered)
        return self

    def _buffered(self, size: int) -> None:
        """Mark that awaiting may wait; past the limit, drop the connection."""
        if size > self._low_water:
            self.may_wait = True
        if size > self._limit:
            # A closing handshake could not get through a full buffer: drop the socket at once.
            logger.warning(
                "%r dropped: its peer does not read (%s)", self.owner, SEND_BUFFER_OVERFLOW
            )
            self._closing.drop(
                WSCloseCode.POLICY_VIOLATION, SEND_BUFFER_OVERFLOW, cause=SEND_BUFFER_OVERFLOW
            )

    def close(
        self, code: int = WSCloseCode.OK, reason: str = "", *, cause: str | None = None
    ) -> Awaitable[None]:
        """Start the closing with ``code`` and ``reason`` and write the close frame: see
        :meth:`Connection.close`. A ``cause`` counts the connection as dropped for it."""
        check_close_code(code)
        encoded_reason = reason.encode()
        if len(encoded_reason) > 123:
            raise ValueError("a close reason is at most 123 bytes of UTF-8")
        if not self._closing.start(code, reason, cause=cause):
            return DONE
        if self._transport.is_closing():
            return DONE  # the socket went first; the receive loop will see it
        return self.write(encode_frame(Opcode.CLOSE, _PACK_CLOSE_CODE(code) + encoded_reason))

    def broadcast(self, frames: BroadcastFrames) -> bool:
        """Send one broadcast message, in the frame its peers of a kind share; tell whether it
        went out (not to a closing connection).

        Not counted here: the caller counts the peers a broadcast reached, once for all of them
        (:meth:`Counters.broadcast_sent`), which costs a tenth of counting each peer.
        """
        if self.cannot_send():
            return False
        self.write(frames.frame(self.deflater))
        return True

    def replay(self, messages: Sequence[BroadcastFrames]) -> None:
        """Send broadcast messages one after the other, in one write: the history's replay.

        Each is counted as :meth:`broadcast` counts one.
        """
        if self.cannot_send() or not messages:
            return
        counters = self._counters
        counters.messages_sent += len(messages)
        counters.bytes_sent += sum(len(frames.payload) for frames in messages)
        counters.broadcast_frames += len(messages)
        deflater = self.deflater
        transport = self._transport
        transport.writelines([frames.frame(deflater) for frames in messages])
        buffered = transport.get_write_buffer_size()
        if buffered > self._watermark:
            self._buffered(buffered)

    def ping(self, data: bytes) -> Awaitable[None]:
        """Send a ping carrying ``data``: see :meth:`Connection.ping`."""
        if len(data) > 125:
            raise ValueError("a ping carries at most 125 bytes")
        if self.cannot_send():
            return self.dropped("ping")
        return self.write(encode_frame(Opcode.PING, bytes(data)))

    def dropped(self, operation: str) -> Awaitable[None]:
        """Log that ``operation`` found the connection closed; return what raises that."""
        logger.debug("%s on closed %r dropped", operation, self.owner)
        return RaiseClosed(self._closing.error())
