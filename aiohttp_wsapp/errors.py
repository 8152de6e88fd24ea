"""Errors and the keys that carry them: what ``on_error`` sees, and the default answer."""

from __future__ import annotations

from typing import TypeVar, cast

from aiohttp import web

__all__ = [
    "ERROR_KEY",
    "HANDSHAKE_ERROR_KEY",
    "INVALID_REQUEST",
    "NOT_SUPPORTED",
    "ORIGIN_NOT_ALLOWED",
    "SHUTTING_DOWN",
    "TOO_MANY_CONNECTIONS",
    "BrokerError",
    "ConnectionClosed",
    "default_on_error",
]

NOT_SUPPORTED = "not supported by the server"
"""The request has no usable transport: the peer is gone, or no socket-backed server sent it."""

INVALID_REQUEST = "invalid request"
"""The request is no valid RFC 6455 opening handshake, or the ``handshake`` callback raised."""

ORIGIN_NOT_ALLOWED = "origin not allowed"
"""The request's ``Origin`` is not allowed by ``allowed_origins``."""

TOO_MANY_CONNECTIONS = "too many connections"
"""``max_connections`` connections are open already."""

SHUTTING_DOWN = "server shutting down"
"""The application that holds the endpoint is shutting down."""

_T = TypeVar("_T")


def _request_key(name: str, value_type: type[_T]) -> web.RequestKey[_T]:
    """An :class:`aiohttp.web.RequestKey`, or on aiohttp < 3.14, which has none, the plain string
    ``name`` (SPEC §1): ``request[key]`` works with either."""
    if hasattr(web, "RequestKey"):
        return web.RequestKey(name, value_type)
    return cast("web.RequestKey[_T]", name)


ERROR_KEY = _request_key("aiohttp_wsapp.error", str)
"""The error string of a failed handshake, set on the request before ``on_error`` runs."""

HANDSHAKE_ERROR_KEY = _request_key("aiohttp_wsapp.error.handshake", Exception)
"""The exception that made a handshake invalid; set only with :data:`INVALID_REQUEST`."""

_DEFAULT_STATUS = {
    NOT_SUPPORTED: 500,
    INVALID_REQUEST: 400,
    ORIGIN_NOT_ALLOWED: 403,
    TOO_MANY_CONNECTIONS: 503,
    SHUTTING_DOWN: 503,
}


class ConnectionClosed(Exception):
    """Raised by an awaited operation on a connection that is closed or closing.

    ``code`` and ``reason`` are the connection's close code and reason, when known.
    """

    def __init__(self, code: int | None = None, reason: str | None = None) -> None:
        if code is None:
            message = "the connection is closed"
        else:
            message = f"the connection is closed ({code}{f' {reason}' if reason else ''})"
        super().__init__(message)
        self.code = code
        self.reason = reason


class BrokerError(Exception):
    """Raised by ``broadcast`` when the broker cannot deliver, and by a broker that cannot
    connect when the application starts."""


def default_on_error(request: web.Request) -> web.Response:
    """Answer a failed handshake with a plain-text error response.

    The status follows the error string (500, 400, 403, 503). An invalid request whose cause is an
    :class:`aiohttp.web.HTTPException` (an unsupported version, or a ``handshake`` callback that
    raised one) is answered with that exception's own status, headers and body.
    """
    error = request.get(ERROR_KEY, "")
    cause = request.get(HANDSHAKE_ERROR_KEY)
    if isinstance(cause, web.HTTPException):
        return web.Response(
            status=cause.status, reason=cause.reason, headers=cause.headers, body=cause.body
        )
    return web.Response(status=_DEFAULT_STATUS.get(error, 500), text=f"Error: {error}")
