"""``await wsapp.drain(over)``: refuse new handshakes, close the open connections with 1012
spread evenly over ``over`` seconds, return when every ``finish`` has fired.

Close times are read by the clients, on the clock they share with the server (one event loop).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType
from aiohttp.test_utils import TestClient
from conftest import Serve
from support import TIMEOUT, Recorder

from aiohttp_wsapp import SHUTTING_DOWN


async def closed_at(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, float]:
    """Wait for the server's close frame; return its code and when it came."""
    message = await ws.receive(TIMEOUT)
    assert message.type is WSMsgType.CLOSE, message
    return message.data, asyncio.get_running_loop().time()


async def refusal(client: TestClient[Any, Any]) -> aiohttp.WSServerHandshakeError:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/websocket")
    return refused.value


async def test_drain_closes_every_connection_with_1012_spread_evenly_over_the_period(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish)
    client, wsapp = endpoint.client, endpoint.wsapp
    count, over = 10, 1.5
    sockets = [await client.ws_connect("/websocket") for _ in range(count)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    draining = asyncio.create_task(wsapp.drain(over=over))
    closes = await asyncio.gather(*(closed_at(ws) for ws in sockets))
    await asyncio.wait_for(draining, TIMEOUT)
    returned = loop.time()
    for ws in sockets:
        await ws.close()
    assert [code for code, _ in closes] == [WSCloseCode.SERVICE_RESTART] * count
    times = sorted(at - started for _, at in closes)
    # Evenly spread: the i-th close comes in its slot, i * over / count, never before it and
    # not much after it (a margin proportional to the period for a loaded machine).
    for slot, at in enumerate(times):
        assert slot * over / count <= at + 0.005 <= slot * over / count + over / 5, (slot, times)
    # It returned once every finish had fired, and not long after the last close.
    assert recorder.finish_count == count
    assert returned - started <= over + over / 5
    assert all(conn.close_code == 1012 for conn in recorder.finishes)


async def test_handshakes_during_and_after_a_drain_get_503_with_retry_after(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish)
    client, wsapp = endpoint.client, endpoint.wsapp
    over = 2.5
    sockets = [await client.ws_connect("/websocket") for _ in range(2)]
    draining = asyncio.create_task(wsapp.drain(over=over))
    closing = [asyncio.create_task(closed_at(ws)) for ws in sockets]  # they answer the closes
    await recorder.finish()  # the first connection closes at once, the second at 1.25 s
    early = await refusal(client)
    assert early.status == 503
    assert early.headers is not None
    retry_after = int(early.headers["Retry-After"])
    assert retry_after == math.ceil(over)  # a few milliseconds into a 2.5 s drain: 3 s
    page = await client.get("/")  # the rest of the application is served as before
    assert page.status == 200
    await recorder.finish()
    late = await refusal(client)  # past the middle of the drain: 1 second left at most
    assert late.headers is not None
    assert late.headers["Retry-After"] in ("1", "2")
    await asyncio.wait_for(draining, TIMEOUT)
    after = await refusal(client)  # drained: still refused, until the application restarts
    assert after.status == 503
    assert after.headers is not None
    assert after.headers["Retry-After"] == "1"
    assert wsapp.stats().handshakes_refused[SHUTTING_DOWN] == 3
    await asyncio.gather(*closing)
    for ws in sockets:
        await ws.close()


async def test_a_drain_without_connections_returns_at_once(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(endpoint.wsapp.drain(over=30.0), TIMEOUT)
    assert loop.time() - started < 1.0
    assert (await refusal(endpoint.client)).status == 503


async def test_shutdown_during_a_drain_closes_the_rest_with_1001(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish)
    client, wsapp = endpoint.client, endpoint.wsapp
    sockets = [await client.ws_connect("/websocket") for _ in range(4)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    draining = asyncio.create_task(wsapp.drain(over=60.0))
    closing = [asyncio.create_task(closed_at(ws)) for ws in sockets]
    await recorder.finish()  # the first slot is at once, the next one 15 s later
    shutdown = asyncio.create_task(wsapp.shutdown())
    codes = sorted(code for code, _ in await asyncio.gather(*closing))
    await asyncio.wait_for(draining, TIMEOUT)
    await asyncio.wait_for(shutdown, TIMEOUT)
    assert loop.time() - started < 60.0 / 4  # the drain did not wait for its next slot
    assert codes == [WSCloseCode.GOING_AWAY] * 3 + [WSCloseCode.SERVICE_RESTART]
    assert recorder.finish_count == 4
    for ws in sockets:
        await ws.close()


async def test_drain_over_zero_closes_every_connection_at_once(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish)
    sockets = [await endpoint.client.ws_connect("/websocket") for _ in range(3)]
    closing = [asyncio.create_task(closed_at(ws)) for ws in sockets]
    await asyncio.wait_for(endpoint.wsapp.drain(over=0), TIMEOUT)
    assert recorder.finish_count == 3
    codes = [code for code, _ in await asyncio.gather(*closing)]
    assert codes == [WSCloseCode.SERVICE_RESTART] * 3
    for ws in sockets:
        await ws.close()


@pytest.mark.parametrize(("over", "error"), [(-1.0, ValueError), ("30", TypeError)])
async def test_drain_refuses_a_period_that_is_not_a_number_of_seconds(
    serve: Serve, recorder: Recorder, over: Any, error: type[Exception]
) -> None:
    endpoint = await serve(recorder.on_establish)
    with pytest.raises(error, match="over"):
        await endpoint.wsapp.drain(over=over)
    async with endpoint.client.ws_connect("/websocket"):  # nothing was drained
        await recorder.connection()
