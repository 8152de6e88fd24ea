"""``await wsapp.count(group=None)`` and ``wsapp.groups`` without a broker: this process's
connections (SPEC §5). With ``RedisBroker``, see ``test_redis.py``."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from conftest import Endpoint, Serve
from support import Recorder

from aiohttp_wsapp import Connection


@pytest.fixture
async def endpoint(serve: Serve, recorder: Recorder) -> Endpoint:
    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        if tail := request.match_info.get("tail", ""):
            conn.join(tail)
        recorder.on_establish(conn, request, results)

    return await serve(on_establish)


async def test_count_is_the_open_connections_without_a_broker(
    endpoint: Endpoint, recorder: Recorder
) -> None:
    wsapp = endpoint.wsapp
    assert await wsapp.count() == 0
    first = await endpoint.client.ws_connect("/websocket")
    await recorder.connection()
    second = await endpoint.client.ws_connect("/websocket")
    await recorder.connection()
    assert await wsapp.count() == 2

    await first.close()
    await recorder.finish()
    assert await wsapp.count() == 1
    await second.close()
    await recorder.finish()
    assert await wsapp.count() == 0


async def test_count_of_a_group_is_its_open_members_without_a_broker(
    endpoint: Endpoint, recorder: Recorder
) -> None:
    wsapp = endpoint.wsapp
    clients, conns = [], []
    for path in ("/websocket/red", "/websocket/red", "/websocket/blue"):
        clients.append(await endpoint.client.ws_connect(path))
        conns.append(await recorder.connection())
    assert (await wsapp.count("red"), await wsapp.count("blue")) == (2, 1)
    assert await wsapp.count("nobody's") == 0
    assert wsapp.groups == {"red": frozenset(conns[:2]), "blue": frozenset(conns[2:])}

    conns[0].leave("red")
    conns[2].join("red")
    assert (await wsapp.count("red"), await wsapp.count("blue")) == (2, 1)
    await clients[1].close()  # a closed connection leaves its groups
    assert await recorder.finish() is conns[1]
    assert (await wsapp.count("red"), await wsapp.count("blue")) == (1, 1)
    conns[2].leave("blue")
    assert await wsapp.count("blue") == 0
    assert "blue" not in wsapp.groups
    assert await wsapp.count() == 2  # leaving groups closes nothing
