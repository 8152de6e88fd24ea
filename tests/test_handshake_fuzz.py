"""Malformed opening handshakes get an HTTP error through ``on_error``, never a hang or a traceback.

The first tests pin the answers of SPEC §2 for each kind of invalid request. The fuzz test then
lets hypothesis write requests (wrong methods, missing or broken headers, bad keys and versions,
garbage, truncated requests) and checks, for every one, that the server answers with an error
status or closes the connection, logs no error, and still serves a valid client afterwards.

Hypothesis drives a synchronous function; it runs in a worker thread with blocking sockets while
the event loop of the test keeps serving, so the server is aiohttp's ordinary test server.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import socket
import string

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawws import (
    Frame,
    Opcode,
    RawWebSocket,
    accept_for,
    address,
    build_frame,
    close_payload,
    handshake_headers,
    http_exchange,
    http_exchange_sync,
    http_request,
    log_problems,
    make_key,
    parse_frame,
    parse_http_response,
    until,
)
from support import TIMEOUT, Recorder

from aiohttp_wsapp import ERROR_KEY, HANDSHAKE_ERROR_KEY, INVALID_REQUEST

Headers = list[tuple[str, str]]


@pytest.fixture(autouse=True)
def _no_error_logs(caplog: pytest.LogCaptureFixture) -> object:
    """Fail the test if a traceback or a warning of the endpoint was logged, even in teardown."""
    yield
    for when in ("setup", "call", "teardown"):
        problems = log_problems(caplog.get_records(when), allow_http_parse_errors=True)
        assert not problems, when


@pytest.fixture
async def server(serve: Serve, recorder: Recorder) -> TestServer:
    """The endpoint at ``/websocket`` with the default ``on_error``; ``recorder`` echoes."""
    recorder.echo = True
    return (await serve(recorder.on_establish)).server


def without(headers: Headers, name: str) -> Headers:
    """``headers`` without the header ``name``."""
    return [(n, v) for n, v in headers if n.lower() != name.lower()]


def replaced(headers: Headers, name: str, value: str) -> Headers:
    """``headers`` with the value of header ``name`` replaced by ``value``."""
    return [(n, value if n.lower() == name.lower() else v) for n, v in headers]


def valid_headers(server: TestServer) -> Headers:
    """The header lines of a valid handshake to ``server``."""
    return handshake_headers(f"{server.host}:{server.port}")


# --- SPEC §2: the answer to each kind of invalid handshake ----------------------------------------

BAD_KEYS = {
    "missing": None,
    "empty": "",
    "not-base64": "this is not base64!",
    "15-bytes": base64.b64encode(b"k" * 15).decode(),
    "17-bytes": base64.b64encode(b"k" * 17).decode(),
    "unpadded": base64.b64encode(b"k" * 16).decode().rstrip("="),
    "junk-after-base64": base64.b64encode(b"k" * 16).decode() + "!",
}


def invalid_request(server: TestServer, case: str) -> tuple[str, Headers]:
    """The method and headers of one named kind of invalid handshake."""
    headers = valid_headers(server)
    if case == "missing-upgrade":
        return "GET", without(headers, "Upgrade")
    if case == "upgrade-h2c":
        return "GET", replaced(headers, "Upgrade", "h2c")
    if case == "missing-connection":
        return "GET", without(headers, "Connection")
    if case == "connection-keep-alive":
        return "GET", replaced(headers, "Connection", "keep-alive")
    if case.startswith("key-"):
        key = BAD_KEYS[case.removeprefix("key-")]
        if key is None:
            return "GET", without(headers, "Sec-WebSocket-Key")
        return "GET", replaced(headers, "Sec-WebSocket-Key", key)
    if case.startswith("version-"):
        return "GET", replaced(headers, "Sec-WebSocket-Version", case.removeprefix("version-"))
    if case.startswith("method-"):
        return case.removeprefix("method-"), headers
    raise ValueError(case)


async def exchange(server: TestServer, method: str, headers: Headers) -> tuple[int, str, bytes]:
    """Send one raw request; return the status, ``Sec-WebSocket-Version`` and body."""
    response = await http_exchange(
        *address(server),
        http_request(headers, method=method),
        head_request=method == "HEAD",
    )
    return response.status, response.headers.get("Sec-WebSocket-Version", ""), response.body


async def test_missing_upgrade_is_answered_400(server: TestServer, recorder: Recorder) -> None:
    status, _, _ = await exchange(server, *invalid_request(server, "missing-upgrade"))
    assert status == 400
    assert recorder.connections == []


async def test_upgrade_to_another_protocol_is_answered_400(
    server: TestServer, recorder: Recorder
) -> None:
    status, _, _ = await exchange(server, *invalid_request(server, "upgrade-h2c"))
    assert status == 400
    assert recorder.connections == []


@pytest.mark.parametrize("case", ["missing-connection", "connection-keep-alive"])
async def test_missing_connection_upgrade_is_answered_400(
    server: TestServer, recorder: Recorder, case: str
) -> None:
    status, _, _ = await exchange(server, *invalid_request(server, case))
    assert status == 400
    assert recorder.connections == []


@pytest.mark.parametrize("key", list(BAD_KEYS))
async def test_bad_sec_websocket_key_is_answered_400(
    server: TestServer, recorder: Recorder, key: str
) -> None:
    status, _, _ = await exchange(server, *invalid_request(server, f"key-{key}"))
    assert status == 400
    assert recorder.connections == []


@pytest.mark.parametrize("version", ["8", "7", "12", "14"])
async def test_unsupported_version_is_answered_426_with_version_13(
    server: TestServer, recorder: Recorder, version: str
) -> None:
    """RFC 6455 §4.4: the server names the version it speaks."""
    status, supported, _ = await exchange(server, *invalid_request(server, f"version-{version}"))
    assert (status, supported) == (426, "13")
    assert recorder.connections == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
async def test_method_other_than_get_is_answered_400(
    server: TestServer, recorder: Recorder, method: str
) -> None:
    status, _, _ = await exchange(server, *invalid_request(server, f"method-{method}"))
    assert status == 400
    assert recorder.connections == []


INVALID_CASES = [
    "missing-upgrade",
    "upgrade-h2c",
    "missing-connection",
    "key-missing",
    "key-not-base64",
    "key-15-bytes",
    "version-8",
    "method-POST",
]


@pytest.mark.parametrize("case", INVALID_CASES)
async def test_custom_on_error_sees_invalid_request_and_the_handshake_error(
    serve: Serve, recorder: Recorder, case: str
) -> None:
    seen: list[tuple[str, Exception | None]] = []

    def on_error(request: web.Request) -> web.Response:
        seen.append((request[ERROR_KEY], request.get(HANDSHAKE_ERROR_KEY)))
        return web.Response(status=418, text="custom answer")

    server = (await serve(recorder.on_establish, on_error=on_error)).server
    status, _, body = await exchange(server, *invalid_request(server, case))
    assert (status, body) == (418, b"custom answer")
    assert len(seen) == 1
    error, handshake_error = seen[0]
    assert error == INVALID_REQUEST
    assert isinstance(handshake_error, Exception)
    assert recorder.connections == []


async def test_valid_handshake_after_invalid_ones_is_established(
    server: TestServer, recorder: Recorder
) -> None:
    for case in INVALID_CASES:
        await exchange(server, *invalid_request(server, case))
    ws = await RawWebSocket.connect(*address(server))
    await recorder.connection()
    ws.send_text("hello")
    assert (await ws.read_message()).payload == b"hello"
    await ws.close_socket()
    await recorder.finish()


# --- the fuzz test -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One request hypothesis wrote, and what the server may answer to it."""

    request: bytes
    may_upgrade: bool = False
    """The request may be a valid handshake, so 101 is a correct answer too."""
    may_close: bool = False
    """The request is incomplete or not HTTP at all, so closing without an answer is correct."""
    shutdown_write: bool = False
    """Half-close after sending, so that the server sees the end of an incomplete request."""
    head_request: bool = False


TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
VISIBLE = "".join(chr(c) for c in range(0x20, 0x7F))
RESERVED_NAMES = {"host", "upgrade", "connection", "content-length", "transfer-encoding", "expect"}

tokens = st.text(alphabet=TOKEN, min_size=1, max_size=16)
header_values = st.text(alphabet=VISIBLE, max_size=40)
extra_headers = st.lists(
    st.tuples(
        tokens.filter(
            lambda n: n.lower() not in RESERVED_NAMES and not n.lower().startswith("sec-websocket")
        ),
        header_values,
    ),
    max_size=4,
)


def strictly_valid_key(key: str) -> bool:
    """Whether ``key`` is base64 (RFC 4648, no junk) of exactly 16 bytes, as RFC 6455 asks."""
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except ValueError:
        return False


bad_keys = st.one_of(
    st.builds(base64.b64encode, st.binary(max_size=32).filter(lambda b: len(b) != 16)).map(
        bytes.decode
    ),
    st.text(alphabet=string.ascii_letters + string.digits + "+/=", max_size=30),
    header_values,
).filter(lambda k: not strictly_valid_key(k))

# One change that makes a handshake invalid: (header, None) removes the header.
invalidating_changes = st.one_of(
    st.sampled_from(
        [
            ("Upgrade", None),
            ("Connection", None),
            ("Sec-WebSocket-Key", None),
            ("Sec-WebSocket-Version", None),
        ]
    ),
    st.tuples(st.just("Upgrade"), header_values.filter(lambda v: v.strip().lower() != "websocket")),
    st.tuples(st.just("Connection"), header_values.filter(lambda v: "upgrade" not in v.lower())),
    st.tuples(st.just("Sec-WebSocket-Key"), bad_keys),
    st.tuples(st.just("Sec-WebSocket-Version"), header_values.filter(lambda v: v.strip() != "13")),
)


