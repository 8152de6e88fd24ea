"""The checks of an opening handshake (RFC 6455 §4.2.1) and of its ``Origin`` (§10.2)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from aiohttp import hdrs, web
from multidict import CIMultiDictProxy
from yarl import URL

__all__ = [
    "OriginCheck",
    "OriginPolicy",
    "check_opening_handshake",
    "normalise_origin",
    "origin_allowed",
]

OriginCheck = Callable[[str | None, web.Request], bool]
"""Decides on an ``Origin`` (``None`` when the request has none) for a request."""

OriginPolicy = str | frozenset[str] | OriginCheck | None
"""A normalised ``allowed_origins``: ``None``, ``"*"``, a set of lower-case origins, or a check."""

_Refusal = TypeVar("_Refusal", bound=web.HTTPException)

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# RFC 6455 §4.2.1: the key is the base64 of 16 bytes, which is always 22 characters and "==".
# Exactly what ``binascii.a2b_base64(key, strict_mode=True)`` accepts as 16 bytes; its
# ``strict_mode`` is Python 3.11+.
_SEC_WEBSOCKET_KEY = re.compile(r"[A-Za-z0-9+/]{22}==")


def _bad_request(reason: str) -> web.HTTPBadRequest:
    return _saying(web.HTTPBadRequest(text=f"Error: invalid request: {reason}"), reason)


def _saying(exception: _Refusal, reason: str) -> _Refusal:
    """Make ``str(exception)`` the reason, for ``on_error``; the status line keeps its own."""
    exception.args = (reason,)
    return exception


def _has_token(headers: CIMultiDictProxy[str], name: str, token: str) -> bool:
    """Tell whether the comma-separated header ``name`` lists ``token`` (case-insensitive)."""
    return any(
        part.strip().lower() == token
        for each in headers.getall(name, ())
        for part in each.split(",")
    )


def check_opening_handshake(request: web.Request, protocols: tuple[str, ...]) -> str | None:
    """Return the subprotocol to speak, or raise an :class:`aiohttp.web.HTTPException` saying
    why ``request`` is no handshake this server accepts: its ``str()`` is the reason.

    ``protocols`` are the server's subprotocols in order of preference: the first of them that
    the client offers is chosen. An unsupported ``Sec-WebSocket-Version`` raises 426 Upgrade
    Required with the version this server speaks, as RFC 6455 §4.4 asks; every other defect
    raises 400 Bad Request.
    """
    if request.method != hdrs.METH_GET:
        raise _bad_request(f"method must be GET, not {request.method}")
    if request.version < (1, 1):
        raise _bad_request("HTTP/1.1 or later is required")
    headers = request.headers
    # The usual case first: one header holding just the token.
    upgrade = headers.get(hdrs.UPGRADE, "")
    if upgrade.lower() != "websocket" and not _has_token(headers, hdrs.UPGRADE, "websocket"):
        raise _bad_request("no 'Upgrade: websocket' header")
    connection = headers.get(hdrs.CONNECTION, "")
    if connection.lower() != "upgrade" and not _has_token(headers, hdrs.CONNECTION, "upgrade"):
        raise _bad_request("no 'Connection: upgrade' header")
    version = headers.get(hdrs.SEC_WEBSOCKET_VERSION)
    if version != "13":
        reason = f"unsupported Sec-WebSocket-Version {version!r}"
        raise _saying(
            web.HTTPUpgradeRequired(
                headers={hdrs.SEC_WEBSOCKET_VERSION: "13"}, text=f"Error: invalid request: {reason}"
            ),
            reason,
        )
    keys = headers.getall(hdrs.SEC_WEBSOCKET_KEY, ())
    if len(keys) > 1:  # RFC 6455 §11.3.1: it must not appear more than once
        raise _bad_request("repeated Sec-WebSocket-Key header")
    if len(headers.getall(hdrs.ORIGIN, ())) > 1:  # RFC 6454 §7.3: at most one
        raise _bad_request("repeated Origin header")
    key = keys[0] if keys else ""
    if _SEC_WEBSOCKET_KEY.fullmatch(key) is None:
        raise _bad_request(f"bad Sec-WebSocket-Key {key!r}")
    return _choose_protocol(headers, protocols) if protocols else None


def _choose_protocol(headers: CIMultiDictProxy[str], protocols: tuple[str, ...]) -> str | None:
    if hdrs.SEC_WEBSOCKET_PROTOCOL not in headers:
        return None
    # RFC 6455 §11.3.4: the header may come on several lines, which make one list.
    offered = {
        protocol.strip()
        for line in headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL)
        for protocol in line.split(",")
    }
    chosen = next((protocol for protocol in protocols if protocol in offered), None)
    if chosen is None:
        # A browser fails a connection whose 101 names no protocol it offered: say why here.
        raise _bad_request(f"no common subprotocol: this server speaks {', '.join(protocols)}")
    return chosen


def _origin_of(url: URL) -> tuple[str, str, int | None]:
    scheme = (url.scheme or "").lower()
    port = url.port if url.explicit_port is not None else _DEFAULT_PORTS.get(scheme)
    return scheme, (url.host or "").lower(), port


def _same_origin(origin: str, request: web.Request) -> bool:
    # Browsers send the page's http(s) origin; the request's own is compared in http(s) terms.
    try:
        theirs = _origin_of(URL(origin))
        ours = _origin_of(URL.build(scheme=request.scheme, authority=request.host))
    except ValueError:
        return False
    return theirs == ours


def origin_allowed(policy: OriginPolicy, request: web.Request) -> bool:
    """Tell whether the request's ``Origin`` header passes ``policy`` (``allowed_origins``)."""
    origin = request.headers.get(hdrs.ORIGIN)
    if policy is None:
        return origin is None or _same_origin(origin, request)
    if policy == "*":
        return True
    if callable(policy):
        return bool(policy(origin, request))
    return origin is not None and normalise_origin(origin) in policy


def normalise_origin(origin: str) -> str:
    """Return ``origin`` as browsers send it: lower case, without a trailing slash."""
    return origin.rstrip("/").lower()
