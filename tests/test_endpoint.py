"""The endpoint: routing, the handshake in SPEC order, ``on_error`` and the default answers."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from conftest import Endpoint, Serve, echo
from pytest_aiohttp import AiohttpClient
from support import TIMEOUT, Recorder

from aiohttp_wsapp import (
    ERROR_KEY,
    HANDSHAKE_ERROR_KEY,
    INVALID_REQUEST,
    NOT_SUPPORTED,
    WSAPP_KEY,
    Connection,
    WebSocketApp,
    WebSocketServer,
    create_app,
)

WS_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


async def http_get(endpoint: Endpoint, headers: dict[str, str]) -> aiohttp.ClientResponse:
    """A plain HTTP GET of the endpoint with ``headers``, its body read."""
    response = await endpoint.client.get("/websocket", headers=headers)
    await response.read()
    return response


@pytest.mark.parametrize("path", ["/websocket", "/websocket/", "/websocket/room/42"])
async def test_answers_the_mount_path_and_every_path_below(serve: Serve, path: str) -> None:
    endpoint = await serve(echo)
    async with endpoint.client.ws_connect(path) as ws:
        await ws.send_str("hi")
        assert await ws.receive_str() == "hi"


async def test_sub_path_is_the_tail_match(serve: Serve, recorder: Recorder) -> None:
    tails: list[str] = []

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        tails.append(request.match_info.get("tail", ""))
        recorder.on_establish(conn, request, results)

    endpoint = await serve(on_establish)
    for path in ("/websocket", "/websocket/", "/websocket/a/b"):
        async with endpoint.client.ws_connect(path):
            await recorder.connection()
    assert tails == ["", "", "a/b"]


async def test_standalone_app_answers_every_path(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app(echo))
    for path in ("/", "/anything/at/all"):
        async with client.ws_connect(path) as ws:
            await ws.send_bytes(b"\x00\x01")
            assert await ws.receive_bytes() == b"\x00\x01"


async def test_route_to_call_works_as_a_plain_handler(aiohttp_client: AiohttpClient) -> None:
    app = web.Application()
    app.router.add_get("/ws", WebSocketApp(echo).call)
    client = await aiohttp_client(app)
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("plain")
        assert await ws.receive_str() == "plain"


def test_to_app_stores_the_endpoint_under_wsapp_key() -> None:
    wsapp = WebSocketApp(echo)
    sub = wsapp.to_app()
    assert sub[WSAPP_KEY] is wsapp
    assert isinstance(create_app(echo)[WSAPP_KEY], WebSocketApp)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"on_establish": None}, TypeError),
        ({"on_establish": echo, "on_error": "nope"}, TypeError),
        ({"on_establish": echo, "websocket_server": object()}, TypeError),
        ({"on_establish": echo, "max_connections": 0}, ValueError),
        ({"on_establish": echo, "max_connections": "10"}, TypeError),
        ({"on_establish": echo, "broker": object()}, TypeError),
    ],
)
def test_bad_constructor_arguments_raise(kwargs: dict[str, Any], error: type[Exception]) -> None:
    on_establish = kwargs.pop("on_establish")
    with pytest.raises(error):
        WebSocketApp(on_establish, **kwargs)


# -- invalid requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "broken",
    [
        {"Upgrade": "h2c"},
        {"Connection": "keep-alive"},
        {"Sec-WebSocket-Key": "short"},
        {"Sec-WebSocket-Key": "not base64 at all!!!!!!!"},
    ],
)
async def test_invalid_handshake_is_a_400_with_a_description(
    serve: Serve, broken: dict[str, str]
) -> None:
    endpoint = await serve(echo)
    response = await http_get(endpoint, WS_HEADERS | broken)
    assert response.status == 400
    assert (await response.text()).startswith("Error: invalid request: ")


async def test_missing_key_is_a_400(serve: Serve) -> None:
    endpoint = await serve(echo)
    headers = {k: v for k, v in WS_HEADERS.items() if k != "Sec-WebSocket-Key"}
    assert (await http_get(endpoint, headers)).status == 400


async def test_post_is_an_invalid_request(serve: Serve) -> None:
    endpoint = await serve(echo)
    response = await endpoint.client.post("/websocket", headers=WS_HEADERS)
    assert response.status == 400
    assert "GET" in await response.text()


async def test_plain_page_request_is_an_invalid_request(serve: Serve) -> None:
    endpoint = await serve(echo)
    response = await endpoint.client.get("/websocket/")
    assert response.status == 400


async def test_unsupported_version_is_426_naming_version_13(serve: Serve) -> None:
    endpoint = await serve(echo)
    response = await http_get(endpoint, WS_HEADERS | {"Sec-WebSocket-Version": "8"})
    assert response.status == 426
    assert response.headers["Sec-WebSocket-Version"] == "13"


async def test_on_error_sees_the_error_and_the_handshake_exception(serve: Serve) -> None:
    seen: list[tuple[str, Exception | None]] = []

    def on_error(request: web.Request) -> web.Response:
        seen.append((request[ERROR_KEY], request.get(HANDSHAKE_ERROR_KEY)))
        return web.Response(status=418, text="Error: " + request[ERROR_KEY])

    endpoint = await serve(echo, on_error=on_error)
    response = await http_get(endpoint, {})
    assert response.status == 418
    assert await response.text() == "Error: invalid request"
    [(error, cause)] = seen
    assert error == INVALID_REQUEST
    assert isinstance(cause, web.HTTPBadRequest)


async def test_async_on_error(serve: Serve) -> None:
    async def on_error(request: web.Request) -> web.Response:
        await asyncio.sleep(0)
        return web.Response(status=500, text="async " + request[ERROR_KEY])

    endpoint = await serve(echo, on_error=on_error)
    response = await http_get(endpoint, {})
    assert (response.status, await response.text()) == (500, "async invalid request")


async def test_on_error_that_streams_its_own_response(serve: Serve) -> None:
    async def on_error(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=400, headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for part in ("streamed ", "error: ", request[ERROR_KEY]):
            await response.write(part.encode())
        await response.write_eof()
        return response

    endpoint = await serve(echo, on_error=on_error)
    response = await http_get(endpoint, {})
    assert (response.status, await response.text()) == (400, "streamed error: invalid request")


async def test_on_establish_is_not_called_when_the_handshake_fails(serve: Serve) -> None:
    called: list[Connection] = []
    endpoint = await serve(lambda conn, request, results: called.append(conn))
    await http_get(endpoint, WS_HEADERS | {"Sec-WebSocket-Version": "12"})
    assert called == []


def socketless_request() -> web.Request:
    """A request that comes from no socket, as aiohttp's own test helper builds it."""
    request = make_mocked_request("GET", "/", headers=WS_HEADERS)
    request.protocol.transport = None
    return request


