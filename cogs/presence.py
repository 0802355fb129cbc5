"""Presence mode (ENABLE_PRESENCE): members' Discord Spotify status feeds auto-posting.

Loaded only in presence mode. A PRESENCE_UPDATE that shows Spotify is handed to the auto-poster
as an observation (no Spotify call). While a member's status shows Spotify, polling is
suspended for them (in every process: the cover is relayed to the one that polls); when Spotify
disappears from the status (paused, stopped, hidden), polling resumes. The same update arrives
once per shared guild: the auto-poster's duplicate check (checked and marked with no await in
between) posts it once per music channel; with several processes each posts it in its own
shards' guilds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import discord
from discord.ext import commands

from bot.autopost.service import AutopostService
from bot.client import NowPlayingBot
from bot.nowplaying.status import playback_from_activity, spotify_activity

log = logging.getLogger(__name__)


@dataclass(eq=False)
class PresenceCog(commands.Cog):
    autopost: AutopostService

    async def observe_member(self, member: discord.Member) -> None:
        if member.bot:
            return
        activity = spotify_activity(member.activities)
        if activity is None:
            self.autopost.resume_polling(member.id)  # a no-op unless it was suspended
            return
        self.autopost.suspend_polling(member.id)  # idempotent
        playback = playback_from_activity(activity, now=time.time())
        await self.autopost.observe(member.id, playback, source="presence")

    @commands.Cog.listener()
    async def on_presence_update(self, before: discord.Member, after: discord.Member) -> None:
        await self.observe_member(after)

    @commands.Cog.listener()
    async def on_guild_available(self, guild: discord.Guild) -> None:
        # After a reconnect, presences arrive inside GUILD_CREATE with no presence event:
        # look at every cached member once so a track that changed meanwhile is not missed.
        for member in list(guild.members):
            await self.observe_member(member)


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, NowPlayingBot)
    if bot.sees_presence:
        await bot.add_cog(PresenceCog(bot.services.autopost))
