"""``RedisBroker``: broadcasts shared through a real ``redis-server`` by separate processes."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from node_clients import Connect, burst_received_by, receive_all
from pytest_aiohttp import AiohttpClient, AiohttpServer
from redis_server import RedisServer, StartNode, free_port, redis_client, wait_for_count, wait_until
from support import TIMEOUT, require_module

from aiohttp_wsapp import BrokerError, Connection, WebSocketApp, create_app
from aiohttp_wsapp.broker import Broadcast

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from aiohttp_wsapp.redis import RedisBroker

RECOVERY_TIMEOUT = 15.0
"""How long a test waits for the brokers to reconnect after Redis is back."""
PRESENCE_REFRESH = 5.0
"""How often a process rewrites its counts in Redis, and refreshes their expiry (14 s)."""


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def redis_module() -> None:
    """Skip (fail in CI) without the ``redis`` package."""
    require_module("redis", "pip install redis")


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the test's Redis, to look at its channels."""
    async with redis_client(redis_server.url) as client:
        yield client


MakeBroker = Callable[..., "RedisBroker"]


@pytest.fixture
def make_broker(redis_server: RedisServer) -> MakeBroker:
    """Make a ``RedisBroker`` on the test's Redis."""
    from aiohttp_wsapp.redis import RedisBroker

    def make(**kwargs: Any) -> RedisBroker:
        return RedisBroker(redis_server.url, **kwargs)

    return make


class Local:
    """An endpoint with a ``RedisBroker`` in this process; its connections echo."""

    wsapp: WebSocketApp
    client: TestClient[Any, Any]

    def __init__(self) -> None:
        self.connections: asyncio.Queue[Connection] = asyncio.Queue()

    def on_establish(
        self, conn: Connection, request: web.Request, results: tuple[Any, ...]
    ) -> None:
        """Echo every message."""
        conn.on("message", lambda conn, message: conn.send(message))
        self.connections.put_nowait(conn)

    async def connect(self) -> tuple[aiohttp.ClientWebSocketResponse, Connection]:
        """Open a client connection; return it and the server's side of it."""
        ws = await self.client.ws_connect("/")
        return ws, await asyncio.wait_for(self.connections.get(), TIMEOUT)


ServeLocal = Callable[..., Awaitable[Local]]


