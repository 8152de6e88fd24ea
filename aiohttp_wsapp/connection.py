"""``Connection``: one established WebSocket, an event emitter around aiohttp's messages.

The path of one message: aiohttp's reader → :meth:`Connection._serve`'s loop → the ``message``
handlers → :meth:`Connection.send` → a frame built by :mod:`.frames` → the socket's transport.
``send`` writes at once and returns a reusable awaitable, so a plain handler that echoes costs two
function calls and no task.

A connection's life is one state, :class:`ConnectionState`, changed in one place each way:
:meth:`Connection._start_closing` (OPEN → CLOSING) and :meth:`Connection._finish` (→ CLOSED).
Whatever starts the closing arms one deadline of ``close_timeout`` that aborts the socket,
whatever is still buffered; aiohttp's own ways into closing reach it through :class:`Response`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import itertools
import json
import logging
import secrets
import socket
import struct
import types
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Set
from typing import Any, Final, Protocol, TypeVar, overload

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from .errors import ConnectionClosed
from .frames import (
    BroadcastFrames,
    Compression,
    MessageDeflater,
    Opcode,
    Payload,
    encode_frame,
    frame_header,
)
from .groups import Groups
from .server import WebSocketServer

__all__ = ["Connection", "ConnectionState", "Endpoint", "Handler", "Response", "new_response"]

logger = logging.getLogger("aiohttp_wsapp")

Handler = Callable[..., Any]
"""An event handler: a plain function or a coroutine function."""

H = TypeVar("H", bound=Handler)

_EVENT_NAMES: Final = {
    "message": "message",
    "finish": "finish",
    "close": "finish",
    "error": "error",
}
_SEND_BUFFER_OVERFLOW = "send buffer overflow"
_NO_STATUS_RECEIVED: Final = 1005
_JOIN_LIMIT: Final = 16 * 1024
"""Payloads up to this size go out joined to their header in one write."""
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
_SMALL_READS: dict[type[asyncio.Transport], type[asyncio.Transport]] = {}
"""Each transport class that reads more than ``_READ_SIZE``, with its subclass that does not."""
_PROCESS_ID: Final = secrets.token_hex(8)
_CONNECTION_NUMBERS: Final = itertools.count()
_PACK_CLOSE_CODE = struct.Struct("!H").pack
_SENDABLE_CLOSE_CODES: Final = frozenset(WSCloseCode) - {WSCloseCode.ABNORMAL_CLOSURE}
_HEARTBEAT_PING: Final = encode_frame(Opcode.PING, b"")
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


class Endpoint(Protocol):
    """The endpoint that accepted a connection, as its handlers reach it: :attr:`Connection.app`.

    :class:`WebSocketApp` is the one implementation; this protocol names what a connection's
    handlers may use of it, so that a connection does not depend on the endpoint's module.
    """

    @property
    def websocket_server(self) -> WebSocketServer:
        """The handshake and protocol settings."""

    @property
    def connections(self) -> Set[Connection]:
        """The open connections of this process."""

    @property
    def groups(self) -> Mapping[str, frozenset[Connection]]:
        """Group name → this process's open members."""

    async def count(self, group: str | None = None) -> int:
        """Open connections (of ``group``) across every process sharing the broker."""

    async def broadcast(
        self,
        data: str | bytes,
        *,
        group: str | None = None,
        exclude: Connection | Iterable[Connection] | None = None,
    ) -> None:
        """Send ``data`` to every open connection, or to the members of ``group``."""


