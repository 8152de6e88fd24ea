"""History through Redis (``RedisBroker``), with endpoint processes of their own
(``tests/redis_node.py --history``) and a real ``redis-server``: positions across processes, a
client whose process was killed, a Redis restart, trimmed and expired histories, the join race,
gaps."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from node_clients import ConnectHistory, HistoryClient, receive_all
from redis_server import Node, RedisServer, StartNode, redis_client, starting_nodes

from aiohttp_wsapp import History, Position
from aiohttp_wsapp.redis.history import PUBLISH, publish_args
from aiohttp_wsapp.redis.names import Channels, HistoryKeys

RECONNECTED_WITHIN = 15.0
"""How long a test waits for the nodes to reconnect after Redis came back."""
PREFIX = "history-test"


@pytest.fixture
async def start_node(redis_server: RedisServer) -> AsyncIterator[StartNode]:
    """Start endpoint processes with history (by default ``History(size=1000, ttl=300.0)``)."""
    history = History(size=1000, ttl=300.0)
    async with starting_nodes(redis_server.url, prefix=PREFIX, history=history) as start:
        yield start


# -- positions across processes -----------------------------------------------------------------


async def test_every_process_delivers_a_groups_broadcasts_in_offset_order(
    start_node: StartNode, connect_history: ConnectHistory
) -> None:
    a, b = await start_node(), await start_node()
    on_a, on_b = await connect_history(a, join=("g",)), await connect_history(b, join=("g",))
    sent = []
    for n in range(10):
        sent.append(await (on_a if n % 2 else on_b).broadcast("g", f"m{n}"))
    epoch = sent[0].epoch
    assert sent == [Position(epoch, n) for n in range(1, 11)]
    expected = [("g", sent[n], f"m{n}") for n in range(10)]
    assert await receive_all(on_a, 10) == expected
    assert await receive_all(on_b, 10) == expected
    position = await on_a.command("position", group="g")
    assert Position.parse(position["position"]) == sent[-1]


async def test_kept_broadcasts_not_awaited_right_after_a_join_are_numbered_in_call_order(
    start_node: StartNode, connect_history: ConnectHistory
) -> None:
    """SPEC §5 with history: a connection joins a group and, in the same plain handler (and on
    the next turns of the loop, while the join's subscription is answered), broadcasts to it
    are made without await. They are numbered in call order, and every member in both processes
    receives them in that order. Ten rounds, each with a new subscription."""
    rounds, burst, turns = 10, 20, 20
    fresh = [f"burst {round_}" for round_ in range(rounds)]
    a, b = await start_node(), await start_node()
    joiner = await connect_history(a)
    b_member = await connect_history(b, join=(*fresh, "ready"))
    ready = await b_member.broadcast("ready", "ready")  # publish after subscribe: all confirmed
    assert await b_member.next() == ("ready", ready, "ready")

    for round_, group in enumerate(fresh):
        tag = f"round {round_}"
        assert await joiner.command(
            "join_and_burst", group=group, burst=burst, turns=turns, tag=tag
        ) == {"reply": "join_and_burst"}
        for client in (joiner, b_member):
            got = await receive_all(client, burst + turns)
            epoch = got[0][1].epoch
            assert got == [
                (group, Position(epoch, n + 1), f"{tag} {n}") for n in range(burst + turns)
            ], round_
    assert not joiner.received
    assert not b_member.received


async def test_a_client_of_a_killed_process_recovers_from_another(
    start_node: StartNode, connect_history: ConnectHistory
) -> None:
    a, b = await start_node(), await start_node()
    talker = await connect_history(b, join=("g",))
    listener = await connect_history(a, join=("g",))
    before = [await talker.broadcast("g", f"before {n}") for n in range(3)]
    assert [position for _, position, _ in await receive_all(listener, 3)] == before
    await a.kill()
    missed = [await talker.broadcast("g", f"missed {n}") for n in range(5)]
    back = await connect_history(b, since={"g": before[-1]})  # the listener's client, reconnected
    assert back.joins == [
        {
            "reply": "joined",
            "group": "g",
            "recovered": True,
            "position": str(missed[-1]),
            "replayed": 5,
        }
    ]
    live = await talker.broadcast("g", "live")
    got = await receive_all(back, 6)
    assert got == [("g", p, f"missed {n}") for n, p in enumerate(missed)] + [("g", live, "live")]


async def test_join_since_reports_the_recovery(
    start_node: StartNode, connect_history: ConnectHistory
) -> None:
    a = await start_node()
    talker = await connect_history(a, join=("g",))
    sent = [await talker.broadcast("g", f"m{n}") for n in range(4)]
    back = await connect_history(a)
    reply = await back.command("join", group="g", since=str(sent[0]))
    assert reply == {
        "reply": "joined",
        "group": "g",
        "recovered": True,
        "position": str(sent[-1]),
        "replayed": 3,
    }
    assert [p for _, p, _ in await receive_all(back, 3)] == sent[1:]


# -- what cannot be recovered -------------------------------------------------------------------


async def test_a_trimmed_history_is_not_recovered(
    start_node: StartNode, connect_history: ConnectHistory
) -> None:
    a = await start_node(history=History(size=3, ttl=300.0))
    talker = await connect_history(a, join=("g",))
    sent = [await talker.broadcast("g", f"m{n}") for n in range(5)]
    back = await connect_history(a)
    reply = await back.command("join", group="g", since=str(sent[0]))
    assert (reply["recovered"], reply["replayed"], reply["position"]) == (False, 0, str(sent[-1]))
    assert (await back.command("join", group="g", since=str(sent[1])))["replayed"] == 3
    live = await talker.broadcast("g", "live")
    assert [p for _, p, _ in await receive_all(back, 4)] == [*sent[2:], live]


async def test_an_expired_history_is_not_recovered(
    start_node: StartNode, connect_history: ConnectHistory
) -> None:
    a = await start_node(history=History(size=1000, ttl=0.3))
    talker = await connect_history(a, join=("g",))
    first = Position.parse((await talker.command("position", group="g"))["position"])
    await talker.broadcast("g", "expires")
    await asyncio.sleep(0.4)
    back = await connect_history(a)
    reply = await back.command("join", group="g", since=str(first))
    assert (reply["recovered"], reply["replayed"]) == (False, 0)


async def test_a_silent_group_keeps_its_epoch_and_offset(
    start_node: StartNode, connect_history: ConnectHistory
) -> None:
    a = await start_node(history=History(size=1000, ttl=0.3))
    talker = await connect_history(a, join=("g",))
    last = [await talker.broadcast("g", f"m{n}") for n in range(3)][-1]
    await asyncio.sleep(0.5)
    back = await connect_history(a)
    reply = await back.command("join", group="g", since=str(last))
    assert (reply["recovered"], reply["replayed"], reply["position"]) == (True, 0, str(last))
    assert await talker.broadcast("g", "again") == Position(last.epoch, 4)


async def test_a_redis_restart_is_a_new_epoch_and_members_rejoin(
    start_node: StartNode, connect_history: ConnectHistory, redis_server: RedisServer
) -> None:
    a, b = await start_node(), await start_node()
    member = await connect_history(a, join=("g",))
    talker = await connect_history(b)
    old = await talker.broadcast("g", "before the restart")
    assert (await member.next())[1] == old
    await redis_server.kill()
    await redis_server.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECONNECTED_WITHIN
    while True:  # until b's broker is back
        reply = await talker.command("broadcast", group="g", data="after")
        if reply["reply"] == "broadcast":
            break
        assert loop.time() < deadline, reply
        await asyncio.sleep(0.05)
    new = Position.parse(reply["position"])
    assert new.epoch != old.epoch
    assert new.offset == 1
    # a's broker may have missed broadcasts while Redis was down, and the history is gone: its
    # member is closed (as soon as a's broker is back, broadcast or not), to rejoin with
    # since= and learn that the history was lost.
    assert await member.closed_with() == 1012
    back = await connect_history(a)
    rejoined = await back.command("join", group="g", since=str(old))
    assert (rejoined["recovered"], rejoined["replayed"]) == (False, 0)
    assert Position.parse(rejoined["position"]).epoch == new.epoch


# -- the join race ------------------------------------------------------------------------------


async def test_replay_then_live_none_lost_none_twice_across_processes(
    start_node: StartNode, connect_history: ConnectHistory
) -> None:
    a, b = await start_node(), await start_node()
    talker = await connect_history(b, join=("g",))
    total = 200
    rng = random.Random(21)
    published: list[Position] = []
    progress = asyncio.Condition()

    async def broadcaster() -> None:
        for n in range(total):
            published.append(await talker.broadcast("g", f"m{n}"))
            async with progress:
                progress.notify_all()

    async def reconnecting_client(after: int) -> None:
        async with progress:
            await progress.wait_for(lambda: len(published) >= after)
        since = published[rng.randrange(0, len(published))]
        client = await connect_history(a, since={"g": since})
        offsets: list[int] = []
        while not offsets or offsets[-1] < total:
            _, position, data = await client.next()
            assert data == f"m{position.offset - 1}"
            offsets.append(position.offset)
        assert offsets == list(range(since.offset + 1, total + 1))

    clients = [reconnecting_client(1 + n * total // 8) for n in range(6)]
    await asyncio.wait_for(asyncio.gather(broadcaster(), *clients), 60)


# -- gaps ---------------------------------------------------------------------------------------

GROUP_KEYS = HistoryKeys(Channels(PREFIX)).of("g")
TEXT_HEADER = b"\x01\x00\x00\x00\x00"
"""A channel message's header for text with no excluded connection (see the broker's codec)."""


async def missed_by_every_process(redis_url: str, count: int) -> None:
    """Number and keep ``count`` broadcasts to ``g`` that no process receives, as if every
    process had lost its subscription meanwhile."""
    async with redis_client(redis_url) as client:
        for n in range(count):
            args = publish_args(History(), b"nobody listens", TEXT_HEADER, b"missed %d" % n)
            await client.eval(PUBLISH, 2, *GROUP_KEYS, *args)


async def member_and_talker(
    start_node: StartNode, connect_history: ConnectHistory
) -> tuple[Node, HistoryClient, HistoryClient, Position]:
    """Two nodes, each with a client in ``g``: the second's (the talker) broadcast ``first``,
    which the first's (the member) received. Return the first node, the member, the talker and
    ``first``'s position."""
    a, b = await start_node(), await start_node()
    member = await connect_history(a, join=("g",))
    talker = await connect_history(b, join=("g",))
    first = await talker.broadcast("g", "first")
    assert await member.next() == ("g", first, "first")
    return a, member, talker, first


