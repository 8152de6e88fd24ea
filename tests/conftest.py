"""Shared fixtures: a real endpoint on a loopback port, and a recorder of connection events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer
from redis_server import RedisServer
from support import require_module, require_program

from aiohttp_wsapp import Connection, WebSocketApp

TIMEOUT = 5.0
"""How long a test waits for something that should happen at once."""


class Endpoint:
    """An endpoint served by a real aiohttp server, mounted at ``/websocket``."""

    def __init__(
        self,
        wsapp: WebSocketApp,
        server: TestServer,
        client: TestClient[Any, Any],
    ) -> None:
        self.wsapp = wsapp
        self.server = server
        self.client = client

    def url(self, path: str = "/websocket") -> str:
        """The ``ws://`` URL of ``path`` on this server."""
        return f"ws://{self.server.host}:{self.server.port}{path}"


Serve = Callable[..., Awaitable[Endpoint]]


async def home(request: web.Request) -> web.Response:
    """A plain page beside the endpoint."""
    return web.Response(text="home")


@pytest.fixture
def serve(aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient) -> Serve:
    """Serve ``WebSocketApp(on_establish, **kwargs)`` at ``/websocket`` beside a ``/`` page."""

    async def serve(on_establish: Callable[..., Any], **kwargs: Any) -> Endpoint:
        wsapp = WebSocketApp(on_establish, **kwargs)
        app = web.Application()
        app.router.add_get("/", home)
        app.add_subapp("/websocket", wsapp.to_app())
        server = await aiohttp_server(app)
        client: TestClient[Any, Any] = await aiohttp_client(server)
        return Endpoint(wsapp, server, client)

    return serve


class Recorder:
    """Registers handlers on every connection and records what they see, for tests to await."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[Connection] = asyncio.Queue()
        self.messages: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.errors: asyncio.Queue[BaseException] = asyncio.Queue()
        self.finished: asyncio.Queue[Connection] = asyncio.Queue()
        self.finish_count = 0

    def on_establish(
        self, conn: Connection, request: web.Request, results: tuple[Any, ...]
    ) -> None:
        """Record the connection and its events; echo nothing."""
        conn.on(message=self._message, error=self._error, finish=self._finish)
        self.connections.put_nowait(conn)

    def _message(self, conn: Connection, message: str | bytes) -> None:
        self.messages.put_nowait(message)

    def _error(self, conn: Connection, exc: BaseException) -> None:
        self.errors.put_nowait(exc)

    def _finish(self, conn: Connection) -> None:
        self.finish_count += 1
        self.finished.put_nowait(conn)

    async def connection(self) -> Connection:
        """The next established connection."""
        return await asyncio.wait_for(self.connections.get(), TIMEOUT)

    async def message(self) -> str | bytes:
        """The next message received by any connection."""
        return await asyncio.wait_for(self.messages.get(), TIMEOUT)

    async def finish(self) -> Connection:
        """The next connection whose ``finish`` fired."""
        return await asyncio.wait_for(self.finished.get(), TIMEOUT)

    async def error(self) -> BaseException:
        """The next exception reported through ``error``."""
        return await asyncio.wait_for(self.errors.get(), TIMEOUT)


@pytest.fixture
def recorder() -> Recorder:
    """A fresh :class:`Recorder`."""
    return Recorder()


def echo(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
    """The seed's synopsis: echo every message."""
    conn.on("message", lambda conn, message: conn.send(message))


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A real ``redis-server`` on a free loopback port, stopped after the test.

    Skips (fails in CI) without the ``redis-server`` program or the ``redis`` package.
    """
    require_module("redis", "pip install 'aiohttp-wsapp[redis]'")
    program = require_program("redis-server", "apt-get install redis-server")
    server = RedisServer(program, tmp_path)
    await server.start()
    yield server
    await server.stop()
