"""Mistakes a new user makes are reported where they are made, and loudly (issue 20).

A callback that cannot take the arguments it will be given, a subprotocol that is no token, an
``allowed_origins`` entry that is no origin: refused when the endpoint or its settings are made,
with an error that names the culprit. A handshake callback's bug is logged at WARNING with its
traceback. ``request[HANDSHAKE_ERROR_KEY]`` says why a handshake failed.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import pytest
from aiohttp import web
from conftest import Serve, echo
from support import Recorder
from test_endpoint import WS_HEADERS, http_get

from aiohttp_wsapp import (
    ERROR_KEY,
    HANDSHAKE_ERROR_KEY,
    INVALID_REQUEST,
    Connection,
    WebSocketApp,
    WebSocketServer,
    create_app,
)

# -- callbacks whose signature cannot take their arguments ----------------------------------------


def two_parameters(conn: Any, request: Any) -> None: ...


def four_required(conn: Any, request: Any, results: Any, extra: Any) -> None: ...


def keyword_only(conn: Any, request: Any, results: Any, *, user: Any) -> None: ...


@pytest.mark.parametrize("on_establish", [two_parameters, four_required, keyword_only])
def test_an_on_establish_that_cannot_take_three_arguments_is_refused(on_establish: Any) -> None:
    with pytest.raises(TypeError, match=r"on_establish is called as on_establish\("):
        WebSocketApp(on_establish)
    with pytest.raises(TypeError, match="on_establish"):
        create_app(on_establish)


def one_parameter(request: Any) -> None: ...


def no_parameter() -> None: ...


WRONG: Any = {"two": two_parameters, "one": one_parameter, "none": no_parameter}
"""The callbacks above, as a user whose code is not type-checked passes them."""


def test_an_on_error_that_cannot_take_the_request_is_refused() -> None:
    with pytest.raises(TypeError, match=r"on_error is called as on_error\(request\)"):
        WebSocketApp(echo, on_error=WRONG["two"])
    with pytest.raises(TypeError, match="on_error"):
        WebSocketApp(echo, on_error=WRONG["none"])


def test_a_handshake_that_cannot_take_request_and_response_is_refused() -> None:
    with pytest.raises(TypeError, match=r"handshake is called as handshake\(request, response\)"):
        WebSocketServer(handshake=WRONG["one"])


def test_a_validator_that_cannot_take_the_request_is_refused() -> None:
    with pytest.raises(TypeError, match=r"validator is called as validator\(request\)"):
        WebSocketServer(validator=WRONG["two"])


class Handlers:
    def on_establish(
        self, conn: Connection, request: web.Request, results: tuple[Any, ...]
    ) -> None:
        """A bound method: ``self`` does not count."""

    def __call__(self, conn: Any, *rest: Any) -> None:
        """A callable instance taking any number of arguments."""


async def async_on_establish(conn: Any, request: Any, results: Any, extra: Any = None) -> None:
    """A coroutine function with an optional fourth parameter."""


@pytest.mark.parametrize(
    "on_establish",
    [
        echo,
        async_on_establish,
        Handlers().on_establish,
        Handlers(),
        lambda *args: None,
        functools.partial(four_required, "bound first"),
        type,  # its signature cannot be read: accepted
    ],
    ids=["function", "async", "bound-method", "callable", "varargs", "partial", "unreadable"],
)
def test_callbacks_that_take_their_arguments_are_accepted(on_establish: Any) -> None:
    WebSocketApp(on_establish, on_error=lambda request: web.Response())
    WebSocketServer(handshake=lambda request, response: None, validator=print)


def test_a_callback_that_is_not_callable_is_still_a_type_error() -> None:
    with pytest.raises(TypeError, match="on_establish must be callable"):
        WebSocketApp("not a function")  # type: ignore[arg-type]


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocols", [[1], ["chat.v1", None], [b"chat.v1"]])
def test_a_subprotocol_that_is_not_a_string_is_a_type_error(protocols: Any) -> None:
    with pytest.raises(TypeError, match="protocols must contain strings"):
        WebSocketServer(protocols=protocols)


@pytest.mark.parametrize("protocol", ["", "chat v1", "chat,v1", "chat/v1", "ché"])
def test_a_subprotocol_that_is_not_a_token_is_a_value_error(protocol: str) -> None:
    with pytest.raises(ValueError, match="a subprotocol is a token"):
        WebSocketServer(protocols=["chat.v1", protocol])


def test_token_subprotocols_are_accepted() -> None:
    server = WebSocketServer(protocols=["chat.v2", "chat.v1", "wamp.2.json", "x-y_z~1!"])
    assert server.protocols == ("chat.v2", "chat.v1", "wamp.2.json", "x-y_z~1!")


@pytest.mark.parametrize(
    ("origin", "why"),
    [
        ("127.0.0.1", "a scheme and a host"),
        ("example.com", "a scheme and a host"),
        ("127.0.0.1:8080", "a scheme and a host"),
        ("null", "a scheme and a host"),
        ("https://example.com/chat", "without a path"),
        ("https://example.com/?x=1", "without a path"),
    ],
)
def test_an_allowed_origin_that_is_no_origin_is_a_value_error(origin: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        WebSocketServer(allowed_origins=["https://good.example", origin])


def test_origins_are_accepted_with_a_port_or_a_trailing_slash() -> None:
    server = WebSocketServer(
        allowed_origins=["https://example.com/", "http://127.0.0.1:8080", "HTTPS://Example.org"]
    )
    assert server.allowed_origins == frozenset(
        {"https://example.com", "http://127.0.0.1:8080", "https://example.org"}
    )


def test_a_bad_compress_value_lists_every_good_one() -> None:
    with pytest.raises(ValueError, match="True, False, 'shared' or 'dedicated', not 'sharde'"):
        WebSocketServer(compress="sharde")  # type: ignore[arg-type]


# -- handshake callbacks and errors ---------------------------------------------------------------


async def test_a_handshake_callback_that_raises_is_logged_at_warning_with_its_traceback(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    def handshake(request: web.Request, response: web.WebSocketResponse) -> None:
        raise KeyError("room")

    endpoint = await serve(echo, websocket_server=WebSocketServer(handshake=handshake))
    with caplog.at_level(logging.DEBUG, logger="aiohttp_wsapp"):
        response = await http_get(endpoint, WS_HEADERS)
    assert (response.status, await response.text()) == (400, f"Error: {INVALID_REQUEST}")
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.name == "aiohttp_wsapp"
    assert warning.exc_info is not None
    assert isinstance(warning.exc_info[1], KeyError)
    assert "handshake callback" in warning.getMessage()


async def test_an_http_exception_from_a_handshake_callback_is_logged_at_debug_only(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    def handshake(request: web.Request, response: web.WebSocketResponse) -> None:
        raise web.HTTPUnauthorized()

    endpoint = await serve(echo, websocket_server=WebSocketServer(handshake=handshake))
    with caplog.at_level(logging.DEBUG, logger="aiohttp_wsapp"):
        response = await http_get(endpoint, WS_HEADERS)
    assert response.status == 401
    ours = [r for r in caplog.records if r.name == "aiohttp_wsapp"]
    assert ours
    assert all(r.levelno == logging.DEBUG for r in ours)


@pytest.mark.parametrize(
    ("headers", "reason", "status"),
    [
        (
            {**WS_HEADERS, "Sec-WebSocket-Protocol": "other"},
            "no common subprotocol: this server speaks chat.v2, chat.v1",
            400,
        ),
        (
            {k: v for k, v in WS_HEADERS.items() if k != "Upgrade"},
            "no 'Upgrade: websocket' header",
            400,
        ),
        (
            {**WS_HEADERS, "Sec-WebSocket-Version": "8"},
            "unsupported Sec-WebSocket-Version '8'",
            426,
        ),
    ],
    ids=["subprotocol", "upgrade", "version"],
)
async def test_the_handshake_error_names_its_reason_and_the_default_answer_is_unchanged(
    serve: Serve, headers: dict[str, str], reason: str, status: int
) -> None:
    seen: list[str] = []

    def on_error(request: web.Request) -> web.Response:
        seen.append(str(request[HANDSHAKE_ERROR_KEY]))
        return web.Response(status=400, text=request[ERROR_KEY])

    server = WebSocketServer(protocols=["chat.v2", "chat.v1"])
    custom = await serve(echo, on_error=on_error, websocket_server=server)
    await http_get(custom, headers)
    assert seen == [reason]

    default = await serve(Recorder().on_establish, websocket_server=server)
    response = await http_get(default, headers)
    assert response.status == status
    assert response.reason == ("Bad Request" if status == 400 else "Upgrade Required")
    assert await response.text() == f"Error: invalid request: {reason}"