async def test_a_gap_is_filled_from_the_history_in_order(
    start_node: StartNode, connect_history: ConnectHistory, redis_server: RedisServer
) -> None:
    _, member, talker, first = await member_and_talker(start_node, connect_history)
    await missed_by_every_process(redis_server.url, 3)
    after = await talker.broadcast("g", "after")
    assert after.offset == 5
    expected = [("g", Position(first.epoch, 2 + n), f"missed {n}") for n in range(3)]
    expected.append(("g", after, "after"))
    assert await receive_all(member, 4) == expected
    assert await receive_all(talker, 5) == [("g", first, "first"), *expected]


async def test_a_gap_the_history_no_longer_holds_closes_the_members_with_1012(
    start_node: StartNode, connect_history: ConnectHistory, redis_server: RedisServer
) -> None:
    a, member, talker, first = await member_and_talker(start_node, connect_history)
    async with redis_client(redis_server.url) as client:  # ten broadcasts numbered and trimmed
        await client.hincrby(GROUP_KEYS[0], "offset", 10)
    after = await talker.broadcast("g", "after")
    assert after.offset == 12
    assert await member.closed_with() == 1012
    assert await talker.closed_with() == 1012
    back = await connect_history(a)
    rejoined = await back.command("join", group="g", since=str(first))
    assert (rejoined["recovered"], rejoined["position"]) == (False, str(after))


