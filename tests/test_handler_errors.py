"""A user's handler that raises affects only its own connection."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from conftest import Serve
from support import TIMEOUT, Recorder

from aiohttp_wsapp import Connection


def fragile(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
    """Echo, except that the message ``boom`` makes the handler raise."""

    def handle(conn: Connection, message: str) -> Any:
        if message == "boom":
            raise RuntimeError("handler failed")
        return conn.send(message)

    conn.on("message", handle)


async def test_raising_handler_fires_error_and_closes_with_1011(
    serve: Serve, recorder: Recorder
) -> None:
    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        fragile(conn, request, results)
        recorder.on_establish(conn, request, results)

    endpoint = await serve(on_establish)
    async with endpoint.client.ws_connect("/websocket") as ws:
        await ws.send_str("boom")
        message = await ws.receive(TIMEOUT)
        assert (message.type, message.data) == (WSMsgType.CLOSE, 1011)
    error = await recorder.error()
    assert isinstance(error, RuntimeError)
    conn = await recorder.finish()
    assert conn.close_code == 1011
    assert recorder.finish_count == 1


async def test_other_connections_keep_working(serve: Serve) -> None:
    endpoint = await serve(fragile)
    async with (
        endpoint.client.ws_connect("/websocket") as victim,
        endpoint.client.ws_connect("/websocket") as bystander,
    ):
        await victim.send_str("boom")
        assert (await victim.receive(TIMEOUT)).type == WSMsgType.CLOSE
        await bystander.send_str("still here")
        assert await bystander.receive_str(timeout=TIMEOUT) == "still here"


async def test_without_error_handler_the_traceback_is_logged(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = await serve(fragile)
    with caplog.at_level(logging.ERROR, logger="aiohttp_wsapp"):
        async with endpoint.client.ws_connect("/websocket") as ws:
            await ws.send_str("boom")
            assert (await ws.receive(TIMEOUT)).type == WSMsgType.CLOSE
    [record] = [r for r in caplog.records if r.name == "aiohttp_wsapp"]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


async def test_async_handler_that_raises_is_caught_too(serve: Serve, recorder: Recorder) -> None:
    async def handle(conn: Connection, message: str) -> None:
        await asyncio.sleep(0)
        raise ValueError(message)

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        conn.on("message", handle)

    endpoint = await serve(on_establish)
    async with endpoint.client.ws_connect("/websocket") as ws:
        await ws.send_str("async boom")
        assert (await ws.receive(TIMEOUT)).data == 1011
    assert str(await recorder.error()) == "async boom"


async def test_error_handler_that_raises_is_logged(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        fragile(conn, request, results)
        conn.on("error", lambda conn, exc: 1 / 0)

    endpoint = await serve(on_establish)
    with caplog.at_level(logging.ERROR, logger="aiohttp_wsapp"):
        async with endpoint.client.ws_connect("/websocket") as ws:
            await ws.send_str("boom")
            assert (await ws.receive(TIMEOUT)).data == 1011
    assert any(r.exc_info and isinstance(r.exc_info[1], ZeroDivisionError) for r in caplog.records)


async def test_on_establish_that_raises_closes_with_1011_and_finishes(
    serve: Serve, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)  # finish counted for the server's life
        raise KeyError("no such user")

    endpoint = await serve(on_establish)
    with caplog.at_level(logging.ERROR, logger="aiohttp_wsapp"):
        async with endpoint.client.ws_connect("/websocket") as ws:
            message = await ws.receive(TIMEOUT)
            assert (message.type, message.data) == (WSMsgType.CLOSE, 1011)
        conn = await recorder.finish()
    assert conn.close_code == 1011
    assert any(r.exc_info and isinstance(r.exc_info[1], KeyError) for r in caplog.records)


async def test_finish_handler_that_raises_is_logged_and_the_next_still_runs(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    second: asyncio.Future[Connection] = asyncio.Future()

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        conn.on("finish", lambda conn: [][0])
        conn.on("finish", second.set_result)

    endpoint = await serve(on_establish)
    with caplog.at_level(logging.ERROR, logger="aiohttp_wsapp"):
        async with endpoint.client.ws_connect("/websocket"):
            pass
        await asyncio.wait_for(second, TIMEOUT)
    assert any(r.exc_info and isinstance(r.exc_info[1], IndexError) for r in caplog.records)
