"""The bot's connection to Discord as the rest of the bot sees it.

The bot object is built by the starter once Discord has said which privileged intents the
application may ask for, and built again without them when Discord refuses them anyway
(close code 4014). Everything that talks to Discord outside a command (the auto-poster, the
link DMs, ``/healthz``, the metrics) goes through this one object, which always knows the
current bot; nothing keeps a bot of its own.
"""

from __future__ import annotations

import asyncio

import discord

from bot.aio.tasks import cancel_and_wait


class DiscordConnection:
    def __init__(self) -> None:
        self._bot: discord.Client | None = None
        self._changed = asyncio.Event()

    def attach(self, bot: discord.Client) -> None:
        """``bot`` is the current one from now on (the starter built it)."""
        self._bot = bot
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def bot(self) -> discord.Client | None:
        """The current bot; None until the starter has built the first."""
        return self._bot

    @property
    def presence(self) -> bool:
        """Whether the current bot has the presence and members intents (statuses seen)."""
        return self._bot is not None and sees_presence(self._bot)

    async def wait_until_ready(self) -> discord.Client:
        """Until a bot is connected and ready (the current one, whichever it is by then)."""
        while True:
            bot, changed = self._bot, self._changed
            if bot is None:
                await changed.wait()
                continue
            ready = asyncio.ensure_future(bot.wait_until_ready())
            replaced = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait({ready, replaced}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait([ready, replaced])
            if bot is self._bot and bot.is_ready():
                return bot

    def cached_member(self, user_id: int) -> discord.Member | None:
        """The member as the gateway cache of any server shows them (their status is the same
        in each), or None: not cached, or no members intent."""
        bot = self._bot
        if bot is None or not bot.intents.members:
            return None
        for guild in bot.guilds:
            member = guild.get_member(user_id)
            if member is not None:
                return member
        return None

    def gateway_connected(self) -> bool:
        """Ready, and every gateway connection (shard) of the current bot open."""
        bot = self._bot
        if bot is None or not bot.is_ready() or bot.is_closed():
            return False
        if isinstance(bot, discord.AutoShardedClient):
            return bool(bot.shards) and all(not s.is_closed() for s in bot.shards.values())
        return bot.ws is not None

    def latency(self) -> float:
        """Seconds of the gateway heartbeat round trip (nan before the first)."""
        return self._bot.latency if self._bot is not None else float("nan")


def sees_presence(bot: discord.Client) -> bool:
    """Whether Discord sends ``bot`` members' statuses (both privileged intents)."""
    return bot.intents.presences and bot.intents.members


__all__ = ["DiscordConnection", "sees_presence"]
