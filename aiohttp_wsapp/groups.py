"""Named groups of connections, the targets of a broadcast."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["Groups"]


class Groups:
    """The members of every group of one endpoint, in this process.

    ``on_first_member`` and ``on_last_member`` are told when a group gains its first member and
    loses its last, so that a broker subscribes to a group only while this process needs it.
    """

    def __init__(
        self,
        on_first_member: Callable[[str], None],
        on_last_member: Callable[[str], None],
    ) -> None:
        self._members: dict[str, set[Connection]] = {}
        self._on_first_member = on_first_member
        self._on_last_member = on_last_member

    def add(self, name: str, connection: Connection) -> None:
        """Make ``connection`` a member of ``name``."""
        members = self._members.get(name)
        if members is None:
            self._members[name] = {connection}
            self._on_first_member(name)
        else:
            members.add(connection)

    def discard(self, name: str, connection: Connection) -> None:
        """Remove ``connection`` from ``name`` if it is a member."""
        members = self._members.get(name)
        if members is None:
            return
        members.discard(connection)
        if not members:
            del self._members[name]
            self._on_last_member(name)

    def members(self, name: str) -> frozenset[Connection]:
        """Return the current members of ``name``."""
        return frozenset(self._members.get(name, ()))
