"""The bot itself: a ``commands.AutoShardedBot`` given its services whole, that loads the cogs
(each gets its services in ``setup``), syncs the commands and handles every command error."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands
from discord.gateway import DiscordWebSocket
from discord.shard import Shard

from bot.aio.retry import backoff_delays
from bot.gateway.connect import describe_failure, format_wait
from bot.gateway.connection import sees_presence
from bot.gateway.interactions import command_outcome_for, handle_interaction_error
from bot.services import Services
from bot.shards import IdentifyGate

log = logging.getLogger(__name__)

EXTENSIONS = (
    "cogs.linking",
    "cogs.nowplaying",
    "cogs.privacy",
    "cogs.autopost",
    "cogs.presence",
    "cogs.listening",
    "cogs.chart",
)


def intents_for(presence: bool) -> discord.Intents:
    """Only what the bot uses: guilds (channels, permissions). Presence adds the two
    privileged intents: without members, presence updates for uncached members are dropped."""
    intents = discord.Intents.none()
    intents.guilds = True
    if presence:
        intents.presences = True
        intents.members = True
    return intents


class BotTree(app_commands.CommandTree["NowPlayingBot"]):
    async def on_error(
        self, interaction: discord.Interaction[NowPlayingBot], error: app_commands.AppCommandError
    ) -> None:
        self.client.record_command_outcome(interaction, command_outcome_for(error))
        await handle_interaction_error(interaction, error)


class NowPlayingBot(commands.AutoShardedBot):
    """Runs the shards SHARD_IDS of SHARD_COUNT (one connection each), or every shard of
    Discord's recommended count. ``presence``: ask for the privileged intents (the starter
    decides, from the Developer Portal's switches); ``identify_gate``: IDENTIFY turns shared
    with the other processes of the bot (several processes on PostgreSQL)."""

    def __init__(
        self,
        services: Services,
        *,
        presence: bool,
        identify_gate: IdentifyGate | None = None,
        **options: Any,
    ) -> None:
        # The bot never joins voice; don't warn self-hosters about missing voice libraries.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        settings = services.settings
        if settings.shard_count is not None:
            options.setdefault("shard_count", settings.shard_count)
            options.setdefault("shard_ids", list(settings.shard_ids or range(settings.shard_count)))
        options.setdefault("intents", intents_for(presence))
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            tree_cls=BotTree,
            **options,
        )
        self.services = services
        self._identify_gate = identify_gate

    async def close(self) -> None:
        # discord.py makes the shards' event queue at login; a bot closed before it ever
        # logged in (Discord unreachable at start, then a shutdown) has none yet, and
        # AutoShardedClient.close would fail on it instead of closing.
        if not hasattr(self, "_AutoShardedClient__queue"):
            self._AutoShardedClient__queue: asyncio.PriorityQueue[Any] = asyncio.PriorityQueue()
        await super().close()

    @property
    def sees_presence(self) -> bool:
        """Whether Discord sends this bot members' statuses (both privileged intents)."""
        return sees_presence(self)

    @property
    def syncs_commands(self) -> bool:
        """Only the process running shard 0 (or every shard) syncs the slash commands."""
        return self.shard_ids is None or 0 in self.shard_ids

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        if self._identify_gate is None:
            await super().before_identify_hook(shard_id, initial=initial)
            return
        await self._identify_gate.wait_turn(shard_id or 0)

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            # A login retried after a network failure runs this hook again.
            if extension not in self.extensions:
                await self.load_extension(extension)
        if not self.syncs_commands:
            log.info("The shard-0 process syncs the commands; this one serves its own shards")
            return
        guild_id = self.services.settings.dev_guild_id
        if guild_id is not None:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("Synced %d commands to server %s", len(synced), guild_id)
        else:
            synced = await self.tree.sync()
            log.info(
                "Synced %d global commands (Discord may take up to an hour to show them; set "
                "DEV_GUILD_ID to a server's id to see them there at once)",
                len(synced),
            )

    async def on_ready(self) -> None:
        user = self.user
        count = len(self.guilds)
        log.info(
            "Connected to Discord as %s (%s) in %d %s",
            user,
            user.id if user else "?",
            count,
            "server" if count == 1 else "servers",
        )

    async def on_app_command_completion(
        self,
        interaction: discord.Interaction[Any],
        command: app_commands.Command[Any, ..., Any] | app_commands.ContextMenu,
    ) -> None:
        self.record_command_outcome(interaction, "ok")

    def record_command_outcome(self, interaction: discord.Interaction[Any], outcome: str) -> None:
        metrics = self.services.metrics
        if metrics is None:
            return
        command = interaction.command.qualified_name if interaction.command else "unknown"
        try:
            metrics.command_completed(command, outcome)
        except Exception:  # a metrics bug must not change what the member sees
            log.exception("command outcome hook failed")

    async def launch_shard(
        self, gateway: yarl.URL, shard_id: int, *, initial: bool = False
    ) -> None:
        """discord.py's own, with a quiet retry: a gateway that is not up yet is one WARNING
        line and a backoff (discord.py logs a traceback and waits 5 s each time)."""
        delays = backoff_delays()
        while True:
            try:
                connecting = DiscordWebSocket.from_client(
                    self, initial=initial, gateway=gateway, shard_id=shard_id
                )
                ws = await asyncio.wait_for(connecting, timeout=self.shard_connect_timeout)
                break
            except Exception as exc:
                if self.is_closed():
                    raise
                delay = next(delays)
                logging.getLogger("bot.gateway.connect").warning(
                    "Could not connect to the Discord gateway (%s); retrying in %s",
                    describe_failure(exc),
                    format_wait(delay),
                )
                await asyncio.sleep(delay)
                initial = False
        shards: dict[int, Shard] = self._AutoShardedClient__shards  # type: ignore[attr-defined]
        queue = self._AutoShardedClient__queue
        shards[shard_id] = shard = Shard(ws, self, queue.put_nowait)
        shard.launch()
