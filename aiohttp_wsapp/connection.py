"""``Connection``: one established WebSocket, an event emitter around aiohttp's messages.

The path of one message: aiohttp's reader → :meth:`Connection._serve`'s loop → the ``message``
handlers → :meth:`Connection.send` → a frame built by :mod:`.frames` → the socket's transport.
``send`` writes at once and returns a reusable awaitable, so a plain handler that echoes costs two
function calls and no task.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import secrets
import struct
import types
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from .errors import ConnectionClosed
from .frames import Deflater, Opcode, Payload, encode_frame, frame_header

if TYPE_CHECKING:
    from .app import WebSocketApp

__all__ = ["Connection", "Handler"]

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
_PROCESS_ID: Final = secrets.token_hex(8)
_CONNECTION_NUMBERS: Final = itertools.count()
_PACK_CLOSE_CODE = struct.Struct("!H").pack
_SENDABLE_CLOSE_CODES: Final = frozenset(WSCloseCode) - {WSCloseCode.ABNORMAL_CLOSURE}


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

    __slots__ = ("_writer",)

    def __init__(self, writer: AbstractStreamWriter) -> None:
        self._writer = writer

    def __await__(self) -> Generator[Any, None, None]:
        return self._drain().__await__()

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError:
            raise ConnectionClosed("the connection was lost while sending") from None


class _Refused:
    """What an operation on a closed connection returns: awaiting it raises ConnectionClosed."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        raise ConnectionClosed("the connection is closed")
        yield  # pragma: no cover - makes this a generator


