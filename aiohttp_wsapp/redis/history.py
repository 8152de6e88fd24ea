"""The history of every group kept in Redis: the scripts that number, keep, publish and read.

A group with history has two keys, named after the group's channel (see :mod:`.names`), so that
on a cluster, where the channel's name is one hash tag, they are in the channel's slot:

- a hash, ``{channel}:history``, with the fields ``epoch`` (the name of this history) and
  ``offset`` (the number of broadcasts to the group so far). Both live in one hash, so that
  Redis cannot lose (evict, expire) one without the other;
- a stream, ``{channel}:kept``, of the kept broadcasts: the entry ID of a broadcast is
  ``<offset>-0``, so a replay reads exactly the IDs it needs and sees at once whether one is
  gone; its fields are ``t`` (when it was kept, in ms of Redis's clock) and ``d`` (one byte of
  kind, as in the channel messages, then the data).

One script (:data:`PUBLISH`) increments the offset, appends the broadcast to the stream (trimmed
to ``size`` entries and to ``ttl``) and publishes it with its position, all at once: every
process receives a group's broadcasts in offset order, and no reader ever sees an offset that
has no entry. Another (:data:`READ`) reads the epoch, the offset and the entries after a
position in one step. Either starts a new epoch when the hash is missing (Redis restarted without
persistence, was flushed, or evicted it), and deletes the stream of the old one. The epoch and
offset of a silent group stay (the hash has no expiry); its stream expires ``ttl`` after the last
broadcast.

The published message is the channel message of the broadcast after a mark and its position
(see :mod:`.codec`), so that every process delivers it with its position.

This module is package-internal: its names are public for the other modules of
``aiohttp_wsapp.redis`` and for the tests, not for users.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from ..broker import Broadcast, Kept
from ..errors import BrokerError
from ..history import History, Position, new_epoch
from .client import ANSWER_TIMEOUT, LOST, reason, timeout
from .codec import encode_head, entry_data
from .names import Channels, HistoryKeys, TaggedChannels

__all__ = [
    "PUBLISH",
    "READ",
    "RedisHistory",
    "parse_published",
    "parse_read",
    "publish_args",
    "read_args",
]

# KEYS: the hash, the stream. ARGV: the channel, the message to publish (its first byte is the
# kind of the data), the data, size, ttl in ms, an epoch to start if there is none, the publish
# command (PUBLISH, or SPUBLISH on a cluster). Returns {epoch, offset}.
PUBLISH: Final = """
local hash, stream = KEYS[1], KEYS[2]
local epoch, offset = unpack(redis.call("HMGET", hash, "epoch", "offset"))
if not epoch or not offset then
  epoch = ARGV[6]
  redis.call("DEL", stream)
  redis.call("HSET", hash, "epoch", epoch, "offset", 0)
end
offset = redis.call("HINCRBY", hash, "offset", 1)
local now = redis.call("TIME")
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local message = ARGV[2]
redis.call("XADD", stream, "MAXLEN", ARGV[4], string.format("%d-0", offset),
           "t", ms, "d", string.sub(message, 1, 1) .. ARGV[3])
local oldest_allowed = ms - tonumber(ARGV[5])
local oldest = redis.call("XRANGE", stream, "-", "+", "COUNT", 1)[1]
if tonumber(oldest[2][2]) < oldest_allowed then
  -- Trim by age a few at a time: a broadcast expires about as often as one is made.
  local cut = offset
  for _, entry in ipairs(redis.call("XRANGE", stream, "-", "+", "COUNT", 8)) do
    if tonumber(entry[2][2]) >= oldest_allowed then
      cut = tonumber(string.match(entry[1], "^%d+"))
      break
    end
    cut = tonumber(string.match(entry[1], "^%d+")) + 1
  end
  redis.call("XTRIM", stream, "MINID", string.format("%d-0", cut))
end
redis.call("PEXPIRE", stream, ARGV[5])
redis.call(ARGV[7], ARGV[1],
           "\\3" .. epoch .. "." .. string.format("%d", offset) .. "\\n" .. message .. ARGV[3])
return {epoch, offset}
"""

# KEYS: the hash, the stream. ARGV: the epoch and offset to read after (an empty epoch: read
# nothing), size, ttl in ms, an epoch to start if there is none. Returns {epoch, offset,
# recovered (1 or 0), the "d" of every entry after the position}.
READ: Final = """
local hash, stream = KEYS[1], KEYS[2]
local epoch, offset = unpack(redis.call("HMGET", hash, "epoch", "offset"))
if not epoch or not offset then
  epoch = ARGV[5]
  offset = 0
  redis.call("DEL", stream)
  redis.call("HSET", hash, "epoch", epoch, "offset", 0)
else
  offset = tonumber(offset)
end
if ARGV[1] == "" then
  return {epoch, offset, 1}
end
local since = tonumber(ARGV[2])
if epoch ~= ARGV[1] or since > offset or offset - since > tonumber(ARGV[3]) then
  return {epoch, offset, 0}
end
if since == offset then
  return {epoch, offset, 1}
end
local entries = redis.call("XRANGE", stream, string.format("%d-0", since + 1),
                           string.format("%d-0", offset))
if #entries ~= offset - since then
  return {epoch, offset, 0}
