"""Who is in a server now, for what a server's own commands show about its members.

Without the members intent Discord never tells the bot that someone left (no
GUILD_MEMBER_REMOVE), so the bot's own records say nothing about who is still there. With
the members intent and a chunked guild the gateway cache is exact and free; otherwise each
member is asked over REST (``GET /guilds/{g}/members/{u}``, which needs no privileged intent)
and the answer is kept for ``ttl`` seconds, so a command repeated within a minute asks
nothing. A member Discord cannot vouch for right now (an error, a timeout, no bot yet) is
neither present nor absent: shown to nobody, and asked again next time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import discord

from bot.gateway.connection import DiscordConnection

log = logging.getLogger(__name__)

MEMBERSHIP_TTL = 60.0
MAX_REMEMBERED = 10_000  # answers kept at most (one small tuple each)
CONCURRENT_LOOKUPS = 8


@dataclass(frozen=True, slots=True)
class Membership:
    """``present``: in the server now. ``absent``: Discord says they are not (they left,
    or the bot did). Anyone in neither could not be checked."""

    present: frozenset[int]
    absent: frozenset[int]


class GuildMembers:
    """Membership of a server now: the gateway cache where it is exact, REST otherwise."""

    def __init__(
        self,
        connection: DiscordConnection,
        *,
        ttl: float = MEMBERSHIP_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connection = connection
        self._ttl = ttl
        self._clock = clock
        self._answers: dict[tuple[int, int], tuple[bool, float]] = {}

    def cached(self, guild_id: int) -> Callable[[int], bool] | None:
        """A free membership test from the gateway cache, when the cache knows everyone (the
        members intent, guild chunked); None when only REST can tell."""
        bot = self._connection.bot
        guild = bot.get_guild(guild_id) if bot is not None else None
        if bot is None or guild is None or not (bot.intents.members and guild.chunked):
            return None
        return lambda member_id: guild.get_member(member_id) is not None

    async def check(self, guild_id: int, member_ids: Collection[int]) -> Membership:
        """Which of ``member_ids`` are in the server now, and which Discord says are not."""
        cached = self.cached(guild_id)
        if cached is not None:
            present = {m for m in member_ids if cached(m)}
            return Membership(frozenset(present), frozenset(set(member_ids) - present))
        now = self._clock()
        answers: dict[int, bool | None] = {}
        asked: list[int] = []
        for member_id in set(member_ids):
            remembered = self._answers.get((guild_id, member_id))
            if remembered is not None and remembered[1] > now:
                answers[member_id] = remembered[0]
            else:
                asked.append(member_id)
        if asked:
            gate = asyncio.Semaphore(CONCURRENT_LOOKUPS)

            async def ask(member_id: int) -> bool | None:
                async with gate:
                    return await self._ask(guild_id, member_id)

            for member_id, answer in zip(
                asked, await asyncio.gather(*(ask(m) for m in asked)), strict=True
            ):
                answers[member_id] = answer
                if answer is not None:
                    self._remember(guild_id, member_id, answer)
        return Membership(
            frozenset(m for m, answer in answers.items() if answer is True),
            frozenset(m for m, answer in answers.items() if answer is False),
        )

    async def _ask(self, guild_id: int, member_id: int) -> bool | None:
        bot = self._connection.bot
        if bot is None:
            return None
        try:
            await bot.http.get_member(guild_id, member_id)
        except discord.NotFound:
            return False  # not a member (10007), or the bot left the server (10004)
        except (discord.HTTPException, OSError, TimeoutError) as exc:
            log.info("membership of %s in guild %s unknown for now (%r)", member_id, guild_id, exc)
            return None
        return True

    def _remember(self, guild_id: int, member_id: int, present: bool) -> None:
        now = self._clock()
        if len(self._answers) >= MAX_REMEMBERED:
            self._answers = {k: v for k, v in self._answers.items() if v[1] > now}
            if len(self._answers) >= MAX_REMEMBERED:
                self._answers.clear()
        self._answers[(guild_id, member_id)] = (present, now + self._ttl)


__all__ = ["GuildMembers", "Membership"]
