"""What a server sees of its own listening: /listening and /recap, current members only.

The listening log remembers the servers it saw each member in, but without the members intent
Discord never says that someone left. Before anything is shown, the members about to appear
are checked against the server now (``bot.gateway.members``: the gateway cache where it is
exact, REST with a short cache otherwise); whoever Discord says is gone is dropped from the
server's roster, and whoever cannot be checked is left out this time. /recap needs at least
``MIN_RECAP_LISTENERS`` such listeners in the period: with fewer it would be one person's
history under the server's name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Final, Protocol

from bot.gateway.members import Membership
from bot.listening.log import ListeningLog, PrivacyView
from bot.listening.now import NowEntry
from bot.storage import ListeningStore, Recap

RECAP_PERIODS: Final[dict[str, float]] = {"week": 7 * 86400.0, "month": 30 * 86400.0}
MIN_RECAP_LISTENERS: Final = 3


class MemberCheck(Protocol):
    """Who is in a server now (``bot.gateway.members.GuildMembers``)."""

    def cached(self, guild_id: int) -> Callable[[int], bool] | None: ...

    async def check(self, guild_id: int, member_ids: Collection[int]) -> Membership: ...


class ServerListening:
    """/listening and /recap of a server, counting only who is in it now."""

    def __init__(
        self,
        history: ListeningLog,
        store: ListeningStore,
        privacy: PrivacyView,
        members: MemberCheck,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._history = history
        self._store = store
        self._privacy = privacy
        self._members = members
        self._clock = clock

    async def listening(self, guild_id: int) -> list[NowEntry]:
        """Who in the server plays something now (newest first), never a private member."""
        entries = self._history.listening_in(guild_id, self._members.cached(guild_id))
        present = await self._current(guild_id, [e.member_id for e in entries])
        return [e for e in entries if e.member_id in present]

    async def recap(self, guild_id: int, period: str) -> Recap:
        """The server's top tracks and artists of the period from members seen there, not
        private and still in it. Below ``MIN_RECAP_LISTENERS`` of them only their number
        comes back (no track, artist or album)."""
        since = self._clock() - RECAP_PERIODS[period]
        seen = [
            m
            for m in self._history.roster.members_of(guild_id)
            if not self._privacy.is_private_now(m)
        ]
        listened = await self._store.listeners_since(seen, since=since)
        present = await self._current(guild_id, listened)
        if len(present) < MIN_RECAP_LISTENERS:
            return Recap(tracks=(), artists=(), listeners=len(present), plays=0)
        return await self._store.recap(present, since=since)

    async def _current(self, guild_id: int, member_ids: Collection[int]) -> frozenset[int]:
        if not member_ids:
            return frozenset()
        membership = await self._members.check(guild_id, member_ids)
        for gone in membership.absent:
            await self._history.roster.forget(guild_id, gone)  # until seen there again
        return membership.present


__all__ = ["MIN_RECAP_LISTENERS", "RECAP_PERIODS", "MemberCheck", "ServerListening"]
