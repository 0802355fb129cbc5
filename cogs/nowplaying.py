"""/np [member]: the now-playing embed.

Who may be shown is decided by ``bot.privacy`` before anything is looked up: another member only
when the interaction resolved them as a member of this server and they are not private. Then a
Discord status that shows Spotify answers, linked member or not, at no Spotify cost; only
without one is the Web API asked (and then, with the daily limit used up, the member is told
when it is back).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import NowPlayingBot
from bot.errors import (
    BotError,
    DecryptionError,
    LinkBroken,
    NotLinked,
    SpotifyForbidden,
    SpotifyUnauthorized,
)
from bot.gateway.connection import DiscordConnection
from bot.gateway.interactions import answer_in_time
from bot.linking.service import LinkService
from bot.linking.words import expiry_reminder
from bot.members.privacy import PrivacyService
from bot.messages.message import BotMessage
from bot.nowplaying.renderer import NowPlayingRenderer
from bot.nowplaying.service import PlaybackService
from bot.nowplaying.status import member_playback
from bot.spotify.models import CurrentlyPlaying

# /np waits at most this long for a new cover's colour; then it answers in Spotify green.
COLOUR_WAIT_SECONDS = 0.3


@dataclass(eq=False)
class NowPlayingCog(commands.Cog):
    playback: PlaybackService
    links: LinkService
    privacy: PrivacyService
    renderer: NowPlayingRenderer
    connection: DiscordConnection
    presence_enabled: bool = field(kw_only=True)

    @app_commands.command(
        name="np", description="Show what you, or another member, play on Spotify"
    )
    @app_commands.describe(member="A member of this server (default: you)")
    async def np(
        self,
        interaction: discord.Interaction[Any],
        member: discord.Member | discord.User | None = None,
    ) -> None:
        # Before any lookup: a refused target costs no Spotify call and reads no record.
        await self.privacy.ensure_visible(interaction, member)
        target = member or interaction.user
        is_self = target.id == interaction.user.id
        # A private member's own /np is for their eyes only.
        only_you = await self.privacy.answers_only_to_viewer(interaction, member)
        if target.bot and not is_self:
            await interaction.response.send_message(
                f"{target.display_name} is a bot and does not listen to Spotify.", ephemeral=True
            )
            return

        # The interaction's own user/member objects carry no activities: the cached member does
        # (in a DM, as any server the bot shares with them caches them).
        cached_member: discord.Member | None = None
        if self.presence_enabled:
            guild = interaction.guild
            cached_member = (
                guild.get_member(target.id)
                if guild is not None
                else self.connection.cached_member(target.id)
            )

        playback: CurrentlyPlaying | None = None

        async def work() -> BotMessage:
            nonlocal playback
            playback = await self._lookup(
                target, asker=interaction.user.id, cached_member=cached_member
            )
            return await self.renderer.render_within(
                playback,
                member_name=target.display_name,
                member_avatar_url=target.display_avatar.url,
                wait=COLOUR_WAIT_SECONDS,
            )

        await answer_in_time(interaction, work, ephemeral=only_you)
        if is_self and playback is not None and playback.source == "spotify":
            await self._remind_if_expiring(interaction)

    async def _remind_if_expiring(self, interaction: discord.Interaction[Any]) -> None:
        link = await self.links.current_link(interaction.user.id)
        reminder = expiry_reminder(link.linked_at, time.time()) if link is not None else None
        if reminder is not None:
            await interaction.followup.send(reminder, ephemeral=True)

    async def _lookup(
        self,
        target: discord.abc.User,
        *,
        asker: int,
        cached_member: discord.Member | None,
    ) -> CurrentlyPlaying:
        is_self = target.id == asker
        # Statuses first, linked or not: a Discord status that shows Spotify costs no Spotify
        # call (Spotify's daily quota is small); the Web API is asked only without one.
        from_status = member_playback(cached_member, now=time.time())
        if from_status is not None:
            return from_status
        try:
            return await self.playback.now_playing(target.id, asker=asker)
        except NotLinked:
            if is_self:
                raise
            raise self._not_linked(target) from None
        except (
            LinkBroken,
            DecryptionError,
            SpotifyForbidden,
            SpotifyUnauthorized,  # a 401 even after a refresh: the target's link, not the caller's
        ) as exc:
            if is_self:
                raise
            # About someone else, say only that there is nothing to show: never why.
            raise self._not_linked(target) from exc

    @staticmethod
    def _not_linked(target: discord.abc.User) -> BotError:
        return BotError(
            user_message=(
                f"{target.display_name} has not linked a Spotify account, so I can't "
                "show what they are playing. They can run /link to connect one."
            )
        )


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, NowPlayingBot)
    services = bot.services
    await bot.add_cog(
        NowPlayingCog(
            services.playback,
            services.links,
            services.privacy,
            services.renderer,
            services.discord,
            presence_enabled=bot.sees_presence,
        )
    )
