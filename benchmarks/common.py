"""What the servers, the load client and the runner share: constants and small helpers."""

from __future__ import annotations

import argparse
import resource
from dataclasses import dataclass

from aiohttp import web

__all__ = [
    "BACKLOG",
    "BROADCAST_COMMAND",
    "BROADCAST_PAYLOAD",
    "TOOK_PREFIX",
    "ServerOptions",
    "parse_server_args",
    "raise_nofile_limit",
    "run_aiohttp",
]

#: The listen backlog of every server, so that thousands of connects in a burst are not dropped.
BACKLOG = 4096
#: The text a control connection sends to a server started with ``--broadcast``.
BROADCAST_COMMAND = "broadcast"
#: The 100-byte text message every connection receives in the broadcast scenario.
BROADCAST_PAYLOAD = "b" * 100
#: The server answers the control connection with ``TOOK_PREFIX + seconds`` after the call.
TOOK_PREFIX = "took "


@dataclass(frozen=True)
class ServerOptions:
    """Command-line options every benchmark server takes."""

    host: str
    port: int
    broadcast: bool


def parse_server_args(description: str) -> ServerOptions:
    """Parse ``--host``, ``--port`` and ``--broadcast``, and raise the open-files limit.

    With ``--broadcast`` a server does not echo: a text message ``broadcast`` from any
    connection makes it send :data:`BROADCAST_PAYLOAD` to every open connection, time that
    call, and answer the sender with ``took <seconds>``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--broadcast", action="store_true", help="broadcast mode, no echo")
    args = parser.parse_args()
    raise_nofile_limit()
    return ServerOptions(host=args.host, port=args.port, broadcast=args.broadcast)


def raise_nofile_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run_aiohttp(app: web.Application, options: ServerOptions) -> None:
    """Serve an aiohttp application until interrupted, quietly, with the shared backlog."""
    web.run_app(
        app, host=options.host, port=options.port, print=None, access_log=None, backlog=BACKLOG
    )
