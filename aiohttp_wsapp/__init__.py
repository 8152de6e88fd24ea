"""WebSocket endpoints as aiohttp sub-applications: a port of Perl's Plack::App::WebSocket."""

from .app import WSAPP_KEY, WebSocketApp, create_app
from .connection import Connection, ConnectionState
from .errors import (
    ERROR_KEY,
    HANDSHAKE_ERROR_KEY,
    INVALID_REQUEST,
    NOT_SUPPORTED,
    ORIGIN_NOT_ALLOWED,
    SHUTTING_DOWN,
    TOO_MANY_CONNECTIONS,
    BrokerError,
    ConnectionClosed,
)
from .history import History, Position, Recovery
from .server import WebSocketServer
from .stats import Stats

__version__ = "0.1.0"
"""The version of the package."""

__all__ = [
    "ERROR_KEY",
    "HANDSHAKE_ERROR_KEY",
    "INVALID_REQUEST",
    "NOT_SUPPORTED",
    "ORIGIN_NOT_ALLOWED",
    "SHUTTING_DOWN",
    "TOO_MANY_CONNECTIONS",
    "WSAPP_KEY",
    "BrokerError",
    "Connection",
    "ConnectionClosed",
    "ConnectionState",
    "History",
    "Position",
    "Recovery",
    "Stats",
    "WebSocketApp",
    "WebSocketServer",
    "__version__",
    "create_app",
]
