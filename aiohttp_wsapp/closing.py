"""The closing of a connection: its state, the close-code rules, and the deadline that bounds it.

A connection's life is one state, :class:`ConnectionState`, changed in one place each way:
:meth:`Closing.start` (OPEN → CLOSING) and :meth:`Closing.finish` (→ CLOSED). Whatever starts the
closing arms one deadline of ``close_timeout`` that aborts the socket, whatever is still buffered.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import struct
from typing import Final

from aiohttp import WSCloseCode

from .errors import ConnectionClosed

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


class Closing:
    """The state of one connection, its close code and reason, and the deadline of its closing.

    ``transport`` is the connection's socket; ``timeout`` is ``close_timeout``.
    """

    __slots__ = ("_deadline", "_timeout", "_transport", "code", "reason", "state")

    def __init__(self, transport: asyncio.Transport, timeout: float) -> None:
        self.state = OPEN
        """Where the connection is in its life."""
        self.code: int | None = None
        """The close code (1006 when no closing handshake took place); ``None`` while open."""
        self.reason: str | None = None
        """The close reason; ``None`` while open."""
        self._transport = transport
        self._timeout = timeout
        self._deadline: asyncio.TimerHandle | None = None

    def start(self, code: int, reason: str, *, answering: bool = False) -> bool:
        """Enter CLOSING with ``code`` and ``reason``; tell whether it was open until now.

        The one way out of OPEN: whatever closes the connection comes through here, and arms the
        deadline after which the socket is aborted, however much it still has to send. Except
        when ``answering`` the peer's close frame with nothing unsent (no write can wait then):
        the answer is written at once and the connection finishes right after, and
        :meth:`finish` arms the deadline only if something is still unsent by then. Mostly
        nothing is: no timer to arm and cancel for every connection the peer closes.
        """
        if self.state is not OPEN:
            return False
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

    def drop(self, code: int, reason: str) -> None:
        """Abort the socket now, without a closing handshake."""
        self.start(code, reason)
        abort(self._transport)

    def close_transport(self) -> None:
        """Close the socket once its buffer is flushed, within the closing's deadline.

        It stands in for the transport's own ``close``, which waits for the buffer to flush
        without a limit (see :meth:`watch_transport`).
        """
        self.start(WSCloseCode.ABNORMAL_CLOSURE, "")
        type(self._transport).close(self._transport)

    def watch_transport(self) -> None:
        """Make every close of the transport start the closing.

        ``transport.close()`` waits for the buffer to flush, without a limit, and asyncio calls
        it on the peer's end of stream without telling aiohttp. (uvloop's transports take no
        attributes: there the heartbeat notices the closing.)
        """
        # try/except, not contextlib.suppress: this runs for every connection, and the suppress
        # object with its two calls costs more than the assignment (benchmarks.bytecodes).
        try:  # noqa: SIM105
            self._transport.close = self.close_transport  # type: ignore[method-assign]
        except AttributeError:
            pass

    def finish(self) -> None:
        """Enter CLOSED and close the socket; the deadline stays armed while it still flushes."""
        self.start(WSCloseCode.ABNORMAL_CLOSURE, "")
        self.state = CLOSED
        transport = self._transport
        if not transport.is_closing():
            transport.close()
        try:  # noqa: SIM105 -- as in watch_transport
            del transport.close  # the class's own again: no cycle through the closing
        except AttributeError:
            pass
        if not transport.get_write_buffer_size():
            if self._deadline is not None:
                self._deadline.cancel()
        elif self._deadline is None:  # answering the peer's close armed none
            self._arm_deadline()

    def error(self) -> ConnectionClosed:
        """Return the exception that an operation on the closed connection raises."""
        return ConnectionClosed(self.code, self.reason)
