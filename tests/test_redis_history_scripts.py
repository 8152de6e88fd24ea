"""The Redis scripts of history, run on a real ``redis-server``: numbering, keeping, trimming,
expiring, reading, and a new epoch when Redis lost the history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
from redis_server import RedisServer
from support import TIMEOUT

from aiohttp_wsapp import History, Position
from aiohttp_wsapp.broker import Broadcast
from aiohttp_wsapp.history import new_epoch
from aiohttp_wsapp.redis.codec import KEPT, decode, entry_data
from aiohttp_wsapp.redis.history import (
    PUBLISH,
    READ,
    parse_published,
    parse_read,
    publish_args,
    read_args,
)
from aiohttp_wsapp.redis.names import Channels, HistoryKeys

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

CHANNEL = b"test:group:g"
KEYS = HistoryKeys(Channels("test")).of("g")


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def listener(redis: Redis) -> AsyncIterator[PubSub]:
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    confirmation = await pubsub.get_message(timeout=TIMEOUT)
    assert confirmation is not None
    assert confirmation["type"] == "subscribe"
    yield pubsub
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def publish(redis: Redis, history: History, data: bytes, header: bytes = b"\x01") -> Position:
    args = publish_args(history, CHANNEL, header, data)
    reply: list[Any] = await redis.eval(PUBLISH, 2, *KEYS, *args)
    return parse_published(reply)


async def read(
    redis: Redis, history: History, since: Position | None
) -> tuple[bool, Position, list[bytes]]:
    reply: list[Any] = await redis.eval(READ, 2, *KEYS, *read_args(history, since))
    return parse_read(reply)


async def stream_ids(redis: Redis) -> list[bytes]:
    """The IDs of the entries of the group's stream."""
    entries = await redis.xrange(KEYS[1]) or []
    return [entry[0] for entry in entries if isinstance(entry[0], bytes)]


async def next_message(pubsub: PubSub) -> bytes:
    message: dict[str, Any] | None = await pubsub.get_message(timeout=TIMEOUT)
    assert message is not None
    assert message["type"] == "message"
    return message["data"]  # type: ignore[no-any-return]


async def test_offsets_grow_by_one_from_one_in_a_new_epoch(redis: Redis) -> None:
    history = History()
    positions = [await publish(redis, history, b"m%d" % n) for n in range(3)]
    assert [position.offset for position in positions] == [1, 2, 3]
    assert len({position.epoch for position in positions}) == 1
    assert await redis.hgetall(KEYS[0]) == {
        b"epoch": positions[0].epoch.encode(),
        b"offset": b"3",
    }
    assert await stream_ids(redis) == [b"1-0", b"2-0", b"3-0"]


async def test_the_message_is_published_with_its_position(redis: Redis, listener: PubSub) -> None:
    history = History()
    position = await publish(redis, history, b"payload", header=b"\x02\x00\x00\x00\x00")
    message = await next_message(listener)
    assert message[0] == KEPT
    assert decode(message, "g") == Broadcast(b"payload", "g", frozenset(), position)


async def test_read_returns_the_entries_after_a_position(redis: Redis) -> None:
    history = History()
    first = await publish(redis, history, b"m1", header=b"\x01")
    await publish(redis, history, b"m2", header=b"\x02")
    last = await publish(redis, history, b"m3", header=b"\x01")
    assert await read(redis, history, first) == (True, last, [b"\x02m2", b"\x01m3"])
    assert await read(redis, history, last) == (True, last, [])
    assert await read(redis, history, Position(first.epoch, 0)) == (
        True,
        last,
        [b"\x01m1", b"\x02m2", b"\x01m3"],
    )


async def test_read_of_only_the_position(redis: Redis) -> None:
    history = History()
    recovered, position, entries = await read(redis, history, None)
    assert (recovered, position.offset, entries) == (True, 0, [])
    published = await publish(redis, history, b"x")
    assert published == Position(position.epoch, 1)
    assert await read(redis, history, None) == (True, published, [])


async def test_read_after_another_epoch_or_a_future_offset_is_not_recovered(
    redis: Redis,
) -> None:
    history = History()
    last = await publish(redis, history, b"x")
    assert await read(redis, history, Position(new_epoch(), 0)) == (False, last, [])
    assert await read(redis, history, Position(last.epoch, 2)) == (False, last, [])


