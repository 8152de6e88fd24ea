"""The Redis brokers' channel names and message codec, without Redis or sockets.

``aiohttp_wsapp.redis.names`` and ``.codec`` are package-internal modules; their names are
public for the package and its tests."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiohttp_wsapp.broker import Broadcast
from aiohttp_wsapp.redis import RedisBroker
from aiohttp_wsapp.redis.codec import decode, encode, receive
from aiohttp_wsapp.redis.names import Channels, PresenceKeys

if TYPE_CHECKING:
    from collections.abc import Callable

ID = "0123456789abcdef-1"
"""A connection id as connections make them: process id, then a number."""


# -- channel names -------------------------------------------------------------------------------


def test_the_default_prefix_channels_read_as_documented() -> None:
    channels = Channels("aiohttp_wsapp")
    assert channels.of(None) == b"aiohttp_wsapp:all"
    assert channels.of("room") == b"aiohttp_wsapp:group:room"


def test_a_colon_in_the_prefix_is_percent_encoded() -> None:
    assert Channels("app:group").of(None) == b"app%3Agroup:all"


def test_a_percent_sign_in_the_prefix_is_percent_encoded() -> None:
    assert Channels("50%:x").of(None) == b"50%25%3Ax:all"


def test_a_group_name_is_written_as_it_is() -> None:
    assert Channels("p").of("a:b%c") == b"p:group:a:b%c"


def test_names_are_utf8_with_lone_surrogates_kept() -> None:
    assert Channels("ü").of("\udcff") == "ü:group:".encode() + b"\xed\xb3\xbf"


def test_the_channel_for_everyone_carries_no_group() -> None:
    channels = Channels("p")
    assert channels.group(channels.of(None)) is None


def test_a_group_channel_carries_its_group() -> None:
    channels = Channels("p:q")
    assert channels.group(channels.of("all")) == "all"


def test_a_channel_of_another_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="not a channel of this prefix"):
        Channels("app").group(Channels("app:group").of(None))


# Text without surrogates, text with them, and the characters the layout gives a meaning to.
names = st.text(alphabet=st.sampled_from(":%%3Aagl\udcff"), max_size=8) | st.text(max_size=8)


@given(prefix=names, group=st.none() | names)
def test_a_channel_tells_its_group_back(prefix: str, group: str | None) -> None:
    channels = Channels(prefix)
    assert channels.group(channels.of(group)) == group


@given(first=st.tuples(names, st.none() | names), second=st.tuples(names, st.none() | names))
def test_different_prefixes_or_groups_never_share_a_channel(
    first: tuple[str, str | None], second: tuple[str, str | None]
) -> None:
    if first != second:
        assert Channels(first[0]).of(first[1]) != Channels(second[0]).of(second[1])


# -- presence keys -------------------------------------------------------------------------------


def test_the_default_prefix_presence_keys_read_as_documented() -> None:
    keys = PresenceKeys("aiohttp_wsapp")
    assert keys.registry == b"aiohttp_wsapp:presence"
    assert keys.of("0123456789abcdef") == b"aiohttp_wsapp:presence:0123456789abcdef"


def test_presence_keys_escape_the_prefix_as_channels_do() -> None:
    assert PresenceKeys("50%:x").registry == b"50%25%3Ax:presence"
    assert PresenceKeys("app:presence").of("id") == b"app%3Apresence:presence:id"


def test_counts_expire_before_15_seconds_and_are_rewritten_twice_meanwhile() -> None:
    broker = RedisBroker("redis://localhost")
    # SPEC §5: a dead process stops counting within 15 s; one late rewrite is no gap.
    assert broker.presence_ttl < 15.0
    assert 2 * broker.presence_refresh < broker.presence_ttl


# -- messages ------------------------------------------------------------------------------------


def roundtrip(broadcast: Broadcast) -> Broadcast:
    """``broadcast`` encoded, then decoded as if received on its group's channel."""
    return decode(encode(broadcast), broadcast.group)


def test_text_crosses_as_text() -> None:
    assert roundtrip(Broadcast("héllo ✓")) == Broadcast("héllo ✓")


def test_bytes_cross_as_bytes() -> None:
    assert roundtrip(Broadcast(b"\x00\x01\xff")) == Broadcast(b"\x00\x01\xff")


