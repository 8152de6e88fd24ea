"""The receive loop of a connection: messages to their handlers, the peer's frames answered.

aiohttp's reader parses the frames; this loop dispatches each message to the ``message``
handlers in order, answers pings and the peer's close, and reports the peer's protocol errors.
A ``message`` handler that returns :meth:`Connection.send`'s awaitable (the README's
``lambda c, m: c.send(m)``) is waited on only while flow control may hold it back.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Final

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from .closing import NO_STATUS_RECEIVED, OPEN, Closing, sendable
from .errors import ConnectionClosed
from .events import Events, Handler
from .frames import Opcode, encode_frame
from .keepalive import Heartbeat, Keepalive
from .limits import Limits
from .sending import Sender
from .stats import MESSAGE_TOO_BIG, PROTOCOL_ERROR, Counters
from .upgrade import Response

__all__ = ["Receiver"]

logger = logging.getLogger("aiohttp_wsapp")

# The kinds of message the loop tells apart, read once: an enum member read from its class costs
# about a thousand instructions on CPython 3.11, a module constant a twentieth of that.
_TEXT: Final = WSMsgType.TEXT
_BINARY: Final = WSMsgType.BINARY
_PING: Final = WSMsgType.PING
_PONG: Final = WSMsgType.PONG
_CLOSE: Final = WSMsgType.CLOSE
_ERROR: Final = WSMsgType.ERROR


class Receiver(Keepalive):
    """Reads one connection's messages and hands them to its handlers; as a :class:`Keepalive`,
    it takes part in the endpoint's heartbeat rounds (``heartbeat``) for the peer it hears.

    The connection, first argument of every handler and what log lines name, is ``events.owner``.
    ``limits`` are its peer's (``None`` when the endpoint sets none); ``counters`` count the
    messages received and their bytes.
    """

    __slots__ = (
        "_counters",
        "_events",
        "_limits",
        "_message_limit",
        "_ws",
    )  # _closing and _sender: Keepalive's

    def __init__(
        self,
        ws: Response,
        closing: Closing,
        sender: Sender,
        heartbeat: Heartbeat | None,
        events: Events,
        limits: Limits | None,
        counters: Counters,
    ) -> None:
        self.join_rounds(heartbeat, closing, sender)  # sets _closing and _sender
        self._ws = ws
        self._events = events
        self._message_limit = ws.message_limit
        self._limits = limits
        self._counters = counters

    async def run(
        self, on_establish: Handler, request: web.Request, results: tuple[Any, ...]
    ) -> None:
        """Call ``on_establish(conn, request, results)`` (awaiting what it returns, if anything);
        then receive until the socket ends or the peer's close frame came, and answer the close.

        ``on_establish`` that raises is logged, and closes the connection with 1011.
        """
        owner = self._events.owner
        try:
            established = on_establish(owner, request, results)
            if established is not None and inspect.isawaitable(established):
                await established
        except ConnectionClosed:
            logger.debug("on_establish of %r stopped: the connection closed", owner)
        except Exception:
            logger.exception("on_establish raised for %r", owner)
            self._sender.close(WSCloseCode.INTERNAL_ERROR)
        ws = self._ws
        events = self._events
        closing = self._closing
        message_limit = self._message_limit
        limits = self._limits
        counters = self._counters
        while True:
            message = await ws.receive()
            kind = message.type
            if kind is _TEXT or kind is _BINARY:
                self.heard = True
                if closing.state is not OPEN:
                    continue  # we sent a close frame: the peer's late messages are dropped
                data = message.data
                if message_limit is not None and _exceeds(data, message_limit):
                    await self._refuse_oversized()
                    continue
                if limits is not None and not limits.admit():
                    continue  # over the rate limit: not dispatched, and the connection closes
                counters.messages_received += 1
                # Binary data and ASCII text (str.isascii() reads a flag of the string) count
                # their length; only other text is encoded to count its UTF-8 bytes.
                if kind is _BINARY or data.isascii():
                    counters.bytes_received += len(data)
                else:
                    counters.bytes_received += len(data.encode())
                try:
                    for registration in events.message:
                        handler = registration.handler
                        if registration.wants_unregister:
                            result = handler(owner, data, registration)
                        else:
                            result = handler(owner, data)
                        if result is None:
                            continue
                        # A handler that returns send()'s awaitable (``lambda c, m: c.send(m)``)
                        # is waited on only while flow control may hold it back.
                        if type(result) is Sender:
                            if result.may_wait:
                                await result
                        elif inspect.isawaitable(result):
                            await result
                except Exception as exc:
                    await self._handler_failed(exc)
            elif kind is _PING:
                if not self._sender.cannot_send():
                    self._sender.write(encode_frame(Opcode.PONG, message.data))
            elif kind is _PONG:
                self.pong_received()
            elif kind is _CLOSE:
                # aiohttp reports a close frame without a status code as 0.
                code = message.data or NO_STATUS_RECEIVED
                await self._answer_close(code, message.extra or "")
                return
            elif kind is _ERROR:
                await self._receive_failed(message.data)
                await closing.linger()  # the peer may still be sending: see Response
                return
            else:  # CLOSED: the socket is gone
                return

    async def _handler_failed(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionClosed) and self._closing.state is not OPEN:
            logger.debug(
                "a message handler of %r stopped: the connection closed", self._events.owner
            )
            return
        handlers = self._events.error
        if not handlers:
            logger.error("a message handler raised for %r", self._events.owner, exc_info=exc)
        else:
            await self._events.report(handlers, exc)
        self._sender.close(WSCloseCode.INTERNAL_ERROR)

    async def _refuse_oversized(self) -> None:
        limit = self._message_limit
        self._sender.close(WSCloseCode.MESSAGE_TOO_BIG, cause=MESSAGE_TOO_BIG)
        await self._peer_failed(
            WebSocketError(WSCloseCode.MESSAGE_TOO_BIG, f"Message size exceeds {limit}")
        )

    async def _receive_failed(self, exc: BaseException) -> None:
        code = getattr(exc, "code", None)
        if isinstance(code, int):  # aiohttp's WebSocketError: the peer broke the protocol
            await self._peer_failed(exc)
        else:
            logger.debug("%r lost: %r", self._events.owner, exc)

    async def _peer_failed(self, exc: BaseException) -> None:
        """Report a protocol error of the peer: its ``error`` handlers, or one WARNING line."""
        handlers = self._events.error
        if not handlers:
            logger.warning("%r closed with %s: %s", self._events.owner, self._closing.code, exc)
        else:
            await self._events.report(handlers, exc)

    async def _answer_close(self, code: int, reason: str) -> None:
        """End the closing handshake on the peer's close frame."""
        if self._closing.state is not OPEN:  # the peer answered ours: the handshake is complete
            self._closing.close_transport()
            return
        if code == NO_STATUS_RECEIVED or sendable(code):
            self._closing.start(code, reason, answering=True)
            echoed = WSCloseCode.OK if code == NO_STATUS_RECEIVED else code
            await self._ws.answer_close(echoed)
            return
        # RFC 6455 §7.4: a code that may not be sent is a protocol error, answered with 1002.
        self._closing.start(WSCloseCode.PROTOCOL_ERROR, "", cause=PROTOCOL_ERROR)
        await self._peer_failed(
            WebSocketError(WSCloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
        )
        await self._ws.answer_close(WSCloseCode.PROTOCOL_ERROR)


def _exceeds(data: str | bytes, limit: int) -> bool:
    """Tell whether a message took more than ``limit`` bytes on the wire (once inflated)."""
    if isinstance(data, bytes):
        return len(data) > limit
    # A character takes one to four bytes of UTF-8: encode only when the count leaves it open.
    return len(data) > limit or (len(data) * 4 > limit and len(data.encode()) > limit)