async def test_request_without_transport_is_not_supported() -> None:
    errors: list[str] = []

    def on_error(request: web.Request) -> web.Response:
        errors.append(request[ERROR_KEY])
        assert HANDSHAKE_ERROR_KEY not in request
        return web.Response(status=500)

    response = await WebSocketApp(echo, on_error=on_error).call(socketless_request())
    assert response.status == 500
    assert errors == [NOT_SUPPORTED]


async def test_default_answer_when_not_supported() -> None:
    response = await WebSocketApp(echo).call(socketless_request())
    assert isinstance(response, web.Response)
    assert (response.status, response.text) == (500, "Error: not supported by the server")


# -- the handshake callback --------------------------------------------------------------------


async def test_handshake_callback_header_reaches_the_101(serve: Serve) -> None:
    def handshake(request: web.Request, response: web.WebSocketResponse) -> None:
        response.headers["Sec-WebSocket-Protocol"] = "chat.v1"

    endpoint = await serve(echo, websocket_server=WebSocketServer(handshake=handshake))
    async with endpoint.client.ws_connect("/websocket", protocols=["chat.v1"]) as ws:
        assert ws.protocol == "chat.v1"


async def test_handshake_results_reach_on_establish(serve: Serve) -> None:
    results: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        results.put_nowait(hs)

    server = WebSocketServer(handshake=lambda request, response: (1, 2, 3))
    endpoint = await serve(on_establish, websocket_server=server)
    async with endpoint.client.ws_connect("/websocket"):
        assert await asyncio.wait_for(results.get(), TIMEOUT) == (1, 2, 3)


@pytest.mark.parametrize(
    ("returned", "results"), [(None, ()), ("user", ("user",)), (("a", "b"), ("a", "b"))]
)
async def test_async_validator_results_rule(
    serve: Serve, returned: Any, results: tuple[Any, ...]
) -> None:
    seen: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    async def validator(request: web.Request) -> Any:
        return returned

    endpoint = await serve(
        lambda conn, request, hs: seen.put_nowait(hs),
        websocket_server=WebSocketServer(validator=validator),
    )
    async with endpoint.client.ws_connect("/websocket"):
        assert await asyncio.wait_for(seen.get(), TIMEOUT) == results


