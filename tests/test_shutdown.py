"""Graceful shutdown: every connection closed with 1001, every finish fired, bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from conftest import Serve
from redis_server import free_port, stop_process
from support import TIMEOUT, Recorder
from test_limits import handshake_headers, open_raw_websocket
from websockets.asyncio.client import connect as websockets_connect

from aiohttp_wsapp import Connection, WebSocketServer


async def test_shutdown_closes_every_connection_with_1001(serve: Serve, recorder: Recorder) -> None:
    endpoint = await serve(recorder.on_establish)
    clients = [await endpoint.client.ws_connect("/websocket") for _ in range(3)]
    for _ in clients:
        await recorder.connection()

    async def receive_close(ws: aiohttp.ClientWebSocketResponse) -> tuple[WSMsgType, int]:
        message = await ws.receive(TIMEOUT)
        return message.type, message.data

    closes = asyncio.gather(*(receive_close(ws) for ws in clients))
    await endpoint.server.close()
    assert await asyncio.wait_for(closes, TIMEOUT) == [(WSMsgType.CLOSE, 1001)] * 3
    finished = {await recorder.finish() for _ in clients}
    assert {conn.close_code for conn in finished} == {1001}
    assert recorder.finish_count == 3
    assert len(endpoint.wsapp.connections) == 0


async def test_shutdown_does_not_wait_for_silent_peers_beyond_close_timeout(
    serve: Serve, recorder: Recorder
) -> None:
    server = WebSocketServer(close_timeout=0.2)
    endpoint = await serve(recorder.on_establish, websocket_server=server)
    _, silent = await open_raw_websocket(endpoint)  # never answers the close frame
    await recorder.connection()
    await asyncio.wait_for(endpoint.server.close(), TIMEOUT)
    conn = await recorder.finish()
    assert conn.close_code == 1001
    silent.close()
    with contextlib.suppress(ConnectionResetError):  # the server dropped it with a reset
        await silent.wait_closed()


async def test_handshakes_during_shutdown_get_503(serve: Serve) -> None:
    endpoint = await serve(recorder_free)
    await endpoint.wsapp.shutdown()
    response = await endpoint.client.get("/websocket", headers=handshake_headers())
    assert response.status == 503
    assert await response.text() == "Error: server shutting down"


def recorder_free(*args: object) -> None:
    """An ``on_establish`` for tests in which no connection is established."""


async def test_shutdown_does_not_wait_for_a_handler_that_never_returns(
    serve: Serve, recorder: Recorder
) -> None:
    async def stuck(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        await asyncio.Event().wait()  # on_establish never returns

    endpoint = await serve(stuck, websocket_server=WebSocketServer(close_timeout=0.2))
    async with endpoint.client.ws_connect("/websocket"):
        await recorder.connection()
        await asyncio.wait_for(endpoint.wsapp.shutdown(), TIMEOUT)
        conn = await recorder.finish()
    assert conn.close_code == 1001


RUN_APP_NODE = Path(__file__).with_name("run_app_node.py")


async def test_sigterm_under_run_app_takes_the_peers_answer_not_close_timeout() -> None:
    """``web.run_app`` under SIGTERM, a ``websockets`` client that answers the close: the process
    exits as soon as the client answered, although ``close_timeout`` is a minute."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(RUN_APP_NODE),
        str(port),
        "60",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), TIMEOUT) == b"ready\n"
        async with websockets_connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hello"
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
        output = await process.stdout.read()
        assert output.splitlines() == [b"finish 1001"]
    finally:
        await stop_process(process, signal.SIGKILL)
