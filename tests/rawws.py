"""A raw-socket WebSocket client for tests that must break the protocol on purpose.

Well-behaved clients (aiohttp's, ``websockets``) refuse to send a malformed handshake or frame, so
the reliability tests speak the wire format themselves: this module builds handshake requests and
masked client frames with any opcode, RSV bits, FIN bit and declared length, and reads back the
server's HTTP response and frames. The parsers are sans-I/O functions; :class:`RawWebSocket` moves
bytes over asyncio streams, :func:`http_exchange_sync` over a blocking socket (for hypothesis,
which drives a synchronous test function).

The reliability tests also share :func:`wait_for_tasks` and :func:`until`, which wait with a
deadline, and :func:`log_problems`, which picks the log records that mean a traceback escaped. The
endpoint they talk to is served by ``conftest.py``'s ``serve`` fixture at ``/websocket`` (the
default path here), recorded by ``support.Recorder``; every read waits at most ``support.TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import enum
import hashlib
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict, CIMultiDictProxy
from support import TIMEOUT

__all__ = [
    "QUIET_LOGGERS",
    "Frame",
    "HTTPResponse",
    "Opcode",
    "RawWebSocket",
    "accept_for",
    "address",
    "build_frame",
    "close_payload",
    "handshake_headers",
    "http_exchange",
    "http_exchange_sync",
    "http_request",
    "is_http_parse_error",
    "log_problems",
    "make_key",
    "parse_frame",
    "parse_http_response",
    "read_http_response",
    "reset_connection",
    "set_linger_zero",
    "until",
    "wait_for_tasks",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HEAD_END = b"\r\n\r\n"


class Opcode(enum.IntEnum):
    """Frame opcodes of RFC 6455 §5.2 (the reserved ones are plain ints)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


# --- handshake -----------------------------------------------------------------------------------


def address(server: TestServer) -> tuple[str, int]:
    """The host and port a started test server listens on."""
    assert server.port is not None, "the server is not started"
    return server.host, server.port


def make_key() -> str:
    """Return a fresh, valid ``Sec-WebSocket-Key``: 16 random bytes, base64-encoded."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_for(key: str) -> str:
    """Return the ``Sec-WebSocket-Accept`` value a server must answer ``key`` with."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def handshake_headers(
    host: str = "127.0.0.1", *, key: str | None = None, version: str = "13"
) -> list[tuple[str, str]]:
    """Return the header lines of a valid RFC 6455 opening handshake, in the usual order."""
    return [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key if key is not None else make_key()),
        ("Sec-WebSocket-Version", version),
    ]


