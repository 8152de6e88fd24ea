"""``broadcast`` without ``await``, and an endpoint's broker: started with it, serving it alone.

SPEC §2 and §5 (issue 20). The generic layer is tested with :class:`HandBack`, a broker that
hands every broadcast back to its endpoint; the Redis cases with ``RedisBroker`` on a real
``redis-server``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import Serve
from pytest_aiohttp import AiohttpClient, AiohttpServer
from redis_server import RedisServer
from support import TIMEOUT, Recorder

from aiohttp_wsapp import BrokerError, Connection, WebSocketApp
from aiohttp_wsapp.broker import Broadcast, Broker, Counts, Deliver


class HandBack(Broker):
    """Hands every broadcast back to its endpoint, after a turn of the loop; or fails."""

    def __init__(self, *, fail: bool = False) -> None:
        self.deliver: Deliver | None = None
        self.fail = fail

    async def start(self, deliver: Deliver, counts: Counts | None = None) -> None:
        self.deliver = deliver

    async def stop(self) -> None:
        self.deliver = None

    async def publish(self, broadcast: Broadcast) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise BrokerError("the broker is down")
        assert self.deliver is not None
        self.deliver(broadcast)

    async def count(self, group: str | None = None) -> int:
        return 0


def fan_out(count: int) -> Any:
    """An ``on_establish`` whose plain ``message`` handler broadcasts ``count`` numbered copies."""

    def on_message(conn: Connection, message: str | bytes) -> None:
        for number in range(count):
            conn.app.broadcast(f"{message!s}-{number}")  # not awaited

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        conn.on("message", on_message)

    return on_establish


async def receive_all(serve_app: Any, count: int) -> list[str]:
    """Connect to ``serve_app``'s client, say ``go``, and receive ``count`` messages."""
    async with serve_app.ws_connect("/") as ws:
        await ws.send_str("go")
        return [await ws.receive_str(timeout=TIMEOUT) for _ in range(count)]


async def test_broadcast_not_awaited_is_delivered_in_call_order(serve: Serve) -> None:
    endpoint = await serve(fan_out(20))
    async with endpoint.client.ws_connect("/websocket") as ws:
        await ws.send_str("go")
        received = [await ws.receive_str(timeout=TIMEOUT) for _ in range(20)]
    assert received == [f"go-{number}" for number in range(20)]


async def test_broadcast_not_awaited_through_a_broker_is_published_in_call_order(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(WebSocketApp(fan_out(20), broker=HandBack()).to_app())
    assert await receive_all(client, 20) == [f"go-{number}" for number in range(20)]


async def test_broadcast_not_awaited_through_redis_is_published_in_call_order(
    aiohttp_client: AiohttpClient, redis_server: RedisServer
) -> None:
    from aiohttp_wsapp.redis import RedisBroker

    wsapp = WebSocketApp(fan_out(50), broker=RedisBroker(redis_server.url))
    client = await aiohttp_client(wsapp.to_app())
    assert await receive_all(client, 50) == [f"go-{number}" for number in range(50)]


async def test_a_failed_broadcast_not_awaited_is_logged_at_warning(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    wsapp = WebSocketApp(Recorder().on_establish, broker=HandBack(fail=True))
    await aiohttp_client(wsapp.to_app())
    with caplog.at_level(logging.WARNING, logger="aiohttp_wsapp"):
        wsapp.broadcast("lost")
        with pytest.raises(BrokerError, match="the broker is down"):
            await wsapp.broadcast("awaited")
        await asyncio.sleep(0)  # the first one's task ended before the awaited one's
    [warning] = [r for r in caplog.records if r.name == "aiohttp_wsapp"]
    assert warning.levelno == logging.WARNING
    assert warning.exc_info is not None
    assert isinstance(warning.exc_info[1], BrokerError)


# -- the broker starts with the endpoint's application --------------------------------------------


def routed_by_hand(wsapp: WebSocketApp, *, setup: bool) -> web.Application:
    app = web.Application()
    app.router.add_get("/ws", wsapp.call)
    if setup:
        wsapp.setup(app)
    return app


async def test_an_endpoint_whose_broker_was_never_started_says_how_to_start_it(
    aiohttp_server: AiohttpServer,
) -> None:
    wsapp = WebSocketApp(Recorder().on_establish, broker=HandBack())
    await aiohttp_server(routed_by_hand(wsapp, setup=False))
    with pytest.raises(RuntimeError, match=r"never started.*setup\(app\)"):
        wsapp.broadcast("hello")
    with pytest.raises(RuntimeError, match=r"never started.*setup\(app\)"):
        await wsapp.count()


async def test_a_redis_broker_never_started_is_no_broker_error(
    aiohttp_server: AiohttpServer, redis_server: RedisServer
) -> None:
    from aiohttp_wsapp.redis import RedisBroker

    wsapp = WebSocketApp(Recorder().on_establish, broker=RedisBroker(redis_server.url))
    await aiohttp_server(routed_by_hand(wsapp, setup=False))
    with pytest.raises(RuntimeError, match="Mount it"):
        await wsapp.broadcast("hello")


async def test_an_endpoint_routed_by_hand_and_set_up_starts_its_broker(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    recorder = Recorder()
    wsapp = WebSocketApp(recorder.on_establish, broker=HandBack())
    server = await aiohttp_server(routed_by_hand(wsapp, setup=True))
    client: TestClient[Any, Any] = await aiohttp_client(server)
    async with client.ws_connect("/ws") as ws:
        await recorder.connection()
        await wsapp.broadcast("hello")
        assert await ws.receive_str(timeout=TIMEOUT) == "hello"
    assert await wsapp.count() == 0


# -- one broker, one endpoint ---------------------------------------------------------------------


async def test_one_broker_given_to_a_second_endpoint_fails_at_startup(
    aiohttp_server: AiohttpServer,
) -> None:
    broker = HandBack()
    first = WebSocketApp(Recorder().on_establish, broker=broker)
    second = WebSocketApp(Recorder().on_establish, broker=broker)  # accepted until startup
    server = await aiohttp_server(first.to_app())
    with pytest.raises(RuntimeError, match="serves another endpoint already: a broker serves one"):
        await aiohttp_server(second.to_app())
    await server.close()  # the first endpoint's cleanup frees the broker
    await aiohttp_server(second.to_app())


async def test_one_redis_broker_given_to_two_endpoints_says_a_broker_serves_one(
    aiohttp_server: AiohttpServer, redis_server: RedisServer
) -> None:
    from aiohttp_wsapp.redis import RedisBroker

    broker = RedisBroker(redis_server.url)
    await aiohttp_server(WebSocketApp(Recorder().on_establish, broker=broker).to_app())
    with pytest.raises(RuntimeError, match="a broker serves one endpoint"):
        await aiohttp_server(WebSocketApp(Recorder().on_establish, broker=broker).to_app())
