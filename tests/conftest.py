"""Shared fixtures: a real endpoint on a loopback port, and a recorder of connection events."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from node_clients import Connect, ConnectHistory, HistoryClient, NodeClient, connecting
from pytest_aiohttp import AiohttpClient, AiohttpServer
from redis_server import RedisServer, StartNode, starting_nodes
from support import (
    BROWSER_TIMEOUT,
    Recorder,
    check_recorders,
    require_module,
    require_program,
    watch_for_repeats,
)

from aiohttp_wsapp import Connection, WebSocketApp

if TYPE_CHECKING:
    from playwright.async_api import Browser


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
async def serve(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> AsyncIterator[Serve]:
    """Serve ``WebSocketApp(on_establish, **kwargs)`` at ``/websocket`` beside a ``/`` page.

    After the test the clients and servers are closed here, and the loop runs on briefly
    (:func:`support.watch_for_repeats`), so that a ``finish`` fired late still reaches the
    recorders before they are checked.
    """
    clients: list[TestClient[Any, Any]] = []

    async def serve(on_establish: Callable[..., Any], **kwargs: Any) -> Endpoint:
        wsapp = WebSocketApp(on_establish, **kwargs)
        app = web.Application()
        app.router.add_get("/", home)
        app.add_subapp("/websocket", wsapp.to_app())
        server = await aiohttp_server(app)
        client: TestClient[Any, Any] = await aiohttp_client(server)
        clients.append(client)
        return Endpoint(wsapp, server, client)

    yield serve
    for client in clients:
        await client.close()  # its websockets, then its server: the fixtures' order
    await watch_for_repeats()


@pytest.fixture(autouse=True)
def _finish_fires_once() -> Iterator[None]:
    """After the test, once every server is closed: each connection a :class:`support.Recorder`
    saw established has finished exactly once (autouse, so torn down after every other fixture)."""
    yield
    check_recorders()


@pytest.fixture
def recorder() -> Recorder:
    """A fresh :class:`support.Recorder`, echoing nothing (set ``recorder.echo`` to echo)."""
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


@pytest.fixture
async def start_node(redis_server: RedisServer) -> AsyncIterator[StartNode]:
    """Start endpoint processes (``tests/redis_node.py``, :class:`redis_server.Node`) on the
    test's Redis: ``await start_node(**options)``; stop them all after the test."""
    async with starting_nodes(redis_server.url) as start:
        yield start


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open clients of nodes without history (:class:`node_clients.NodeClient`); close them
    after the test."""
    async with connecting(NodeClient) as connect:
        yield connect


@pytest.fixture
async def connect_history() -> AsyncIterator[ConnectHistory]:
    """Open clients of nodes with history (:class:`node_clients.HistoryClient`), joining with a
    query string: ``await connect_history(node, join=(), since=None)``; close them after the
    test."""
    async with connecting(HistoryClient) as connect:
        yield connect


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, closed after the test with all its pages."""
    chromium = require_program("chromium", "apt-get install chromium")
    require_module("playwright", "pip install playwright")
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=BROWSER_TIMEOUT * 1000)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


# -- the event loop, and the marker that lets a run leave the browser tests out --------------------

EVENT_LOOP = os.environ.get("AIOHTTP_WSAPP_LOOP", "asyncio")
"""The event loop of every asyncio test and fixture: ``asyncio`` (the default) or ``uvloop``."""

if EVENT_LOOP == "uvloop":
    import uvloop

    # pytest-asyncio 1.4+ (the hook's name is unknown to older versions; test_event_loop.py
    # fails if the loop is not uvloop's).
    @pytest.hookimpl(optionalhook=True)
    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
        """Run every asyncio test, and the fixtures it uses, on a new ``uvloop.Loop``."""
        return {"uvloop": uvloop.new_event_loop}

elif EVENT_LOOP != "asyncio":
    raise pytest.UsageError(f"AIOHTTP_WSAPP_LOOP must be asyncio or uvloop, not {EVENT_LOOP!r}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``browser`` every test that drives Chromium: ``-m "not browser"`` leaves them out."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