@pytest.fixture
def serve_local(
    make_broker: MakeBroker, aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> ServeLocal:
    """Serve an endpoint with ``RedisBroker(url, **kwargs)`` in this process."""

    async def serve(**kwargs: Any) -> Local:
        local = Local()
        local.wsapp = WebSocketApp(local.on_establish, broker=make_broker(**kwargs))
        local.client = await aiohttp_client(await aiohttp_server(local.wsapp.to_app()))
        return local

    return serve


async def subscribers(redis_url: str, channel: str) -> int:
    """How many connections are subscribed to ``channel`` (a new client each time)."""
    async with redis_client(redis_url) as client:
        counts = await client.pubsub_numsub(channel)
    return int(counts[0][1])


async def wait_for_channels(redis: Redis, prefix: str, *expected: str) -> None:
    """Wait until the channels with subscribers that start with ``prefix`` are ``expected``."""

    async def match() -> bool:
        names = await redis.pubsub_channels(f"{prefix}*")
        return {name.decode() if isinstance(name, bytes) else name for name in names} == set(
            expected
        )

    await wait_until(match, RECOVERY_TIMEOUT)


async def wait_for_subscribers(redis_url: str, channel: str, count: int) -> None:
    """Wait until ``count`` connections are subscribed to ``channel``."""

    async def subscribed() -> bool:
        return await subscribers(redis_url, channel) == count

    await wait_until(subscribed, RECOVERY_TIMEOUT)


# -- across processes ----------------------------------------------------------------------------


async def test_broadcast_reaches_the_clients_of_every_process(
    start_node: StartNode, connect: Connect
) -> None:
    a, b = await start_node(), await start_node()
    clients = [await connect(node) for node in (a, a, b, b)]

    await clients[0].broadcast("hello everyone")
    await clients[3].broadcast("binary hello", binary=True)

    for client in clients:
        assert await client.next() == "hello everyone"
        assert await client.next() == b"binary hello"


async def test_group_broadcast_reaches_only_its_members_in_every_process(
    start_node: StartNode, connect: Connect, redis_server: RedisServer
) -> None:
    a, b = await start_node(), await start_node()
    a_member, a_other, b_member, b_other = [await connect(n) for n in (a, a, b, b)]
    await a_member.command("join", group="room")
    await b_member.command("join", group="room")
    await wait_for_subscribers(redis_server.url, "aiohttp_wsapp:group:room", 2)

    await a_other.broadcast("to the room", group="room")
    await a_other.broadcast("to everyone")  # same publisher, so it arrives after

    for member in (a_member, b_member):
        assert await member.next() == "to the room"
        assert await member.next() == "to everyone"
    for other in (a_other, b_other):
        assert await other.next() == "to everyone"


async def test_broadcasts_not_awaited_right_after_a_join_arrive_in_call_order_everywhere(
    start_node: StartNode, connect: Connect
) -> None:
    """SPEC §5: a connection joins a group and, in the same plain handler, broadcasts are made
    without await, to that group, to everyone and to another group; more on the next turns of the
    loop, while the join's subscription is being answered. Every member, in both processes,
    receives what is meant for it in call order. Twenty rounds, each with a new subscription."""
    rounds, burst, turns = 20, 40, 40
    a, b = await start_node(), await start_node()
    joiner, a_side, b_member, b_other = [await connect(node) for node in (a, a, b, b)]
    for round_ in range(rounds):
        await b_member.command("join", group=f"fresh {round_}")
    await b_member.command("join", group="side")
    # Publish after subscribe: once these come back, both processes listen to every group.
    await b_member.broadcast("b listens", group="side")
    assert await b_member.next() == "b listens"
    await a_side.command("join", group="side")
    await a_side.broadcast("a listens", group="side")
    for client in (a_side, b_member):
        assert await client.next() == "a listens"

    for round_ in range(rounds):
        group, tag = f"fresh {round_}", f"round {round_}"
        targets = [group, None, "side", group, None]
        reply = await joiner.command(
            "join_and_burst", group=group, targets=targets, burst=burst, turns=turns, tag=tag
        )
        assert reply == {"reply": "join_and_burst"}
        for client, groups in (
            (joiner, {None, group}),
            (a_side, {None, "side"}),
            (b_member, {None, group, "side"}),
            (b_other, {None}),
        ):
            expected = burst_received_by(tag, targets, burst + turns, groups)
            assert await receive_all(client, len(expected)) == expected, (round_, groups)
    for client in (joiner, a_side, b_member, b_other):
        assert not client.received  # nothing more than expected


async def test_exclude_is_respected_in_every_process(
    start_node: StartNode, connect: Connect, redis_server: RedisServer
) -> None:
    a, b = await start_node(), await start_node()
    sender, a_other, b_member = [await connect(n) for n in (a, a, b)]
    await sender.command("join", group="room")
    await b_member.command("join", group="room")
    await wait_for_subscribers(redis_server.url, "aiohttp_wsapp:group:room", 2)

    await sender.broadcast("not to the sender", exclude_self=True)
    await sender.broadcast("room, not to the sender", group="room", exclude_self=True)
    await sender.broadcast("to everyone")

    assert await sender.next() == "to everyone"
    assert await a_other.next() == "not to the sender"
    assert await a_other.next() == "to everyone"
    assert await b_member.next() == "not to the sender"
    assert await b_member.next() == "room, not to the sender"
    assert await b_member.next() == "to everyone"


async def test_delivery_resumes_in_every_process_after_redis_restarts(
    start_node: StartNode, connect: Connect, redis_server: RedisServer
) -> None:
    a, b = await start_node(), await start_node()
    sender, member = await connect(a), await connect(b)
    await member.command("join", group="room")
    await wait_for_subscribers(redis_server.url, "aiohttp_wsapp:group:room", 1)

    await redis_server.kill()
    reply = await sender.command("broadcast", data="lost")
    assert reply["reply"] == "error"
    assert reply["error"].startswith("BrokerError")
    await sender.ws.send_str("still served")
    assert await sender.next() == "still served"

    await redis_server.start()
    await wait_for_subscribers(redis_server.url, "aiohttp_wsapp:all", 2)
    await wait_for_subscribers(redis_server.url, "aiohttp_wsapp:group:room", 1)

    async def broadcast_succeeds() -> bool:  # the sender's process may still be reconnecting
        return await sender.command("broadcast", data="back", group="room") == {
            "reply": "broadcast"
        }

    await wait_until(broadcast_succeeds, RECOVERY_TIMEOUT)
    assert await member.next() == "back"


# -- presence across processes ------------------------------------------------------------------


async def test_joins_and_leaves_count_in_every_process_within_a_second(
    start_node: StartNode, connect: Connect
) -> None:
    a, b = await start_node(), await start_node()
    a_first, a_second, b_first = await connect(a), await connect(a), await connect(b)
    await wait_for_count(b_first.count, 3)
    await wait_for_count(a_first.count, 3)

    await a_first.command("join", group="room")
    await wait_for_count(lambda: b_first.count("room"), 1)
    await a_second.command("join", group="room")
    await b_first.command("join", group="room")
    await wait_for_count(lambda: b_first.count("room"), 3)
    await wait_for_count(lambda: a_first.count("room"), 3)
    await a_first.command("leave", group="room")
    await wait_for_count(lambda: b_first.count("room"), 2)
    await a_second.ws.close()  # a closed connection leaves its groups, and counts no more
    await wait_for_count(lambda: b_first.count("room"), 1)
    await wait_for_count(b_first.count, 2)
    assert await b_first.count("elsewhere") == 0


async def test_a_process_killed_right_after_writing_its_counts_stops_counting_within_15_s(
    start_node: StartNode, connect: Connect, redis: Redis
) -> None:
    doomed, survivor = await start_node(), await start_node()
    watcher = await connect(survivor)
    for client in (await connect(doomed), await connect(doomed)):
        await client.command("join", group="room")
    await wait_for_count(lambda: watcher.count("room"), 2)
    key = await presence_key_counting(redis, "aiohttp_wsapp", "room", 2)

    # Kill it right after a rewrite of its counts: the latest it can stop counting.
    loop = asyncio.get_running_loop()
    last = await redis.pttl(key)
    deadline = loop.time() + 2 * PRESENCE_REFRESH
    while (ttl := await redis.pttl(key)) <= last:
        assert loop.time() < deadline, "the counts were not rewritten"
        last = ttl
        await asyncio.sleep(0.01)
    assert doomed.process is not None
    doomed.process.send_signal(signal.SIGKILL)  # no clean stop: its counts stay until they expire
    killed = loop.time()
    await doomed.process.wait()

    await wait_for_count(lambda: watcher.count("room"), 0, timeout=15.0)
    counted_for = loop.time() - killed
    # It counts until its counts expire (14 s after their last write; not before: a live
    # process would flicker out between two writes otherwise), and stops within SPEC's 15 s.
    assert ttl / 1000 - 0.1 <= counted_for < 15.0
    assert await watcher.count() == 1


async def presence_key_counting(redis: Redis, prefix: str, group: str, members: int) -> bytes:
    """The key of the presence hash that counts ``members`` in ``group``."""
    for process_id in await redis.smembers(f"{prefix}:presence"):
        key = f"{prefix}:presence:".encode() + (
            process_id if isinstance(process_id, bytes) else process_id.encode()
        )
        if await redis.hget(key, f"g:{group}") == str(members).encode():
            return key
    raise AssertionError(f"no process counts {members} in {group}")


async def test_a_process_that_stops_stops_counting_at_once(
    start_node: StartNode, connect: Connect
) -> None:
    leaving, staying = await start_node(), await start_node()
    watcher, member = await connect(staying), await connect(leaving)
    await member.command("join", group="room")
    await wait_for_count(lambda: watcher.count("room"), 1)
    # The member answers the node's closing handshake (aiohttp's client does, while it reads),
    # so that the shutdown does not wait for close_timeout, as long as the SIGKILL of stop().
    closing = asyncio.ensure_future(member.ws.receive())
    await leaving.stop()  # SIGTERM: a graceful shutdown deletes its counts
    assert (await closing).type is WSMsgType.CLOSE
    assert leaving.process is not None
    assert leaving.process.returncode == 0  # not killed
    # Well before the 15 s expiry; a loaded machine may take more than a second to shut down.
    await wait_for_count(lambda: watcher.count("room"), 0, timeout=5.0)
    assert await watcher.count() == 1


# -- in one process ------------------------------------------------------------------------------


async def test_broadcast_raises_broker_error_while_redis_is_down_then_resumes(
    serve_local: ServeLocal, redis_server: RedisServer, redis: Redis
) -> None:
    local = await serve_local()
    ws, conn = await local.connect()
    conn.join("room")
    await local.wsapp.broadcast("before", group="room")
    assert await ws.receive_str(timeout=TIMEOUT) == "before"

    await redis_server.kill()
    with pytest.raises(BrokerError, match=r"Redis at redis://127\.0\.0\.1:\d+/0"):
        await local.wsapp.broadcast("lost")
    await ws.send_str("echo")
    assert await ws.receive_str(timeout=TIMEOUT) == "echo"
    conn.leave("room")  # group changes while disconnected count when the broker is back
    conn.join("new room")

    await redis_server.start()
    await wait_for_channels(
        redis, "aiohttp_wsapp:", "aiohttp_wsapp:all", "aiohttp_wsapp:group:new room"
    )

    async def published() -> bool:
        try:
            await local.wsapp.broadcast("after", group="new room")
        except BrokerError:
            return False
        return True

    await wait_until(published, RECOVERY_TIMEOUT)
    assert await ws.receive_str(timeout=TIMEOUT) == "after"


async def test_count_raises_broker_error_while_redis_is_down_then_counts_again(
    serve_local: ServeLocal, redis_server: RedisServer
) -> None:
    local, other = await serve_local(), await serve_local()
    _, conn = await local.connect()
    conn.join("room")
    await wait_for_count(lambda: other.wsapp.count("room"), 1)

    await redis_server.kill()
    with pytest.raises(BrokerError, match=r"Redis at redis://127\.0\.0\.1:\d+/0"):
        await local.wsapp.count("room")
    with pytest.raises(BrokerError):
        await other.wsapp.count()

    await redis_server.start()  # empty: every process writes its counts again

    async def counted_again() -> int:
        try:
            return await other.wsapp.count("room")
        except BrokerError:
            return -1

    await wait_for_count(counted_again, 1, RECOVERY_TIMEOUT)
    assert await local.wsapp.count() == 1


async def test_this_process_counts_its_own_changes_at_once(serve_local: ServeLocal) -> None:
    local = await serve_local()
    ws, conn = await local.connect()
    assert await local.wsapp.count() == 1
    conn.join("room")
    assert await local.wsapp.count("room") == 1
    conn.leave("room")
    assert await local.wsapp.count("room") == 0
    await ws.close()
    await wait_for_count(local.wsapp.count, 0, TIMEOUT)  # once the connection has finished


async def test_counts_changing_fast_are_written_together_without_a_task_each(
    make_broker: MakeBroker, redis: Redis
) -> None:
    broker, observer = make_broker(), make_broker()
    sizes: dict[str, int] = {}
    await broker.start(lambda broadcast: None, lambda: (sum(sizes.values()), sizes))
    await observer.start(lambda broadcast: None)
    try:
        assert await observer.count("room") == 0  # meanwhile, the brokers' tasks have started
        tasks = asyncio.all_tasks()
        for n in range(1, 10_001):
            sizes["room"] = n
            broker.counts_changed()
            if n % 1000 == 0:
                assert asyncio.all_tasks() == tasks
                await asyncio.sleep(0)  # not a wait for time: lets the broker's tasks run
        await wait_for_count(lambda: observer.count("room"), 10_000)
        # The first, at start; then a few for the ten thousand changes. Every write of a
        # process's counts (and nothing else) sets their expiry once.
        assert 2 <= await calls_in_redis(redis, "pexpire") <= 3
        await broker.stop()
        assert await observer.count("room") == 0  # a broker that stops deletes its counts
    finally:
        await broker.stop()
        await observer.stop()


async def calls_in_redis(redis: Redis, command: str) -> int:
    """How many times Redis has run ``command`` (scripts' calls included)."""
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_counts_are_written_again_after_redis_was_silent(
    make_broker: MakeBroker, redis_server: RedisServer
) -> None:
    broker, observer = make_broker(), make_broker()
    broker.ping_interval = observer.ping_interval = 0.1  # silent for 0.3 s: lost
    sizes = {"room": 1}
    await broker.start(lambda broadcast: None, lambda: (1, sizes))
    await observer.start(lambda broadcast: None)
    try:
        await wait_for_count(lambda: observer.count("room"), 1)
        redis_server.pause()

        async def refused() -> bool:
            try:
                await observer.count("room")
            except BrokerError:
                return True
            return False

        await wait_until(refused, RECOVERY_TIMEOUT)
        sizes["room"] = 2
        broker.counts_changed()  # while Redis answers nothing
        redis_server.resume()

        async def counted_again() -> int:
            try:
                return await observer.count("room")
            except BrokerError:
                return -1

        await wait_for_count(counted_again, 2, RECOVERY_TIMEOUT)
    finally:
        await broker.stop()
        await observer.stop()


@pytest.mark.parametrize(
    ("prefix", "other_prefix"),
    [
        ("first", "second"),
        ("app", "app:presence"),  # the keys of one start with the name of the other
        ("app%3Ab", "app:b"),  # the escape character is escaped too
    ],
)
async def test_brokers_with_another_prefix_do_not_count_each_other(
    serve_local: ServeLocal, prefix: str, other_prefix: str
) -> None:
    one, two = await serve_local(prefix=prefix), await serve_local(prefix=prefix)
    other, other_observer = (
        await serve_local(prefix=other_prefix),
        await serve_local(prefix=other_prefix),
    )
    for local in (one, two, other):
        _, conn = await local.connect()
        conn.join("room")
    # Every hash is written: each counts the other's member of its prefix, and no more.
    await wait_for_count(lambda: one.wsapp.count("room"), 2)
    await wait_for_count(lambda: two.wsapp.count("room"), 2)
    await wait_for_count(lambda: other_observer.wsapp.count("room"), 1)
    assert await one.wsapp.count() == 2
    assert await other.wsapp.count("room") == 1
    assert await other.wsapp.count() == 1


async def test_startup_fails_clearly_when_redis_is_unreachable(
    redis_module: None, aiohttp_server: AiohttpServer
) -> None:
    from aiohttp_wsapp.redis import RedisBroker

    url = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(lambda *args: None, broker=RedisBroker(url))
    with pytest.raises(BrokerError, match=f"cannot connect to Redis at {url}"):
        await aiohttp_server(app)


async def test_a_process_listens_to_a_group_only_while_it_has_members(
    serve_local: ServeLocal, redis: Redis
) -> None:
    local = await serve_local(prefix="p")

    async def channels_are(*expected: str) -> None:
        await wait_for_channels(redis, "p:", *expected)

    assert await redis.pubsub_channels("p:*") == [b"p:all"]
    (_, first), (_, second) = await local.connect(), await local.connect()
    first.join("g")
    await channels_are("p:all", "p:group:g")
    second.join("g")
    first.leave("g")
    second.join("barrier")  # changes are applied in order: once it shows, so did the leave
    await channels_are("p:all", "p:group:g", "p:group:barrier")
    second.leave("barrier")
    second.leave("g")
    await channels_are("p:all")
    third_ws, third = await local.connect()
    third.join("h")
    await channels_are("p:all", "p:group:h")
    await third_ws.close()  # a closed connection leaves its groups
    await channels_are("p:all")


async def test_a_new_member_gets_a_broadcast_made_right_after_it_joined(
    serve_local: ServeLocal,
) -> None:
    local = await serve_local()
    for attempt in range(20):
        ws, conn = await local.connect()
        conn.join(f"fresh {attempt}")
        await local.wsapp.broadcast(f"welcome {attempt}", group=f"fresh {attempt}")
        assert await ws.receive_str(timeout=TIMEOUT) == f"welcome {attempt}"
        await ws.close()


async def test_brokers_with_another_prefix_do_not_share_broadcasts(
    serve_local: ServeLocal,
) -> None:
    first, second = await serve_local(prefix="first"), await serve_local(prefix="second")
    (first_ws, _), (second_ws, _) = await first.connect(), await second.connect()

    await first.wsapp.broadcast("first only")
    await second.wsapp.broadcast("second only")

    assert await first_ws.receive_str(timeout=TIMEOUT) == "first only"
    assert await second_ws.receive_str(timeout=TIMEOUT) == "second only"


@pytest.mark.parametrize(
    ("sender_prefix", "sender_group", "listener_prefix", "listener_group"),
    [
        ("app:group", None, "app", "all"),  # once both app:group:all
        ("app:group:x", None, "app", "x:all"),  # once both app:group:x:all
        ("app:group", "g", "app", "group:g"),  # once both app:group:group:g
        ("app%3Agroup", None, "app:group", None),  # the escape character is escaped too
    ],
)
async def test_endpoints_with_other_prefixes_never_share_a_channel(
    serve_local: ServeLocal,
    sender_prefix: str,
    sender_group: str | None,
    listener_prefix: str,
    listener_group: str | None,
) -> None:
    sender, listener = (
        await serve_local(prefix=sender_prefix),
        await serve_local(prefix=listener_prefix),
    )
    (sender_ws, sender_conn), (listener_ws, listener_conn) = (
        await sender.connect(),
        await listener.connect(),
    )
    if sender_group is not None:
        sender_conn.join(sender_group)
    if listener_group is not None:
        listener_conn.join(listener_group)
    await listener.wsapp.broadcast("subscribed", group=listener_group)
    assert await listener_ws.receive_str(timeout=TIMEOUT) == "subscribed"

    await sender.wsapp.broadcast("not for the other prefix", group=sender_group)
    assert await sender_ws.receive_str(timeout=TIMEOUT) == "not for the other prefix"
    await listener.wsapp.broadcast("next", group=listener_group)

    # Redis handled the two publications one after the other: a leak would arrive first.
    assert await listener_ws.receive_str(timeout=TIMEOUT) == "next"


async def test_a_malformed_message_is_logged_and_skipped(
    serve_local: ServeLocal, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    local = await serve_local()
    ws, _ = await local.connect()
    await redis.publish("aiohttp_wsapp:all", b"\x07 not a broadcast")
    await local.wsapp.broadcast("fine")
    assert await ws.receive_str(timeout=TIMEOUT) == "fine"
    assert any("malformed message" in record.getMessage() for record in caplog.records)


# -- the broker by itself ------------------------------------------------------------------------


async def test_every_field_of_a_broadcast_crosses_redis(make_broker: MakeBroker) -> None:
    sender, receiver = make_broker(), make_broker()
    received: asyncio.Queue[Broadcast] = asyncio.Queue()
    await sender.start(lambda broadcast: None)
    await receiver.start(received.put_nowait)
    try:
        group = "ünïcode \udcff group"  # any str, lone surrogates too
        receiver.group_joined(group)
        broadcasts = [
            Broadcast("text ✓"),
            Broadcast(b"\x00binary\xff", exclude=frozenset({"0123456789abcdef", "x"})),
            Broadcast("", group=group, exclude=frozenset({"a"})),
            Broadcast(b"", group=group),
        ]
        await receiver.publish(broadcasts[0])  # waits for the group subscription first
        for broadcast in broadcasts[1:]:
            await sender.publish(broadcast)
        for broadcast in broadcasts:
            assert await asyncio.wait_for(received.get(), TIMEOUT) == broadcast
    finally:
        await sender.stop()
        await receiver.stop()


async def test_concurrent_broadcasts_arrive_in_the_order_of_the_calls(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker()
    received: asyncio.Queue[Broadcast] = asyncio.Queue()
    await broker.start(received.put_nowait)
    try:
        # The calls made while a batch is on its way to Redis go out together in the next.
        await asyncio.gather(*(broker.publish(Broadcast(str(n))) for n in range(100)))
        for n in range(100):
            assert await asyncio.wait_for(received.get(), TIMEOUT) == Broadcast(str(n))
    finally:
        await broker.stop()


async def test_a_broadcast_still_on_its_way_at_stop_raises_broker_error(
    make_broker: MakeBroker, redis_server: RedisServer
) -> None:
    broker = make_broker()
    await broker.start(lambda broadcast: None)
    redis_server.pause()  # no answer will come
    publishing = asyncio.ensure_future(broker.publish(Broadcast("never answered")))
    await asyncio.sleep(0)  # not a wait for time: lets the call queue its broadcast
    await broker.stop()
    with pytest.raises(BrokerError, match="stopped"):
        await publishing


async def test_stop_leaves_no_task_and_the_broker_can_start_again(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker()
    received: asyncio.Queue[Broadcast] = asyncio.Queue()
    before = asyncio.all_tasks()
    for _ in range(2):
        await broker.start(received.put_nowait)
        await broker.publish(Broadcast("hi"))
        assert await asyncio.wait_for(received.get(), TIMEOUT) == Broadcast("hi")
        await broker.stop()
        assert asyncio.all_tasks() == before
    with pytest.raises(BrokerError, match="not connected"):
        await broker.publish(Broadcast("after stop"))


async def test_start_twice_is_an_error(make_broker: MakeBroker) -> None:
    broker = make_broker()
    await broker.start(lambda broadcast: None)
    try:
        with pytest.raises(RuntimeError, match="already started"):
            await broker.start(lambda broadcast: None)
    finally:
        await broker.stop()


async def test_a_silent_redis_is_noticed_and_reconnected_to(
    make_broker: MakeBroker, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker()
    broker.ping_interval = 0.1  # silence for 0.3 s means the connection is lost
    received: asyncio.Queue[Broadcast] = asyncio.Queue()
    await broker.start(received.put_nowait)
    try:
        caplog.set_level(logging.WARNING, "aiohttp_wsapp")
        redis_server.pause()

        async def noticed() -> bool:
            return "lost the connection to Redis" in caplog.text

        await wait_until(noticed)
        with pytest.raises(BrokerError, match="not connected"):
            await broker.publish(Broadcast("while paused"))
        redis_server.resume()

        async def published() -> bool:
            try:
                await broker.publish(Broadcast("resumed"))
            except BrokerError:
                return False
            return True

        await wait_until(published, RECOVERY_TIMEOUT)
        assert await asyncio.wait_for(received.get(), TIMEOUT) == Broadcast("resumed")
    finally:
        await broker.stop()


def test_bad_arguments_are_refused(redis_module: None) -> None:
    from aiohttp_wsapp.redis import RedisBroker

    with pytest.raises(ValueError, match="scheme"):
        RedisBroker("http://localhost:6379")
    with pytest.raises(ValueError, match="prefix"):
        RedisBroker("redis://localhost", prefix="")
    with pytest.raises(ValueError, match="RESP2"):
        RedisBroker("redis://localhost?protocol=3")
    with pytest.raises(TypeError):
        RedisBroker(b"redis://localhost")  # type: ignore[arg-type]


def test_the_url_shown_leaves_out_the_password(redis_module: None) -> None:
    from aiohttp_wsapp.redis import RedisBroker

    broker = RedisBroker("redis://user:secret@localhost:6379/1")
    assert broker.url == "redis://user@localhost:6379/1"
    assert "secret" not in repr(broker)


async def test_the_publisher_settles_each_command_of_a_batch_with_its_own_reply(
    redis_module: None, redis_server: RedisServer, redis: Redis
) -> None:
    # The outbox is where a scripted publish goes (history): one refused command fails alone.
    from redis.asyncio import Redis as Client

    from aiohttp_wsapp.redis.publisher import Publisher

    client = Client.from_url(redis_server.url)
    publisher = Publisher(client.connection_pool.make_connection, where=redis_server.url)
    publisher.start()
    try:

        def pack(*args: str) -> list[bytes]:
            parts = [b"*%d\r\n" % len(args)]
            for arg in args:
                parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg.encode()))
            return parts

        replies = [
            publisher.publish(b"channel", b"first"),
            publisher.submit(pack("INCR", "counter")),
            publisher.submit(pack("NO-SUCH-COMMAND")),
            publisher.submit(pack("INCR", "counter")),
        ]
        assert await replies[0] == 0  # PUBLISH: no subscriber
        assert await replies[1] == 1
        with pytest.raises(BrokerError, match="Redis refused a command: unknown command"):
            await replies[2]
        assert await replies[3] == 2  # in order, after the refused one
    finally:
        await publisher.stop()
        await client.aclose()
    assert await redis.get("counter") == b"2"