@st.composite
def invalid_headers(draw: st.DrawFn) -> Attempt:
    """A GET whose headers break the handshake in one to three ways, plus harmless extras."""
    headers = handshake_headers(key=make_key())
    for name, value in draw(st.lists(invalidating_changes, min_size=1, max_size=3)):
        headers = without(headers, name) if value is None else replaced(headers, name, value)
    headers += draw(extra_headers)
    return Attempt(http_request(draw(st.permutations(headers))))


@st.composite
def invalid_methods(draw: st.DrawFn) -> Attempt:
    """A valid handshake sent with a method other than GET."""
    method = draw(
        st.one_of(
            st.sampled_from(["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "get"]),
            tokens,
        ).filter(lambda m: m != "GET")
    )
    request = http_request(handshake_headers(), method=method)
    return Attempt(request, head_request=method == "HEAD")


ODD_VALUES = [
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; client_max_window_bits=abc",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover=1",
    "permessage-deflate, permessage-deflate; x=1, y",
    "chat, superchat,,",
    "http://127.0.0.1",
    "null",
]
"""Values for ``Sec-WebSocket-Extensions``, ``Sec-WebSocket-Protocol`` and ``Origin`` that parsers
of those headers could trip on."""

odd_headers = st.lists(
    st.tuples(
        st.sampled_from(["Sec-WebSocket-Extensions", "Sec-WebSocket-Protocol", "Origin"]),
        st.one_of(header_values, st.sampled_from(ODD_VALUES)),
    ),
    max_size=3,
)


@st.composite
def odd_but_maybe_valid(draw: st.DrawFn) -> Attempt:
    """A handshake with odd extensions, subprotocols, origins, header case or HTTP version."""
    headers = handshake_headers()
    headers = [(draw(st.sampled_from([n, n.lower(), n.upper()])), v) for n, v in headers]
    headers += draw(odd_headers) + draw(extra_headers)
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "HTTX/1.1"]))
    return Attempt(http_request(headers, http_version=version), may_upgrade=True, may_close=True)