async def test_size_bounds_the_stream_and_a_trimmed_history_is_not_recovered(
    redis: Redis,
) -> None:
    history = History(size=3)
    positions = [await publish(redis, history, b"m%d" % n) for n in range(5)]
    assert await redis.xlen(KEYS[1]) == 3
    assert await read(redis, history, positions[1]) == (
        True,
        positions[4],
        [b"\x01m2", b"\x01m3", b"\x01m4"],
    )
    assert await read(redis, history, positions[0]) == (False, positions[4], [])


async def test_an_entry_lost_in_the_middle_is_noticed(redis: Redis) -> None:
    history = History()
    positions = [await publish(redis, history, b"m%d" % n) for n in range(3)]
    await redis.xdel(KEYS[1], b"2-0")
    assert await read(redis, history, positions[0]) == (False, positions[2], [])
    assert await read(redis, history, positions[1]) == (True, positions[2], [b"\x01m2"])


async def test_ttl_expires_entries_by_age(redis: Redis) -> None:
    history = History(ttl=0.3)
    old = await publish(redis, history, b"old")
    await asyncio.sleep(0.4)
    newer = await publish(redis, history, b"newer")
    # Trimmed by the publish: only the newer entry is left.
    assert await stream_ids(redis) == [b"2-0"]
    assert await read(redis, history, Position(old.epoch, 0)) == (False, newer, [])
    await asyncio.sleep(0.4)
    # Expired, not yet trimmed (nothing published since): a read does not replay it.
    assert await read(redis, history, old) == (False, newer, [])


async def test_a_silent_group_keeps_its_epoch_and_offset_while_its_stream_expires(
    redis: Redis,
) -> None:
    history = History(ttl=0.2)
    last = await publish(redis, history, b"x")
    await asyncio.sleep(0.3)
    assert not await redis.exists(KEYS[1])  # the stream expired: it takes no memory
    assert await read(redis, history, last) == (True, last, [])
    assert await publish(redis, history, b"y") == Position(last.epoch, 2)


async def test_many_expired_entries_are_trimmed_a_few_per_publish(redis: Redis) -> None:
    history = History(ttl=2.0)
    for n in range(20):
        await publish(redis, history, b"m%d" % n)
    await asyncio.sleep(1.0)
    await publish(redis, history, b"keeps the stream from expiring")  # offset 21
    await asyncio.sleep(1.2)  # the first 20 are older than ttl, the 21st 0.8 s younger
    await publish(redis, history, b"new")
    assert await redis.xlen(KEYS[1]) == 22 - 8
    for _ in range(2):
        await publish(redis, history, b"new")
    assert await stream_ids(redis) == [
        b"21-0",
        b"22-0",
        b"23-0",
        b"24-0",
    ]


async def test_a_lost_hash_starts_a_new_epoch_and_deletes_the_old_stream(redis: Redis) -> None:
    history = History()
    old = await publish(redis, history, b"x")
    await redis.delete(KEYS[0])  # as an eviction, a FLUSHALL or a restart would
    first = await publish(redis, history, b"y")
    assert first.epoch != old.epoch
    assert first.offset == 1
    assert await stream_ids(redis) == [b"1-0"]
    assert await read(redis, history, old) == (False, first, [])


async def test_a_read_after_a_lost_hash_starts_the_new_epoch(redis: Redis) -> None:
    history = History()
    old = await publish(redis, history, b"x")
    await redis.flushall()
    recovered, position, entries = await read(redis, history, old)
    assert (recovered, position.offset, entries) == (False, 0, [])
    assert position.epoch != old.epoch
    assert await publish(redis, history, b"y") == Position(position.epoch, 1)


async def test_a_restarted_redis_without_persistence_gives_a_new_epoch(
    redis: Redis, redis_server: RedisServer
) -> None:
    history = History()
    old = await publish(redis, history, b"x")
    await redis_server.kill()
    await redis_server.start()
    await redis.connection_pool.disconnect()
    new = await publish(redis, history, b"y")
    assert (new.epoch != old.epoch, new.offset) == (True, 1)


def test_a_message_of_a_kept_broadcast_without_its_position_is_malformed() -> None:
    for message in (b"\x03abc.1", b"\x03abc\n\x01\x00\x00\x00\x00", b"\x03" + b"a" * 200):
        with pytest.raises(ValueError):  # noqa: PT011
            decode(message, "g")


def test_entry_data_reads_the_kind_byte() -> None:
    assert entry_data(b"\x01h\xc3\xa9") == "hé"
    assert entry_data(b"\x02\x00\n") == b"\x00\n"
    with pytest.raises(ValueError, match="unknown kind"):
        entry_data(b"\x09x")
