"""Graceful shutdown: every connection closed with 1001, every finish fired, bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from conftest import Serve
from redis_server import free_port, stop_process
from support import TIMEOUT, Recorder, assert_within, watch_for_repeats
from test_limits import handshake_headers, open_raw_websocket
from websockets.asyncio.client import connect as websockets_connect

from aiohttp_wsapp import Connection, ConnectionState, WebSocketApp, WebSocketServer

CLOSE_TIMEOUT = 0.5
"""``close_timeout`` of the tests that wait for it: long enough that :func:`support.within`'s
margin covers a loaded machine's stalls, short enough to keep the tests quick."""


async def test_shutdown_closes_every_connection_with_1001(serve: Serve, recorder: Recorder) -> None:
    completed: list[Connection] = []

    async def slow_finish(conn: Connection) -> None:
        for _ in range(5):  # a finish handler that takes a few turns of the loop
            await asyncio.sleep(0)
        completed.append(conn)

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        conn.on("finish", slow_finish)

    endpoint = await serve(on_establish)
    clients = [await endpoint.client.ws_connect("/websocket") for _ in range(3)]
    conns = [await recorder.connection() for _ in clients]

    async def receive_close(ws: aiohttp.ClientWebSocketResponse) -> tuple[WSMsgType, int]:
        message = await ws.receive(TIMEOUT)  # reading the close frame answers it
        return message.type, message.data

    closes = asyncio.gather(*(receive_close(ws) for ws in clients))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await endpoint.wsapp.shutdown()  # what the application's shutdown awaits
    # Complete when shutdown returns: every finish handler has run to its end.
    assert recorder.finish_count == 3
    assert sorted(map(id, completed)) == sorted(map(id, conns))
    assert all(conn.state is ConnectionState.CLOSED for conn in conns)
    assert len(endpoint.wsapp.connections) == 0
    # Peers that answer the close are not waited for until close_timeout (10 s by default).
    assert loop.time() - started < endpoint.wsapp.websocket_server.close_timeout
    assert await asyncio.wait_for(closes, TIMEOUT) == [(WSMsgType.CLOSE, 1001)] * 3
    assert {conn.close_code for conn in conns} == {1001}


async def test_shutdown_waits_close_timeout_for_silent_peers_and_no_longer(
    serve: Serve, recorder: Recorder
) -> None:
    server = WebSocketServer(close_timeout=CLOSE_TIMEOUT)
    endpoint = await serve(recorder.on_establish, websocket_server=server)
    silent = [(await open_raw_websocket(endpoint))[1] for _ in range(2)]  # never answer the close
    conns = [await recorder.connection() for _ in silent]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(endpoint.server.close(), TIMEOUT)
    assert_within(loop.time() - started, CLOSE_TIMEOUT, at_least=CLOSE_TIMEOUT)
    assert recorder.finish_count == 2
    for conn in conns:
        assert conn.close_code == 1001
        assert_within(recorder.finished_at[conn] - started, CLOSE_TIMEOUT, at_least=CLOSE_TIMEOUT)
    for writer in silent:
        writer.close()
        with contextlib.suppress(ConnectionResetError):  # the server dropped it with a reset
            await writer.wait_closed()


async def test_handshakes_during_shutdown_get_503(serve: Serve) -> None:
    endpoint = await serve(recorder_free)
    await endpoint.wsapp.shutdown()
    response = await endpoint.client.get("/websocket", headers=handshake_headers())
    assert response.status == 503
    assert await response.text() == "Error: server shutting down"


def recorder_free(*args: object) -> None:
    """An ``on_establish`` for tests in which no connection is established."""


@pytest.fixture
async def run_app(handler_cancellation: bool) -> AsyncIterator[RunApp]:
    """Run an endpoint at ``/websocket`` under ``web.AppRunner``, with or without aiohttp's
    ``handler_cancellation``; return it and its URL. (The ``serve`` fixture's test server always
    cancels handlers whose peer went away, which would hide what shutdown itself must do.)"""
    runners: list[web.AppRunner] = []

    async def run_app(wsapp: WebSocketApp) -> str:
        app = web.Application()
        app.add_subapp("/websocket", wsapp.to_app())
        runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
        runners.append(runner)
        await runner.setup()
        sock = socket.create_server(("127.0.0.1", 0))
        host, port = sock.getsockname()[:2]
        await web.SockSite(runner, sock).start()
        return f"http://{host}:{port}/websocket"

    yield run_app
    for runner in runners:
        await runner.cleanup()
    await watch_for_repeats()


RunApp = Callable[[WebSocketApp], Awaitable[str]]


@pytest.fixture(params=[True, False], ids=["handler-cancellation", "no-handler-cancellation"])
def handler_cancellation(request: pytest.FixtureRequest) -> bool:
    """Whether aiohttp cancels the request handler when its peer's socket goes."""
    cancel: bool = request.param
    return cancel


async def test_shutdown_does_not_wait_for_a_handler_that_never_returns(
    run_app: RunApp, recorder: Recorder, handler_cancellation: bool
) -> None:
    async def stuck(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        await asyncio.Event().wait()  # on_establish never returns

    wsapp = WebSocketApp(stuck, websocket_server=WebSocketServer(close_timeout=CLOSE_TIMEOUT))
    url = await run_app(wsapp)
    async with aiohttp.ClientSession() as session, session.ws_connect(url):
        conn = await recorder.connection()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(wsapp.shutdown(), TIMEOUT)
        # The answer to the close is never read (the handler holds the connection). aiohttp's
        # client closes its socket on the server's end of stream: where aiohttp cancels the
        # handler of a connection whose socket went, that ends it at once; else shutdown waits
        # close_timeout, then stops the handler.
        at_least = None if handler_cancellation else CLOSE_TIMEOUT
        assert_within(loop.time() - started, CLOSE_TIMEOUT, at_least=at_least)
        assert recorder.finishes == [conn]
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
