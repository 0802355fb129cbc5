"""/np [member]: the now-playing embed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import NowPlayingBot
from bot.embeds import make_view, render_now_playing
from bot.errors import (
    BotError,
    DecryptionError,
    LinkBroken,
    NotLinked,
    SpotifyForbidden,
    SpotifyUnauthorized,
)
from bot.services import PlaybackService
from bot.spotify.models import CurrentlyPlaying

# Answer directly when Spotify is quick; otherwise show "thinking" well inside Discord's 3 s.
DEFER_AFTER_SECONDS = 1.5


class NowPlayingCog(commands.Cog):
    def __init__(self, playback: PlaybackService) -> None:
        self.playback = playback

    @app_commands.command(
        name="np", description="Show what you, or another member, play on Spotify"
    )
    @app_commands.describe(member="Whose music to show (default: you)")
    async def np(
        self,
        interaction: discord.Interaction[Any],
        member: discord.Member | discord.User | None = None,
    ) -> None:
        target = member or interaction.user
        is_self = target.id == interaction.user.id
        if target.bot and not is_self:
            await interaction.response.send_message(
                f"{target.display_name} is a bot and does not listen to Spotify.", ephemeral=True
            )
            return

        lookup = asyncio.ensure_future(self._lookup(target, is_self=is_self))
        try:
            playback = await asyncio.wait_for(asyncio.shield(lookup), DEFER_AFTER_SECONDS)
        except TimeoutError:
            await interaction.response.defer(thinking=True)
            playback = await lookup
        message = render_now_playing(
            playback,
            member_name=target.display_name,
            member_avatar_url=target.display_avatar.url,
            now=time.time(),
        )
        view = make_view(message.buttons)
        kwargs: dict[str, Any] = {"allowed_mentions": discord.AllowedMentions.none()}
        if message.content is not None:
            kwargs["content"] = message.content
        if message.embed is not None:
            kwargs["embed"] = message.embed
        if view is not None:
            kwargs["view"] = view
        if interaction.response.is_done():
            await interaction.followup.send(**kwargs)
        else:
            await interaction.response.send_message(**kwargs)

    async def _lookup(self, target: discord.abc.User, *, is_self: bool) -> CurrentlyPlaying:
        try:
            return await self.playback.now_playing(target.id)
        except (
            NotLinked,
            LinkBroken,
            DecryptionError,
            SpotifyForbidden,
            SpotifyUnauthorized,  # a 401 even after a refresh: the target's link, not the caller's
        ) as exc:
            if is_self:
                raise
            # About someone else, say only that there is nothing to show: never why.
            raise BotError(
                user_message=(
                    f"{target.display_name} has not linked a Spotify account, so I can't "
                    "show what they are playing. They can run /link to connect one."
                )
            ) from exc


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, NowPlayingBot)
    await bot.add_cog(NowPlayingCog(bot.services.playback))
