"""/autopost channel|off|me, and the gateway events the auto-poster needs to hear about.

Discord applies ``default_member_permissions`` to a top-level command and all its subcommands,
so Manage Server as a default would hide ``/autopost me`` from the members it is meant for.
The group therefore has no default permission; ``channel`` and ``off`` check Manage Server on
the server side and refuse in plain words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.autopost.discord_side import missing_post_permissions
from bot.autopost.service import AutopostService
from bot.client import NowPlayingBot
from bot.errors import BotError
from bot.members.privacy import PrivacyService

NOT_AN_ADMIN = (
    "Only members with the Manage Server permission can change where auto-posts go. "
    "You can still opt yourself in or out with /autopost me."
)


def _can_manage(interaction: discord.Interaction[Any]) -> bool:
    permissions = interaction.permissions
    return permissions.manage_guild or permissions.administrator


def _join(names: tuple[str, ...]) -> str:
    if len(names) == 1:
        return f"the {names[0]} permission"
    return "the " + ", ".join(names[:-1]) + f" and {names[-1]} permissions"


@dataclass(eq=False)
class AutopostCog(commands.Cog):
    autopost = app_commands.Group(
        name="autopost",
        description="Post members' new tracks in a music channel",
        guild_only=True,
    )

    service: AutopostService
    privacy: PrivacyService
    presence_enabled: bool = field(kw_only=True)

    async def _notice_for(self, interaction: discord.Interaction[Any]) -> str:
        """The notice left when auto-posting turned itself off, for admins, once."""
        if interaction.guild_id is None or not _can_manage(interaction):
            return ""
        notice = await self.service.take_notice(interaction.guild_id)
        return f"**Note:** {notice}\n\n" if notice else ""

    @autopost.command(name="channel", description="Choose the channel for auto-posts (admins)")
    @app_commands.describe(channel="A text channel where I may send messages and embeds")
    async def channel(
        self, interaction: discord.Interaction[Any], channel: discord.TextChannel
    ) -> None:
        guild = interaction.guild
        if guild is None:
            raise BotError(user_message="This command only works in a server.")
        if not _can_manage(interaction):
            raise BotError(user_message=NOT_AN_ADMIN)
        notice = await self._notice_for(interaction)
        # The resolved option carries the *invoker's* permissions; the bot's come from the cache.
        target = guild.get_channel(channel.id)
        if not isinstance(target, discord.TextChannel):
            await interaction.response.send_message(
                notice + "I can't see that channel. Pick a text channel I have access to.",
                ephemeral=True,
            )
            return
        missing = missing_post_permissions(target.permissions_for(guild.me))
        if missing:
            await interaction.response.send_message(
                notice + f"I can't post in {target.mention}: I'm missing {_join(missing)} "
                "there. Give me those permissions, or pick another channel.",
                ephemeral=True,
            )
            return
        await self.service.set_channel(guild.id, target.id)
        await interaction.response.send_message(
            notice + f"Done: new tracks of linked members will be posted in {target.mention}. "
            "Members can opt out with /autopost me enabled:false.",
            ephemeral=True,
        )

    @autopost.command(name="off", description="Stop auto-posting in this server (admins)")
    async def off(self, interaction: discord.Interaction[Any]) -> None:
        if interaction.guild_id is None:
            raise BotError(user_message="This command only works in a server.")
        if not _can_manage(interaction):
            raise BotError(user_message=NOT_AN_ADMIN)
        notice = await self._notice_for(interaction)
        if await self.service.turn_off(interaction.guild_id):
            text = "Auto-posting is off in this server. Turn it on again with /autopost channel."
        else:
            text = "Auto-posting was not on in this server."
        await interaction.response.send_message(notice + text, ephemeral=True)

    @autopost.command(
        name="me", description="Opt yourself out of (or back into) auto-posts in this server"
    )
    @app_commands.describe(enabled="true: post my new tracks here; false: never post them here")
    async def me(self, interaction: discord.Interaction[Any], enabled: bool) -> None:
        guild_id = interaction.guild_id
        if guild_id is None:
            raise BotError(user_message="This command only works in a server.")
        notice = await self._notice_for(interaction)
        await self.service.set_opt_in(interaction.user.id, enabled, guild_id)
        if not enabled:
            text = (
                "Done: I won't auto-post what you play in this server. Other servers keep "
                "their own choice. Turn it back on here with /autopost me enabled:true."
            )
        else:
            text = "Done: your new tracks will be auto-posted in this server"
            channel_id = self.service.music_channel(guild_id)
            if channel_id is None:
                text += ", once it has a music channel (there is none yet)."
            else:
                text += f", in <#{channel_id}>."
            if await self.privacy.is_private(interaction.user.id):
                text += (
                    " You are private right now, so nothing is posted until you run "
                    "/privacy visibility:server."
                )
            if not self.service.is_linked(interaction.user.id):
                if self.presence_enabled:
                    text += (
                        " I see what you play while your Discord status shows Spotify, or "
                        "always once you link your account with /link."
                    )
                else:
                    text += " Link your Spotify account with /link so I can see what you play."
        await interaction.response.send_message(notice + text, ephemeral=True)

    @commands.Cog.listener()
    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        await self.service.channel_deleted(channel.guild.id, channel.id, name=channel.name)


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, NowPlayingBot)
    services = bot.services
    await bot.add_cog(
        AutopostCog(services.autopost, services.privacy, presence_enabled=bot.sees_presence)
    )
