"""A finished connection is freed by reference counting, not left to the garbage collector.

A connection's parts (its sender, its event registry, its receive loop) refer to it weakly: a
strong reference back would make every connection, with its request, its response and its
socket, a reference cycle that only the cyclic garbage collector frees, whose passes cost about
30,000 instructions per handshake (issue 19, ``python -m benchmarks.bytecodes --garbage``).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from typing import Any

import pytest
from aiohttp import web
from conftest import Serve
from rawws import until
from support import TIMEOUT

from aiohttp_wsapp import Connection


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="on Python 3.10 the request handler's frames stay in the traceback of an exception "
    "that asyncio keeps in a cycle after the handler ended; the collector frees them (checked), "
    "so the connection is not leaked, only freed later",
)
async def test_a_finished_connection_is_freed_without_the_garbage_collector(
    serve: Serve,
) -> None:
    connections: list[weakref.ref[Connection]] = []
    finished = asyncio.Event()

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        connections.append(weakref.ref(conn))
        conn.on("message", lambda conn, message: conn.send(message))
        conn.on("finish", lambda conn: finished.set())

    endpoint = await serve(on_establish)
    gc.collect()
    gc.disable()
    try:
        async with endpoint.client.ws_connect("/websocket") as ws:
            await ws.send_str("hello")
            assert (await ws.receive()).data == "hello"
        await asyncio.wait_for(finished.wait(), TIMEOUT)
        assert len(connections) == 1
        # The request handler returns right after the finish handlers: wait for that.
        await until(lambda: connections[0]() is None)
    finally:
        gc.enable()


async def test_a_late_finish_handler_gets_its_connection(serve: Serve) -> None:
    """A ``finish`` handler registered after the finish runs with the connection, even when
    nothing else holds the connection by then (the registry holds it only weakly)."""
    finished = asyncio.Event()
    late: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()

    def register_late(conn: Connection) -> None:
        conn.on("finish", late.set_result)
        finished.set()

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        conn.on("finish", register_late)

    endpoint = await serve(on_establish)
    gc.collect()
    gc.disable()
    try:
        async with endpoint.client.ws_connect("/websocket"):
            pass
        await asyncio.wait_for(finished.wait(), TIMEOUT)
        conn = await asyncio.wait_for(late, TIMEOUT)
        assert isinstance(conn, Connection)
        assert conn.closed
    finally:
        gc.enable()
