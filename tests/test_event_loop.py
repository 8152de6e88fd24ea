"""The event loop the suite runs on: with ``AIOHTTP_WSAPP_LOOP=uvloop`` (see ``conftest.py``)
every asyncio test, and the server its fixtures start, runs on a ``uvloop.Loop``."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from conftest import EVENT_LOOP, Serve

from aiohttp_wsapp import Connection


def chosen_loop_type() -> type[asyncio.AbstractEventLoop]:
    """The class of loop ``AIOHTTP_WSAPP_LOOP`` asks for."""
    if EVENT_LOOP == "uvloop":
        import uvloop

        return uvloop.Loop
    loop = asyncio.new_event_loop()
    loop.close()
    return type(loop)


async def test_the_test_and_the_endpoint_run_on_the_chosen_loop(serve: Serve) -> None:
    endpoint_loops: list[asyncio.AbstractEventLoop] = []

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        endpoint_loops.append(asyncio.get_running_loop())
        conn.close()

    endpoint = await serve(on_establish)
    async with endpoint.client.ws_connect("/websocket") as ws:
        await ws.receive()
    assert type(asyncio.get_running_loop()) is chosen_loop_type()
    assert endpoint_loops == [asyncio.get_running_loop()]
