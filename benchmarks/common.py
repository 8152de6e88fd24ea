"""What the servers, the load client and the runner share: constants and small helpers."""

from __future__ import annotations

import argparse
import json
import random
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from aiohttp import web

__all__ = [
    "BACKLOG",
    "BROADCAST_COMMAND",
    "BROADCAST_PAYLOAD",
    "MESSAGES",
    "TOOK_PREFIX",
    "ServerOptions",
    "broadcast_command",
    "broadcast_payload",
    "message",
    "parse_server_args",
    "raise_nofile_limit",
    "run_aiohttp",
]

#: The listen backlog of every server, so that thousands of connects in a burst are not dropped.
BACKLOG = 4096
#: The text a control connection sends to a server started with ``--broadcast``.
BROADCAST_COMMAND = "broadcast"
#: The 100-byte text message every connection receives in the broadcast scenario.
BROADCAST_PAYLOAD = "b" * 100
#: The server answers the control connection with ``TOOK_PREFIX + seconds`` after the call.
TOOK_PREFIX = "took "

#: The messages a scenario may send, by name, with their exact size in bytes. ``text100`` is
#: :data:`BROADCAST_PAYLOAD`; the others are realistic JSON whose figures change with a
#: sequence number, so that a compressor with context does not see the same message twice:
#: ``text32`` a 32-byte event, ``chat100`` a 100-byte chat message, ``json4k`` a 4 KiB status
#: document.
MESSAGES = {"text100": 100, "text32": 32, "chat100": 100, "json4k": 4096}

_USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
_WORDS = (
    "ok", "sure", "thanks", "deploy", "review", "lunch", "standup", "merged", "later",
    "broken", "green", "flaky", "coffee", "release", "ticket", "done",
)  # fmt: skip
_SERVICES = ("api", "auth", "billing", "search", "media", "mail", "queue", "cache")
_REGIONS = ("eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1")
_STATES = ("ok", "ok", "ok", "ok", "degraded", "down")


def _padded(document: dict[str, object], size: int) -> str:
    """``document`` as JSON of exactly ``size`` bytes, padded with spaces in a ``p`` field."""
    text = json.dumps(document | {"p": ""}, separators=(",", ":"))
    if len(text) > size:
        raise ValueError(f"a {len(text)}-byte document does not fit {size} bytes")
    return json.dumps(document | {"p": " " * (size - len(text))}, separators=(",", ":"))


def _text32(seq: int) -> str:
    return _padded({"u": _USERS[seq % len(_USERS)], "n": seq % 1000}, 32)


def _chat100(seq: int) -> str:
    rng = random.Random(seq)
    text = " ".join(rng.choice(_WORDS) for _ in range(3))
    event = {"type": "message", "room": "general", "id": seq, "user": rng.choice(_USERS)}
    return _padded(event | {"text": text}, 100)


def _json4k(seq: int) -> str:
    rng = random.Random(seq)
    services = []
    for index in range(26):
        services.append({
            "name": f"{_SERVICES[index % len(_SERVICES)]}-{index:02d}",
            "region": _REGIONS[index % len(_REGIONS)],
            "status": rng.choice(_STATES),
            "cpu": round(rng.uniform(0, 100), 1),
            "mem_mb": rng.randint(100, 8000),
            "rps": rng.randint(0, 20_000),
            "p99_ms": round(rng.uniform(1, 500), 2),
            "errors": rng.randint(0, 50),
        })  # fmt: skip
    document = {"type": "status", "seq": seq, "ts": 1_764_600_000 + seq, "services": services}
    return _padded(document, 4096)


_MAKERS = {"text32": _text32, "chat100": _chat100, "json4k": _json4k}


@lru_cache(maxsize=256)
def message(name: str, seq: int = 0) -> str:
    """The ``seq``-th message named ``name`` (see :data:`MESSAGES`): the same on every call."""
    if name == "text100":
        return BROADCAST_PAYLOAD
    return _MAKERS[name](seq)


def broadcast_command(name: str, seq: int) -> str:
    """The command that makes a ``--broadcast`` server send ``message(name, seq)`` to all."""
    return f"{BROADCAST_COMMAND} {name} {seq}"


def broadcast_payload(text: object) -> str | None:
    """What to broadcast when a connection sent ``text``, or None when it is no command.

    ``broadcast`` alone is :data:`BROADCAST_PAYLOAD`; ``broadcast NAME SEQ`` (see
    :func:`broadcast_command`) is ``message(NAME, SEQ)``.
    """
    if not isinstance(text, str) or not text.startswith(BROADCAST_COMMAND):
        return None
    if text == BROADCAST_COMMAND:
        return BROADCAST_PAYLOAD
    _, name, seq = text.split(" ")
    return message(name, int(seq))


@dataclass(frozen=True)
class ServerOptions:
    """Command-line options every benchmark server takes."""

    host: str
    port: int
    broadcast: bool
    #: The handler form (``--handler``), for servers that offer more than one; else None.
    handler: str | None = None


def parse_server_args(description: str, handlers: Sequence[str] = ()) -> ServerOptions:
    """Parse ``--host``, ``--port`` and ``--broadcast``, and raise the open-files limit.

    A server that can echo with more than one form of handler names them in ``handlers``:
    then ``--handler`` picks one, the first by default.

    With ``--broadcast`` a text message ``broadcast`` from any connection makes a server send
    :data:`BROADCAST_PAYLOAD` to every open connection (``broadcast NAME SEQ``: the message
    :func:`broadcast_payload` names), time that call, and answer the sender with
    ``took <seconds>``; it echoes any other message, so that a connection can show it is up.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--broadcast", action="store_true", help="broadcast mode, no echo")
    if handlers:
        parser.add_argument(
            "--handler", choices=handlers, default=handlers[0], help="the echo handler's form"
        )
    args = parser.parse_args()
    raise_nofile_limit()
    return ServerOptions(
        host=args.host,
        port=args.port,
        broadcast=args.broadcast,
        handler=getattr(args, "handler", None),
    )


def raise_nofile_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run_aiohttp(app: web.Application, options: ServerOptions) -> None:
    """Serve an aiohttp application until interrupted, quietly, with the shared backlog."""
    web.run_app(
        app, host=options.host, port=options.port, print=None, access_log=None, backlog=BACKLOG
    )
