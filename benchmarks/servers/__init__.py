"""The benchmark servers: one module per implementation, each run as its own process.

Every module is started as ``python -m benchmarks.servers.NAME --host H --port P [--broadcast]``
and echoes every text and binary message back to its sender as a message of the same type
(with ``--broadcast``, every message but the broadcast command).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SERVERS", "ServerSpec"]


@dataclass(frozen=True)
class ServerSpec:
    """How the runner starts one implementation and how the load client talks to it."""

    name: str
    label: str
    module: str
    path: str = "/"
    framing: str = "plain"
    broadcast: bool = False
    #: Takes part in scenarios (1) to (4); a reference for the broadcast alone does not.
    echo: bool = True
    #: Takes part in the permessage-deflate scenarios (6) to (8) (``benchmarks.deflate_client``).
    deflate: bool = False
    #: More command-line arguments for the server (e.g. ``("--handler", "def")``).
    args: tuple[str, ...] = ()
    #: Runs only when named (``--servers``, ``benchmarks.pair --contender``), not in a full run.
    optional: bool = False


#: Every implementation, in the order the tables show them; raw aiohttp is the baseline.
SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec(
        "raw_aiohttp",
        "raw aiohttp",
        "benchmarks.servers.raw_aiohttp",
        broadcast=True,
        deflate=True,
    ),
    ServerSpec(
        "aiohttp_wsapp",
        "aiohttp_wsapp",
        "benchmarks.servers.wsapp",
        broadcast=True,
        deflate=True,
    ),
    ServerSpec(
        "aiohttp_wsapp_def",
        "aiohttp_wsapp, def handler",
        "benchmarks.servers.wsapp",
        args=("--handler", "def"),
        optional=True,
    ),
    ServerSpec(
        "aiohttp_wsapp_async",
        "aiohttp_wsapp, async def handler",
        "benchmarks.servers.wsapp",
        args=("--handler", "async"),
        optional=True,
    ),
    ServerSpec(
        "aiohttp_wsapp_defaults",
        "aiohttp_wsapp, default settings",
        "benchmarks.servers.wsapp_defaults",
        broadcast=True,
    ),
    ServerSpec(
        "aiohttp_wsapp_dedicated",
        'aiohttp_wsapp, compress="dedicated"',
        "benchmarks.servers.wsapp_dedicated",
        echo=False,
        deflate=True,
    ),
    ServerSpec(
        "websockets",
        "websockets",
        "benchmarks.servers.websockets_server",
        broadcast=True,
        deflate=True,
    ),
    ServerSpec("starlette", "Starlette/uvicorn", "benchmarks.servers.starlette_uvicorn"),
    ServerSpec(
        "socketio",
        "python-socketio",
        "benchmarks.servers.socketio_aiohttp",
        path="/socket.io/?EIO=4&transport=websocket",
        framing="socketio",
    ),
    ServerSpec("picows", "picows", "benchmarks.servers.picows_server"),
    ServerSpec(
        "broadcast_floor",
        "floor: bare transport.write loop",
        "benchmarks.servers.broadcast_floor",
        broadcast=True,
        echo=False,
    ),
)
