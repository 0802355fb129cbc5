"""/chart [period] [size] [member]: a member's top tracks as a picture of album covers.

Thin: the one visibility rule first (``PrivacyService.ensure_visible``: a refused target costs
no Spotify call), then "thinking" at once (covers and the picture take a moment), then
``bot.top_chart`` builds the answer. Answers are public, a private member's own chart only for
them; errors go out privately (the "thinking" message is removed first, since a follow-up
keeps the ephemerality chosen at defer time).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import NowPlayingBot
from bot.errors import BotError
from bot.gateway.interactions import send_message
from bot.listening.chart import TopChart, chart_heading, render_chart_answer, render_empty_chart
from bot.members.privacy import PrivacyService


@dataclass(eq=False)
class ChartCog(commands.Cog):
    charts: TopChart
    privacy: PrivacyService

    @app_commands.command(name="chart", description="A picture of your (or a member's) top albums")
    @app_commands.describe(
        period="month, half-year or all-time (default: month)",
        size="3x3, 4x4 or 5x5 covers (default: 3)",
        member="Whose chart to draw (default: you)",
    )
    async def chart(
        self,
        interaction: discord.Interaction[Any],
        period: Literal["month", "half-year", "all-time"] = "month",
        size: Literal[3, 4, 5] = 3,
        member: discord.Member | discord.User | None = None,
    ) -> None:
        # Before any lookup: a refused target costs no Spotify call and reads no record.
        await self.privacy.ensure_visible(interaction, member)
        target: discord.abc.User = member or interaction.user
        is_self = target.id == interaction.user.id
        if target.bot and not is_self:
            raise BotError(user_message=f"{target.display_name} is a bot and does not listen.")
        only_you = await self.privacy.answers_only_to_viewer(interaction, member)
        # One chart on its way per member, a bounded queue for all: refused before anything
        # is asked of Spotify (a busy answer is private, at once).
        with self.charts.turn(interaction.user.id):
            await interaction.response.defer(thinking=True, ephemeral=only_you)
            try:
                entries = await self.charts.entries(
                    target.id, period, size, is_self=is_self, asker=interaction.user.id
                )
                if not entries:
                    rendered = render_empty_chart(
                        member_name=target.display_name, period=period, is_self=is_self
                    )
                else:
                    heading = chart_heading(target.display_name, period)
                    png = await self.charts.picture(entries, size, heading=heading)
                    rendered = render_chart_answer(
                        entries, member_name=target.display_name, period=period, size=size, png=png
                    )
            except Exception:
                # The public "thinking" goes; the error handler answers privately.
                with contextlib.suppress(discord.HTTPException):
                    await interaction.delete_original_response()
                raise
        await send_message(interaction, rendered)


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, NowPlayingBot)
    await bot.add_cog(ChartCog(bot.services.top_chart, bot.services.privacy))