@st.composite
def truncated(draw: st.DrawFn) -> Attempt:
    """A valid handshake cut short, followed by the end of the stream."""
    request = http_request(handshake_headers() + draw(extra_headers))
    cut = draw(st.integers(min_value=1, max_value=len(request) - 1))
    return Attempt(request[:cut], may_close=True, shutdown_write=True)


@st.composite
def garbage(draw: st.DrawFn) -> Attempt:
    """Bytes that are not HTTP, alone or after the start of a request line."""
    prefix = draw(st.sampled_from([b"", b"GET ", b"GET /websocket HTTP/1.1\r\n", b"\x16\x03\x01"]))
    data = prefix + draw(st.binary(min_size=1, max_size=256))
    return Attempt(data, may_close=True, shutdown_write=True)


@st.composite
def oversized(draw: st.DrawFn) -> Attempt:
    """A handshake with a header line longer than aiohttp accepts (8190 bytes)."""
    size = draw(st.integers(min_value=8200, max_value=40000))
    headers = [*handshake_headers(), ("X-Padding", "p" * size)]
    return Attempt(http_request(headers), may_close=True, shutdown_write=True)


attempts = st.one_of(
    invalid_headers(), invalid_methods(), odd_but_maybe_valid(), truncated(), garbage(), oversized()
)


def check_answer(attempt: Attempt, host: str, port: int) -> None:
    """Send ``attempt`` and assert the answer is one it allows (a hang raises ``TimeoutError``)."""
    response = http_exchange_sync(
        host,
        port,
        attempt.request,
        shutdown_write=attempt.shutdown_write,
        head_request=attempt.head_request,
    )
    if response is None:
        assert attempt.may_close, "the server closed the connection without an answer"
    elif response.status == 101:
        assert attempt.may_upgrade, "an invalid handshake was accepted"
    else:
        assert 400 <= response.status < 600, response


def echo_round_trip(host: str, port: int, text: str = "still serving") -> None:
    """Perform a valid handshake, have ``text`` echoed, and close properly, with blocking I/O."""
    key = make_key()
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.sendall(http_request(handshake_headers(f"{host}:{port}", key=key)))
        data = b""
        while (parsed := parse_http_response(data)) is None:
            chunk = sock.recv(65536)
            assert chunk, "connection closed during a valid handshake"
            data += chunk
        response, used = parsed
        assert response.status == 101, response
        assert response.headers["Sec-WebSocket-Accept"] == accept_for(key)
        data = data[used:]
        sock.sendall(build_frame(Opcode.TEXT, text.encode()))
        sock.sendall(build_frame(Opcode.CLOSE, close_payload(1000)))
        frames: list[Frame] = []
        while True:
            while (frame := parse_frame(data)) is None:
                chunk = sock.recv(65536)
                assert chunk, f"connection closed before the close frame; got {frames}"
                data += chunk
            frames.append(frame[0])
            data = data[frame[1] :]
            if frame[0].opcode == Opcode.CLOSE:
                break
        assert [(f.opcode, f.payload) for f in frames] == [
            (Opcode.TEXT, text.encode()),
            (Opcode.CLOSE, close_payload(1000)),
        ]


async def test_malformed_handshakes_never_hang_nor_crash_the_server(
    server: TestServer, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = address(server)

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(attempt=attempts)
    def fuzz(attempt: Attempt) -> None:
        already_logged = len(caplog.records)
        check_answer(attempt, host, port)
        echo_round_trip(host, port)
        problems = log_problems(caplog.records[already_logged:], allow_http_parse_errors=True)
        assert not problems

    await asyncio.to_thread(fuzz)
    # Every connection that was established (the odd but valid ones, the echo checks) finished.
    await until(lambda: len(recorder.finishes) == len(recorder.connections))
    assert len(recorder.connections[0].app.connections) == 0
