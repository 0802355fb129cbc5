"""Direct messages the bot sends a member outside a command (their link finished, or could
not be finished), through whichever bot is connected."""

from __future__ import annotations

import asyncio
import logging

import discord

from bot.gateway.connection import DiscordConnection

log = logging.getLogger(__name__)

# The callback page waits for the DM: a slow or failing Discord (discord.py retries a 5xx for
# many seconds) must not hold the member's browser; the page says it anyway.
DM_TIMEOUT_SECONDS = 2.0


class DirectMessages:
    def __init__(self, connection: DiscordConnection, *, timeout: float = DM_TIMEOUT_SECONDS):
        self._connection = connection
        self._timeout = timeout

    async def send(self, user_id: int, text: str) -> None:
        """DM ``text`` (mentions escaped); a closed DM or a slow Discord is logged, not raised."""
        bot = self._connection.bot
        if bot is None:
            log.info("Could not DM member %s: not connected to Discord", user_id)
            return

        async def send() -> None:
            user = bot.get_user(user_id) or await bot.fetch_user(user_id)
            await user.send(discord.utils.escape_mentions(text))

        try:
            await asyncio.wait_for(send(), timeout=self._timeout)
        except discord.HTTPException as exc:
            log.info("Could not DM member %s (%s)", user_id, exc.code)
        except TimeoutError:
            log.info("Gave up sending member %s a DM: Discord was too slow", user_id)


__all__ = ["DM_TIMEOUT_SECONDS", "DirectMessages"]
