"""The opening handshake's checks (SPEC §2 step 3): each rejection on its own, without sockets,
then the ones that repeated header lines make, over real sockets with raw requests."""

from __future__ import annotations

import base64
import binascii
import string
import sys
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from conftest import Serve
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from rawws import address, handshake_headers, http_exchange, http_request
from support import Recorder

from aiohttp_wsapp import ERROR_KEY, INVALID_REQUEST, WebSocketServer
from aiohttp_wsapp.handshake import check_opening_handshake

Headers = list[tuple[str, str]]


def request_with(headers: Headers, method: str = "GET") -> web.Request:
    """A request that no socket carried: enough for checks that only read its head."""
    return make_mocked_request(method, "/ws", headers=CIMultiDict(headers))


def valid() -> Headers:
    return handshake_headers()


def replaced(headers: Headers, name: str, value: str | None) -> Headers:
    kept = [(key, old) for key, old in headers if key.lower() != name.lower()]
    return kept if value is None else [*kept, (name, value)]


@pytest.mark.parametrize(
    ("headers", "method", "status", "says"),
    [
        pytest.param(valid(), "POST", 400, "method must be GET", id="post"),
        pytest.param(replaced(valid(), "Upgrade", "h2c"), "GET", 400, "Upgrade", id="upgrade"),
        pytest.param(
            replaced(valid(), "Connection", "keep-alive"), "GET", 400, "Connection", id="connection"
        ),
        pytest.param(replaced(valid(), "Sec-WebSocket-Key", None), "GET", 400, "Key", id="no-key"),
        pytest.param(
            replaced(valid(), "Sec-WebSocket-Key", "c2hvcnQ="), "GET", 400, "Key", id="short-key"
        ),
        pytest.param(
            [*valid(), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")],
            "GET",
            400,
            "repeated Sec-WebSocket-Key",
            id="two-keys",
        ),
        pytest.param(
            [*valid(), ("Origin", "https://a.example"), ("Origin", "https://b.example")],
            "GET",
            400,
            "repeated Origin",
            id="two-origins",
        ),
        pytest.param(
            replaced(valid(), "Sec-WebSocket-Version", "8"), "GET", 426, "Version", id="version"
        ),
    ],
)
def test_each_defect_is_refused_with_its_reason(
    headers: Headers, method: str, status: int, says: str
) -> None:
    with pytest.raises(web.HTTPException) as refused:
        check_opening_handshake(request_with(headers, method), ())
    assert refused.value.status == status
    assert says in (refused.value.text or "")


def test_a_valid_handshake_without_protocols_speaks_none() -> None:
    offered = [*valid(), ("Sec-WebSocket-Protocol", "chat")]
    assert check_opening_handshake(request_with(valid()), ("chat",)) is None
    assert check_opening_handshake(request_with(offered), ()) is None


def test_the_servers_first_protocol_that_is_offered_wins() -> None:
    offered = [*valid(), ("Sec-WebSocket-Protocol", "v1, v2")]
    assert check_opening_handshake(request_with(offered), ("v2", "v1")) == "v2"


def test_protocols_on_several_lines_are_one_list() -> None:
    offered = [
        *valid(),
        ("Sec-WebSocket-Protocol", "x-other"),
        ("Sec-WebSocket-Protocol", "chat"),
    ]
    assert check_opening_handshake(request_with(offered), ("chat",)) == "chat"


def test_an_offer_without_a_common_protocol_is_refused_naming_the_servers() -> None:
    offered = [*valid(), ("Sec-WebSocket-Protocol", "x-other")]
    with pytest.raises(web.HTTPBadRequest) as refused:
        check_opening_handshake(request_with(offered), ("chat", "chat.v2"))
    assert "no common subprotocol" in (refused.value.text or "")
    assert "chat, chat.v2" in (refused.value.text or "")


# -- over real sockets -------------------------------------------------------------------------


async def exchange(
    serve: Serve, recorder: Recorder, extra: Headers, **settings: Any
) -> tuple[str, list[str]]:
    """Send a valid handshake plus ``extra`` header lines to an endpoint with these settings.

    Return the status and the subprotocol of the answer (``"101 chat"``), and the error strings
    that ``on_error`` saw.
    """
    errors: list[str] = []

    def on_error(request: web.Request) -> web.Response:
        errors.append(request[ERROR_KEY])
        return web.Response(status=400, text=f"refused: {request[ERROR_KEY]}")

    endpoint = await serve(
        recorder.on_establish, on_error=on_error, websocket_server=WebSocketServer(**settings)
    )
    host, port = address(endpoint.server)
    request = http_request([*handshake_headers(f"{host}:{port}"), *extra], path="/websocket")
    response = await http_exchange(host, port, request)
    return f"{response.status} {response.headers.get('Sec-WebSocket-Protocol')}", errors


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")], id="two-keys"),
        pytest.param([("Origin", "http://x.test"), ("Origin", "http://y.test")], id="two-origins"),
        pytest.param([("Sec-WebSocket-Protocol", "x-other")], id="no-common-protocol"),
    ],
)
async def test_repeated_headers_and_foreign_protocols_go_to_on_error(
    serve: Serve, recorder: Recorder, extra: Headers
) -> None:
    answer = await exchange(serve, recorder, extra, protocols=("chat",), allowed_origins="*")
    assert answer == ("400 None", [INVALID_REQUEST])
    assert recorder.connections == []


