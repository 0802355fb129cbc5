"""/link, /unlink, the DM with the authorize button, and the paste-the-link modal."""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import NowPlayingBot
from bot.gateway.direct_messages import DM_TIMEOUT_SECONDS
from bot.gateway.interactions import handle_interaction_error
from bot.linking.service import LinkService, parse_pasted_address
from bot.linking.words import LinkFailure, failure_words, pending_words

log = logging.getLogger(__name__)

PASTE_BUTTON_ID = "nowplaying:paste-link"
CANNOT_DM = 50007


class PasteLinkModal(discord.ui.Modal, title="Finish linking Spotify"):
    address: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="Address from your browser's address bar",
        style=discord.TextStyle.paragraph,
        placeholder="http://127.0.0.1:8080/callback?code=...&state=...",
        max_length=4000,
    )

    def __init__(self, links: LinkService) -> None:
        super().__init__(timeout=600)
        self._links = links

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        # Two Spotify calls follow; answer "thinking" first so Discord's 3 s never run out.
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            result = await self._links.complete(
                parse_pasted_address(self.address.value), pasted_by=interaction.user.id
            )
        except LinkFailure as failure:
            words = failure_words(failure)
            await interaction.followup.send(f"**{words.title}.** {words.message}", ephemeral=True)
            return
        if result.outcome == "pending":
            text = pending_words(result.retry_after) + "."
        elif result.outcome == "renewed":
            text = f"Your link to **{result.display_name}** is renewed for six more months."
        else:
            text = f"Linked as **{result.display_name}**. Try /np to show what you are playing."
        await interaction.followup.send(discord.utils.escape_mentions(text), ephemeral=True)

    async def on_error(  # type: ignore[override]  # Modal's signature differs from BaseView's
        self, interaction: discord.Interaction[Any], error: Exception
    ) -> None:
        await handle_interaction_error(interaction, error)


class LinkButtons(discord.ui.View):
    """The authorize link and the paste button. Registered without a URL as a persistent view
    so the paste button keeps working in old DMs after a restart."""

    def __init__(self, links: LinkService, authorize_url: str | None = None) -> None:
        super().__init__(timeout=None)
        self._links = links
        if authorize_url is not None:
            self.add_item(discord.ui.Button(label="Link Spotify", url=authorize_url))
        paste: discord.ui.Button[LinkButtons] = discord.ui.Button(
            label="Paste the link", style=discord.ButtonStyle.secondary, custom_id=PASTE_BUTTON_ID
        )
        paste.callback = self._open_paste_modal  # type: ignore[method-assign]
        self.add_item(paste)

    async def _open_paste_modal(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.send_modal(PasteLinkModal(self._links))

    async def on_error(
        self, interaction: discord.Interaction[Any], error: Exception, item: Any
    ) -> None:
        await handle_interaction_error(interaction, error)


LINK_INSTRUCTIONS = (
    "**Connect your Spotify account**\n"
    "1. Press **Link Spotify** and approve access on Spotify (the link works once, for 10 "
    "minutes, and only for you; Spotify shows which account you are signed in with).\n"
    "2. If your browser then shows a page that does not load, copy the address from its "
    "address bar, press **Paste the link** and paste it there.\n"
    "A Spotify account can be linked to one Discord account at a time."
)


def discord_label(user: discord.abc.User) -> str:
    """How the success page names the member: display name and unique username."""
    if user.global_name and user.global_name != user.name:
        return f"{user.global_name} (@{user.name})"
    return f"@{user.name}"


@dataclass(eq=False)
class LinkingCog(commands.Cog):
    bot: NowPlayingBot
    links: LinkService

    async def cog_load(self) -> None:
        self.bot.add_view(LinkButtons(self.links))

    @app_commands.command(
        name="link", description="Connect your Spotify account (one Spotify account per member)"
    )
    async def link(self, interaction: discord.Interaction[Any]) -> None:
        # Answer Discord first: everything below may wait for the database or for Discord.
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = interaction.user
        existing = await self.links.current_link(user.id)
        start = await self.links.start(user.id, discord_label(user))
        minutes = max(1, math.ceil((start.expires_at - self.links.clock()) / 60))
        if start.reused:
            await self._reply_with_buttons(
                interaction,
                f"You asked for a link moments ago, and it still works for {minutes} min: "
                "here it is again (it is the one in your direct messages too).",
                start.authorize_url,
            )
            return
        relink_note = (
            f"\nYou are linked as **{existing.display_name}** now; finishing this renews or "
            "replaces it."
            if existing is not None
            else ""
        )
        # The persistent LinkButtons added in cog_load answers "Paste the link" on every
        # message. discord.py would keep each sent view (no timeout) for good, so every view
        # is stopped once sent: the message keeps its buttons, memory does not grow per /link.
        dm_view = LinkButtons(self.links, start.authorize_url)
        try:
            await asyncio.wait_for(
                user.send(LINK_INSTRUCTIONS, view=dm_view), timeout=DM_TIMEOUT_SECONDS
            )
        except (discord.Forbidden, TimeoutError) as exc:
            if isinstance(exc, discord.Forbidden) and exc.code != CANNOT_DM:
                raise
            await self._reply_with_buttons(
                interaction,
                "I couldn't send you a direct message, so here is your link. "
                f"It works once, for {minutes} minutes, and only for you." + relink_note,
                start.authorize_url,
            )
            return
        finally:
            dm_view.stop()
        await interaction.followup.send(
            discord.utils.escape_mentions(
                "Check your direct messages: I sent you a link to connect Spotify." + relink_note
            ),
            ephemeral=True,
        )

    async def _reply_with_buttons(
        self, interaction: discord.Interaction[Any], text: str, authorize_url: str
    ) -> None:
        view = LinkButtons(self.links, authorize_url)
        try:
            await interaction.followup.send(
                discord.utils.escape_mentions(text), view=view, ephemeral=True
            )
        finally:
            view.stop()

    @app_commands.command(name="unlink", description="Forget your Spotify account and settings")
    async def unlink(self, interaction: discord.Interaction[Any]) -> None:
        existed = await self.links.unlink(interaction.user.id)
        if existed:
            text = (
                "Done: your Spotify tokens and settings are deleted, and your Spotify account "
                "can now be linked to another Discord account. You can also remove the bot's "
                "access at spotify.com/account/apps."
            )
        else:
            text = "There was nothing to unlink: you had no Spotify account linked."
        await interaction.response.send_message(text, ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, NowPlayingBot)
    await bot.add_cog(LinkingCog(bot, bot.services.links))