async def test_a_gap_is_filled_as_soon_as_the_broker_reconnects(
    start_node: StartNode, connect_history: ConnectHistory, redis_server: RedisServer
) -> None:
    a = await start_node()
    member = await connect_history(a, join=("g",))
    first = await member.broadcast("g", "first")
    assert await member.next() == ("g", first, "first")
    await missed_by_every_process(redis_server.url, 2)
    async with redis_client(redis_server.url) as client:  # the node loses its subscription
        await client.client_kill_filter(_type="pubsub")  # and connects again
    # No broadcast after the reconnection: what was missed comes all the same.
    assert await receive_all(member, 2) == [
        ("g", Position(first.epoch, 2), "missed 0"),
        ("g", Position(first.epoch, 3), "missed 1"),
    ]


async def test_join_since_while_redis_is_unreachable_raises_broker_error(
    start_node: StartNode, connect_history: ConnectHistory, redis_server: RedisServer
) -> None:
    a = await start_node()
    client = await connect_history(a)
    position = Position.parse((await client.command("position", group="g"))["position"])
    await redis_server.stop()
    reply = await client.command("join", group="g", since=str(position))
    assert reply["reply"] == "error"
    assert reply["error"].startswith("BrokerError")
    assert await client.command("groups") == {"reply": "groups", "groups": []}  # not joined
    reply = await client.command("position", group="g")
    assert reply["reply"] == "error"
