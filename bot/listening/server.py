"""What a server sees of its own listening: /listening and /recap, current members only.

The listening log remembers the servers it saw each member in, but without the members intent
Discord never says that someone left. Before anything is shown, the members about to appear
are checked against the server now (``bot.gateway.members``: the gateway cache where it is
exact, REST with a short cache otherwise); whoever Discord says is gone is dropped from the
server's roster, and whoever cannot be checked is left out this time. /recap needs at least
``MIN_RECAP_LISTENERS`` such listeners in the period: with fewer it would be one person's
history under the server's name.

A /recap reads the log over every visible member's plays of the period (seconds, over a
million plays), so it is kept per server and period for ``RECAP_CACHE_SECONDS``: everyone who
asks meanwhile (twenty at once included) shares one read. A cached recap is dropped when one
of the members it counted goes private, unlinks, changes an opt-in or leaves the server, so
nothing of theirs is shown after that. Each member runs one log scan at a time
(``bot.aio.turns``): a second, while the first reads, is answered at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Final, Protocol

from bot.aio.turns import Turns
from bot.errors import BotError
from bot.gateway.members import Membership
from bot.listening.log import ListeningLog, PrivacyView
from bot.listening.now import NowEntry
from bot.members.events import MemberEvents
from bot.storage import ListeningStore, Recap

RECAP_PERIODS: Final[dict[str, float]] = {"week": 7 * 86400.0, "month": 30 * 86400.0}
MIN_RECAP_LISTENERS: Final = 3
RECAP_CACHE_SECONDS: Final = 60.0


class ScanBusy(BotError):
    user_message = (
        "I'm still reading the listening log for your last command: try again in a few seconds."
    )


@dataclass(eq=False)
class _CachedRecap:
    task: asyncio.Future[tuple[Recap, frozenset[int]]]
    expires: float = math.inf  # until the read ends
    counted: frozenset[int] = field(default_factory=frozenset)  # the members it may show


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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._history, self._store, self._privacy = history, store, privacy
        self._members = members
        self._scans: Turns[int] = Turns()  # one log scan per asking member
        self._clock, self._monotonic = clock, monotonic
        self._recaps: dict[tuple[int, str], _CachedRecap] = {}

    async def listening(self, guild_id: int) -> list[NowEntry]:
        """Who in the server plays something now (newest first), never a private member."""
        entries = self._history.listening_in(guild_id, self._members.cached(guild_id))
        present = await self._current(guild_id, [e.member_id for e in entries])
        return [e for e in entries if e.member_id in present]

    async def recap(self, guild_id: int, period: str, *, asker: int) -> Recap:
        """The server's top tracks and artists of the period from members seen there, not
        private and still in it. Below ``MIN_RECAP_LISTENERS`` of them only their number
        comes back (no track, artist or album). Shared with whoever asked in the last
        ``RECAP_CACHE_SECONDS``; a new read counts as ``asker``'s scan."""
        key = (guild_id, period)
        cached = self._recaps.get(key)
        if cached is not None and cached.expires > self._monotonic():
            recap, _ = await asyncio.shield(cached.task)
            return recap
        with self._scans.take(asker, lambda _: ScanBusy()):
            entry = _CachedRecap(asyncio.ensure_future(self._read_recap(guild_id, period)))
            self._recaps[key] = entry
            try:
                recap, entry.counted = await asyncio.shield(entry.task)
            except BaseException:
                if self._recaps.get(key) is entry:
                    del self._recaps[key]
                raise
            if self._recaps.get(key) is entry:  # not dropped while it read
                entry.expires = self._monotonic() + RECAP_CACHE_SECONDS
            return recap

    def follow_members(self, events: MemberEvents) -> None:
        """A member who goes private or unlinks, here or in another process, leaves every
        cached recap at once."""
        events.on("private", self.forget_member)
        events.on("unlinked", self.forget_member)

    def forget_member(self, member_id: int, *, guild_id: int | None = None) -> None:
        """Drop every cached recap (of ``guild_id`` only, when they left it) that may show
        ``member_id`` (private, unlinked, opted out, gone), and any still being read."""
        for key, entry in list(self._recaps.items()):
            if guild_id is not None and key[0] != guild_id:
                continue
            if member_id in entry.counted or not entry.task.done():
                del self._recaps[key]

    async def _read_recap(self, guild_id: int, period: str) -> tuple[Recap, frozenset[int]]:
        since = self._clock() - RECAP_PERIODS[period]
        seen = [
            m
            for m in self._history.roster.members_of(guild_id)
            if not self._privacy.is_private_now(m)
        ]
        listened = await self._store.listeners_since(seen, since=since)
        present = await self._current(guild_id, listened)
        if len(present) < MIN_RECAP_LISTENERS:
            return Recap(tracks=(), artists=(), listeners=len(present), plays=0), present
        return await self._store.recap(present, since=since), present

    async def _current(self, guild_id: int, member_ids: Collection[int]) -> frozenset[int]:
        if not member_ids:
            return frozenset()
        membership = await self._members.check(guild_id, member_ids)
        for gone in membership.absent:
            await self._history.roster.forget(guild_id, gone)  # until seen there again
        return membership.present


__all__ = [
    "MIN_RECAP_LISTENERS",
    "RECAP_CACHE_SECONDS",
    "RECAP_PERIODS",
    "MemberCheck",
    "ScanBusy",
    "ServerListening",
]
