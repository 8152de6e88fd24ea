"""The names of the channels and keys one prefix uses in Redis.

Channels: ``{prefix}:all`` carries the broadcasts to every connection, ``{prefix}:group:{name}``
those to the group ``name``. In the prefix, ``%`` is written ``%25`` and ``:`` is written ``%3A``,
so the first ``:`` of a channel name ends its prefix and no two prefixes share a channel
(``app:group``'s broadcasts to everyone go to ``app%3Agroup:all``, not to the channel of
``app``'s group ``all``, ``app:group:all``). Names are the UTF-8 bytes of the strings, lone
surrogates included (``surrogatepass``), as Redis names are byte strings.

History: ``{prefix}:group:{name}:history`` is the hash of a group's epoch and offset, and
``{prefix}:group:{name}:kept`` the stream of its kept broadcasts: the group's channel name and a
suffix (see :mod:`.history`).

Presence: ``{prefix}:presence`` is the set of the ids of the processes that count, and
``{prefix}:presence:{id}`` the hash of each one's counts.

On a Redis Cluster (:class:`TaggedChannels`, ``PresenceKeys(prefix, tagged=True)``), every name
carries a hash tag, so that what must be in one slot is: a group's channel is
``{{prefix}:group:{name}}`` as a whole (its history keys will be that tag followed by their own
suffix), the channel for everyone ``{{prefix}:all}``, and the presence keys
``{{prefix}:presence}`` and ``{{prefix}:presence}:{id}``, all in one slot per prefix. Inside a
tag, ``{`` and ``}`` are percent-encoded too (``%7B``, ``%7D``), in the prefix and in the group
name (where ``%`` and ``:`` are too), so that the tag ends where the name says.

This module is package-internal: its names are public for the other modules of
``aiohttp_wsapp.redis`` and for the tests, not for users.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote_to_bytes

__all__ = [
    "GROUP_FIELD",
    "TOTAL_FIELD",
    "Channels",
    "HistoryKeys",
    "PresenceKeys",
    "TaggedChannels",
    "escaped",
    "utf8",
]

TOTAL_FIELD: Final = b"t"
"""The field of a process's presence hash that holds its open connections."""
GROUP_FIELD: Final = b"g:"
"""The start of the fields of a process's presence hash that hold its members of each group."""


class Channels:
    """The channel names of one prefix, and the group that each of them carries.

    ``{prefix}:all`` for everyone, ``{prefix}:group:{name}`` for a group, with ``%`` and ``:``
    percent-encoded in the prefix: the first ``:`` ends it, so a channel name tells its prefix
    and group apart, and different (prefix, group) pairs never share a channel. A prefix without
    ``%`` or ``:`` (the default) is written as it is.
    """

    def __init__(self, prefix: str) -> None:
        base = escaped(prefix)
        self.all: Final = base + b":all"
        self._group_start: Final = base + b":group:"

    def of(self, group: str | None) -> bytes:
        """The channel of ``group``, or of everyone for ``None``."""
        return self.all if group is None else self._group_start + utf8(group)

    def group(self, channel: bytes) -> str | None:
        """The group that ``channel`` carries (``None``: everyone).

        :raises ValueError: ``channel`` is not one of this prefix.
        """
        if channel == self.all:
            return None
        if channel.startswith(self._group_start):
            return channel[len(self._group_start) :].decode("utf-8", "surrogatepass")
        raise ValueError(f"not a channel of this prefix: {channel!r}")


class HistoryKeys:
    """The keys of a group's history: named after the group's channel, so that they hash to the
    channel's slot wherever the channel's name is one hash tag (on a cluster).

    ``{channel}:history`` is the hash of the group's epoch and offset, ``{channel}:kept`` the
    stream of its kept broadcasts. Different groups (and prefixes) have different channels, so
    never share a key.
    """

    def __init__(self, channels: Channels | TaggedChannels) -> None:
        self._channels = channels

    def of(self, group: str) -> tuple[bytes, bytes]:
        """The hash and the stream of ``group``."""
        channel = self._channels.of(group)
        return channel + b":history", channel + b":kept"


class TaggedChannels:
    """The channel names of one prefix on a Redis Cluster: each name is one hash tag.

    ``{{prefix}:all}`` for everyone, ``{{prefix}:group:{name}}`` for a group, with ``%``,
    ``:``, ``{`` and ``}`` percent-encoded in the prefix and in the group name: the tag is the
    whole name, so the cluster places each group by its name, and different (prefix, group)
    pairs never share a channel.
    """

    def __init__(self, prefix: str) -> None:
        base = b"{" + _tag_escaped(escaped(prefix))
        self.all: Final = base + b":all}"
        self._group_start: Final = base + b":group:"

    def of(self, group: str | None) -> bytes:
        """The channel of ``group``, or of everyone for ``None``."""
        return (
            self.all if group is None else self._group_start + _tag_escaped(escaped(group)) + b"}"
        )

    def group(self, channel: bytes) -> str | None:
        """The group that ``channel`` carries (``None``: everyone).

        :raises ValueError: ``channel`` is not one of this prefix.
        """
        if channel == self.all:
            return None
        if channel.startswith(self._group_start) and channel.endswith(b"}"):
            name = unquote_to_bytes(channel[len(self._group_start) : -1])
            return name.decode("utf-8", "surrogatepass")
        raise ValueError(f"not a channel of this prefix: {channel!r}")


class PresenceKeys:
    """The keys that hold the counts of one prefix's processes.

    ``{prefix}:presence`` is the set of their ids, ``{prefix}:presence:{id}`` the hash of each,
    with the prefix escaped as in channel names (see :class:`Channels`): different prefixes
    never share a key. With ``tagged`` (on a cluster), ``{{prefix}:presence}`` and
    ``{{prefix}:presence}:{id}``: one hash tag, so one slot, for all of them.
    """

    def __init__(self, prefix: str, *, tagged: bool = False) -> None:
        base = escaped(prefix)
        registry = b"{" + _tag_escaped(base) + b":presence}" if tagged else base + b":presence"
        self.registry: Final = registry
        self.start: Final = registry + b":"

    def of(self, process_id: str) -> bytes:
        """The key of the hash of the process ``process_id``."""
        return self.start + process_id.encode()


def escaped(prefix: str) -> bytes:
    """``prefix`` as the start of a channel or key name: without ``:``, so that it ends at one."""
    return utf8(prefix).replace(b"%", b"%25").replace(b":", b"%3A")


def _tag_escaped(name: bytes) -> bytes:
    """``name`` (already without an unescaped ``%``) with ``{`` and ``}`` percent-encoded."""
    return name.replace(b"{", b"%7B").replace(b"}", b"%7D")


def utf8(text: str) -> bytes:
    """``text`` as UTF-8, lone surrogates kept (Redis names are byte strings)."""
    return text.encode("utf-8", "surrogatepass")