end
local now = redis.call("TIME")
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if tonumber(entries[1][2][2]) < ms - tonumber(ARGV[4]) then
  return {epoch, offset, 0}
end
local reply = {epoch, offset, 1}
for i, entry in ipairs(entries) do
  reply[i + 3] = entry[2][4]
end
return reply
"""


def publish_args(
    history: History,
    channel: bytes,
    message: bytes,
    data: bytes,
    publish_command: bytes = b"PUBLISH",
) -> list[bytes | int | str]:
    """The ARGV of :data:`PUBLISH`: ``message`` is the channel message without its data, whose
    first byte is the kind of ``data``."""
    return [
        channel,
        message,
        data,
        history.size,
        _milliseconds(history.ttl),
        new_epoch(),
        publish_command,
    ]


def read_args(history: History, since: Position | None) -> list[bytes | int | str]:
    """The ARGV of :data:`READ`: after ``since``, or only the position for ``None``."""
    epoch, offset = ("", 0) if since is None else (since.epoch, since.offset)
    return [epoch, offset, history.size, _milliseconds(history.ttl), new_epoch()]


def parse_read(reply: Sequence[Any]) -> tuple[bool, Position, list[bytes]]:
    """Read :data:`READ`'s reply: recovered, the group's position, the entries' ``d`` fields.

    :raises ValueError: the reply is not one of :data:`READ`'s.
    """
    try:
        epoch, offset, recovered, *entries = reply
        position = Position(_text(epoch), int(offset))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a history reply from Redis: {reply!r:.200}") from exc
    return recovered == 1, position, entries


def parse_published(reply: Sequence[Any]) -> Position:
    """Read :data:`PUBLISH`'s reply: the broadcast's position.

    :raises ValueError: the reply is not one of :data:`PUBLISH`'s.
    """
    try:
        epoch, offset = reply
        return Position(_text(epoch), int(offset))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a history reply from Redis: {reply!r:.200}") from exc


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


class RedisHistory:
    """Numbers, keeps and publishes group broadcasts, and reads the groups' histories, on one
    Redis server (or one primary of a cluster, for the groups of its slots).

    :param channels: the channel names of the broker's prefix; the keys of a group's history
        are named after its channel (see :mod:`.names`).
    :param client: reads the histories, on its pool's connections.
    :param submit: queues one packed command on the broker's ordered outbox (the publisher's
        :meth:`~.publisher.Publisher.submit`), so that a broadcast with history keeps its place
        among the plain ones; returns the future of its reply.
    :param where: the server, as shown in errors.
    :param publish_command: ``b"PUBLISH"``, or ``b"SPUBLISH"`` on a cluster.
    """

    def __init__(
        self,
        channels: Channels | TaggedChannels,
        client: Redis,
        submit: Callable[[Sequence[bytes]], asyncio.Future[Any]],
        *,
        where: str,
        publish_command: bytes = b"PUBLISH",
    ) -> None:
        self._keys = HistoryKeys(channels)
        self._submit = submit
        self._where = where
        self._publish_command = publish_command
        self._publish_sha = hashlib.sha1(PUBLISH.encode()).hexdigest().encode()
        self._read = client.register_script(READ)

    def prepare(self, connection: AbstractConnection) -> AbstractConnection:
        """Make ``connection`` (the publisher's) load the publish script whenever it connects:
        the outbox sends ``EVALSHA``, and Redis forgets its scripts when it restarts."""
        register: Callable[[Any], None] = connection.register_connect_callback
        register(self._load_scripts)
        return connection

    async def _load_scripts(self, connection: AbstractConnection) -> None:
        await connection.send_command("SCRIPT", "LOAD", PUBLISH)
        await connection.read_response()

    def publish(
        self, broadcast: Broadcast, channel: bytes, history: History
    ) -> Awaitable[Position]:
        """Queue the numbered publication of ``broadcast`` (to a group) on ``channel``; the
        result is its position.

        :raises ValueError: an excluded connection id is longer than 255 bytes.
        """
        assert broadcast.group is not None
        head, data = encode_head(broadcast)
        hash_key, stream_key = self._keys.of(broadcast.group)
        args = publish_args(history, channel, head, data, self._publish_command)
        reply = self._submit(_packed(b"EVALSHA", self._publish_sha, 2, hash_key, stream_key, *args))
        return _position_of(reply)

    async def read(self, group: str, since: Position | None, history: History) -> Kept:
        """Read ``group``'s position and what it kept after ``since``, in one atomic step.

        :raises BrokerError: Redis cannot be reached, or answered something else.
        """
        try:
            async with timeout(ANSWER_TIMEOUT):
                reply = await self._read(keys=self._keys.of(group), args=read_args(history, since))
            recovered, position, entries = parse_read(reply)
            return Kept(recovered, position, tuple(map(entry_data, entries)))
        except (*LOST, ValueError) as exc:
            raise BrokerError(
                f"cannot read the history in Redis at {self._where}: {reason(exc)}"
            ) from exc


async def _position_of(reply: Awaitable[Any]) -> Position:
    try:
        return parse_published(await reply)
    except ValueError as exc:
        raise BrokerError(str(exc)) from None


def _packed(*args: bytes | str | int) -> list[bytes]:
    """``args`` as one command in RESP, for the outbox; the payload is not copied."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        parts += (b"$%d\r\n" % len(raw), raw, b"\r\n")
    return parts
