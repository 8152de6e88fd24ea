"""History settings, positions, the default envelope, and the history kept in this process."""

from __future__ import annotations

import json
import math
import operator
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import pytest

from aiohttp_wsapp import History, Position, Recovery
from aiohttp_wsapp.history import default_envelope, new_epoch, read_envelope, since_positions
from aiohttp_wsapp.local_history import LocalHistory

# -- Position -----------------------------------------------------------------------------------


def test_position_str_is_epoch_dot_offset_and_parses_back() -> None:
    position = Position("k3Jx9aQ2Zr0_", 42)
    assert str(position) == "k3Jx9aQ2Zr0_.42"
    assert Position.parse(str(position)) == position


@pytest.mark.parametrize("epoch", ["a", "A-z_09", "-", "x" * 64, new_epoch()])
@pytest.mark.parametrize("offset", [0, 1, 2**63 - 1])
def test_position_str_survives_a_query_string_unchanged(epoch: str, offset: int) -> None:
    text = str(Position(epoch, offset))
    assert quote(text, safe="") == text
    assert urlencode({"since": text}) == f"since={text}"
    assert Position.parse(parse_qs(f"since={text}")["since"][0]) == Position(epoch, offset)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "abc",
        "abc.",
        ".1",
        "abc.-1",
        "abc.+1",
        "abc.01",
        "abc.1.5",
        "abc. 1",
        "abc.1 ",
        "ab c.1",
        "ab/c.1",
        "abc.\u0661",  # an Arabic-Indic digit, which int() would accept
        "abc.0x1",
        "abc.1e3",
        "x" * 65 + ".1",
        "abc." + str(2**63),
        "abc." + "9" * 30,
    ],
)
def test_position_parse_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="not a position"):
        Position.parse(text)