def http_request(
    headers: Iterable[tuple[str, str]],
    *,
    method: str = "GET",
    path: str = "/websocket",
    http_version: str = "HTTP/1.1",
) -> bytes:
    """Return the bytes of an HTTP request head with exactly these header lines and no body."""
    lines = [f"{method} {path} {http_version}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclasses.dataclass(frozen=True)
class HTTPResponse:
    """A parsed HTTP response: status line, headers, and the body (empty for 101 and HEAD)."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes


def _parse_head(head: bytes) -> tuple[int, str, CIMultiDictProxy[str]]:
    """Parse a response head (status line and header lines, without the blank line)."""
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, status, *reason = status_line.split(" ", 2)
    if not version.startswith("HTTP/") or not status.isdigit():
        raise ValueError(f"not an HTTP status line: {status_line!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"malformed header line: {line!r}")
        headers.add(name.strip(), value.strip())
    return int(status), reason[0] if reason else "", CIMultiDictProxy(headers)


def _parse_chunked(data: bytes) -> tuple[bytes, int] | None:
    """Decode a chunked body; return ``(body, bytes consumed)``, or ``None`` if incomplete."""
    body = bytearray()
    pos = 0
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(data[pos:line_end].split(b";", 1)[0], 16)
        pos = line_end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n", pos)
            # Trailers are not expected from aiohttp; a bare CRLF ends the body.
            return (bytes(body), trailer_end + 2) if trailer_end >= 0 else None
        if len(data) < pos + size + 2:
            return None
        body += data[pos : pos + size]
        pos += size + 2


def parse_http_response(
    data: bytes, *, eof: bool = False, head_request: bool = False
) -> tuple[HTTPResponse, int] | None:
    """Parse one HTTP response from the start of ``data``.

    Return the response and the number of bytes it took (what follows a 101 is WebSocket frames),
    or ``None`` while more bytes are needed. ``eof`` says the peer has closed, which ends a body
    that has neither ``Content-Length`` nor chunked encoding. Raise :class:`ValueError` when the
    bytes are not an HTTP response, or when ``eof`` arrives in the middle of one.
    """
    head_end = data.find(_HEAD_END)
    if head_end < 0:
        if eof:
            raise ValueError(f"connection closed inside a response head: {data[:200]!r}")
        return None
    status, reason, headers = _parse_head(data[:head_end])
    start = head_end + len(_HEAD_END)
    if head_request or status == 101 or status == 204 or status == 304 or 100 <= status < 200:
        return HTTPResponse(status, reason, headers, b""), start
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        chunked = _parse_chunked(data[start:])
        if chunked is None:
            if eof:
                raise ValueError("connection closed inside a chunked body")
            return None
        body, used = chunked
        return HTTPResponse(status, reason, headers, body), start + used
    if "Content-Length" in headers:
        length = int(headers["Content-Length"])
        if len(data) - start < length:
            if eof:
                raise ValueError("connection closed inside a body")
            return None
        return HTTPResponse(status, reason, headers, data[start : start + length]), start + length
    if not eof:
        return None
    return HTTPResponse(status, reason, headers, data[start:]), len(data)


async def read_http_response(
    reader: asyncio.StreamReader, *, head_request: bool = False, timeout: float = TIMEOUT
) -> tuple[HTTPResponse, bytes]:
    """Read one HTTP response; return it and the bytes that followed it in the same reads.

    Raise :class:`EOFError` when the server closed the connection before sending anything.
    """

    async def read() -> tuple[HTTPResponse, bytes]:
        data = b""
        while True:
            chunk = await reader.read(65536)
            eof = not chunk
            data += chunk
            if eof and not data:
                raise EOFError("the server closed the connection without a response")
            parsed = parse_http_response(data, eof=eof, head_request=head_request)
            if parsed is not None:
                response, used = parsed
                return response, data[used:]

    return await asyncio.wait_for(read(), timeout)


async def http_exchange(
    host: str,
    port: int,
    request: bytes,
    *,
    head_request: bool = False,
    timeout: float = TIMEOUT,
) -> HTTPResponse:
    """Send raw ``request`` bytes on a new connection and return the response; then hang up."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        response, _ = await read_http_response(reader, head_request=head_request, timeout=timeout)
        return response
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def http_exchange_sync(
    host: str,
    port: int,
    request: bytes,
    *,
    shutdown_write: bool = False,
    head_request: bool = False,
    timeout: float = TIMEOUT,
) -> HTTPResponse | None:
    """Send raw ``request`` bytes over a blocking socket and return the response.

    With ``shutdown_write`` the client half-closes after sending, so that a server waiting for the
    rest of a truncated request sees the end of the stream. Return ``None`` when the server closed
    the connection (cleanly or with a reset) without sending anything. Raise
    :class:`TimeoutError` when the server neither answers nor closes within ``timeout``: a hang.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
            if shutdown_write:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # The server answered and closed before reading everything: read its answer.
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""  # A reset after (or instead of) the answer ends the stream too.
            data += chunk
            if not chunk and not data:
                return None
            parsed = parse_http_response(data, eof=not chunk, head_request=head_request)
            if parsed is not None:
                return parsed[0]


# --- frames --------------------------------------------------------------------------------------


def close_payload(code: int, reason: str | bytes = b"") -> bytes:
    """Return the payload of a close frame: the code, big-endian, then the reason."""
    raw = reason.encode("utf-8") if isinstance(reason, str) else reason
    return struct.pack("!H", code) + raw


def build_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    masked: bool = True,
    mask_key: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """Return one client frame, masked unless ``masked`` is false.

    Every field may be wrong on purpose: any 4-bit ``opcode``, any RSV bits, ``fin`` on control
    frames, and a declared ``length`` different from ``len(payload)`` (to announce a message larger
    than what is sent).
    """
    if not 0 <= opcode <= 0xF:
        raise ValueError(f"an opcode has 4 bits, got {opcode}")
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0)
    first |= (0x10 if rsv3 else 0) | opcode
    declared = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if declared < 126:
        header = struct.pack("!BB", first, mask_bit | declared)
    elif declared < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, declared)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, declared)
    if not masked:
        return header + payload
    key = os.urandom(4) if mask_key is None else mask_key
    return header + key + _mask(key, payload)


def _mask(key: bytes, payload: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` (RFC 6455 §5.3); the same call unmasks."""
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


@dataclasses.dataclass(frozen=True)
class Frame:
    """One frame as it came off the wire (unmasked)."""

    fin: bool
    rsv1: bool
    rsv2: bool
    rsv3: bool
    opcode: int
    masked: bool
    payload: bytes

    @property
    def close_code(self) -> int | None:
        """The status code of a close frame, ``None`` when it carries none."""
        if self.opcode != Opcode.CLOSE:
            raise ValueError(f"not a close frame: opcode {self.opcode:#x}")
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        """The reason text of a close frame."""
        return self.payload[2:].decode("utf-8")


def parse_frame(data: bytes) -> tuple[Frame, int] | None:
    """Parse one frame from the start of ``data``: the frame and its size, or ``None``."""
    if len(data) < 2:
        return None
    first, second = data[0], data[1]
    length = second & 0x7F
    pos = 2
    if length == 126:
        if len(data) < 4:
            return None
        (length,) = struct.unpack("!H", data[2:4])
        pos = 4
    elif length == 127:
        if len(data) < 10:
            return None
        (length,) = struct.unpack("!Q", data[2:10])
        pos = 10
    masked = bool(second & 0x80)
    key = b""
    if masked:
        if len(data) < pos + 4:
            return None
        key = data[pos : pos + 4]
        pos += 4
    if len(data) < pos + length:
        return None
    payload = data[pos : pos + length]
    frame = Frame(
        fin=bool(first & 0x80),
        rsv1=bool(first & 0x40),
        rsv2=bool(first & 0x20),
        rsv3=bool(first & 0x10),
        opcode=first & 0x0F,
        masked=masked,
        payload=_mask(key, payload) if masked else payload,
    )
    return frame, pos + length


def set_linger_zero(sock: Any) -> None:
    """Make closing ``sock`` (a socket, or asyncio's wrapper of one) send a TCP reset."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Drop the connection of ``writer`` with a TCP reset: the peer sees it vanish at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.fileno() != -1:  # -1: the server reset it already
        set_linger_zero(sock)
    writer.transport.abort()


class RawWebSocket:
    """A client WebSocket over plain asyncio streams that sends whatever bytes it is told to."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        response: HTTPResponse,
        buffered: bytes = b"",
    ) -> None:
        """Wrap an upgraded connection; prefer :meth:`connect`."""
        self.reader = reader
        self.writer = writer
        self.response = response
        """The server's 101 response."""
        self._buffer = buffered

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        path: str = "/websocket",
        *,
        headers: Sequence[tuple[str, str]] = (),
        timeout: float = TIMEOUT,
        receive_buffer: int | None = None,
    ) -> RawWebSocket:
        """Open a connection and perform a valid handshake, with ``headers`` added.

        ``receive_buffer`` sets the socket's ``SO_RCVBUF`` before it connects: a small one, with
        a client that does not read, makes a peer whose window closes.

        Raise :class:`AssertionError` unless the server answers 101 with the right
        ``Sec-WebSocket-Accept``.
        """
        key = make_key()
        request = http_request([*handshake_headers(f"{host}:{port}", key=key), *headers], path=path)
        if receive_buffer is None:
            reader, writer = await asyncio.open_connection(host, port)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
            except BaseException:
                sock.close()
                raise
            reader, writer = await asyncio.open_connection(sock=sock, limit=receive_buffer)
        try:
            writer.write(request)
            response, rest = await read_http_response(reader, timeout=timeout)
            assert response.status == 101, (response.status, response.body)
            assert response.headers.get("Sec-WebSocket-Accept") == accept_for(key)
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, response, rest)

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` as it is: partial frames, garbage, several frames at once."""
        self.writer.write(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **options: Any) -> None:
        """Write one frame built by :func:`build_frame` with these ``options``."""
        self.writer.write(build_frame(opcode, payload, **options))

    def send_text(self, text: str) -> None:
        """Write one final, masked text frame."""
        self.send_frame(Opcode.TEXT, text.encode("utf-8"))

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Write a close frame with ``code`` and ``reason``."""
        self.send_frame(Opcode.CLOSE, close_payload(code, reason))

    async def read_frame(self, timeout: float = TIMEOUT) -> Frame:
        """Return the next frame from the server; raise :class:`EOFError` if it closed first."""
        return await asyncio.wait_for(self._read_frame(), timeout)

    async def _read_frame(self) -> Frame:
        """Read until a whole frame is buffered, then take it off the buffer."""
        while True:
            parsed = parse_frame(self._buffer)
            if parsed is not None:
                frame, used = parsed
                self._buffer = self._buffer[used:]
                return frame
            chunk = await self.reader.read(65536)
            if not chunk:
                raise EOFError(f"connection closed; {len(self._buffer)} bytes of a frame left")
            self._buffer += chunk

    async def read_message(self, timeout: float = TIMEOUT) -> Frame:
        """Return the next data frame (text or binary), skipping pings and pongs."""
        while True:
            frame = await self.read_frame(timeout)
            if frame.opcode not in (Opcode.PING, Opcode.PONG):
                return frame

    async def read_close(self, timeout: float = TIMEOUT) -> Frame:
        """Return the server's close frame, skipping every frame before it."""
        while True:
            frame = await self.read_frame(timeout)
            if frame.opcode == Opcode.CLOSE:
                return frame

    async def wait_eof(self, timeout: float = TIMEOUT) -> bytes:
        """Wait until the server closes the TCP connection; return what it sent meanwhile."""

        async def read_to_eof() -> bytes:
            data = self._buffer
            self._buffer = b""
            while True:
                try:
                    chunk = await self.reader.read(65536)
                except ConnectionResetError:
                    return data
                if not chunk:
                    return data
                data += chunk

        return await asyncio.wait_for(read_to_eof(), timeout)

    async def wait_fin(self, timeout: float = TIMEOUT) -> bytes:
        """Wait until the server ends the TCP connection with a FIN; return what it sent meanwhile.

        Fail if it ends with a reset instead: the server dropped the connection.
        """
        try:
            return await self.wait_eof_or_reset(timeout)
        except ConnectionResetError:
            raise AssertionError("the server reset the connection instead of closing it") from None

    async def wait_eof_or_reset(self, timeout: float = TIMEOUT) -> bytes:
        """Read until the server ends the TCP connection; a reset raises ConnectionResetError."""

        async def read_to_eof() -> bytes:
            data = self._buffer
            self._buffer = b""
            while chunk := await self.reader.read(65536):
                data += chunk
            return data

        return await asyncio.wait_for(read_to_eof(), timeout)

    def abort(self) -> None:
        """Vanish: reset the TCP connection at once, without a closing handshake."""
        reset_connection(self.writer)

    async def close_socket(self) -> None:
        """Close the TCP connection (a FIN), without a closing handshake, and wait for it."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``predicate()`` holds, checking every few milliseconds; fail at ``timeout``.

    For state that offers nothing to await (a transport going away, a counter reaching a value).
    """

    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 -- there is no event to wait on
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def wait_for_tasks(
    before: set[asyncio.Task[Any]], timeout: float = TIMEOUT
) -> set[asyncio.Task[Any]]:
    """Wait until every task not in ``before`` (nor the current one) is done; return the rest.

    Tasks that start while waiting are waited for too. What is returned was still running at the
    deadline: the caller asserts it is empty.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    current = asyncio.current_task()
    while True:
        pending = {t for t in asyncio.all_tasks() if t not in before and t is not current}
        remaining = deadline - loop.time()
        if not pending or remaining <= 0:
            return pending
        await asyncio.wait(pending, timeout=remaining)


# --- logs ----------------------------------------------------------------------------------------


QUIET_LOGGERS = ("aiohttp_wsapp", "aiohttp", "asyncio")
"""Loggers whose ERROR records mean a traceback escaped: a test fails on any of them."""


def is_http_parse_error(record: logging.LogRecord) -> bool:
    """Whether ``record`` is aiohttp's own report of a request its HTTP parser rejected.

    aiohttp logs those at ERROR with a traceback ("Error handling request"), before any handler
    runs; only a bad method on a connection's first request is logged at DEBUG.
    """
    exc = record.exc_info[1] if record.exc_info else None
    return record.name == "aiohttp.server" and isinstance(exc, HttpProcessingError)


def log_problems(
    records: Iterable[logging.LogRecord], *, allow_http_parse_errors: bool = False
) -> list[str]:
    """Return the records that must not happen, formatted for an assertion message.

    Those are ERROR (and worse) records of :data:`QUIET_LOGGERS`, and WARNING records of
    ``aiohttp_wsapp`` itself: a peer that misbehaves or vanishes is ordinary network life.
    ``allow_http_parse_errors`` tolerates aiohttp's reports of requests that are not HTTP
    (:func:`is_http_parse_error`), which the endpoint never sees.
    """
    problems = []
    for record in records:
        if allow_http_parse_errors and is_http_parse_error(record):
            continue
        name = record.name
        ours = name == "aiohttp_wsapp" or name.startswith("aiohttp_wsapp.")
        watched = any(name == n or name.startswith(n + ".") for n in QUIET_LOGGERS)
        if (watched and record.levelno >= logging.ERROR) or (
            ours and record.levelno >= logging.WARNING
        ):
            problems.append(f"{record.name} {record.levelname}: {record.getMessage()}")
    return problems