class Response(web.WebSocketResponse):
    """aiohttp's response, with every close that aiohttp starts itself reported to the connection.

    aiohttp closes on its own when the peer sends a bad frame or goes away, and its close waits
    for the socket's buffer to drain, without a limit. Reporting it lets the connection enter
    CLOSING (and arm its deadline) the moment it happens; the drain is skipped because the
    deadline, not the peer, decides how long closing takes.
    """

    connection: Connection | None = None
    message_limit: int | None = None
    """The largest message the connection accepts, when aiohttp's own limit is looser."""

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        """Close as aiohttp does, after telling the connection that the closing started."""
        if self.connection is not None:
            # aiohttp closes with 1000 when the peer's socket ended without a close frame, and
            # with the protocol error's code when the peer broke the protocol.
            abnormal = code == WSCloseCode.OK
            self.connection._start_closing(WSCloseCode.ABNORMAL_CLOSURE if abnormal else code, "")
        return await super().close(code=code, message=message, drain=False)


def new_response(settings: WebSocketServer, request: web.Request, protocol: str | None) -> Response:
    """Return a not yet prepared response to ``request`` that speaks ``protocol``."""
    limit = settings.max_payload_size
    # aiohttp refuses a message of exactly max_msg_size; ours is the largest allowed. It also
    # holds a compressed frame to that limit before inflating it (up to that limit too), so a
    # message that compression made larger would be refused: where deflate may be negotiated,
    # aiohttp gets room for deflate's worst overhead and the connection checks the inflated size.
    deflate = settings.compression is not None and _offers_deflate(request)
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
    if deflate:
        response.message_limit = limit
    if protocol:
        # aiohttp reads only the first Sec-WebSocket-Protocol line; the offer may span several.
        response.headers["Sec-WebSocket-Protocol"] = protocol
    return response


def _offers_deflate(request: web.Request) -> bool:
    offers = request.headers.getall("Sec-WebSocket-Extensions", ())
    return any("permessage-deflate" in offer for offer in offers)


def _wants_unregister(handler: Handler) -> bool:
    """Tell whether a ``message`` handler takes a third positional ``unregister`` argument."""
    function = getattr(handler, "__func__", handler)
    if type(function) is not types.FunctionType or hasattr(function, "__wrapped__"):
        return _signature_wants_unregister(handler)
    # Registering runs once per connection: reading the code object costs far less than
    # inspect.signature, and says the same for plain functions and bound methods.
    code = function.__code__
    if code.co_flags & inspect.CO_VARARGS:
        return True
    bound = function is not handler
    required = code.co_argcount - len(function.__defaults__ or ()) - bound
    return required >= 3


def _signature_wants_unregister(handler: Handler) -> bool:
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return False
    required = 0
    for parameter in parameters:
        if parameter.kind is parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD) and (
            parameter.default is parameter.empty
        ):
            required += 1
    return required >= 3


class _Registration:
    """One handler registered for one event; calling it unregisters the handler."""

    __slots__ = ("connection", "event", "handler", "wants_unregister")

    def __init__(self, connection: Connection, event: str, handler: Handler) -> None:
        self.connection = connection
        self.event = event
        self.handler = handler
        self.wants_unregister = event == "message" and _wants_unregister(handler)

    def __call__(self) -> None:
        self.connection._remove(self)


class _Sent:
    """What ``send`` returns once the frame is written: awaiting it waits for flow control."""

    __slots__ = ("_connection", "_writer")

    def __init__(self, connection: Connection, writer: AbstractStreamWriter) -> None:
        self._connection = connection
        self._writer = writer

    def __await__(self) -> Generator[Any, None, None]:
        return self._drain().__await__()

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError:
            raise self._connection._closed_error() from None


class _RaiseClosed:
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


_DONE: Final = _Done()


async def _call_each(registrations: Iterable[_Registration], *args: Any) -> None:
    """Call the handlers in order, awaiting each coroutine before the next."""
    for registration in registrations:
        result = registration.handler(*args)
        if inspect.isawaitable(result):
            await result


