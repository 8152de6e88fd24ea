"""Named groups of connections, the targets of a broadcast."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["Groups"]

M = TypeVar("M", bound=Hashable)


class Groups(Generic[M]):
    """The members of every group of one endpoint, in this process.

    ``on_first_member`` and ``on_last_member`` are told when a group gains its first member and
    loses its last, so that a broker subscribes to a group only while this process needs it;
    ``on_change`` of every change of membership, so that a broker can count them.
    """

    def __init__(
        self,
        on_first_member: Callable[[str], None],
        on_last_member: Callable[[str], None],
        on_change: Callable[[], None],
    ) -> None:
        self._members: dict[str, set[M]] = {}
        self._on_first_member = on_first_member
        self._on_last_member = on_last_member
        self._on_change = on_change
        self.view: Mapping[str, frozenset[M]] = _GroupsView(self._members)
        """A read-only, live mapping: group name → its members now."""
        self.sizes: Mapping[str, int] = _GroupSizes(self._members)
        """A read-only, live mapping: group name → how many members it has now."""

    def add(self, name: str, member: M) -> None:
        """Make ``member`` a member of ``name``."""
        members = self._members.get(name)
        if members is None:
            self._members[name] = {member}
            self._on_first_member(name)
        else:
            members.add(member)
        self._on_change()

    def discard(self, name: str, member: M) -> None:
        """Remove ``member`` from ``name`` if it is a member."""
        members = self._members.get(name)
        if members is None:
            return
        members.discard(member)
        if not members:
            del self._members[name]
            self._on_last_member(name)
        self._on_change()

    def members(self, name: str) -> frozenset[M]:
        """Return the current members of ``name``."""
        return frozenset(self._members.get(name, ()))


class _GroupsView(Mapping[str, frozenset[M]]):
    """Group name → frozenset of its members, read-only and live; a group without members is
    absent."""

    __slots__ = ("_members",)

    def __init__(self, members: dict[str, set[M]]) -> None:
        self._members = members

    def __getitem__(self, name: str) -> frozenset[M]:
        return frozenset(self._members[name])

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._members))

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __repr__(self) -> str:
        return f"<groups {dict(self.items())!r}>"


class _GroupSizes(Mapping[str, int]):
    """Group name → how many members it has: read-only and live, nothing copied."""

    __slots__ = ("_members",)

    def __init__(self, members: dict[str, set[M]]) -> None:
        self._members = members

    def __getitem__(self, name: str) -> int:
        return len(self._members[name])

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._members))

    def __len__(self) -> int:
        return len(self._members)