def test_empty_text_stays_text() -> None:
    assert roundtrip(Broadcast("")) == Broadcast("")


def test_empty_bytes_stay_bytes() -> None:
    assert roundtrip(Broadcast(b"")) == Broadcast(b"")


def test_the_group_comes_from_the_channel_not_the_message() -> None:
    assert encode(Broadcast("x", group="room")) == encode(Broadcast("x"))
    assert decode(encode(Broadcast("x")), "room") == Broadcast("x", group="room")


def test_excluded_ids_cross() -> None:
    broadcast = Broadcast("x", exclude=frozenset({ID, "other-2", ""}))
    assert roundtrip(broadcast) == broadcast


def test_a_payload_that_looks_like_an_id_list_is_kept_whole() -> None:
    broadcast = Broadcast(b"\x05hello\x00", exclude=frozenset({ID}))
    assert roundtrip(broadcast) == broadcast


def test_the_layout_is_kind_count_ids_payload() -> None:
    assert encode(Broadcast("hi", exclude=frozenset({"ab"}))) == (
        b"\x01" + b"\x00\x00\x00\x01" + b"\x02ab" + b"hi"
    )


def test_an_id_longer_than_255_bytes_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="connection id too long"):
        encode(Broadcast("x", exclude=frozenset({"i" * 256})))


@given(
    data=st.text() | st.binary(),
    group=st.none() | st.text(),
    exclude=st.frozensets(st.text(max_size=20)),
)
def test_every_broadcast_crosses_unchanged(
    data: str | bytes, group: str | None, exclude: frozenset[str]
) -> None:
    broadcast = Broadcast(data, group, exclude)
    assert roundtrip(broadcast) == broadcast


# -- malformed messages --------------------------------------------------------------------------


def test_a_message_shorter_than_its_header_is_malformed() -> None:
    with pytest.raises(ValueError, match="shorter than its header"):
        decode(b"\x01\x00\x00", None)


def test_an_unknown_kind_is_malformed() -> None:
    with pytest.raises(ValueError, match="unknown message kind 7"):
        decode(b"\x07\x00\x00\x00\x00payload", None)


def test_more_ids_announced_than_present_is_malformed() -> None:
    with pytest.raises(ValueError, match="shorter than its list of excluded ids"):
        decode(b"\x01\x00\x00\x00\x02\x01a", None)


def test_an_id_running_past_the_end_is_malformed() -> None:
    with pytest.raises(ValueError, match="shorter than its list of excluded ids"):
        decode(b"\x01\x00\x00\x00\x01\x09abc", None)


def test_text_that_is_not_utf8_is_malformed() -> None:
    with pytest.raises(ValueError, match="utf-8"):
        decode(b"\x01\x00\x00\x00\x00\xff", None)


def test_an_id_that_is_not_utf8_is_malformed() -> None:
    with pytest.raises(ValueError, match="utf-8"):
        decode(b"\x01\x00\x00\x00\x01\x01\xffhi", None)


@given(message=st.binary(max_size=40))
def test_any_bytes_decode_or_raise_value_error(message: bytes) -> None:
    try:
        broadcast = decode(message, None)
    except ValueError:
        return
    assert isinstance(broadcast, Broadcast)


# -- what the broker does with what it receives --------------------------------------------------


@pytest.fixture
def received() -> Callable[[bytes, bytes], Broadcast | None]:
    """What a broker with prefix ``p`` makes of a message on a channel (no Redis involved)."""
    return partial(receive, Channels("p"))


def test_a_broadcast_on_a_group_channel_is_for_that_group(
    received: Callable[[bytes, bytes], Broadcast | None],
) -> None:
    assert received(b"p:group:room", encode(Broadcast("x"))) == Broadcast("x", group="room")


def test_a_malformed_message_is_ignored_with_a_warning(
    received: Callable[[bytes, bytes], Broadcast | None], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "aiohttp_wsapp"):
        assert received(b"p:all", b"\x07 not a broadcast") is None
    assert "ignored a malformed message on Redis channel b'p:all'" in caplog.text


def test_a_message_on_a_channel_of_another_prefix_is_ignored(
    received: Callable[[bytes, bytes], Broadcast | None],
) -> None:
    assert received(b"other:all", encode(Broadcast("x"))) is None