async def test_a_protocol_offered_on_a_second_line_is_chosen(
    serve: Serve, recorder: Recorder
) -> None:
    extra = [("Sec-WebSocket-Protocol", "x-other"), ("Sec-WebSocket-Protocol", "chat")]
    assert await exchange(serve, recorder, extra, protocols=("chat",)) == ("101 chat", [])
    conn = await recorder.connection()
    assert conn.protocol == "chat"


async def test_a_client_that_offers_no_protocol_is_accepted_without_one(
    serve: Serve, recorder: Recorder
) -> None:
    assert await exchange(serve, recorder, [], protocols=("chat",)) == ("101 None", [])
    assert (await recorder.connection()).protocol is None


# -- the Sec-WebSocket-Key check on every Python ------------------------------------------------


def key_is_accepted(key: str) -> bool:
    """Whether the handshake check accepts ``key`` as the request's ``Sec-WebSocket-Key``."""
    try:
        check_opening_handshake(request_with(replaced(valid(), "Sec-WebSocket-Key", key)), ())
    except web.HTTPBadRequest:
        return False
    return True


@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        pytest.param("dGhlIHNhbXBsZSBub25jZQ==", True, id="rfc-6455-example"),
        pytest.param("AAAAAAAAAAAAAAAAAAAAAB==", True, id="non-zero-unused-bits"),
        pytest.param("+/+/+/+/+/+/+/+/+/+/+w==", True, id="plus-and-slash"),
        pytest.param("dGhlIHNhbXBsZSBub25jZQ=", False, id="one-padding-character"),
        pytest.param("dGhlIHNhbXBsZSBub25jZQ", False, id="no-padding"),
        pytest.param("dGhlIHNhbXBsZSBub25jZQ==\n", False, id="trailing-newline"),
        pytest.param("dGhlIHNhbXBsZSBub25jZQ==QQ", False, id="data-after-padding"),
        pytest.param("dGhlIHNhbXBsZSBub25jZXM=", False, id="17-bytes"),
        pytest.param("dGhlIHNhbXBsZSBub25j", False, id="15-bytes"),
        pytest.param("dGhlIHNhbXBsZSBub25j-_==", False, id="url-safe-alphabet"),
        pytest.param("dGhlIHNhbXBsZSBub25jZ é", False, id="not-ascii"),
    ],
)
def test_the_key_must_be_strict_base64_of_16_bytes(key: str, accepted: bool) -> None:
    # The check once used binascii's strict_mode, which Python 3.10 lacks: there every
    # handshake failed, so the valid keys here are what failed on 3.10.
    assert key_is_accepted(key) is accepted


base64ish_keys = st.one_of(
    st.binary(min_size=14, max_size=18).map(lambda raw: base64.b64encode(raw).decode()),
    st.text(alphabet=string.ascii_letters + string.digits + "+/=-_ \t\n", min_size=20, max_size=27),
    st.binary(min_size=16, max_size=16)
    .map(lambda raw: base64.b64encode(raw).decode())
    .flatmap(lambda key: st.integers(0, len(key)).map(lambda at: key[:at] + "=" + key[at:])),
)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="binascii's strict_mode is Python 3.11+")
@settings(max_examples=500, deadline=None)
@given(key=base64ish_keys)
def test_the_key_check_agrees_with_binascii_strict_mode(key: str) -> None:
    try:
        strictly_16_bytes = len(binascii.a2b_base64(key, strict_mode=True)) == 16  # type: ignore[call-arg,unused-ignore]
    except ValueError:
        strictly_16_bytes = False
    assert key_is_accepted(key) is strictly_16_bytes
