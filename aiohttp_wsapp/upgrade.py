"""The upgrade to a WebSocket: aiohttp's response as the connection uses it, and its socket.

:func:`new_response` makes the response with the endpoint's limits; :class:`Response` reports the
closes aiohttp starts itself; :func:`negotiated_deflater` picks the compression the 101 agreed on;
:func:`read_in_small_chunks` sizes the socket's reads.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import WSCloseCode, hdrs, web

from .closing import Closing
from .frames import Compression, MessageDeflater
from .sending import Sender
from .server import WebSocketServer
from .stats import MESSAGE_TOO_BIG, PROTOCOL_ERROR

__all__ = ["Response", "negotiated_deflater", "new_response", "read_in_small_chunks"]

_READ_SIZE: Final = 127 * 1024
"""The most one read of the socket takes (asyncio's default is 256 KiB).

asyncio reads into a new bytes object of that size. At 256 KiB that is above glibc's mmap
threshold (128 KiB), so unless the heap happens to hold a free block that large, every read
of a short message maps 256 KiB, remaps it to the few bytes read and unmaps it: three system
calls and a page fault per message, which made an echo through deflate clients 0.85x raw
aiohttp. A read under the threshold comes from the heap. It costs a connection streaming
64 KiB messages about 6 % (more reads), measured against 256 KiB reads with both servers
running at once.
"""


class Response(web.WebSocketResponse):
    """aiohttp's response, with every close that aiohttp starts itself reported to the connection.

    aiohttp closes on its own when the peer sends a bad frame or goes away, and its close waits
    for the socket's buffer to drain, without a limit. Reporting it lets the connection enter
    CLOSING (and arm its deadline) the moment it happens; the drain is skipped because the
    deadline, not the peer, decides how long closing takes.

    When the peer's message is too big, the connection answers with 1009 itself and ends its
    side of the stream, rather than let aiohttp close the socket at once: the rest of the
    message is still on its way, and a socket closed with data unread ends in a reset. The
    receive loop then waits for the peer's end (:meth:`Closing.linger`).
    """

    closing: Closing | None = None
    """The closing of the connection this response carries, while it is not finished."""
    sender: Sender | None = None
    """The writer of that connection, while it is not finished."""
    message_limit: int | None = None
    """The largest message the connection accepts, when aiohttp's own limit is looser."""

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        """Close as aiohttp does, after telling the connection that the closing started."""
        closing = self.closing
        if closing is not None:  # else the connection finished: aiohttp's write_eof lands here
            sender = self.sender
            if sender is not None and code == WSCloseCode.MESSAGE_TOO_BIG:
                # aiohttp refused a frame by its header: the rest of it is still on its way.
                sender.close(code, cause=MESSAGE_TOO_BIG)
                closing.half_close()
                return True
            # aiohttp closes with 1000 when the peer's socket ended without a close frame, and
            # with the protocol error's code when the peer broke the protocol.
            if code == WSCloseCode.OK:
                closing.start(WSCloseCode.ABNORMAL_CLOSURE, "")
            else:
                too_big = code == WSCloseCode.MESSAGE_TOO_BIG
                closing.start(code, "", cause=MESSAGE_TOO_BIG if too_big else PROTOCOL_ERROR)
        # aiohttp's close, called through the class: a super() object costs more.
        return await web.WebSocketResponse.close(self, code=code, message=message, drain=False)

    async def answer_close(self, code: int) -> None:
        """Answer the peer's close frame with ``code`` and close the socket: the handshake is
        complete, the peer sends nothing more."""
        await web.WebSocketResponse.close(self, code=code, drain=False)


def new_response(settings: WebSocketServer, request: web.Request, protocol: str | None) -> Response:
    """Return a not yet prepared response to ``request`` that speaks ``protocol``."""
    limit = settings.max_payload_size
    # aiohttp refuses a message of exactly max_msg_size; ours is the largest allowed. It also
    # holds a compressed frame to that limit before inflating it (up to that limit too), so a
    # message that compression made larger would be refused: where deflate may be negotiated,
    # aiohttp gets room for deflate's worst overhead and the connection checks the inflated size.
    deflate = False
    if settings.compression is not None:
        for offer in request.headers.getall(hdrs.SEC_WEBSOCKET_EXTENSIONS, ()):
            if "permessage-deflate" in offer:
                deflate = True
                break
    frame_limit = limit + limit // 16 + 1024 if deflate else limit + 1
    response = Response(
        protocols=(protocol,) if protocol else (),
        max_msg_size=frame_limit,
        heartbeat=None,  # the connection keeps the peer alive itself, at no cost per message
        autoping=False,  # ... and so sees the pongs
        compress=deflate,
        timeout=settings.close_timeout,
        # The receive loop answers the peer's close frame itself, so that a close the server
        # started completes in that same loop instead of aiohttp dropping the socket.
        autoclose=False,
    )
    response.message_limit = limit if deflate else None
    if protocol:
        # aiohttp reads only the first Sec-WebSocket-Protocol line; the offer may span several.
        response.headers["Sec-WebSocket-Protocol"] = protocol
    return response


def negotiated_deflater(
    ws: web.WebSocketResponse, compression: Compression | None
) -> MessageDeflater | None:
    """Return the deflater of a prepared response, or ``None`` where deflate was not agreed."""
    window_bits = ws.compress  # the negotiated server_max_window_bits, or False
    if not window_bits or compression is None:
        return None
    extensions = ws.headers.get("Sec-WebSocket-Extensions", "")
    return compression.deflater(
        int(window_bits), no_context_takeover="server_no_context_takeover" in extensions
    )


def read_in_small_chunks(transport: asyncio.Transport) -> None:
    """Make an asyncio socket transport read at most ``_READ_SIZE`` at a time.

    By an attribute of the transport, which hides asyncio's class attribute ``max_size``: it
    takes 8 to 16 bytes more per transport (CPython 3.10 to 3.13). Not by changing the
    transport's class: on CPython 3.11 and 3.12 that turns the attributes it keeps inline into
    a dict of their own (64 bytes more, slower to read, and one more object in the cycle that
    the garbage collector frees when the transport closes). Transports without ``max_size``
    (uvloop's, which read into a buffer of the loop's own) are left as they are.
    """
    if getattr(transport, "max_size", 0) > _READ_SIZE:
        transport.max_size = _READ_SIZE  # type: ignore[attr-defined]
