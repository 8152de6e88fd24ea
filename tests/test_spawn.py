"""``conn.spawn(coro)``: a task owned by its connection, gone before ``finish`` fires."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from conftest import Serve
from support import TIMEOUT, Recorder

from aiohttp_wsapp import Connection


class Ticker:
    """An ``on_establish`` that spawns a task per connection and notes what happens, in order."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.events: list[str] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.started = asyncio.Event()

    def on_establish(
        self, conn: Connection, request: web.Request, results: tuple[Any, ...]
    ) -> None:
        self.recorder.on_establish(conn, request, results)
        conn.on("finish", self.on_finish)
        self.tasks.append(conn.spawn(self.tick(conn)))

    async def tick(self, conn: Connection) -> None:
        try:
            self.started.set()
            while True:
                await conn.send("tick")
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.events.append("cancelled")
            await asyncio.sleep(0.05)  # cleanup that takes a while: finish waits for it
            self.events.append("cleaned up")
            raise

    def on_finish(self, conn: Connection) -> None:
        self.events.append(f"finish, task done: {self.tasks[0].done()}")


async def test_spawn_returns_the_task_which_is_cancelled_and_awaited_before_finish(
    serve: Serve, recorder: Recorder
) -> None:
    ticker = Ticker(recorder)
    endpoint = await serve(ticker.on_establish)
    async with endpoint.client.ws_connect("/websocket") as ws:
        assert await ws.receive_str(timeout=TIMEOUT) == "tick"
        assert await ws.receive_str(timeout=TIMEOUT) == "tick"  # it runs on
    await recorder.finish()
    (task,) = ticker.tasks
    assert isinstance(task, asyncio.Task)
    assert task.cancelled()
    assert ticker.events == ["cancelled", "cleaned up", "finish, task done: True"]


async def test_a_task_that_ends_by_itself_is_forgotten(serve: Serve, recorder: Recorder) -> None:
    results: list[asyncio.Task[str]] = []

    async def greet(conn: Connection) -> str:
        await conn.send("hello")
        return "greeted"

    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, hs)
        results.append(conn.spawn(greet(conn)))

    endpoint = await serve(on_establish)
    async with endpoint.client.ws_connect("/websocket") as ws:
        assert await ws.receive_str(timeout=TIMEOUT) == "hello"
        assert await asyncio.wait_for(results[0], TIMEOUT) == "greeted"
        await ws.send_str("still open")
        assert await recorder.message() == "still open"
    conn = await recorder.finish()
    assert conn.close_code == 1000
    assert recorder.errors == []


async def test_a_task_that_raises_fires_error_and_closes_with_1011(
    serve: Serve, recorder: Recorder
) -> None:
    tasks: list[asyncio.Task[None]] = []

    async def fail(conn: Connection) -> None:
        await conn.send("about to fail")
        raise RuntimeError("the task broke")

    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, hs)
        tasks.append(conn.spawn(fail(conn)))

    endpoint = await serve(on_establish)
    async with endpoint.client.ws_connect("/websocket") as ws:
        assert await ws.receive_str(timeout=TIMEOUT) == "about to fail"
        message = await ws.receive(TIMEOUT)
        assert (message.type, message.data) == (WSMsgType.CLOSE, WSCloseCode.INTERNAL_ERROR)
    error = await recorder.error()
    assert isinstance(error, RuntimeError)
    assert str(error) == "the task broke"
    conn = await recorder.finish()
    assert conn.close_code == 1011
    assert tasks[0].exception() is error  # awaiting the task raises it, as the coroutine did
    assert recorder.finish_count == 1
    assert len(recorder.errors) == 1


async def test_a_task_that_raises_without_an_error_handler_is_logged(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    finished = asyncio.Event()

    async def fail() -> None:
        raise RuntimeError("nobody listens")

    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        conn.on("finish", lambda conn: finished.set())
        conn.spawn(fail())

    endpoint = await serve(on_establish)
    async with endpoint.client.ws_connect("/websocket") as ws:
        message = await ws.receive(TIMEOUT)
        assert (message.type, message.data) == (WSMsgType.CLOSE, WSCloseCode.INTERNAL_ERROR)
    await asyncio.wait_for(finished.wait(), TIMEOUT)
    (record,) = [r for r in caplog.records if r.name == "aiohttp_wsapp"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "nobody listens"


async def test_a_task_stopped_by_the_closing_connection_is_no_error(
    serve: Serve, recorder: Recorder
) -> None:
    async def send_forever(conn: Connection) -> None:
        while True:
            await conn.send("more")  # raises ConnectionClosed once the connection closes
            await asyncio.sleep(0.01)

    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, hs)
        conn.spawn(send_forever(conn))
        conn.on("message", lambda conn, message: conn.close())

    endpoint = await serve(on_establish)
    async with endpoint.client.ws_connect("/websocket") as ws:
        await ws.send_str("stop")
        while (await ws.receive(TIMEOUT)).type is WSMsgType.TEXT:
            pass
    conn = await recorder.finish()
    assert conn.close_code == 1000
    assert recorder.errors == []


async def test_spawn_on_a_finished_connection_cancels_the_task_at_once(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish)
    ran: list[str] = []

    async def never() -> None:
        ran.append("ran")

    async with endpoint.client.ws_connect("/websocket"):
        conn = await recorder.connection()
    await recorder.finish()
    task = conn.spawn(never())
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, TIMEOUT)
    assert ran == []