class Connection:
    """One established WebSocket connection: an event emitter (the seed's ``Connection``).

    Handlers are registered with :meth:`on` for three events: ``message`` (``handler(conn,
    message)``, with ``message`` a ``str`` for a text frame and ``bytes`` for a binary one),
    ``finish`` (alias ``close``; ``handler(conn)``, exactly once after the connection closed for
    any reason) and ``error`` (``handler(conn, exc)`` when a ``message`` handler raised or the
    peer broke the protocol; the connection is then closed).

    The connection stays open while its request handler runs, whether or not a reference to it
    is kept: close it with :meth:`close`. Applications may keep their own attributes on it
    (``conn.user = ...``).

    Connections are made by the endpoint: it passes ``groups`` (the endpoint's group registry)
    and ``forget`` (called once, when the connection finishes).
    """

    def __init__(
        self,
        app: Endpoint,
        request: web.Request,
        ws: Response,
        writer: AbstractStreamWriter,
        *,
        groups: Groups[Connection],
        forget: Callable[[Connection], None],
    ) -> None:
        self._app = app
        self._request = request
        self._ws = ws
        ws.connection = self
        transport = request.transport
        assert transport is not None, "a prepared WebSocketResponse has a transport"
        self._transport = transport
        # transport.close() waits for the buffer to flush, without a limit, and asyncio calls it
        # on the peer's end of stream without telling aiohttp: every call of it starts closing.
        # (uvloop's transports take no attributes: there the heartbeat notices the closing.)
        with contextlib.suppress(AttributeError):
            transport.close = self._close_transport  # type: ignore[method-assign]
        _read_in_small_chunks(transport)
        self._loop = asyncio.get_running_loop()
        settings = app.websocket_server
        self._send_buffer_limit = settings.send_buffer_limit
        self._close_timeout = settings.close_timeout
        self._heartbeat = settings.heartbeat
        self._registry = groups
        self._forget = forget
        self._sent = _Sent(self, writer)
        self._deflater = _negotiated_deflater(ws, settings.compression)
        self._message_limit = ws.message_limit
        self._handlers: dict[str, tuple[_Registration, ...]] = {
            "message": (),
            "finish": (),
            "error": (),
        }
        self._groups: frozenset[str] = frozenset()
        self._id = f"{_PROCESS_ID}-{next(_CONNECTION_NUMBERS)}"  # names it across processes
        self._finished: asyncio.Future[None] = self._loop.create_future()
        self._state = OPEN
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._late_finishers: set[asyncio.Task[None]] = set()
        # The keepalive: ``_heard`` is marked per message, and read once per heartbeat round.
        self._heard = False
        self._ping_sent_at: float | None = None
        self._latency: float | None = None
        self._keepalive: asyncio.TimerHandle | None = None

    # -- state ------------------------------------------------------------------------------

    @property
    def request(self) -> web.Request:
        """The aiohttp request that opened this connection."""
        return self._request

    @property
    def ws(self) -> web.WebSocketResponse:
        """The underlying :class:`aiohttp.web.WebSocketResponse` (the seed's ``connection``)."""
        return self._ws

    @property
    def app(self) -> Endpoint:
        """The :class:`WebSocketApp` that accepted this connection."""
        return self._app

    @property
    def protocol(self) -> str | None:
        """The subprotocol sent in the 101 response, or ``None``."""
        return self._ws.headers.get("Sec-WebSocket-Protocol")

    @property
    def state(self) -> ConnectionState:
        """``OPEN``, ``CLOSING`` (the closing started) or ``CLOSED`` (finished)."""
        return self._state

    @property
    def closed(self) -> bool:
        """``True`` once the connection is closing or closed: nothing more can be sent."""
        return self._state is not OPEN

    @property
    def close_code(self) -> int | None:
        """The close code (1006 when no closing handshake took place); ``None`` while open."""
        return self._close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason; ``None`` while open."""
        return self._close_reason

    @property
    def latency(self) -> float | None:
        """Seconds: the round trip of the last answered heartbeat ping; ``None`` before one."""
        return self._latency

    @property
    def buffered_amount(self) -> int:
        """Bytes sent but not yet written to the socket."""
        return self._transport.get_write_buffer_size()

    @property
    def groups(self) -> frozenset[str]:
        """The names of the groups this connection belongs to; empty once it is closed."""
        return self._groups

    def __repr__(self) -> str:
        return f"<Connection {self._state.value} {self._request.remote} {self._request.path}>"

    # -- events -----------------------------------------------------------------------------

    @overload
    def on(self, event: str, handler: Handler, /) -> Callable[[], None]: ...
    @overload
    def on(self, event: str, /) -> Callable[[H], H]: ...
    @overload
    def on(self, /, **handlers: Handler) -> list[Callable[[], None]]: ...

    def on(
        self, event: str | None = None, handler: Handler | None = None, /, **handlers: Handler
    ) -> Callable[[], None] | Callable[[H], H] | list[Callable[[], None]]:
        """Register event handlers.

        ``on(event, handler)`` registers one handler and returns ``unregister()``, which may be
        called any number of times. ``on(message=h1, finish=h2)`` registers several and returns
        their unregisters in argument order. ``on(event)`` is a decorator that registers the
        function and returns it unchanged.

        A ``message`` handler whose signature has a third positional parameter without a default
        (or ``*args``) is called as ``handler(conn, message, unregister)``.

        :raises ValueError: the event is not ``message``, ``finish``, ``close`` or ``error``.
        :raises TypeError: a handler is not callable, or the arguments mix the forms.
        """
        if event is None:
            if handler is not None:
                raise TypeError("on() takes an event with a handler, or keyword handlers")
            return [self._add(name, each) for name, each in handlers.items()]
        if handlers:
            raise TypeError("on() takes an event with a handler, or keyword handlers")
        if handler is None:

            def decorator(function: H) -> H:
                self._add(event, function)
                return function

            _event_name(event)
            return decorator
        return self._add(event, handler)

    def off(self, event: str, handler: Handler) -> None:
        """Remove every registration of ``handler`` for ``event``."""
        name = _event_name(event)
        self._handlers[name] = tuple(r for r in self._handlers[name] if r.handler is not handler)

    def _add(self, event: str, handler: Handler) -> Callable[[], None]:
        name = _event_name(event)
        if not callable(handler):
            raise TypeError(f"a {event} handler must be callable, not {type(handler).__name__}")
        registration = _Registration(self, name, handler)
        if self._state is not CLOSED:
            self._handlers[name] = (*self._handlers[name], registration)
        elif name == "finish":
            self._run_late_finish(registration)
        # else: a finished connection has no more messages or errors to dispatch.
        return registration

    def _remove(self, registration: _Registration) -> None:
        handlers = self._handlers[registration.event]
        if registration in handlers:
            self._handlers[registration.event] = tuple(r for r in handlers if r is not registration)

    # -- sending ----------------------------------------------------------------------------

    def send(self, data: str | bytes | bytearray | memoryview) -> Awaitable[None]:
        """Send a text frame for ``str``, a binary frame for bytes-like ``data``.

        The frame is written at once. The returned awaitable need not be awaited; awaiting it
        waits until the socket's write buffer has drained enough (flow control).

        :raises TypeError: ``data`` is neither ``str`` nor bytes-like.
        :raises ConnectionClosed: when awaited, if the connection is closed.
        """
        if isinstance(data, str):
            return self._send_message(Opcode.TEXT, data.encode())
        if isinstance(data, bytes | bytearray | memoryview):
            return self._send_message(Opcode.BINARY, data)
        raise TypeError(f"send() takes str or bytes-like data, not {type(data).__name__}")

    def send_json(
        self, obj: Any, *, dumps: Callable[[Any], str | bytes] = json.dumps
    ) -> Awaitable[None]:
        """Send ``dumps(obj)`` as a text frame (``dumps`` may return ``str`` or UTF-8 bytes).

        Like :meth:`send`, it need not be awaited; awaited, it waits for flow control.

        :raises ConnectionClosed: when awaited, if the connection is closed.
        """
        text = dumps(obj)
        return self._send_message(Opcode.TEXT, text.encode() if isinstance(text, str) else text)

    def ping(self, data: bytes = b"") -> Awaitable[None]:
        """Send a ping carrying ``data``; the peer's pings are answered without help.

        Like :meth:`send`, it need not be awaited; awaited, it waits for flow control.

        :raises ValueError: ``data`` is longer than 125 bytes.
        :raises ConnectionClosed: when awaited, if the connection is closed.
        """
        if len(data) > 125:
            raise ValueError("a ping carries at most 125 bytes")
        if self._cannot_send():
            return self._dropped("ping")
        return self._write(encode_frame(Opcode.PING, bytes(data)))

    def _cannot_send(self) -> bool:
        # The transport may be gone before the receive loop has seen it.
        return self._state is not OPEN or self._transport.is_closing()

    def _send_message(self, opcode: Opcode, payload: Payload) -> Awaitable[None]:
        if self._cannot_send():
            return self._dropped("send")
        if self._deflater is not None:
            return self._write(self._deflater.frame(opcode, payload))
        header = frame_header(opcode, len(payload))
        if len(payload) <= _JOIN_LIMIT:
            return self._write(header + payload)
        # Joining a large payload to its header would copy it only to save a system call.
        self._transport.write(header)
        return self._write(payload if type(payload) is bytes else bytes(payload))

    def _write(self, frame: bytes) -> Awaitable[None]:
        self._transport.write(frame)
        if self._transport.get_write_buffer_size() > self._send_buffer_limit:
            # A closing handshake could not get through a full buffer: drop the socket at once.
            logger.warning("%r dropped: its peer does not read (%s)", self, _SEND_BUFFER_OVERFLOW)
            self._drop(WSCloseCode.POLICY_VIOLATION, _SEND_BUFFER_OVERFLOW)
        return self._sent

    def _send_broadcast(self, frames: BroadcastFrames) -> None:
        """Send one broadcast message, in the frame its peers of a kind share."""
        if not self._cannot_send():
            self._write(frames.frame(self._deflater))

    def _dropped(self, operation: str) -> Awaitable[None]:
        logger.debug("%s on closed %r dropped", operation, self)
        return _RaiseClosed(self._closed_error())

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self._close_code, self._close_reason)

    # -- closing ----------------------------------------------------------------------------

    def close(self, code: int = WSCloseCode.OK, reason: str = "") -> Awaitable[None]:
        """Start the closing handshake with ``code`` and ``reason``; idempotent.

        The close frame is written at once, after everything sent before it; no message is
        dispatched after it. The connection finishes when the peer answers, or after
        ``close_timeout`` when it does not. Awaiting waits for flow control, like :meth:`send`.
        Closing a connection that is already closing or closed does nothing.

        :raises ValueError: ``code`` may not be sent (RFC 6455 §7.4), or ``reason`` is longer
            than 123 bytes of UTF-8.
        """
        _check_close_code(code)
        encoded_reason = reason.encode()
        if len(encoded_reason) > 123:
            raise ValueError("a close reason is at most 123 bytes of UTF-8")
        if not self._start_closing(code, reason):
            return _DONE
        if self._transport.is_closing():
            return _DONE  # the socket went first; the receive loop will see it
        return self._write(encode_frame(Opcode.CLOSE, _PACK_CLOSE_CODE(code) + encoded_reason))

    def _start_closing(self, code: int, reason: str) -> bool:
        """Enter CLOSING with ``code`` and ``reason``; tell whether it was open until now.

        The one way out of OPEN: whatever closes the connection comes through here, and arms the
        deadline after which the socket is aborted, however much it still has to send.
        """
        if self._state is not OPEN:
            return False
        self._state = CLOSING
        # A plain int: Python 3.10 prints a WSCloseCode (an IntEnum) by its name, 3.11+ by number.
        self._close_code = int(code)
        self._close_reason = reason
        self._stop_keepalive()
        self._deadline = self._loop.call_later(self._close_timeout, _abort, self._transport)
        return True

    def _close_transport(self) -> None:
        """Close the socket once its buffer is flushed, within the closing's deadline."""
        self._start_closing(WSCloseCode.ABNORMAL_CLOSURE, "")
        type(self._transport).close(self._transport)

    def _drop(self, code: int, reason: str) -> None:
        """Abort the socket now, without a closing handshake."""
        self._start_closing(code, reason)
        _abort(self._transport)

    async def _answer_close(self, code: int, reason: str) -> None:
        """End the closing handshake on the peer's close frame."""
        if self._state is not OPEN:  # the peer answered ours: the handshake is complete
            self._transport.close()
            return
        if code == _NO_STATUS_RECEIVED or _sendable(code):
            self._start_closing(code, reason)
            echoed = WSCloseCode.OK if code == _NO_STATUS_RECEIVED else code
            await self._ws.close(code=echoed, drain=False)
            return
        # RFC 6455 §7.4: a code that may not be sent is a protocol error, answered with 1002.
        self._start_closing(WSCloseCode.PROTOCOL_ERROR, "")
        await self._peer_failed(
            WebSocketError(WSCloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
        )
        await self._ws.close(code=WSCloseCode.PROTOCOL_ERROR, drain=False)

    def _stop(self) -> None:
        """Drop the socket and cancel whatever handler the connection is still running."""
        self._drop(WSCloseCode.ABNORMAL_CLOSURE, "")
        if self._task is not None:
            self._task.cancel()

    # -- keepalive --------------------------------------------------------------------------

    def _start_keepalive(self) -> None:
        if self._heartbeat is not None and self._state is OPEN:
            self._keepalive = self._loop.call_later(self._heartbeat, self._keepalive_round)

    def _keepalive_round(self) -> None:
        """Ping a peer not heard from since the last round; drop it if no pong follows."""
        if self._heard:
            self._heard = False
            self._start_keepalive()
            return
        if self._cannot_send():  # the socket is going: bound its flush
            self._start_closing(WSCloseCode.ABNORMAL_CLOSURE, "")
            return
        assert self._heartbeat is not None
        self._ping_sent_at = self._loop.time()
        self._keepalive = self._loop.call_later(self._heartbeat / 2, self._pong_missed)
        self._write(_HEARTBEAT_PING)

    def _pong_missed(self) -> None:
        if self._heard:  # a whole message came in since: the pong is behind it
            self._ping_sent_at = None
            self._keepalive_round()
            return
        logger.info("%r dropped: no pong to the heartbeat's ping", self)
        self._drop(WSCloseCode.ABNORMAL_CLOSURE, "")

    def _pong_received(self) -> None:
        sent_at = self._ping_sent_at
        if sent_at is None:
            self._heard = True  # unsolicited, or the answer to an application's ping
            return
        self._latency = self._loop.time() - sent_at
        self._ping_sent_at = None
        self._heard = False
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._start_keepalive()

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    # -- groups -----------------------------------------------------------------------------

    def join(self, name: str) -> None:
        """Add this connection to the group ``name`` (for :meth:`WebSocketApp.broadcast`).

        A closed connection joins nothing.
        """
        if not isinstance(name, str):
            raise TypeError("a group name is a str")
        if name not in self._groups and self._state is not CLOSED:
            self._groups |= {name}
            self._registry.add(name, self)

    def leave(self, name: str) -> None:
        """Remove this connection from the group ``name``; nothing happens if it is not in it."""
        if name in self._groups:
            self._groups -= {name}
            self._registry.discard(name, self)

    # -- serving ----------------------------------------------------------------------------

    async def _serve(self, on_establish: Handler, handshake_results: tuple[Any, ...]) -> None:
        """Run the connection: ``on_establish``, then messages until it closes, then ``finish``."""
        self._task = asyncio.current_task()
        self._start_keepalive()
        try:
            await self._establish(on_establish, handshake_results)
            await self._receive_messages()  # after a close, until the peer answers it
        finally:
            finishers = self._finish()
            if finishers:
                # Shielded: aiohttp may cancel this handler when the peer goes away, and finish
                # handlers must still run to completion.
                task = self._loop.create_task(self._run_finishers(finishers))
                await asyncio.shield(task)
            else:
                self._finished.set_result(None)

    async def _establish(self, on_establish: Handler, handshake_results: tuple[Any, ...]) -> None:
        try:
            result = on_establish(self, self._request, handshake_results)
            if result is not None and inspect.isawaitable(result):
                await result
        except ConnectionClosed:
            logger.debug("on_establish of %r stopped: the connection closed", self)
        except Exception:
            logger.exception("on_establish raised for %r", self)
            self.close(WSCloseCode.INTERNAL_ERROR)

    async def _receive_messages(self) -> None:
        ws = self._ws
        while True:
            message = await ws.receive()
            kind = message.type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                self._heard = True
                if self._state is not OPEN:
                    continue  # we sent a close frame: the peer's late messages are dropped
                data = message.data
                if self._message_limit is not None and _exceeds(data, self._message_limit):
                    await self._refuse_oversized()
                    continue
                try:
                    for registration in self._handlers["message"]:
                        handler = registration.handler
                        if registration.wants_unregister:
                            result = handler(self, data, registration)
                        else:
                            result = handler(self, data)
                        if result is not None and inspect.isawaitable(result):
                            await result
                except Exception as exc:
                    await self._handler_failed(exc)
            elif kind is WSMsgType.PING:
                if not self._cannot_send():
                    self._write(encode_frame(Opcode.PONG, message.data))
            elif kind is WSMsgType.PONG:
                self._pong_received()
            elif kind is WSMsgType.CLOSE:
                # aiohttp reports a close frame without a status code as 0.
                code = message.data or _NO_STATUS_RECEIVED
                await self._answer_close(code, message.extra or "")
                return
            elif kind is WSMsgType.ERROR:
                await self._receive_failed(message.data)
                return
            else:  # CLOSED: the socket is gone
                return

    async def _handler_failed(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionClosed) and self._state is not OPEN:
            logger.debug("a message handler of %r stopped: the connection closed", self)
            return
        handlers = self._handlers["error"]
        if not handlers:
            logger.error("a message handler raised for %r", self, exc_info=exc)
        else:
            await self._report(handlers, exc)
        self.close(WSCloseCode.INTERNAL_ERROR)

    async def _refuse_oversized(self) -> None:
        limit = self._message_limit
        self.close(WSCloseCode.MESSAGE_TOO_BIG)
        await self._peer_failed(
            WebSocketError(WSCloseCode.MESSAGE_TOO_BIG, f"Message size exceeds {limit}")
        )

    async def _receive_failed(self, exc: BaseException) -> None:
        code = getattr(exc, "code", None)
        if isinstance(code, int):  # aiohttp's WebSocketError: the peer broke the protocol
            await self._peer_failed(exc)
        else:
            logger.debug("%r lost: %r", self, exc)

    async def _peer_failed(self, exc: BaseException) -> None:
        """Report a protocol error of the peer: its ``error`` handlers, or one WARNING line."""
        handlers = self._handlers["error"]
        if not handlers:
            logger.warning("%r closed with %s: %s", self, self._close_code, exc)
        else:
            await self._report(handlers, exc)

    async def _report(self, handlers: tuple[_Registration, ...], exc: BaseException) -> None:
        try:
            await _call_each(handlers, self, exc)
        except Exception:
            logger.exception("an error handler raised for %r", self)

    def _finish(self) -> tuple[_Registration, ...]:
        """Enter CLOSED, leave the endpoint and release everything; return the finish handlers.

        The deadline stays armed while the socket still has bytes to flush.
        """
        self._start_closing(WSCloseCode.ABNORMAL_CLOSURE, "")
        self._state = CLOSED
        transport = self._transport
        if not transport.is_closing():
            transport.close()
        with contextlib.suppress(AttributeError):
            del transport.close  # the class's own again: no cycle through the connection
        if self._deadline is not None and not transport.get_write_buffer_size():
            self._deadline.cancel()
        for name in self._groups:
            self._registry.discard(name, self)
        self._groups = frozenset()
        self._forget(self)
        finishers = self._handlers["finish"]
        # The registrations refer back to this connection: dropping them breaks the cycles, so
        # that a finished connection is freed at once rather than by the garbage collector.
        self._handlers = dict.fromkeys(self._handlers, ())
        self._ws.connection = None
        return finishers

    async def _run_finishers(self, finishers: tuple[_Registration, ...]) -> None:
        try:
            for registration in finishers:
                await self._run_finish_handler(registration)
        finally:
            self._finished.set_result(None)

    async def _run_finish_handler(self, registration: _Registration) -> None:
        try:
            await _call_each((registration,), self)
        except Exception:
            logger.exception("a finish handler raised for %r", self)

    def _run_late_finish(self, registration: _Registration) -> None:
        task = self._loop.create_task(self._run_finish_handler(registration))
        self._late_finishers.add(task)
        task.add_done_callback(self._late_finishers.discard)


def _read_in_small_chunks(transport: asyncio.Transport) -> None:
    """Make an asyncio socket transport read at most ``_READ_SIZE`` at a time.

    By its class, not an attribute: one more attribute grows a transport's ``__dict__`` by
    about 0.8 KiB, 5 % of an idle connection. Transports without ``max_size`` (uvloop's, which
    read into a buffer of the loop's own) are left as they are.
    """
    cls = type(transport)
    if getattr(cls, "max_size", 0) <= _READ_SIZE:
        return
    small = _SMALL_READS.get(cls)
    if small is None:
        small = _SMALL_READS[cls] = type(cls.__name__, (cls,), {"max_size": _READ_SIZE})
    transport.__class__ = small


def _abort(transport: asyncio.Transport) -> None:
    """Drop the socket at once, and what the kernel still holds for it: a reset, not a FIN.

    A plain close leaves the kernel retrying the unsent bytes to a peer that does not read them.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.fileno() != -1:  # -1: closed already
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


def _event_name(event: str) -> str:
    try:
        return _EVENT_NAMES[event]
    except (KeyError, TypeError):
        raise ValueError(f"unknown event {event!r}: use message, finish, close or error") from None


def _sendable(code: int) -> bool:
    # RFC 6455 §7.4: the registered codes but 1006 (never sent), and the private range. The
    # same codes are the ones a peer may send: any other is a protocol error.
    return code in _SENDABLE_CLOSE_CODES or 3000 <= code <= 4999


def _check_close_code(code: int) -> None:
    if not _sendable(code):
        raise ValueError(f"{code} is not a close code an endpoint may send")


def _exceeds(data: str | bytes, limit: int) -> bool:
    """Tell whether a message took more than ``limit`` bytes on the wire (once inflated)."""
    if isinstance(data, bytes):
        return len(data) > limit
    # A character takes one to four bytes of UTF-8: encode only when the count leaves it open.
    return len(data) > limit or (len(data) * 4 > limit and len(data.encode()) > limit)


def _negotiated_deflater(
    ws: web.WebSocketResponse, compression: Compression | None
) -> MessageDeflater | None:
    window_bits = ws.compress  # the negotiated server_max_window_bits, or False
    if not window_bits or compression is None:
        return None
    extensions = ws.headers.get("Sec-WebSocket-Extensions", "")
    return compression.deflater(
        int(window_bits), no_context_takeover="server_no_context_takeover" in extensions
    )
