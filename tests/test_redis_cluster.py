"""``RedisClusterBroker`` against a real local Redis Cluster (SPEC §5), which the tests start.

Six ``redis-server`` in cluster mode (three primaries with a replica each, node timeout 2 s) on
loopback, made a cluster by ``redis-cli --cluster create``, shared by the module's tests; a test
that kills nodes restarts them and waits until the cluster is whole again before it ends. The
endpoint processes are ``tests/redis_node.py``, driven by WebSocket clients.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import NamedTuple

import pytest
from node_clients import Connect, ConnectHistory, NodeClient, burst_received_by, receive_all
from redis_server import (
    CLUSTER_NODE_TIMEOUT_MS,
    ClusterNode,
    Node,
    RedisCluster,
    StartNode,
    free_port,
    starting_nodes,
    wait_for_count,
    wait_until,
)
from support import TIMEOUT, require_module, require_program

from aiohttp_wsapp import BrokerError, History, Position, create_app

PREFIX = "aiohttp_wsapp"
HISTORY_PREFIX = "history-test"
"""The prefix of the history nodes' endpoints."""
RESUMED_WITHIN = 1.0
"""SPEC §5: delivery resumes within 1 s of the cluster promoting a replica."""


def channel(group: str, prefix: str = PREFIX) -> str:
    """The channel of ``group`` (the documented layout; the names used here need no escaping)."""
    return f"{{{prefix}:group:{group}}}"


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of six nodes, for the whole module."""
    require_module("redis", "pip install 'aiohttp-wsapp[redis]'")
    server = require_program("redis-server", "apt-get install redis-server")
    cli = require_program("redis-cli", "apt-get install redis-tools")
    redis_cluster = RedisCluster(server, cli, tmp_path_factory.mktemp("cluster"))
    try:
        redis_cluster.start()
        yield redis_cluster
    finally:
        redis_cluster.stop()


@pytest.fixture
def healthy(cluster: RedisCluster) -> Iterator[RedisCluster]:
    """The cluster, whole; after the test, every node it killed restarted, the cluster whole."""
    yield cluster
    for node in cluster.nodes:
        if not node.running:
            node.start()
    cluster.wait_healthy()


@pytest.fixture
async def start_node(healthy: RedisCluster) -> AsyncIterator[StartNode]:
    """Start endpoint processes with a ``RedisClusterBroker``; stop them after the test."""
    async with starting_nodes(healthy.url, prefix=PREFIX, cluster=True) as start:
        yield start


# -- helpers -------------------------------------------------------------------------------------


def slot_of(cluster: RedisCluster, key: str) -> int:
    return int(cluster.nodes[0].command("CLUSTER", "KEYSLOT", key))


def groups_by_primary(
    cluster: RedisCluster, name: str = "g", prefix: str = PREFIX
) -> dict[str, list[str]]:
    """Group names ``{name}0`` to ``{name}59`` by the address of the primary that serves their
    channel with ``prefix`` (and so, with history, their history's keys)."""
    by_primary: dict[str, list[str]] = {}
    for n in range(60):
        group = f"{name}{n}"
        slot = slot_of(cluster, channel(group, prefix))
        by_primary.setdefault(cluster.primary_of(slot), []).append(group)
    return by_primary


def away_from_presence(
    cluster: RedisCluster, name: str = "g", prefix: str = PREFIX
) -> tuple[str, str, str]:
    """A primary that does not serve the presence set with ``prefix`` (losing it leaves counts
    working), the first group ``{name}N`` that it serves, and the first that another serves."""
    presence_primary = cluster.primary_of(slot_of(cluster, f"{{{prefix}:presence}}"))
    by_primary = groups_by_primary(cluster, name, prefix)
    primary = next(p for p in by_primary if p != presence_primary)
    elsewhere = next(groups[0] for p, groups in by_primary.items() if p != primary)
    return primary, by_primary[primary][0], elsewhere


async def shard_subscribers(cluster: RedisCluster, group: str) -> int:
    """How many connections listen to ``group``'s channel on the primary that serves it."""
    address = cluster.primary_of(slot_of(cluster, channel(group)))
    reply = await asyncio.to_thread(
        cluster.node(address).command, "PUBSUB", "SHARDNUMSUB", channel(group)
    )
    return int(reply.split()[-1])


async def wait_for_shard_subscribers(cluster: RedisCluster, group: str, count: int) -> None:
    async def subscribed() -> bool:
        return await shard_subscribers(cluster, group) == count

    await wait_until(subscribed, TIMEOUT)


class OnTwoShards(NamedTuple):
    """Two processes: ``sender``, a client of ``a``, and ``member``, of ``b``, a member of
    ``group`` (served by ``primary``, which does not serve the presence set) and of ``other``
    (served by another primary), each subscribed on its shard."""

    a: Node
    b: Node
    sender: NodeClient
    member: NodeClient
    primary: str
    group: str
    other: str


async def member_on_two_shards(
    cluster: RedisCluster, start_node: StartNode, connect: Connect
) -> OnTwoShards:
    """Start :class:`OnTwoShards`."""
    a, b = await start_node(), await start_node()
    sender, member = await connect(a), await connect(b)
    primary, group, other = away_from_presence(cluster)
    for joined in (group, other):
        await member.command("join", group=joined)
        await wait_for_shard_subscribers(cluster, joined, 1)
    return OnTwoShards(a, b, sender, member, primary, group, other)


def command_calls(cluster: RedisCluster) -> dict[str, dict[str, int]]:
    """Each running node's calls of each command, from ``INFO commandstats``."""
    calls: dict[str, dict[str, int]] = {}
    for node in cluster.nodes:
        if node.running:
            stats = node.command("INFO", "commandstats")
            calls[node.address] = {
                name: int(count)
                for name, count in re.findall(r"cmdstat_([\w|]+):calls=(\d+)", stats)
            }
    return calls


async def broadcast_result(client: NodeClient, data: str, group: str) -> str:
    """``"broadcast"``, or the error text when the node's ``broadcast`` raised."""
    reply = await client.command("broadcast", data=data, group=group)
    return str(reply.get("error", reply["reply"]))


# -- delivery, order, count ----------------------------------------------------------------------


async def test_broadcasts_reach_every_process_in_order_per_group_through_every_shard(
    healthy: RedisCluster, start_node: StartNode, connect: Connect
) -> None:
    a, b = await start_node(), await start_node()
    sender, a_member, b_member = await connect(a), await connect(a), await connect(b)
    groups = [f"g{n}" for n in range(30)]
    for group in groups:
        await a_member.command("join", group=group)
        await b_member.command("join", group=group)
    for group in groups:
        await wait_for_shard_subscribers(healthy, group, 2)
    before = command_calls(healthy)

    for round_ in range(20):
        for group in groups:
            await sender.broadcast(f"{group} {round_}", group=group)

    for member in (a_member, b_member):
        received = [str(await member.next()) for _ in range(20 * len(groups))]
        for group in groups:
            mine = [m for m in received if m.split()[0] == group]
            assert mine == [f"{group} {round_}" for round_ in range(20)]
    after = command_calls(healthy)
    topology = healthy.topology()
    spread = {
        primary: after[primary].get("spublish", 0) - before[primary].get("spublish", 0)
        for primary in topology
    }
    assert all(published > 0 for published in spread.values()), spread  # every shard took some
    assert sum(spread.values()) == 20 * len(groups)  # each broadcast once, on one node
    for address, calls in after.items():
        assert "publish" not in calls, address  # never classic PUBLISH, copied to every node


async def test_broadcasts_not_awaited_right_after_a_join_leave_each_shard_in_call_order(
    healthy: RedisCluster, start_node: StartNode, connect: Connect
) -> None:
    """SPEC §5, per shard: a connection joins a group and, in the same plain handler (and on the
    next turns of the loop), broadcasts are made without await to it and to another group of the
    same shard; every member in both processes receives them in call order."""
    rounds, burst, turns = 10, 30, 30
    one_shard = next(iter(groups_by_primary(healthy).values()))
    side, fresh = one_shard[0], one_shard[1 : 1 + rounds]
    a, b = await start_node(), await start_node()
    joiner, a_side, b_member = await connect(a), await connect(a), await connect(b)
    for group in (*fresh, side):
        await b_member.command("join", group=group)
    await b_member.broadcast("b listens", group=side)  # publish after subscribe, on that shard
    assert await b_member.next() == "b listens"
    await a_side.command("join", group=side)
    await a_side.broadcast("a listens", group=side)
    for client in (a_side, b_member):
        assert await client.next() == "a listens"

    for round_, group in enumerate(fresh):
        tag, targets = f"round {round_}", [group, side, group]
        reply = await joiner.command(
            "join_and_burst", group=group, targets=targets, burst=burst, turns=turns, tag=tag
        )
        assert reply == {"reply": "join_and_burst"}
        for client, groups in ((joiner, {group}), (a_side, {side}), (b_member, {group, side})):
            expected = burst_received_by(tag, targets, burst + turns, groups)
            assert await receive_all(client, len(expected)) == expected, (round_, groups)
    for client in (joiner, a_side, b_member):
        assert not client.received


async def test_count_adds_up_every_process(start_node: StartNode, connect: Connect) -> None:
    a, b = await start_node(), await start_node()
    a_first, a_second, b_first = await connect(a), await connect(a), await connect(b)
    await wait_for_count(b_first.count, 3)
    await wait_for_count(a_first.count, 3)
    await a_first.command("join", group="room")
    await b_first.command("join", group="room")
    await wait_for_count(lambda: a_second.count("room"), 2)
    await wait_for_count(lambda: b_first.count("room"), 2)
    await a_first.command("leave", group="room")
    await wait_for_count(lambda: b_first.count("room"), 1)
    assert await a_first.count("elsewhere") == 0


# -- failures ------------------------------------------------------------------------------------


async def test_after_a_failover_delivery_resumes_within_a_second_of_the_promotion(
    healthy: RedisCluster, start_node: StartNode, connect: Connect
) -> None:
    on_two_shards = await member_on_two_shards(healthy, start_node, connect)
    a, b, sender, member, doomed_primary, doomed, safe = on_two_shards
    await sender.broadcast("before", group=doomed)
    assert await member.next() == "before"
    replica = healthy.node(healthy.topology()[doomed_primary][0])
    loop = asyncio.get_running_loop()
    resumed = loop.create_future()
    safe_received = 0

    async def listen() -> None:
        nonlocal safe_received
        while True:
            message = await member.ws.receive()
            if str(message.data).startswith("doomed") and not resumed.done():
                resumed.set_result(loop.time())
            elif str(message.data).startswith("safe"):
                safe_received += 1

    listener = loop.create_task(listen())
    healthy.node(doomed_primary).kill()
    killed = loop.time()
    promoted: float | None = None
    failed = safe_sent = 0
    try:
        for number in itertools.count():
            if resumed.done():
                break
            assert loop.time() - killed < 30.0, "delivery never resumed"
            if promoted is None and "role:master" in await asyncio.to_thread(
                replica.command, "INFO", "replication"
            ):
                promoted = loop.time()
            result = await broadcast_result(sender, f"doomed {number}", doomed)
            if result != "broadcast":
                assert "BrokerError" in result, result
                failed += 1
            assert await broadcast_result(sender, f"safe {number}", safe) == "broadcast"
            safe_sent += 1
            await asyncio.sleep(0.02)

        async def every_safe_one_received() -> bool:
            return safe_received == safe_sent

        await wait_until(every_safe_one_received)
    finally:
        listener.cancel()
        await asyncio.wait([listener])
    assert promoted is not None, "the replica was not seen promoted before delivery resumed"
    # The cluster took its node timeout (2 s) to fail the primary over; meanwhile the group's
    # broadcasts raised BrokerError, and the other shard's went through all along.
    assert promoted - killed >= CLUSTER_NODE_TIMEOUT_MS / 1000
    assert failed > 0
    assert 0 <= resumed.result() - promoted <= RESUMED_WITHIN
    assert a.process is not None
    assert a.process.returncode is None  # never restarted
    assert b.process is not None
    assert b.process.returncode is None


async def test_a_primary_without_a_replica_fails_its_groups_and_no_other(
    healthy: RedisCluster, start_node: StartNode, connect: Connect
) -> None:
    on_two_shards = await member_on_two_shards(healthy, start_node, connect)
    a, _, sender, member, lost_primary, lost, safe = on_two_shards
    await wait_for_count(lambda: sender.count(lost), 1)
    await wait_for_count(lambda: sender.count(safe), 1)

    healthy.node(healthy.topology()[lost_primary][0]).kill()  # its replica first: no failover
    healthy.node(lost_primary).kill()
    loop = asyncio.get_running_loop()
    killed = loop.time()
    # Past the node timeout, when a replica would have taken over: the group stays lost.
    while loop.time() - killed < 2 * CLUSTER_NODE_TIMEOUT_MS / 1000:
        result = await broadcast_result(sender, "lost", lost)
        assert "BrokerError" in result, result
        await sender.broadcast("safe", group=safe)
        assert await member.next() == "safe"
        assert await sender.count(safe) == 1  # the counts are on another shard
        await asyncio.sleep(0.1)
    assert a.process is not None
    assert a.process.returncode is None

    healthy.node(lost_primary).start()  # back with its slots: the group works again
    # Pub/sub delivers at most once: a broadcast published before the member's process has
    # subscribed again on the restarted primary is lost by design, so wait for that first.
    await wait_for_shard_subscribers(healthy, lost, 1)

    async def delivered_again() -> bool:
        return await broadcast_result(sender, "back", lost) == "broadcast"

    await wait_until(delivered_again, 30.0)
    while (message := await member.next()) != "back":
        assert message == "safe"


async def test_startup_fails_clearly_when_the_cluster_is_unreachable(
    aiohttp_server: Callable[..., Awaitable[object]],
) -> None:
    require_module("redis", "pip install 'aiohttp-wsapp[redis]'")
    from aiohttp_wsapp.redis import RedisClusterBroker

    url = f"redis://127.0.0.1:{free_port()}"
    app = create_app(lambda *args: None, broker=RedisClusterBroker(url))
    with pytest.raises(BrokerError, match=f"cannot read the Redis Cluster at {url}"):
        await aiohttp_server(app)


def test_bad_arguments_are_refused() -> None:
    require_module("redis", "pip install 'aiohttp-wsapp[redis]'")
    from aiohttp_wsapp.redis import RedisClusterBroker

    with pytest.raises(ValueError, match="database 0"):
        RedisClusterBroker("redis://localhost:7000/1")
    with pytest.raises(ValueError, match="redis:// or rediss://"):
        RedisClusterBroker("unix:///tmp/redis.sock")
    with pytest.raises(ValueError, match="prefix"):
        RedisClusterBroker("redis://localhost:7000", prefix="")
    with pytest.raises(ValueError, match="RESP2"):
        RedisClusterBroker("redis://localhost:7000?protocol=3")
    broker = RedisClusterBroker("redis://user:secret@localhost:7000")
    assert "secret" not in repr(broker)
    assert broker.url == "redis://user@localhost:7000"


async def test_a_broker_in_this_process_delivers_counts_and_leaves_nothing_behind(
    healthy: RedisCluster,
) -> None:
    from aiohttp_wsapp.broker import Broadcast
    from aiohttp_wsapp.redis import RedisClusterBroker

    before = asyncio.all_tasks()
    received: asyncio.Queue[Broadcast] = asyncio.Queue()
    sizes = {"room": 2}
    broker, observer = RedisClusterBroker(healthy.url), RedisClusterBroker(healthy.url)
    await broker.start(received.put_nowait, lambda: (3, sizes))
    await observer.start(lambda broadcast: None)
    try:
        broker.group_joined("room")
        await observer.publish(Broadcast("to everyone"))
        assert await asyncio.wait_for(received.get(), TIMEOUT) == Broadcast("to everyone")
        await wait_for_shard_subscribers(healthy, "room", 1)
        await observer.publish(Broadcast(b"\x00", group="room", exclude=frozenset({"x"})))
        assert await asyncio.wait_for(received.get(), TIMEOUT) == Broadcast(
            b"\x00", group="room", exclude=frozenset({"x"})
        )
        await wait_for_count(lambda: observer.count("room"), 2)
        assert await observer.count() == 3
        assert await broker.count("room") == 2  # its own, read live
    finally:
        await broker.stop()
    assert await observer.count("room") == 0  # a broker that stops deletes its counts
    await observer.stop()
    assert asyncio.all_tasks() == before
    with pytest.raises(BrokerError, match="not connected"):
        await broker.publish(Broadcast("after stop"))


# -- history on the cluster (SPEC §8) ------------------------------------------------------------


@pytest.fixture
def start_history_node(start_node: StartNode) -> StartNode:
    """Start endpoint processes with history through a ``RedisClusterBroker``."""
    return functools.partial(
        start_node, prefix=HISTORY_PREFIX, history=History(size=1000, ttl=300.0)
    )


async def test_history_positions_and_replay_across_processes_on_every_shard(
    start_history_node: StartNode, connect_history: ConnectHistory, healthy: RedisCluster
) -> None:
    groups = tuple(names[0] for names in groups_by_primary(healthy, "h", HISTORY_PREFIX).values())
    assert len(groups) == 3  # one group per primary
    a, b = await start_history_node(), await start_history_node()
    on_a, on_b = await connect_history(a, join=groups), await connect_history(b, join=groups)
    sent: dict[str, list[Position]] = {}
    for group in groups:
        sent[group] = [
            await (on_a if n % 2 else on_b).broadcast(group, f"{group} m{n}") for n in range(4)
        ]
        epoch = sent[group][0].epoch
        assert sent[group] == [Position(epoch, n) for n in range(1, 5)]
    for client in (on_a, on_b):
        got = [await client.next() for _ in range(4 * len(groups))]
        for group in groups:
            mine = [envelope for envelope in got if envelope[0] == group]
            assert mine == [(group, p, f"{group} m{n}") for n, p in enumerate(sent[group])]

    # A client that saw only the first broadcast of each group comes back to the other process.
    back = await connect_history(b, since={group: sent[group][0] for group in groups})
    assert back.joins == [
        {
            "reply": "joined",
            "group": group,
            "recovered": True,
            "position": str(sent[group][-1]),
            "replayed": 3,
        }
        for group in groups
    ]
    replayed = [await back.next() for _ in range(3 * len(groups))]
    assert replayed == [
        (group, p, f"{group} m{n}") for group in groups for n, p in enumerate(sent[group]) if n > 0
    ]


async def test_a_trimmed_history_on_the_cluster_is_not_recovered(
    start_history_node: StartNode, connect_history: ConnectHistory
) -> None:
    a = await start_history_node(history=History(size=3, ttl=300.0))
    talker = await connect_history(a, join=("trimmed",))
    sent = [await talker.broadcast("trimmed", f"m{n}") for n in range(5)]
    back = await connect_history(a)
    reply = await back.command("join", group="trimmed", since=str(sent[0]))
    assert (reply["recovered"], reply["replayed"], reply["position"]) == (False, 0, str(sent[-1]))
    reply = await back.command("join", group="trimmed", since=str(sent[1]))
    assert (reply["recovered"], reply["replayed"]) == (True, 3)
    assert [p for _, p, _ in [await back.next() for _ in range(3)]] == sent[2:]


async def test_history_survives_a_failover_to_a_replica_that_had_it(
    healthy: RedisCluster, start_history_node: StartNode, connect_history: ConnectHistory
) -> None:
    """The cluster replicates the history's hash and stream to the replica (asynchronously): once
    the replica has caught up, a failover keeps the epoch and the offset. The member in the
    other process misses nothing: the broker fills the gap from the history when the group's
    new primary is subscribed, and a client that comes back since its last position recovers."""
    doomed_primary, group, _ = away_from_presence(healthy, "failover", HISTORY_PREFIX)
    a, b = await start_history_node(), await start_history_node()
    talker = await connect_history(a, join=(group,))
    member = await connect_history(b, join=(group,))
    before = [await talker.broadcast(group, f"before {n}") for n in range(3)]
    assert [p for _, p, _ in [await member.next() for _ in range(3)]] == before
    primary = healthy.node(doomed_primary)
    replica = healthy.node(healthy.topology()[doomed_primary][0])

    async def replication_offset(node: ClusterNode, field: str) -> str | None:
        info = await asyncio.to_thread(node.command, "INFO", "replication")
        found = re.search(rf"{field}:(\d+)", info)
        return None if found is None else found.group(1)

    async def replica_caught_up() -> bool:
        written = await replication_offset(primary, "master_repl_offset")
        return written is not None and written == await replication_offset(
            replica, "slave_repl_offset"
        )

    await wait_until(replica_caught_up)
    primary.kill()

    async def published_again() -> bool:
        reply = await talker.command("broadcast", group=group, data="after")
        assert reply["reply"] in ("broadcast", "error"), reply
        return bool(reply["reply"] == "broadcast")

    await wait_until(published_again, 30.0)
    after = Position.parse((await talker.command("position", group=group))["position"])
    assert after == Position(before[-1].epoch, before[-1].offset + 1)  # same epoch, next offset
    assert await member.next() == (group, after, "after")
    back = await connect_history(a, since={group: before[0]})
    assert back.joins[0]["recovered"] is True
    assert back.joins[0]["replayed"] == 3
    assert [p for _, p, _ in [await back.next() for _ in range(3)]] == [*before[1:], after]
