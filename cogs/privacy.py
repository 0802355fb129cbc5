"""/privacy [visibility]: who sees what you listen to (the rule: ``bot.members.privacy``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import NowPlayingBot
from bot.members.privacy import PrivacyService
from bot.storage import Visibility

SERVER_TEXT = (
    "Members of a server you are in can see your /np, /recent, /top and /chart there, and your "
    "new tracks can appear in auto-posts (opt out per server with /autopost me enabled:false)."
)
PRIVATE_TEXT = (
    "Only you see your own /np; everyone else is told you keep your listening private. "
    "Nothing you play is auto-posted anywhere, and I deleted what I had recorded about your "
    "listening and keep nothing more."
)


def describe(visibility: Visibility) -> str:
    if visibility == "private":
        return f"You are **private**. {PRIVATE_TEXT}"
    return f"You are visible to **your servers** (the default). {SERVER_TEXT}"


@dataclass(eq=False)
class PrivacyCog(commands.Cog):
    privacy: PrivacyService

    @app_commands.command(name="privacy", description="Choose who sees what you listen to")
    @app_commands.describe(
        visibility="server: members of your servers see it (default); private: only you"
    )
    @app_commands.choices(
        visibility=[
            app_commands.Choice(name="server: members of a server I'm in", value="server"),
            app_commands.Choice(name="private: only me", value="private"),
        ]
    )
    async def privacy_command(
        self,
        interaction: discord.Interaction[Any],
        visibility: app_commands.Choice[str] | None = None,
    ) -> None:
        user_id = interaction.user.id
        if visibility is None:
            current = await self.privacy.visibility(user_id)
            other = "server" if current == "private" else "private"
            await interaction.response.send_message(
                f"{describe(current)}\nChange it with /privacy visibility:{other}.",
                ephemeral=True,
            )
            return
        chosen: Visibility = "private" if visibility.value == "private" else "server"
        previous = await self.privacy.set_visibility(user_id, chosen)
        lead = "Done." if previous != chosen else "No change:"
        other = "server" if chosen == "private" else "private"
        await interaction.response.send_message(
            f"{lead} {describe(chosen)}\nChange it any time with /privacy visibility:{other}.",
            ephemeral=True,
        )


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, NowPlayingBot)
    await bot.add_cog(PrivacyCog(bot.services.privacy))
