"""``WebSocketApp``: the endpoint, its handshake, and the sub-application that serves it."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .broker import Broker
from .connection import Connection, new_response
from .draining import Drain, check_period
from .errors import (
    ERROR_KEY,
    HANDSHAKE_ERROR_KEY,
    INVALID_REQUEST,
    NOT_SUPPORTED,
    ORIGIN_NOT_ALLOWED,
    SHUTTING_DOWN,
    TOO_MANY_CONNECTIONS,
    default_on_error,
)
from .handshake import check_opening_handshake, origin_allowed
from .history import History
from .hub import Hub
from .keepalive import Heartbeat
from .server import WebSocketServer, run_handshake_callback
from .signatures import check_callback
from .stats import Counters

__all__ = ["WSAPP_KEY", "ErrorHandler", "EstablishHandler", "WebSocketApp", "create_app"]

logger = logging.getLogger("aiohttp_wsapp")

EstablishHandler = Callable[[Connection, web.Request, tuple[Any, ...]], Any]
"""``on_establish(connection, request, handshake_results)``, sync or async."""

ErrorHandler = Callable[[web.Request], Any]
"""``on_error(request)``, an aiohttp handler, sync or async, returning a response."""


class _HandshakeFailed(Exception):
    """A handshake that fails with an error string (and, for invalid requests, a cause)."""

    def __init__(self, error: str, cause: Exception | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.cause = cause


class WebSocketApp(Hub[Connection]):
    """A WebSocket endpoint: the seed's ``Plack::App::WebSocket``.

    :param on_establish: ``on_establish(connection, request, handshake_results)``, sync or
        async, called for every established connection; register the connection's handlers
        there. Messages are dispatched only after it returns, so none is missed.
    :param on_error: ``on_error(request)``, an aiohttp handler (sync or async) answering a failed
        handshake; ``request[ERROR_KEY]`` holds the error string and, for ``INVALID_REQUEST``,
        ``request[HANDSHAKE_ERROR_KEY]`` the exception. The default answers in plain text.
    :param websocket_server: the handshake and protocol settings; ``WebSocketServer()`` by default.
    :param max_connections: refuse new handshakes with ``TOO_MANY_CONNECTIONS`` while that many
        connections are open. ``None`` sets no limit.
    :param broker: carries broadcasts to other processes (``RedisBroker``); ``None`` delivers
        within this process.
    :param history: keep every group's recent broadcasts (:class:`History`), so that a client
        that reconnects can join with ``since=`` its last position and get what it missed;
        group broadcasts then reach their peers through the history's envelope. Kept in this
        process without a broker, in Redis with ``RedisBroker``. ``None``: nothing is kept.
    :raises TypeError: a callback is not callable, or its signature cannot take the arguments it
        will be given (``on_establish`` three positional, ``on_error`` one), or an argument has
        the wrong type (or the broker keeps no history).
    :raises ValueError: ``max_connections`` is not positive.
    """

    def __init__(
        self,
        on_establish: EstablishHandler,
        *,
        on_error: ErrorHandler | None = None,
        websocket_server: WebSocketServer | None = None,
        max_connections: int | None = None,
        broker: Broker | None = None,
        history: History | None = None,
    ) -> None:
        check_callback("on_establish", on_establish, "connection, request, handshake_results")
        if on_error is not None:
            check_callback("on_error", on_error, "request")
        if websocket_server is not None and not isinstance(websocket_server, WebSocketServer):
            raise TypeError("websocket_server must be a WebSocketServer")
        if max_connections is not None:
            if isinstance(max_connections, bool) or not isinstance(max_connections, int):
                raise TypeError("max_connections must be an int or None")
            if max_connections < 1:
                raise ValueError("max_connections must be positive")
        if broker is not None and not isinstance(broker, Broker):
            raise TypeError("broker must be a Broker, such as RedisBroker")
        if history is not None and not isinstance(history, History):
            raise TypeError("history must be a History")
        if history is not None and broker is not None and not broker.keeps_history:
            raise TypeError(f"{type(broker).__name__} keeps no history")
        handshake_errors = (
            NOT_SUPPORTED,
            INVALID_REQUEST,
            ORIGIN_NOT_ALLOWED,
            TOO_MANY_CONNECTIONS,
            SHUTTING_DOWN,
        )
        server = websocket_server or WebSocketServer()
        super().__init__(server, broker, Counters(handshake_errors), history)
        self._heartbeat = None if server.heartbeat is None else Heartbeat(server.heartbeat)
        self._on_establish = on_establish
        self._on_error: ErrorHandler = on_error or default_on_error
        self._max_connections = max_connections
        self._shutting_down = False
        self._drain: Drain | None = None
        self._preparing = 0
        # One bound method for every connection, rather than a new one each.
        self._forget_connection = self._forget

    # -- requests ---------------------------------------------------------------------------

    async def call(self, request: web.Request) -> web.StreamResponse:
        """Handle one request: the handshake, then the connection until it closes.

        An ordinary aiohttp handler: ``router.add_get("/ws", wsapp.call)`` works too; then call
        ``wsapp.setup(app)`` so that shutdown and the broker follow the application.
        """
        server = self._server
        try:
            transport = self._admit(request)
            protocol = self._check_request(request, server)
            response = new_response(server, request, protocol)
            handshake_results: tuple[Any, ...] = ()
            if server.handshake or server.validator:
                handshake_results = await self._run_handshake(request, response)
                transport = self._admit(request)  # others may have come in meanwhile
        except _HandshakeFailed as failure:
            return await self._answer_failure(request, failure)
        self._preparing += 1  # counted against max_connections while the 101 is sent
        try:
            writer = await response.prepare(request)
        finally:
            self._preparing -= 1
        # Positional arguments: a class called with keywords gets them in a new dict.
        connection = Connection(
            self,
            request,
            response,
            writer,
            transport,
            self._groups,
            self._forget_connection,
            self._counters,
            self._heartbeat,
            self._histories,
        )
        self._counters.handshakes_accepted += 1
        self._add(connection)
        if self._shutting_down:  # shutdown began while the 101 was being sent
            connection.go_away()
        elif self._drain is not None:  # ... or a drain did
            self._drain.close_late(connection)
        await connection.serve(self._on_establish, handshake_results)
        return response

    def _admit(self, request: web.Request) -> asyncio.Transport:
        """Return the request's transport if a connection may be established on it now."""
        transport = request.transport
        if transport is None:
            raise _HandshakeFailed(NOT_SUPPORTED)
        if self._shutting_down or self._drain is not None:
            raise _HandshakeFailed(SHUTTING_DOWN)
        max_connections = self._max_connections
        if (
            max_connections is not None
            and len(self.connections) + self._preparing >= max_connections
        ):
            raise _HandshakeFailed(TOO_MANY_CONNECTIONS)
        return transport

    @staticmethod
    def _check_request(request: web.Request, server: WebSocketServer) -> str | None:
        """Check the request as a handshake and its origin; return the chosen subprotocol."""
        try:
            protocol = check_opening_handshake(request, server.protocols)
        except web.HTTPException as exc:
            raise _HandshakeFailed(INVALID_REQUEST, exc) from None
        if not origin_allowed(server.allowed_origins, request):
            raise _HandshakeFailed(ORIGIN_NOT_ALLOWED)
        return protocol

    async def _run_handshake(
        self, request: web.Request, response: web.WebSocketResponse
    ) -> tuple[Any, ...]:
        try:
            return await run_handshake_callback(self.websocket_server, request, response)
        except web.HTTPException as exc:  # the callback's way to refuse
            raise _HandshakeFailed(INVALID_REQUEST, exc) from None
        except Exception as exc:
            # Most likely a bug in the callback: say so where the developer looks.
            logger.warning(
                "the handshake callback raised for %s %s; the handshake fails with %r",
                request.method,
                request.path,
                INVALID_REQUEST,
                exc_info=exc,
            )
            raise _HandshakeFailed(INVALID_REQUEST, exc) from None

    async def _answer_failure(
        self, request: web.Request, failure: _HandshakeFailed
    ) -> web.StreamResponse:
        request[ERROR_KEY] = failure.error
        if failure.cause is not None:
            request[HANDSHAKE_ERROR_KEY] = failure.cause
        logger.debug("handshake refused (%s): %r", failure.error, failure.cause)
        self._counters.refused(failure.error)
        response = self._on_error(request)
        if inspect.isawaitable(response):
            response = await response
        if not isinstance(response, web.StreamResponse):
            raise TypeError(f"on_error returned {type(response).__name__}, not a response")
        drain = self._drain
        if failure.error == SHUTTING_DOWN and drain is not None and not response.prepared:
            # When to try again: once the drain is over (unless on_error said when).
            response.headers.setdefault("Retry-After", drain.retry_after())
        return response

    # -- lifecycle --------------------------------------------------------------------------

    def to_app(self) -> web.Application:
        """Return a new :class:`aiohttp.web.Application` that sends every request to :meth:`call`.

        Mounted with ``parent.add_subapp("/websocket", sub)`` it answers ``/websocket``,
        ``/websocket/`` and every path below; standalone it answers every path. The sub-path is
        ``request.match_info.get("tail", "")``. ``sub[WSAPP_KEY]`` is this endpoint. Its
        startup starts the broker; its shutdown closes every connection with 1001.
        """
        app = web.Application()
        app[WSAPP_KEY] = self
        app.router.add_route("*", "", self.call)
        app.router.add_route("*", "/{tail:.*}", self.call)
        self.setup(app)
        return app

    def setup(self, app: web.Application) -> None:
        """Tie this endpoint to ``app``'s lifecycle: needed when routing to :meth:`call` directly.

        On ``app``'s startup the broker connects; on its shutdown every connection is closed
        with 1001 (:meth:`shutdown`); on its cleanup the broker disconnects.
        :meth:`to_app` does this for the application it returns.
        """
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)

    async def _on_startup(self, app: web.Application) -> None:
        self._shutting_down = False
        self._drain = None
        await self._start_broker()

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.shutdown()

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._histories is not None:
            await self._histories.stop()
        await self._stop_broker()

    async def shutdown(self) -> None:
        """Refuse new handshakes, close every connection with 1001 and wait for every ``finish``.

        Peers get ``close_timeout`` seconds to answer the close; then their sockets are dropped.
        Called by the application of :meth:`to_app` when it shuts down.
        """
        self._shutting_down = True
        connections = tuple(self.connections)
        for connection in connections:
            connection.go_away()
        finished = [connection.finished for connection in connections]
        if not finished:
            return
        timeout = self.websocket_server.close_timeout
        _, late = await asyncio.wait(finished, timeout=timeout)
        for connection in connections:
            if not connection.finished.done():
                connection.stop()  # its handler may be waiting on something else entirely
        if late:
            await asyncio.wait(late, timeout=timeout)

    async def drain(self, over: float = 30.0) -> None:
        """Empty the endpoint before a deploy: close every connection, a few at a time.

        From the call on, new handshakes are refused with ``SHUTTING_DOWN`` (503, with a
        ``Retry-After`` of the whole seconds left of the drain, at least 1), and the open
        connections are closed with 1012 (service restart), spread evenly over ``over`` seconds
        (the first at once), so that their clients reconnect to the other servers a few at a
        time rather than all together. Returns when every ``finish`` has fired. The endpoint
        refuses handshakes until its application starts again; the application's shutdown
        closes whatever is left with 1001.

        :raises TypeError: ``over`` is not a number.
        :raises ValueError: ``over`` is negative.
        """
        self._drain = drain = Drain(check_period(over))
        await drain.run(self.connections)


WSAPP_KEY = web.AppKey("aiohttp_wsapp", WebSocketApp)
"""The key under which :meth:`WebSocketApp.to_app` stores its endpoint on the application."""


def create_app(on_establish: EstablishHandler, **kwargs: Any) -> web.Application:
    """Return ``WebSocketApp(on_establish, **kwargs).to_app()``: the one-call way to an endpoint."""
    return WebSocketApp(on_establish, **kwargs).to_app()
