"""``WebSocketServer``: the handshake and protocol settings of an endpoint."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

from aiohttp import web
from yarl import URL

from .frames import DEFAULT_COMPRESS_WINDOW_BITS, Compression
from .handshake import OriginCheck, OriginPolicy, normalise_origin
from .signatures import check_callback

__all__ = ["HandshakeCallback", "ValidatorCallback", "WebSocketServer", "run_handshake_callback"]

HandshakeCallback = Callable[[web.Request, web.WebSocketResponse], Any]
"""``handshake(request, response)``, sync or async: returns the handshake results."""

ValidatorCallback = Callable[[web.Request], Any]
"""``validator(request)``, sync or async: the original's older form of ``handshake``."""

MiB = 1024 * 1024

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP token (RFC 7230 §3.2.6): what a subprotocol name is (RFC 6455 §4.1)."""


def _positive_number(name: str, value: float | None, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value!r}")


def _callback_or_none(name: str, value: object, arguments: str) -> None:
    if value is not None:
        check_callback(name, value, arguments)


def _origin_policy(allowed_origins: str | Iterable[str] | OriginCheck | None) -> OriginPolicy:
    if allowed_origins is None or allowed_origins == "*" or callable(allowed_origins):
        return allowed_origins
    if isinstance(allowed_origins, str):
        raise ValueError('allowed_origins takes "*", a callable or an iterable of origins')
    origins = frozenset(allowed_origins)
    if not all(isinstance(origin, str) for origin in origins):
        raise TypeError("allowed_origins must contain origin strings")
    for origin in origins:
        _check_origin(origin)
    return frozenset(normalise_origin(origin) for origin in origins)


def _check_origin(origin: str) -> None:
    """Refuse what a browser never sends as an ``Origin``: no scheme or host, a path, a query."""
    try:
        url = URL(origin)
    except ValueError:
        url = None
    if url is None or not url.scheme or not url.host:
        raise ValueError(
            f"allowed_origins takes origins such as 'https://example.com', not {origin!r}: "
            "an origin has a scheme and a host"
        )
    if url.path not in ("", "/") or url.query_string or url.fragment or url.user:
        raise ValueError(
            f"allowed_origins takes origins such as 'https://example.com', not {origin!r}: "
            "an origin is a scheme, a host and a port, without a path"
        )


def _protocols(protocols: Iterable[str]) -> tuple[str, ...]:
    if isinstance(protocols, str):
        raise TypeError("protocols must be an iterable of strings, not a string")
    chosen = tuple(protocols)
    for protocol in chosen:
        if not isinstance(protocol, str):
            raise TypeError(f"protocols must contain strings, not {type(protocol).__name__}")
        if not _TOKEN.fullmatch(protocol):
            raise ValueError(
                f"a subprotocol is a token (letters, digits and !#$%&'*+-.^_`|~), not {protocol!r}"
            )
    return chosen


def _compression(compress: object, threshold: int | None, window_bits: int) -> Compression | None:
    if compress is True or compress == "shared":
        compression = Compression("shared", threshold=threshold, window_bits=window_bits)
    elif compress == "dedicated":
        compression = Compression("dedicated", threshold=threshold, window_bits=window_bits)
    elif compress is False:
        Compression(threshold=threshold, window_bits=window_bits)  # still check the values
        return None
    else:
        raise ValueError(f"compress must be True, False, 'shared' or 'dedicated', not {compress!r}")
    return compression


def _results_tuple(value: object) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, tuple):
        return value
    return (value,)


class WebSocketServer:
    """The handshake and protocol settings of an endpoint (``AnyEvent::WebSocket::Server``).

    :param handshake: ``handshake(request, response)``, sync or async, runs once the request is a
        valid handshake from an allowed origin. Headers it sets on ``response`` (the not yet sent
        :class:`aiohttp.web.WebSocketResponse`) go out in the 101 response. It rejects the
        handshake by raising: an :class:`aiohttp.web.HTTPException` is answered as it is (logged
        at DEBUG); any other exception fails it with ``INVALID_REQUEST`` and, being most likely
        a bug, is logged at WARNING with its traceback. What it returns becomes the handshake
        results: ``None`` is ``()``, a tuple stays as it is, anything else is ``(value,)``.
    :param validator: ``validator(request)``, the original's older form with the same results
        rule; ignored when ``handshake`` is given.
    :param protocols: the subprotocols this endpoint speaks (token strings, RFC 7230 §3.2.6), in
        order of preference: the first of them that the client offers is chosen, whatever the
        client's order. A client that offers only others is refused (``INVALID_REQUEST``); one
        that offers none is accepted without a subprotocol.
    :param max_payload_size: bytes; a larger incoming message closes the connection with 1009.
    :param heartbeat: seconds between heartbeat rounds: a peer not heard from (no complete
        message, no pong) since the last round is pinged, and dropped (close code 1006) if no
        pong comes within half that time. It costs nothing per message. ``None`` turns it off.
    :param compress: accept permessage-deflate when the client offers it (browsers always do).
        ``True`` (the default) is *shared* mode: no compressor is kept per connection, each
        outgoing message is compressed on its own by a compressor the endpoint shares, and a
        broadcast is compressed once for all shared-mode peers. ``"dedicated"``: a compressor
        per connection, made on its first compressed message, that keeps its context across
        messages (better ratios for streams of similar messages, about 29 KiB per connection at
        12 bits). ``False``: never negotiated. Compression runs on the event loop.
    :param compress_threshold: messages shorter than this many bytes go uncompressed. ``None``
        is the mode's default, chosen by measurement: 128 in shared mode (a short message
        compressed on its own saves little for ten times the CPU), 0 in dedicated mode (in
        context, even short messages shrink by most of their size).
    :param compress_window_bits: the window of a dedicated compressor, 9 to 15 bits (default
        12); never more than the client allows.
    :param allowed_origins: ``None`` allows requests without ``Origin`` and same-origin requests
        (refusing cross-site WebSocket hijacking), ``"*"`` allows all, an iterable of origins
        allows exactly those, a callable ``(origin, request) -> bool`` decides (``origin`` is
        ``None`` when the request has no ``Origin`` header).
    :param send_buffer_limit: bytes of unsent outgoing data a connection may hold; past it the
        peer is too slow and is dropped with close code 1008.
    :param close_timeout: however the closing starts (either side's close, a protocol error,
        the peer's end of stream, a heartbeat timeout, a handler error, shutdown), the socket is
        dropped at most this many seconds later, whatever is still in its send buffer.
    :param idle_timeout: seconds; a connection whose peer has sent no message for that long
        (pongs do not count), counted from its establishment or its last message, is closed
        with 1001, reason ``idle timeout``. It costs nothing per message: the connection is
        checked eight times per period, so the close comes up to a quarter of the setting
        late. ``None`` (default): never.
    :param max_lifetime: seconds; a connection open for that long, plus a random jitter of up
        to a tenth of it (so that connections opened together do not close together), is
        closed with 1001, reason ``max lifetime``. Its client reconnects, possibly to another
        server: after a deploy or a scale-up, connections spread over the servers again.
        ``None`` (default): never.
    :param max_message_rate: messages per second a peer may send, on average: a token bucket
        refilled at that rate that holds ``max(rate, 1)`` messages (the burst allowed). The
        message that finds it empty is not dispatched, and the connection is closed with 1008,
        reason ``rate limit``. ``None`` (default): no limit.
    :raises TypeError: a callback is not callable, or its signature cannot take the arguments it
        will be given (``handshake`` two positional, ``validator`` one), a setting has the wrong
        type, or a subprotocol is not a string.
    :raises ValueError: a size or duration is not positive, ``compress`` is not one of its
        values, or ``compress_window_bits`` is outside 9-15.
    """

    def __init__(
        self,
        *,
        handshake: HandshakeCallback | None = None,
        validator: ValidatorCallback | None = None,
        protocols: Iterable[str] = (),
        max_payload_size: int = 4 * MiB,
        heartbeat: float | None = 30.0,
        compress: bool | Literal["shared", "dedicated"] = True,
        compress_threshold: int | None = None,
        compress_window_bits: int = DEFAULT_COMPRESS_WINDOW_BITS,
        allowed_origins: str | Iterable[str] | OriginCheck | None = None,
        send_buffer_limit: int = 16 * MiB,
        close_timeout: float = 10.0,
        idle_timeout: float | None = None,
        max_lifetime: float | None = None,
        max_message_rate: float | None = None,
    ) -> None:
        _callback_or_none("handshake", handshake, "request, response")
        _callback_or_none("validator", validator, "request")
        _positive_number("max_payload_size", max_payload_size)
        _positive_number("heartbeat", heartbeat, optional=True)
        _positive_number("send_buffer_limit", send_buffer_limit)
        _positive_number("close_timeout", close_timeout)
        _positive_number("idle_timeout", idle_timeout, optional=True)
        _positive_number("max_lifetime", max_lifetime, optional=True)
        _positive_number("max_message_rate", max_message_rate, optional=True)
        self.handshake = handshake
        self.validator = validator
        self.protocols = _protocols(protocols)
        self.max_payload_size = max_payload_size
        self.heartbeat = heartbeat
        self.compress = compress
        self.compression = _compression(compress, compress_threshold, compress_window_bits)
        """What compresses outgoing messages; ``None`` when ``compress`` is off."""
        self.allowed_origins = _origin_policy(allowed_origins)
        self.send_buffer_limit = send_buffer_limit
        self.close_timeout = close_timeout
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self.max_message_rate = max_message_rate


async def run_handshake_callback(
    settings: WebSocketServer, request: web.Request, response: web.WebSocketResponse
) -> tuple[Any, ...]:
    """Run the ``handshake`` (or ``validator``) callback and return the handshake results.

    For the endpoint's handshake, not for applications.
    """
    if settings.handshake is not None:
        result = settings.handshake(request, response)
    elif settings.validator is not None:
        result = settings.validator(request)
    else:
        return ()
    if inspect.isawaitable(result):
        result = await result
    return _results_tuple(result)
