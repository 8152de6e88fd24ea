"""The closing of a connection: its state, the close-code rules, and the deadline that bounds it.

A connection's life is one state, :class:`ConnectionState`, changed in one place each way:
:meth:`Closing.start` (OPEN → CLOSING) and :meth:`Closing.finish` (→ CLOSED). Whatever starts the
closing arms one deadline of ``close_timeout`` that aborts the socket, whatever is still buffered
(answering the peer's close with nothing unsent arms it only if the answer is still unsent when
the connection finishes).

The peer's end of stream reaches the closing because it stands, as the transport's protocol, in
front of aiohttp's (:meth:`Closing.watch_transport`). Where aiohttp cannot read the peer's answer
to a close (during shutdown, after a message too big), the server ends its side of the stream
after its close frame (:meth:`Closing.half_close`) and waits for the peer's end
(:meth:`Closing.linger`): the socket then ends with a FIN both ways, not a reset.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import struct
from typing import Final

from aiohttp import WSCloseCode

from .errors import ConnectionClosed
from .stats import Counters

__all__ = [
    "CLOSED",
    "CLOSING",
    "NO_STATUS_RECEIVED",
    "OPEN",
    "Closing",
    "ConnectionState",
    "abort",
    "check_close_code",
    "sendable",
]

NO_STATUS_RECEIVED: Final = 1005
"""The code a close frame without a status code stands for (RFC 6455 §7.1.5); never sent."""

_SENDABLE_CLOSE_CODES: Final = frozenset(WSCloseCode) - {WSCloseCode.ABNORMAL_CLOSURE}
_LINGER_ZERO: Final = struct.pack("ii", 1, 0)


class ConnectionState(enum.Enum):
    """Where a connection is in its life: :attr:`Connection.state`."""

    OPEN = "open"
    """Messages flow both ways."""
    CLOSING = "closing"
    """The closing started: nothing more is sent or dispatched; the socket goes within
    ``close_timeout``."""
    CLOSED = "closed"
    """Finished: the ``finish`` handlers ran or are running, every resource is released."""


OPEN, CLOSING, CLOSED = ConnectionState


def sendable(code: int) -> bool:
    """Tell whether an endpoint may send ``code`` in a close frame (and so receive it).

    RFC 6455 §7.4: the registered codes but 1006 (never sent), and the private range. The same
    codes are the ones a peer may send: any other is a protocol error.
    """
    return code in _SENDABLE_CLOSE_CODES or 3000 <= code <= 4999


def check_close_code(code: int) -> None:
    """Raise :exc:`ValueError` unless ``code`` may be sent."""
    if not sendable(code):
        raise ValueError(f"{code} is not a close code an endpoint may send")


def abort(transport: asyncio.Transport) -> None:
    """Drop the socket at once, and what the kernel still holds for it: a reset, not a FIN.

    A plain close leaves the kernel retrying the unsent bytes to a peer that does not read them.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.fileno() != -1:  # -1: closed already
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


