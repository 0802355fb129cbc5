"""/listening, /recent, /top and /recap, and the gateway events the listening log needs.

Thin: parse the interaction, apply the one visibility rule (``PrivacyService.ensure_visible``,
before any Spotify call or log read about someone else), call a service, render with
``bot.listening_embeds``. Answers are public; errors and privacy notes are private (the tree's
error handler). Anything that may take over 1.5 s shows "thinking" first.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import NowPlayingBot
from bot.errors import BotError
from bot.gateway.interactions import answer_in_time
from bot.listening.embeds import (
    RECAP_PICTURE_NAME,
    render_listening,
    render_recap,
    render_recent,
    render_top,
)
from bot.listening.log import ListeningLog
from bot.listening.recap import RecapPictures
from bot.listening.server import ServerListening
from bot.listening.spotify import SpotifyListening
from bot.members.privacy import PrivacyService
from bot.messages.message import BotMessage, with_picture
from bot.nowplaying.status import spotify_activity
from bot.storage import Recap

log = logging.getLogger(__name__)

GUILD_ONLY = "This command only works in a server."
CHOICE_COMMANDS = frozenset({"autopost me", "privacy"})


def _name(target: discord.abc.User) -> str:
    return target.display_name


def _server(interaction: discord.Interaction[Any]) -> tuple[int, discord.Guild | None, str]:
    """The server's id, its cached object (None when not cached) and a name to show."""
    if interaction.guild_id is None:
        raise BotError(user_message=GUILD_ONLY)
    guild = interaction.guild
    return interaction.guild_id, guild, guild.name if guild is not None else "this server"


@dataclass(eq=False)
class ListeningCog(commands.Cog):
    history: ListeningLog
    server: ServerListening
    spotify: SpotifyListening
    privacy: PrivacyService
    recap_pictures: RecapPictures

    async def _target(
        self,
        interaction: discord.Interaction[Any],
        member: discord.Member | discord.User | None,
    ) -> discord.abc.User:
        target: discord.abc.User = member or interaction.user
        if target.bot and target.id != interaction.user.id:
            raise BotError(user_message=f"{_name(target)} is a bot and does not listen to Spotify.")
        await self.privacy.ensure_visible(interaction, member)
        return target

    # --- commands -------------------------------------------------------------------------

    @app_commands.command(name="listening", description="Who in this server is listening now")
    @app_commands.guild_only()
    async def listening(self, interaction: discord.Interaction[Any]) -> None:
        guild_id, _, name = _server(interaction)

        async def work() -> BotMessage:
            entries = await self.server.listening(guild_id)
            return render_listening(entries, guild_name=name)

        await answer_in_time(interaction, work)

    @app_commands.command(name="recent", description="The last 10 tracks you (or a member) played")
    @app_commands.describe(member="Whose tracks to show (default: you)")
    async def recent(
        self,
        interaction: discord.Interaction[Any],
        member: discord.Member | discord.User | None = None,
    ) -> None:
        target = await self._target(interaction, member)
        is_self = target.id == interaction.user.id

        async def work() -> BotMessage:
            answer = await self.spotify.recent(
                target.id,
                is_self=is_self,
                guild_id=interaction.guild_id,
                asker=interaction.user.id,
            )
            return render_recent(answer, member_name=_name(target), is_self=is_self)

        only_you = await self.privacy.answers_only_to_viewer(interaction, member)
        await answer_in_time(interaction, work, ephemeral=only_you)

    @app_commands.command(name="top", description="Your (or a member's) top tracks or artists")
    @app_commands.describe(
        kind="Tracks or artists (default: tracks)",
        period="month, half-year or all-time (default: month)",
        member="Whose top list to show (default: you)",
    )
    async def top(
        self,
        interaction: discord.Interaction[Any],
        kind: Literal["tracks", "artists"] = "tracks",
        period: Literal["month", "half-year", "all-time"] = "month",
        member: discord.Member | discord.User | None = None,
    ) -> None:
        target = await self._target(interaction, member)
        is_self = target.id == interaction.user.id

        async def work() -> BotMessage:
            items = await self.spotify.top(
                target.id, kind, period, is_self=is_self, asker=interaction.user.id
            )
            return render_top(items, member_name=_name(target), period=period)

        only_you = await self.privacy.answers_only_to_viewer(interaction, member)
        await answer_in_time(interaction, work, ephemeral=only_you)

    @app_commands.command(name="recap", description="What this server played lately")
    @app_commands.describe(period="week or month (default: week)")
    @app_commands.guild_only()
    async def recap(
        self,
        interaction: discord.Interaction[Any],
        period: Literal["week", "month"] = "week",
    ) -> None:
        guild_id, _, name = _server(interaction)
        recaps: list[Recap] = []

        async def work() -> BotMessage:
            recap = await self.server.recap(guild_id, period, asker=interaction.user.id)
            recaps.append(recap)
            return render_recap(recap, guild_name=name, period=period)

        rendered = await answer_in_time(interaction, work)
        # The numbers go out at once; the picture of the top albums follows in an edit.
        png = None
        if rendered.embed is not None:
            png = await self.recap_pictures.picture(
                recaps[0], guild_id=guild_id, guild_name=name, period=period
            )
        if png is not None:
            pictured = with_picture(rendered, RECAP_PICTURE_NAME, png)
            try:
                await interaction.edit_original_response(
                    embed=pictured.embed,
                    attachments=[discord.File(io.BytesIO(png), filename=RECAP_PICTURE_NAME)],
                )
            except discord.HTTPException as exc:
                log.info("/recap: could not add the picture (%s)", exc)

    # --- where members are seen -----------------------------------------------------------

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        # A member who runs any command in a server is in it: their plays count there.
        if interaction.guild_id is not None and not interaction.user.bot:
            await self.history.note_member(
                interaction.guild_id, interaction.user.id, only_if_logged=False
            )

    @commands.Cog.listener()
    async def on_app_command_completion(
        self,
        interaction: discord.Interaction[Any],
        command: app_commands.Command[Any, ..., Any] | app_commands.ContextMenu,
    ) -> None:
        # These choices decide whether a member's plays are kept: read them again.
        if command.qualified_name in CHOICE_COMMANDS:
            self.server.forget_member(interaction.user.id)  # a recap may no longer show them
            await self.history.refresh_member(interaction.user.id)

    @commands.Cog.listener()
    async def on_presence_update(self, before: discord.Member, after: discord.Member) -> None:
        if after.bot:
            return
        if spotify_activity(after.activities) is None:
            self.history.now_listening.clear(after.id)  # paused, stopped or hidden
            return
        await self.history.note_member(after.guild.id, after.id)

    @commands.Cog.listener()
    async def on_raw_member_remove(self, payload: discord.RawMemberRemoveEvent) -> None:
        self.server.forget_member(payload.user.id, guild_id=payload.guild_id)
        await self.history.roster.forget(payload.guild_id, payload.user.id)


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, NowPlayingBot)
    services = bot.services
    await bot.add_cog(
        ListeningCog(
            services.history,
            services.server_listening,
            services.listening,
            services.privacy,
            services.recap_pictures,
        )
    )