_REFUSED: Final = _Refused()


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
    is kept: close it with :meth:`close`.
    """

    def __init__(
        self,
        app: WebSocketApp,
        request: web.Request,
        ws: web.WebSocketResponse,
        writer: AbstractStreamWriter,
    ) -> None:
        self._app = app
        self._request = request
        self._ws = ws
        transport = request.transport
        assert transport is not None, "a prepared WebSocketResponse has a transport"
        self._transport = transport
        settings = app.websocket_server
        self._send_buffer_limit = settings.send_buffer_limit
        self._sent = _Sent(writer)
        self._deflater = _negotiated_deflater(ws)
        # aiohttp checks an inflated message with a byte of slack: compressed ones are checked here.
        self._inflated_limit = None if self._deflater is None else settings.max_payload_size
        self._handlers: dict[str, tuple[_Registration, ...]] = {
            "message": (),
            "finish": (),
            "error": (),
        }
        self._groups: frozenset[str] = frozenset()
        self._id = f"{_PROCESS_ID}-{next(_CONNECTION_NUMBERS)}"  # names it across processes
        self._finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing = False
        self._finish_started = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._close_timeout = settings.close_timeout
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._late_finishers: set[asyncio.Task[None]] = set()

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
    def app(self) -> WebSocketApp:
        """The :class:`WebSocketApp` that accepted this connection."""
        return self._app

    @property
    def protocol(self) -> str | None:
        """The subprotocol sent in the 101 response, or ``None``."""
        return self._ws.headers.get("Sec-WebSocket-Protocol")

    @property
    def closed(self) -> bool:
        """``True`` once the connection is closing or closed: nothing more can be sent."""
        return self._closing or self._ws.closed or self._transport.is_closing()

    @property
    def close_code(self) -> int | None:
        """The close code (1006 when no closing handshake took place); ``None`` while open."""
        return self._close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason; ``None`` while open."""
        return self._close_reason

    @property
    def buffered_amount(self) -> int:
        """Bytes sent but not yet written to the socket."""
        return self._transport.get_write_buffer_size()

    @property
    def groups(self) -> frozenset[str]:
        """The names of the groups this connection belongs to."""
        return self._groups

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Connection {state} {self._request.remote} {self._request.path}>"

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
        if not self._finish_started:
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
        if self.closed:
            return self._refuse("ping")
        return self._write(encode_frame(Opcode.PING, bytes(data)))

    def _send_message(self, opcode: Opcode, payload: Payload) -> Awaitable[None]:
        if self.closed:
            return self._refuse("send")
        deflater = self._deflater
        if deflater is not None:
            payload = deflater.compress(payload)
        header = frame_header(opcode, len(payload), compressed=deflater is not None)
        if len(payload) <= _JOIN_LIMIT:
            return self._write(header + payload)
        # Joining a large payload to its header would copy it only to save a system call.
        self._transport.write(header)
        return self._write(payload if type(payload) is bytes else bytes(payload))

    def _write(self, frame: bytes) -> Awaitable[None]:
        self._transport.write(frame)
        if self._transport.get_write_buffer_size() > self._send_buffer_limit:
            self._drop_slow_peer()
        return self._sent

    def _send_prebuilt(self, opcode: Opcode, payload: bytes, frame: bytes) -> None:
        """Send a broadcast message whose uncompressed ``frame`` is already built."""
        if self._deflater is not None:
            self._send_message(opcode, payload)  # its own compressor: its own frame
        elif not self.closed:
            self._write(frame)

    def _refuse(self, operation: str) -> Awaitable[None]:
        logger.debug("%s on closed %r dropped", operation, self)
        return _REFUSED

    def _drop_slow_peer(self) -> None:
        # A closing handshake could not get through a full buffer: drop the socket at once.
        logger.warning("%r dropped: its peer does not read (%s)", self, _SEND_BUFFER_OVERFLOW)
        self._closing = True
        self._set_close_state(WSCloseCode.POLICY_VIOLATION, _SEND_BUFFER_OVERFLOW)
        self._transport.abort()

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
        if self.closed:
            return _DONE
        self._closing = True
        self._set_close_state(code, reason)
        loop = asyncio.get_running_loop()
        self._close_timer = loop.call_later(self._close_timeout, self._abort)
        return self._write(encode_frame(Opcode.CLOSE, _PACK_CLOSE_CODE(code) + encoded_reason))

    async def _answer_close(self, code: int, reason: str) -> None:
        """End the closing handshake on the peer's close frame."""
        self._set_close_state(code, reason)
        if self._closing:  # the peer answered ours: the handshake is complete
            self._transport.close()
            return
        self._closing = True
        echoed = code if _sendable(code) else WSCloseCode.OK
        # No drain: a peer that closed may not read any more, and nothing would end the wait.
        await self._ws.close(code=echoed, drain=False)
        if self._transport.get_write_buffer_size():
            # The socket closes once its buffer is flushed: drop it if the peer never reads it.
            loop = asyncio.get_running_loop()
            loop.call_later(self._close_timeout, self._transport.abort)

    def _abort(self) -> None:
        """Drop the socket without a closing handshake."""
        self._closing = True
        self._transport.abort()

    def _stop(self) -> None:
        """Drop the socket and cancel whatever handler the connection is still running."""
        self._abort()
        if self._task is not None:
            self._task.cancel()

    def _set_close_state(self, code: int, reason: str) -> None:
        if self._close_code is None:
            self._close_code = code
            self._close_reason = reason

    # -- groups -----------------------------------------------------------------------------

    def join(self, name: str) -> None:
        """Add this connection to the group ``name`` (for :meth:`WebSocketApp.broadcast`)."""
        if not isinstance(name, str):
            raise TypeError("a group name is a str")
        if name not in self._groups and not self._finish_started:
            self._groups |= {name}
            self._app._groups.add(name, self)

    def leave(self, name: str) -> None:
        """Remove this connection from the group ``name``; nothing happens if it is not in it."""
        if name in self._groups:
            self._groups -= {name}
            self._app._groups.discard(name, self)

    # -- serving ----------------------------------------------------------------------------

    async def _serve(self, on_establish: Handler, handshake_results: tuple[Any, ...]) -> None:
        """Run the connection: ``on_establish``, then messages until it closes, then ``finish``."""
        self._task = asyncio.current_task()
        try:
            await self._establish(on_establish, handshake_results)
            await self._receive_messages()  # after a close, until the peer answers it
        finally:
            finishers = self._finish()
            if finishers:
                # Shielded: aiohttp may cancel this handler when the peer goes away, and finish
                # handlers must still run to completion.
                task = asyncio.get_running_loop().create_task(self._run_finishers(finishers))
                await asyncio.shield(task)
            else:
                self._finished.set_result(None)

    async def _establish(self, on_establish: Handler, handshake_results: tuple[Any, ...]) -> None:
        try:
            result = on_establish(self, self._request, handshake_results)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("on_establish raised for %r", self)
            self.close(WSCloseCode.INTERNAL_ERROR)

    async def _receive_messages(self) -> None:
        ws = self._ws
        while True:
            message = await ws.receive()
            kind = message.type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                if self._closing:
                    continue  # we sent a close frame: the peer's late messages are dropped
                data = message.data
                if self._inflated_limit is not None and _exceeds(data, self._inflated_limit):
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
                    await self._report_error(exc)
                    self.close(WSCloseCode.INTERNAL_ERROR)
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

    async def _refuse_oversized(self) -> None:
        limit = self._inflated_limit
        too_big = WebSocketError(WSCloseCode.MESSAGE_TOO_BIG, f"Message size exceeds {limit}")
        self._set_close_state(WSCloseCode.MESSAGE_TOO_BIG, "")
        await self._report_error(too_big)
        self.close(WSCloseCode.MESSAGE_TOO_BIG)

    async def _receive_failed(self, exc: BaseException) -> None:
        code = getattr(exc, "code", None)
        if isinstance(code, int):  # aiohttp's WebSocketError: the peer broke the protocol
            self._set_close_state(code, "")
            await self._report_error(exc)
        else:
            logger.debug("%r lost: %r", self, exc)

    async def _report_error(self, exc: BaseException) -> None:
        handlers = self._handlers["error"]
        if not handlers:
            logger.error("error on %r", self, exc_info=exc)
            return
        try:
            await _call_each(handlers, self, exc)
        except Exception:
            logger.exception("an error handler raised for %r", self)

    def _finish(self) -> tuple[_Registration, ...]:
        """Settle the closed state and leave the endpoint; return the finish handlers to run."""
        self._finish_started = True
        self._closing = True
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._set_close_state(WSCloseCode.ABNORMAL_CLOSURE, "")
        for name in self._groups:
            self._app._groups.discard(name, self)
        self._app._forget(self)
        finishers = self._handlers["finish"]
        # The registrations refer back to this connection: dropping them breaks the cycles, so
        # that a finished connection is freed at once rather than by the garbage collector.
        self._handlers = dict.fromkeys(self._handlers, ())
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
        task = asyncio.get_running_loop().create_task(self._run_finish_handler(registration))
        self._late_finishers.add(task)
        task.add_done_callback(self._late_finishers.discard)


def _event_name(event: str) -> str:
    try:
        return _EVENT_NAMES[event]
    except (KeyError, TypeError):
        raise ValueError(f"unknown event {event!r}: use message, finish, close or error") from None


def _sendable(code: int) -> bool:
    # RFC 6455 §7.4: the registered codes but 1006 (never sent), and the private range.
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


def _negotiated_deflater(ws: web.WebSocketResponse) -> Deflater | None:
    window_bits = ws.compress
    if not window_bits:
        return None
    extensions = ws.headers.get("Sec-WebSocket-Extensions", "")
    return Deflater(
        int(window_bits), no_context_takeover="server_no_context_takeover" in extensions
    )