class Closing(asyncio.Protocol):
    """The state of one connection, its close code and reason, and the deadline of its closing.

    ``transport`` is the connection's socket; ``timeout`` is ``close_timeout``. ``counters``
    count the connections dropped (by cause) and finished (by close code).

    Once :meth:`watch_transport` ran, it is also the transport's protocol, in front of
    aiohttp's: it passes every event on, and learns of the peer's end of stream and of the end
    of the socket. (One object for both: a connection's objects are most of what a handshake
    costs above raw aiohttp's.)
    """

    __slots__ = (
        "_counters",
        "_deadline",
        "_gone",
        "_half_closed",
        "_peer_gone",
        "_protocol",
        "_timeout",
        "_transport",
        "code",
        "data_received",
        "reason",
        "state",
    )

    def __init__(self, transport: asyncio.Transport, timeout: float, counters: Counters) -> None:
        self.state = OPEN
        """Where the connection is in its life."""
        self.code: int | None = None
        """The close code (1006 when no closing handshake took place); ``None`` while open."""
        self.reason: str | None = None
        """The close reason; ``None`` while open."""
        self._transport = transport
        self._timeout = timeout
        self._counters = counters
        self._deadline: asyncio.TimerHandle | None = None
        self._half_closed = False
        self._peer_gone = False
        self._gone: asyncio.Future[None] | None = None

    def start(
        self, code: int, reason: str, *, answering: bool = False, cause: str | None = None
    ) -> bool:
        """Enter CLOSING with ``code`` and ``reason``; tell whether it was open until now.

        The one way out of OPEN: whatever closes the connection comes through here, and arms the
        deadline after which the socket is aborted, however much it still has to send. Except
        when ``answering`` the peer's close frame with nothing unsent (no write can wait then):
        the answer is written at once and the connection finishes right after, and
        :meth:`finish` arms the deadline only if something is still unsent by then. Mostly
        nothing is: no timer to arm and cancel for every connection the peer closes. A
        ``cause`` (one of ``DROP_CAUSES``) counts the connection as dropped for it.
        """
        if self.state is not OPEN:
            return False
        if cause is not None:
            self._counters.dropped_for(cause)
        self.state = CLOSING
        # A plain int: Python 3.10 prints a WSCloseCode (an IntEnum) by its name, 3.11+ by number.
        self.code = int(code)
        self.reason = reason
        if not answering or self._transport.get_write_buffer_size():
            self._arm_deadline()
        return True

    def _arm_deadline(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._timeout, abort, self._transport)

    def drop(self, code: int, reason: str, *, cause: str | None = None) -> None:
        """Abort the socket now, without a closing handshake."""
        self.start(code, reason, cause=cause)
        abort(self._transport)

    def close_transport(self) -> None:
        """Close the socket once its buffer is flushed, within the closing's deadline."""
        self.start(WSCloseCode.ABNORMAL_CLOSURE, "")
        self._transport.close()

    def watch_transport(self) -> None:
        """Learn of the peer's end of stream, which starts the closing.

        On the peer's end of stream asyncio (and uvloop) close the transport without telling
        aiohttp, and that close waits for the buffer to flush, without a limit: a peer that
        stops reading and then half-closes would hold the socket for ever. The transport's
        events go through this closing, which starts (and so arms its deadline) on the EOF.

        The transport keeps it until the socket is gone, whatever happens to the connection:
        asyncio and uvloop let go of their protocol then, so no cycle outlives the socket.
        """
        transport = self._transport
        protocol = transport.get_protocol()
        assert isinstance(protocol, asyncio.Protocol), "aiohttp's protocol is a Protocol"
        self._protocol = protocol
        # Read for every message: the protocol's own method, so that it costs no extra call.
        self.data_received = protocol.data_received  # type: ignore[method-assign]
        transport.set_protocol(self)

    def half_close(self) -> None:
        """End the server's side of the stream once the buffer is written: only after a close frame.

        A peer that answers the close then ends its side too, which is seen even where aiohttp
        no longer reads. Transports that cannot half-close (TLS) are left as they are.
        """
        transport = self._transport
        if not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()
            self._half_closed = True

    async def linger(self) -> None:
        """After a half-close, wait until the peer ended its side too (or the deadline struck).

        Closing the socket while the peer still sends would answer its data with a reset.
        """
        if not self._half_closed or self._peer_gone:
            return
        if self._gone is None:
            self._gone = asyncio.get_running_loop().create_future()
        await self._gone

    # -- the transport's events, passed on to aiohttp's protocol ----------------------------

    def eof_received(self) -> bool | None:
        """Start the closing; then aiohttp's protocol decides (it lets the transport close)."""
        self.start(WSCloseCode.ABNORMAL_CLOSURE, "")
        self._gone_now()
        return self._protocol.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """Note that the socket is gone; pass it on."""
        self._gone_now()
        self._protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        """Pass it on: aiohttp's writer waits while the transport's buffer is full."""
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        """Pass it on."""
        self._protocol.resume_writing()

    def _gone_now(self) -> None:
        self._peer_gone = True
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)

    def finish(self) -> None:
        """Enter CLOSED and close the socket; the deadline stays armed while it still flushes.

        Called once, when the connection finishes.
        """
        if self.state is OPEN:
            self.start(WSCloseCode.ABNORMAL_CLOSURE, "")
        assert self.code is not None
        self._counters.finished_with(self.code)
        self.state = CLOSED
        transport = self._transport
        if not transport.is_closing():
            transport.close()
        # This closing stays the transport's protocol until the socket is gone (see
        # watch_transport); an end of stream after the finish changes nothing.
        if not transport.get_write_buffer_size():
            if self._deadline is not None:
                self._deadline.cancel()
        elif self._deadline is None:  # answering the peer's close armed none
            self._arm_deadline()

    def error(self) -> ConnectionClosed:
        """Return the exception that an operation on the closed connection raises."""
        return ConnectionClosed(self.code, self.reason)
