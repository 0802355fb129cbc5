"""Where the listening log counts a member: the servers the bot has seen them in (a command
they ran there, a presence update from there), kept in the database with when they were last
seen there, so a server a member left long ago (Discord never says so without the members
intent) is forgotten with the plays of that age (``ListeningLog.prune``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from bot.storage import ListeningStore

# How stale the stored "last seen" may get before a new sighting writes it again: one write
# per member and server an hour at most, far inside any retention.
REFRESH_EVERY: Final = 3600.0


class GuildRoster:
    """Which members the bot has seen in which server, and when last (kept in the database)."""

    def __init__(self, storage: ListeningStore, clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self._clock = clock
        self._members: dict[int, dict[int, float]] = {}  # guild -> member -> last seen

    async def load(self) -> None:
        self._members = {}
        for guild_id, member_id, seen_at in await self._storage.list_listening_guilds():
            self._members.setdefault(guild_id, {})[member_id] = seen_at

    def seen_lately(self, guild_id: int, member_id: int) -> bool:
        """Known there, and the stored sighting is recent enough not to be written again."""
        seen = self._members.get(guild_id, {}).get(member_id)
        return seen is not None and self._clock() - seen < REFRESH_EVERY

    async def note(self, guild_id: int, member_id: int) -> None:
        if self.seen_lately(guild_id, member_id):
            return
        now = self._clock()
        self._members.setdefault(guild_id, {})[member_id] = now  # before the await: one write
        await self._storage.note_listening_guild(guild_id, member_id, now=now)

    def knows(self, guild_id: int, member_id: int) -> bool:
        return member_id in self._members.get(guild_id, ())

    def members_of(self, guild_id: int) -> frozenset[int]:
        return frozenset(self._members.get(guild_id, ()))

    async def forget(self, guild_id: int, member_id: int) -> None:
        self._members.get(guild_id, {}).pop(member_id, None)
        await self._storage.forget_listening_guild(guild_id, member_id)

    def forget_member(self, member_id: int) -> None:
        """Memory only: the storage deletes the rows with the member's plays."""
        for members in self._members.values():
            members.pop(member_id, None)

    async def prune(self, before: float) -> int:
        """Forget every sighting older than ``before``; return how many rows went."""
        removed = await self._storage.prune_listening_guilds(before=before)
        for guild_id, members in list(self._members.items()):
            for member_id in [m for m, seen in members.items() if seen < before]:
                del members[member_id]
            if not members:
                del self._members[guild_id]
        return removed
