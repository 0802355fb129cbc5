"""Where the listening log counts a member: the servers the bot has seen them in (a command
they ran there, a presence update from there), kept in the database."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.storage import ListeningStore


class GuildRoster:
    """Which members the bot has seen in which server (kept in the database)."""

    def __init__(self, storage: ListeningStore, clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self._clock = clock
        self._members: dict[int, set[int]] = {}

    async def load(self) -> None:
        self._members = {}
        for guild_id, member_id in await self._storage.list_listening_guilds():
            self._members.setdefault(guild_id, set()).add(member_id)

    async def note(self, guild_id: int, member_id: int) -> None:
        members = self._members.setdefault(guild_id, set())
        if member_id in members:
            return
        members.add(member_id)  # before the await: concurrent notes write once
        await self._storage.note_listening_guild(guild_id, member_id, now=self._clock())

    def knows(self, guild_id: int, member_id: int) -> bool:
        return member_id in self._members.get(guild_id, ())

    def members_of(self, guild_id: int) -> frozenset[int]:
        return frozenset(self._members.get(guild_id, ()))

    async def forget(self, guild_id: int, member_id: int) -> None:
        self._members.get(guild_id, set()).discard(member_id)
        await self._storage.forget_listening_guild(guild_id, member_id)

    def forget_member(self, member_id: int) -> None:
        """Memory only: the storage deletes the rows with the member's plays."""
        for members in self._members.values():
            members.discard(member_id)
