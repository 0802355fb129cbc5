"""One ``asyncio.Lock`` per key (a member), existing only while someone holds or awaits it.

Used where work for one member must run one at a time (token refreshes, auto-posts) without a
lock per member ever seen staying in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Hashable, KeysView
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class LockEntry:
    """A key's lock and how many tasks hold or await it. Subclass to keep per-key state that
    lives exactly as long as the lock (see ``bot.tokens``)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


E = TypeVar("E", bound=LockEntry)


class KeyedLocks(Generic[K, E]):
    def __init__(self, entry_factory: Callable[[], E]) -> None:
        self._factory = entry_factory
        self._entries: dict[K, E] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> KeysView[K]:
        """The keys held (or waited for) right now."""
        return self._entries.keys()

    def get(self, key: K) -> E | None:
        """The key's entry while someone holds or awaits its lock, else None."""
        return self._entries.get(key)

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[E]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._factory()
        entry.users += 1
        try:
            async with entry.lock:
                yield entry
        finally:
            entry.users -= 1
            if entry.users == 0 and self._entries.get(key) is entry:
                del self._entries[key]
