"""The names of the channels and keys one prefix uses in Redis.

Channels: ``{prefix}:all`` carries the broadcasts to every connection, ``{prefix}:group:{name}``
those to the group ``name``. In the prefix, ``%`` is written ``%25`` and ``:`` is written ``%3A``,
so the first ``:`` of a channel name ends its prefix and no two prefixes share a channel
(``app:group``'s broadcasts to everyone go to ``app%3Agroup:all``, not to the channel of
``app``'s group ``all``, ``app:group:all``). Names are the UTF-8 bytes of the strings, lone
surrogates included (``surrogatepass``), as Redis names are byte strings.

Presence: ``{prefix}:presence`` is the set of the ids of the processes that count, and
``{prefix}:presence:{id}`` the hash of each one's counts.

This module is package-internal: its names are public for the other modules of
``aiohttp_wsapp.redis`` and for the tests, not for users.
"""

from __future__ import annotations

from typing import Final

__all__ = ["GROUP_FIELD", "TOTAL_FIELD", "Channels", "PresenceKeys", "escaped", "utf8"]

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


class PresenceKeys:
    """The keys that hold the counts of one prefix's processes.

    ``{prefix}:presence`` is the set of their ids, ``{prefix}:presence:{id}`` the hash of each,
    with the prefix escaped as in channel names (see :class:`Channels`): different prefixes
    never share a key.
    """

    def __init__(self, prefix: str) -> None:
        base = escaped(prefix)
        self.registry: Final = base + b":presence"
        self.start: Final = base + b":presence:"

    def of(self, process_id: str) -> bytes:
        """The key of the hash of the process ``process_id``."""
        return self.start + process_id.encode()


def escaped(prefix: str) -> bytes:
    """``prefix`` as the start of a channel or key name: without ``:``, so that it ends at one."""
    return utf8(prefix).replace(b"%", b"%25").replace(b":", b"%3A")


def utf8(text: str) -> bytes:
    """``text`` as UTF-8, lone surrogates kept (Redis names are byte strings)."""
    return text.encode("utf-8", "surrogatepass")
