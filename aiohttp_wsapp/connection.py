"""``Connection``: one established WebSocket, an event emitter around aiohttp's messages.

The path of one message: aiohttp's reader → :meth:`Connection.serve`'s receive loop → the
``message`` handlers (:mod:`.events`) → :meth:`Connection.send` → a frame built by :mod:`.frames`
→ the socket's transport (:mod:`.sending`). ``send`` writes at once and returns a reusable
awaitable, so a plain handler that echoes costs two function calls and no task.

The connection's other jobs live beside it: its state and the deadline of its closing in
:mod:`.closing`, the heartbeat in :mod:`.keepalive`, its handlers in :mod:`.events`, the
endpoint's side (connections, groups, broadcast) in :mod:`.hub`. aiohttp's own ways into closing
reach it through :class:`~.upgrade.Response`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from itertools import count
from typing import Any, Final, TypeAlias, TypeVar, overload

from aiohttp import WSCloseCode, web
from aiohttp.abc import AbstractStreamWriter

from .closing import (
    CLOSED,
    OPEN,
    Closing,
    ConnectionState,
)
from .events import Emitter, Events, Handler, Registration
from .frames import BroadcastFrames, Opcode
from .groups import Groups
from .history import Position, Recovery
from .hub import Hub
from .keepalive import Heartbeat
from .limits import Limits
from .receiving import Receiver
from .recovery import GroupHistories, check_since
from .sending import DONE, Sender
from .stats import Counters
from .tasks import OwnedTasks
from .upgrade import Response, negotiated_deflater, new_response, read_in_small_chunks

__all__ = ["Connection", "ConnectionState", "Endpoint", "Handler", "Response", "new_response"]

logger = logging.getLogger("aiohttp_wsapp")

T = TypeVar("T")

Endpoint: TypeAlias = Hub["Connection"]
"""The endpoint that accepted a connection, as its handlers reach it: a :class:`WebSocketApp`."""

_NO_GROUPS: Final[frozenset[str]] = frozenset()  # one for all: frozenset() makes a new one
_PROCESS_ID: Final = secrets.token_hex(8)
_CONNECTION_NUMBERS: Final = count()
# What send passes for each message. Read once here: an enum member read from its class costs
# about a thousand instructions on CPython 3.11, a module constant a twentieth of that.
_TEXT: Final = Opcode.TEXT
_BINARY: Final = Opcode.BINARY


class Connection(Emitter):
    """One established WebSocket connection: an event emitter (the seed's ``Connection``).

    Handlers are registered with :meth:`on` for three events: ``message`` (``handler(conn,
    message)``, with ``message`` a ``str`` for a text frame and ``bytes`` for a binary one),
    ``finish`` (alias ``close``; ``handler(conn)``, exactly once after the connection closed for
    any reason) and ``error`` (``handler(conn, exc)`` when a ``message`` handler raised or the
    peer broke the protocol; the connection is then closed).

    The connection stays open while its request handler runs, whether or not a reference to it
    is kept: close it with :meth:`close`. Applications may keep their own attributes on it
    (``conn.user = ...``).

    Connections are made by the endpoint, with the request's ``transport``, once the 101 is
    sent (``writer``). The endpoint passes ``groups`` (the endpoint's group registry),
    ``forget`` (called once, when the connection finishes), ``counters`` (where what happens
    to the connection is counted, for ``stats()``) and ``heartbeat`` (the endpoint's rounds,
    ``None`` without a heartbeat).
    """

    def __init__(
        self,
        app: Endpoint,
        request: web.Request,
        ws: Response,
        writer: AbstractStreamWriter,
        transport: asyncio.Transport,
        groups: Groups[Connection],
        forget: Callable[[Connection], None],
        counters: Counters,
        heartbeat: Heartbeat | None,
        histories: GroupHistories[Connection] | None = None,
    ) -> None:
        self._app = app
        self._histories = histories
        self._request = request
        self._ws = ws
        self._transport = transport
        settings = app.websocket_server
        self._closing = closing = Closing(transport, settings.close_timeout, counters)
        ws.closing = closing
        closing.watch_transport()
        read_in_small_chunks(transport)
        deflater = negotiated_deflater(ws, settings.compression) if ws.compress else None
        owner = weakref.ref(self)  # weakly: see Events; one reference for the parts
        # Positional arguments: a class called with keywords gets them in a new dict.
        self._sender = ws.sender = sender = Sender(
            transport, writer, closing, settings.send_buffer_limit, deflater, owner, counters
        )
        self._events = events = Events(owner)
        self._limits = limits = Limits.of(settings, closing, sender)  # counted from now on
        self._receiver = Receiver(ws, closing, sender, heartbeat, events, limits, counters)
        self._registry = groups
        self._forget = forget
        self._groups: frozenset[str] = _NO_GROUPS
        # Made when first needed: most connections never need them.
        self._id: str | None = None
        self._tasks: OwnedTasks | None = None

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
        return self._closing.state

    @property
    def closed(self) -> bool:
        """``True`` once the connection is closing or closed: nothing more can be sent."""
        return self._closing.state is not OPEN

    @property
    def close_code(self) -> int | None:
        """The close code (1006 when no closing handshake took place); ``None`` while open."""
        return self._closing.code

    @property
    def close_reason(self) -> str | None:
        """The close reason; ``None`` while open."""
        return self._closing.reason

    @property
    def latency(self) -> float | None:
        """Seconds: the round trip of the last answered heartbeat ping; ``None`` before one."""
        return self._receiver.latency

    @property
    def buffered_amount(self) -> int:
        """Bytes sent but not yet written to the socket."""
        return self._transport.get_write_buffer_size()

    @property
    def groups(self) -> frozenset[str]:
        """The names of the groups this connection belongs to; empty once it is closed."""
        return self._groups

    def __repr__(self) -> str:
        return (
            f"<Connection {self._closing.state.value} {self._request.remote} {self._request.path}>"
        )

    # -- sending ----------------------------------------------------------------------------

    def send(self, data: str | bytes | bytearray | memoryview) -> Awaitable[None]:
        """Send a text frame for ``str``, a binary frame for bytes-like ``data``.

        The frame is written at once. The returned awaitable need not be awaited; awaiting it
        waits until the socket's write buffer has drained enough (flow control).

        :raises TypeError: ``data`` is neither ``str`` nor bytes-like.
        :raises ConnectionClosed: when awaited, if the connection is closed.
        """
        if isinstance(data, str):
            return self._sender.message(_TEXT, data.encode())
        if isinstance(data, bytes | bytearray | memoryview):
            return self._sender.message(_BINARY, data)
        raise TypeError(f"send() takes str or bytes-like data, not {type(data).__name__}")

    def send_json(
        self, obj: Any, *, dumps: Callable[[Any], str | bytes] = json.dumps
    ) -> Awaitable[None]:
        """Send ``dumps(obj)`` as a text frame (``dumps`` may return ``str`` or UTF-8 bytes).

        Like :meth:`send`, it need not be awaited; awaited, it waits for flow control.

        :raises ConnectionClosed: when awaited, if the connection is closed.
        """
        text = dumps(obj)
        payload = text.encode() if isinstance(text, str) else text
        return self._sender.message(_TEXT, payload)

    def ping(self, data: bytes = b"") -> Awaitable[None]:
        """Send a ping carrying ``data``; the peer's pings are answered without help.

        Like :meth:`send`, it need not be awaited; awaited, it waits for flow control.

        :raises ValueError: ``data`` is longer than 125 bytes.
        :raises ConnectionClosed: when awaited, if the connection is closed.
        """
        return self._sender.ping(data)

    def send_broadcast(self, frames: BroadcastFrames) -> bool:
        """For the endpoint's broadcasts, not for applications: see :meth:`Sender.broadcast`."""
        return self._sender.broadcast(frames)

    def send_replay(self, messages: Sequence[BroadcastFrames]) -> None:
        """For the history's replay, not for applications: see :meth:`Sender.replay`."""
        self._sender.replay(messages)

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
        return self._sender.close(code, reason)

    # -- tasks ------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as a task that belongs to this connection; return the task.

        When the connection finishes, the task is cancelled and awaited before the ``finish``
        handlers run, so that none of them sees it still running. If the task raises, the
        ``error`` handlers get the exception (without one, it is logged at ERROR) and the
        connection is closed with 1011, as for a ``message`` handler; a
        :exc:`ConnectionClosed` raised once the connection is closing is no error. On a
        finished connection the task is cancelled at once.

        :raises TypeError: ``coro`` is not a coroutine.
        """
        if self._tasks is None:
            self._tasks = OwnedTasks(self._closing, self._events, self._sender)
        return self._tasks.spawn(coro)

    # -- groups -----------------------------------------------------------------------------

    @overload
    def join(self, name: str, since: None = None) -> Awaitable[None]: ...
    @overload
    def join(self, name: str, since: Position) -> Awaitable[Recovery]: ...
    def join(self, name: str, since: Position | None = None) -> Awaitable[Recovery | None]:
        """Add this connection to the group ``name`` (for :meth:`WebSocketApp.broadcast`).

        With ``since``, the last :class:`Position` its client received, first send it every
        broadcast to the group after ``since``, in order; broadcasts that arrive meanwhile
        follow, none lost and none twice. The replay starts at once, awaited or not; the
        awaitable gives the :class:`Recovery`. When the history no longer reaches back to
        ``since``, nothing is replayed, ``recovered`` is false and the connection joins all the
        same: its client should reload. Without ``since``, the result need not be awaited.
        A closed connection joins nothing.

        :raises TypeError: ``since`` is not a :class:`Position`.
        :raises ValueError: ``since`` is given and the endpoint keeps no history.
        :raises BrokerError: (awaited) the history cannot be read; the connection is not joined.
        """
        if not isinstance(name, str):
            raise TypeError("a group name is a str")
        if since is not None:
            check_since(since, self._histories)
        if self._closing.state is CLOSED:
            return DONE if since is None else self._sender.dropped("join")
        if name not in self._groups:
            self._groups |= {name}
            self._registry.add(name, self)
        if since is None or self._histories is None:
            return DONE
        return self._histories.join_since(self, name, since)

    def leave(self, name: str) -> None:
        """Remove this connection from the group ``name``; nothing happens if it is not in it."""
        if name in self._groups:
            self._groups -= {name}
            self._registry.discard(name, self)

    # -- serving: for the endpoint, not for applications -----------------------------------

    @property
    def id(self) -> str:
        """Names this connection in every process that shares the broker (for ``exclude``)."""
        id_ = self._id
        if id_ is None:
            id_ = self._id = f"{_PROCESS_ID}-{next(_CONNECTION_NUMBERS)}"
        return id_

    @property
    def finished(self) -> asyncio.Future[None]:
        """Done once the connection finished and its ``finish`` handlers returned (for shutdown)."""
        return self._events.finished

    def go_away(self) -> None:
        """Close with 1001 for the endpoint's shutdown, and end the server's side of the stream:
        aiohttp reads nothing more once the application shuts down (:meth:`Closing.half_close`)."""
        self.close(WSCloseCode.GOING_AWAY, "server shutting down")
        self._closing.half_close()

    def stop(self) -> None:
        """Drop the socket and cancel the handler still running: for the endpoint's shutdown,
        once ``close_timeout`` has passed; not for applications."""
        self._closing.drop(WSCloseCode.ABNORMAL_CLOSURE, "")
        self._request.task.cancel()  # the task that runs serve(), and the handler in it

    async def serve(self, on_establish: Handler, handshake_results: tuple[Any, ...]) -> None:
        """Run the connection: ``on_establish``, then messages until it closes, then ``finish``.

        For the endpoint's request handler, which calls it once; not for applications.
        """
        try:
            await self._receiver.run(on_establish, self._request, handshake_results)
        finally:
            finishers = self._finish()
            tasks = self._tasks
            if finishers or tasks is not None:
                await self._events.run_finish(finishers, None if tasks is None else tasks.end)
            else:  # nothing to run: no task to start, no future unless someone waits for one
                self._events.mark_finished()

    def _finish(self) -> tuple[Registration, ...]:
        """Enter CLOSED, leave the endpoint and release everything; return the finish handlers."""
        self._closing.finish()
        self._receiver.leave_rounds()
        if self._limits is not None:
            self._limits.stop()
        if self._groups:
            for name in self._groups:
                self._registry.discard(name, self)
            self._groups = _NO_GROUPS
        self._forget(self)
        ws = self._ws
        ws.closing = ws.sender = None
        return self._events.close()