async def test_handshake_callback_wins_over_validator(serve: Serve) -> None:
    seen: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    server = WebSocketServer(
        handshake=lambda request, response: "handshake", validator=lambda request: "validator"
    )
    endpoint = await serve(lambda c, r, hs: seen.put_nowait(hs), websocket_server=server)
    async with endpoint.client.ws_connect("/websocket"):
        assert await asyncio.wait_for(seen.get(), TIMEOUT) == ("handshake",)


async def test_handshake_callback_that_raises_is_an_invalid_request(serve: Serve) -> None:
    causes: list[Exception] = []

    def handshake(request: web.Request, response: web.WebSocketResponse) -> None:
        raise LookupError("no such room")

    def on_error(request: web.Request) -> web.Response:
        causes.append(request[HANDSHAKE_ERROR_KEY])
        return web.Response(status=400, text=request[ERROR_KEY])

    endpoint = await serve(
        echo, on_error=on_error, websocket_server=WebSocketServer(handshake=handshake)
    )
    response = await http_get(endpoint, WS_HEADERS)
    assert (response.status, await response.text()) == (400, INVALID_REQUEST)
    assert [type(cause) for cause in causes] == [LookupError]


async def test_http_exception_from_handshake_is_answered_as_it_is(serve: Serve) -> None:
    def handshake(request: web.Request, response: web.WebSocketResponse) -> None:
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="chat"'})

    endpoint = await serve(echo, websocket_server=WebSocketServer(handshake=handshake))
    response = await http_get(endpoint, WS_HEADERS)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="chat"'


@pytest.mark.parametrize(
    ("server_protocols", "offered", "chosen"),
    [
        (("v2", "v1"), ["v1", "v2"], "v2"),
        (("v1", "v2"), ["v2", "v1"], "v1"),
        (("v2", "v1"), ["v1"], "v1"),
        (("v2", "v1"), [], None),
    ],
)
async def test_subprotocol_is_negotiated_in_preference_order(
    serve: Serve, server_protocols: tuple[str, ...], offered: list[str], chosen: str | None
) -> None:
    """The server's first protocol that the client offers, whatever the client's own order."""
    protocols: asyncio.Queue[str | None] = asyncio.Queue()
    server = WebSocketServer(protocols=server_protocols)
    endpoint = await serve(
        lambda conn, request, hs: protocols.put_nowait(conn.protocol), websocket_server=server
    )
    async with endpoint.client.ws_connect("/websocket", protocols=offered) as ws:
        assert ws.protocol == chosen
        assert await asyncio.wait_for(protocols.get(), TIMEOUT) == chosen


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"handshake": 1}, TypeError),
        ({"validator": "x"}, TypeError),
        ({"max_payload_size": -1}, ValueError),
        ({"max_payload_size": "big"}, TypeError),
        ({"heartbeat": 0}, ValueError),
        ({"send_buffer_limit": 0}, ValueError),
        ({"close_timeout": -1.0}, ValueError),
        ({"protocols": "chat"}, TypeError),
        ({"allowed_origins": "https://example.com"}, ValueError),
        ({"allowed_origins": [1]}, TypeError),
    ],
)
def test_bad_server_settings_raise(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        WebSocketServer(**kwargs)


async def test_server_preference_decides_the_subprotocol(serve: Serve) -> None:
    endpoint = await serve(echo, websocket_server=WebSocketServer(protocols=("v2", "v1")))
    async with endpoint.client.ws_connect("/websocket", protocols=["v1", "v2"]) as ws:
        assert ws.protocol == "v2"


async def test_setup_ties_a_routed_endpoint_to_shutdown(aiohttp_client: AiohttpClient) -> None:
    finished: asyncio.Future[int | None] = asyncio.Future()
    wsapp = WebSocketApp(
        lambda conn, request, hs: conn.on("finish", lambda c: finished.set_result(c.close_code))
    )
    app = web.Application()
    app.router.add_get("/ws", wsapp.call)
    wsapp.setup(app)
    client = await aiohttp_client(app)
    async with client.ws_connect("/ws") as ws:
        closing = asyncio.ensure_future(ws.receive())  # reads and answers the close frame
        await client.server.close()
        # The application's shutdown has returned: finish has fired already.
        assert finished.done()
        assert finished.result() == 1001
        assert (await asyncio.wait_for(closing, TIMEOUT)).data == 1001