def test_position_parse_refuses_a_non_string() -> None:
    with pytest.raises(TypeError):
        Position.parse(b"abc.1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("epoch", "offset", "error"),
    [
        ("", 0, ValueError),
        ("a.b", 0, ValueError),
        ("a b", 0, ValueError),
        ("é", 0, ValueError),
        ("x" * 65, 0, ValueError),
        ("abc", -1, ValueError),
        ("abc", 2**63, ValueError),
        (b"abc", 0, TypeError),
        ("abc", 1.0, TypeError),
        ("abc", "1", TypeError),
        ("abc", True, TypeError),
    ],
)
def test_position_refuses_bad_fields(epoch: Any, offset: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        Position(epoch, offset)


def test_position_is_frozen_and_hashable() -> None:
    position = Position("abc", 1)
    with pytest.raises(AttributeError):
        position.offset = 2  # type: ignore[misc]
    assert {position: 1}[Position("abc", 1)] == 1
    assert position != Position("abd", 1)
    assert position != Position("abc", 2)


def test_positions_of_one_epoch_are_ordered_by_offset() -> None:
    low, high = Position("abc", 9), Position("abc", 10)
    assert low < high
    assert low <= high
    assert high > low
    assert high >= low
    assert low <= Position("abc", 9) <= low
    assert not low > high
    assert sorted([high, low, Position("abc", 0)]) == [Position("abc", 0), low, high]


def test_positions_of_different_epochs_are_not_ordered() -> None:
    one, other = Position("abc", 1), Position("xyz", 2)
    for compare in (operator.lt, operator.le, operator.gt, operator.ge):
        with pytest.raises(TypeError, match="different epochs"):
            compare(one, other)
    with pytest.raises(TypeError):
        operator.lt(one, 2)


def test_new_epochs_are_random_and_valid() -> None:
    epochs = {new_epoch() for _ in range(100)}
    assert len(epochs) == 100
    for epoch in epochs:
        assert Position(epoch, 0).epoch == epoch


def test_since_positions_reads_one_parameter_per_group() -> None:
    query = {
        "since.room 1": "abc.3",
        "since.a.b": "xyz.0",
        "since.bad": "abc",
        "since.": "abc.1",
        "name": "abc.1",
        "since": "abc.1",
    }
    assert since_positions(query) == {
        "room 1": Position("abc", 3),
        "a.b": Position("xyz", 0),
        "": Position("abc", 1),
    }


# -- Recovery -----------------------------------------------------------------------------------


def test_recovery_is_a_frozen_record() -> None:
    recovery = Recovery(True, Position("abc", 3), 2)
    assert (recovery.recovered, recovery.position, recovery.replayed) == (
        True,
        Position("abc", 3),
        2,
    )
    with pytest.raises(AttributeError):
        recovery.replayed = 3  # type: ignore[misc]


# -- History ------------------------------------------------------------------------------------


def test_history_defaults() -> None:
    history = History()
    assert (history.size, history.ttl, history.envelope) == (1000, 300.0, default_envelope)


def test_history_keeps_its_settings() -> None:
    def envelope(position: Position, group: str, data: str | bytes) -> str:
        return "x"

    history = History(size=1, ttl=2, envelope=envelope)
    assert (history.size, history.ttl, history.envelope) == (1, 2.0, envelope)
    assert isinstance(history.ttl, float)
    assert "size=1" in repr(history)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"size": 0}, ValueError),
        ({"size": -1}, ValueError),
        ({"ttl": 0}, ValueError),
        ({"ttl": -1.0}, ValueError),
        ({"ttl": math.inf}, ValueError),
        ({"ttl": math.nan}, ValueError),
        ({"size": 1.5}, TypeError),
        ({"size": "10"}, TypeError),
        ({"size": True}, TypeError),
        ({"ttl": "300"}, TypeError),
        ({"ttl": None}, TypeError),
        ({"envelope": "json"}, TypeError),
    ],
)
def test_history_refuses_bad_settings(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        History(**kwargs)


# -- the default envelope -----------------------------------------------------------------------


def test_default_envelope_of_text_is_one_json_object() -> None:
    position = Position("abc", 7)
    frame = default_envelope(position, "room", 'hé "quoted"\n\u2028')
    assert isinstance(frame, str)
    assert json.loads(frame) == {
        "group": "room",
        "position": "abc.7",
        "data": 'hé "quoted"\n\u2028',
    }
    assert "é" in frame  # not escaped: a smaller frame
    assert read_envelope(frame) == ("room", position, 'hé "quoted"\n\u2028')


@pytest.mark.parametrize("data", [b"", b"\n", b"\x00\xff\n\n{", bytes(range(256)) * 4])
@pytest.mark.parametrize("group", ["room", 'a\n"b"\\', "é\u2028"])
def test_default_envelope_of_bytes_is_a_json_header_a_newline_and_the_bytes(
    data: bytes, group: str
) -> None:
    position = Position("abc", 7)
    frame = default_envelope(position, group, data)
    assert isinstance(frame, bytes)
    newline = frame.index(b"\n")  # what a browser does: the first byte 10 ends the header
    assert json.loads(frame[:newline]) == {"group": group, "position": "abc.7"}
    assert frame[newline + 1 :] == data
    assert read_envelope(frame) == (group, position, data)


def test_default_envelope_of_a_group_with_special_characters() -> None:
    frame = default_envelope(Position("abc", 1), 'a"b\\c\n', "x")
    assert json.loads(frame)["group"] == 'a"b\\c\n'


@pytest.mark.parametrize(
    "frame",
    [
        "hello",
        "{}",
        '{"group":"g","position":"abc.1"}',
        '{"group":"g","position":"abc.1","data":5}',
        '{"group":1,"position":"abc.1","data":"x"}',
        '{"group":"g","position":"abc","data":"x"}',
        '["g","abc.1","x"]',
        b"no header",
        b'{"group":"g"}\nx',
        b"not json\nx",
    ],
)
def test_read_envelope_refuses_other_frames(frame: str | bytes) -> None:
    with pytest.raises(ValueError, match="not an envelope"):
        read_envelope(frame)


# -- the history kept in this process -----------------------------------------------------------


class Clock:
    """A clock that a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def local(size: int = 1000, ttl: float = 300.0) -> tuple[LocalHistory, Clock]:
    clock = Clock()
    return LocalHistory(History(size=size, ttl=ttl), clock), clock


def test_offsets_grow_by_one_per_broadcast_per_group() -> None:
    store, _ = local()
    assert store.position("a") == Position(store.epoch, 0)
    assert [store.append("a", str(n))[0].offset for n in range(3)] == [1, 2, 3]
    assert store.append("b", "x")[0] == Position(store.epoch, 1)
    assert store.position("a") == Position(store.epoch, 3)
    assert store.position("b") == Position(store.epoch, 1)


def test_append_returns_the_envelope_built_with_the_position() -> None:
    calls: list[tuple[Position, str, str | bytes]] = []

    def envelope(position: Position, group: str, data: str | bytes) -> str:
        calls.append((position, group, data))
        return f"{group}@{position}:{data!r}"

    store = LocalHistory(History(envelope=envelope))
    position, frame = store.append("g", b"\x01")
    assert calls == [(position, "g", b"\x01")]
    assert frame == f"g@{position}:" + repr(b"\x01")


def test_each_history_is_a_new_epoch() -> None:
    assert local()[0].epoch != local()[0].epoch


def test_since_returns_every_frame_after_the_position_in_order() -> None:
    store, _ = local()
    frames = [store.append("g", f"m{n}")[1] for n in range(10)]
    store.append("other", "x")
    replay = store.since("g", Position(store.epoch, 4))
    assert replay.recovered
    assert replay.position == Position(store.epoch, 10)
    assert replay.frames == tuple(frames[4:])
    assert [read_envelope(frame)[2] for frame in replay.frames] == [f"m{n}" for n in range(4, 10)]


def test_since_the_latest_position_replays_nothing() -> None:
    store, _ = local()
    store.append("g", "x")
    assert store.since("g", Position(store.epoch, 1)).frames == ()
    assert store.since("g", Position(store.epoch, 1)).recovered


def test_since_zero_of_a_group_never_broadcast_to_is_recovered() -> None:
    store, _ = local()
    replay = store.since("g", Position(store.epoch, 0))
    assert (replay.recovered, replay.position, replay.frames) == (
        True,
        Position(store.epoch, 0),
        (),
    )


def test_since_another_epoch_is_not_recovered() -> None:
    store, _ = local()
    store.append("g", "x")
    replay = store.since("g", Position(new_epoch(), 0))
    assert (replay.recovered, replay.position, replay.frames) == (
        False,
        Position(store.epoch, 1),
        (),
    )


def test_since_a_position_not_reached_yet_is_not_recovered() -> None:
    store, _ = local()
    store.append("g", "x")
    assert not store.since("g", Position(store.epoch, 2)).recovered


def test_size_bounds_what_is_kept_per_group() -> None:
    store, _ = local(size=3)
    frames = [store.append("g", f"m{n}")[1] for n in range(5)]
    store.append("h", "other group")
    assert store.since("g", Position(store.epoch, 2)).frames == tuple(frames[2:])
    trimmed = store.since("g", Position(store.epoch, 1))
    assert (trimmed.recovered, trimmed.position, trimmed.frames) == (
        False,
        Position(store.epoch, 5),
        (),
    )
    assert store.since("h", Position(store.epoch, 0)).recovered


def test_ttl_expires_broadcasts_by_age() -> None:
    store, clock = local(ttl=10)
    store.append("g", "old")
    clock.now += 6
    newer = store.append("g", "newer")[1]
    clock.now += 4  # "old" is exactly 10 s old: still kept
    assert store.since("g", Position(store.epoch, 0)).recovered
    clock.now += 0.5
    assert not store.since("g", Position(store.epoch, 0)).recovered
    assert store.since("g", Position(store.epoch, 1)).frames == (newer,)
    clock.now += 6
    assert not store.since("g", Position(store.epoch, 1)).recovered


def test_a_silent_group_keeps_its_epoch_and_offset_past_ttl() -> None:
    store, clock = local(ttl=10)
    for n in range(3):
        store.append("g", str(n))
    clock.now += 60
    replay = store.since("g", Position(store.epoch, 3))
    assert (replay.recovered, replay.position, replay.frames) == (
        True,
        Position(store.epoch, 3),
        (),
    )
    assert store.append("g", "again")[0] == Position(store.epoch, 4)


def test_broadcasts_to_any_group_release_expired_ones_of_silent_groups() -> None:
    store, clock = local(ttl=10)
    for n in range(100):
        store.append(f"silent-{n}", "x")
    clock.now += 11
    store.append("busy", "x")
    # Released without ever reading the silent groups: only the busy group still holds one.
    assert len(store) == 1
