"""The ``commands.Bot`` subclass: holds the services, loads the cogs, handles command errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands
from discord.gateway import DiscordWebSocket
from discord.shard import Shard

from bot.aio.retry import backoff_delays
from bot.config import Settings
from bot.gateway.connect import describe_failure, format_wait
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

# Called with (command name, outcome) after every slash command: the metrics counter.
CommandOutcomeHook = Callable[[str, str], None]


def intents_for(enable_presence: bool) -> discord.Intents:
    """Only what the bot uses: guilds (channels, permissions). Presence mode adds the two
    privileged intents: without members, presence updates for uncached members are dropped."""
    intents = discord.Intents.none()
    intents.guilds = True
    if enable_presence:
        intents.presences = True
        intents.members = True
    return intents


class BotTree(app_commands.CommandTree["NowPlayingBot"]):
    async def on_error(
        self, interaction: discord.Interaction[NowPlayingBot], error: app_commands.AppCommandError
    ) -> None:
        self.client.record_command_outcome(interaction, command_outcome_for(error))
        await handle_interaction_error(interaction, error)


class NowPlayingBot(commands.Bot):
    """``build_services(bot)`` builds every service, whole, as the bot is made: some of them
    talk to Discord through this client, and every cog gets them when ``setup_hook`` loads it."""

    def __init__(
        self,
        settings: Settings,
        build_services: Callable[[discord.Client], Services],
        **options: Any,
    ) -> None:
        # The bot never joins voice; don't warn self-hosters about missing voice libraries.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        options.setdefault("intents", intents_for(settings.enable_presence))
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            tree_cls=BotTree,
            **options,
        )
        self.services = build_services(self)
        self.command_outcome_hook: CommandOutcomeHook | None = None
        # Set when several processes share the bot: IDENTIFY turns across all of them.
        self.identify_gate: IdentifyGate | None = None

    @property
    def syncs_commands(self) -> bool:
        """Only the process running shard 0 (or an unsharded one) syncs the slash commands."""
        shard_ids = getattr(self, "shard_ids", None)
        return shard_ids is None or 0 in shard_ids

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        if self.identify_gate is None:
            await super().before_identify_hook(shard_id, initial=initial)
            return
        await self.identify_gate.wait_turn(shard_id or 0)

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
            log.info("Synced %d global commands (may take up to an hour to appear)", len(synced))

    async def on_ready(self) -> None:
        user = self.user
        log.info(
            "Connected to Discord as %s (%s) in %d servers",
            user,
            user.id if user else "?",
            len(self.guilds),
        )

    async def on_app_command_completion(
        self,
        interaction: discord.Interaction[Any],
        command: app_commands.Command[Any, ..., Any] | app_commands.ContextMenu,
    ) -> None:
        self.record_command_outcome(interaction, "ok")

    def record_command_outcome(self, interaction: discord.Interaction[Any], outcome: str) -> None:
        if self.command_outcome_hook is None:
            return
        command = interaction.command.qualified_name if interaction.command else "unknown"
        try:
            self.command_outcome_hook(command, outcome)
        except Exception:  # a metrics bug must not change what the member sees
            log.exception("command outcome hook failed")

    def gateway_connected(self) -> bool:
        return self.is_ready() and not self.is_closed() and self.ws is not None


class ShardedNowPlayingBot(NowPlayingBot, commands.AutoShardedBot):
    """The same bot running the shards SHARD_IDS of SHARD_COUNT (one connection each), or
    every shard of Discord's recommended count."""

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
        queue = self._AutoShardedClient__queue  # type: ignore[attr-defined]
        shards[shard_id] = shard = Shard(ws, self, queue.put_nowait)
        shard.launch()

    def gateway_connected(self) -> bool:
        shards = self.shards
        return (
            self.is_ready()
            and not self.is_closed()
            and bool(shards)
            and all(not shard.is_closed() for shard in shards.values())
        )


def create_bot(
    settings: Settings, build_services: Callable[[discord.Client], Services], **options: Any
) -> NowPlayingBot:
    """Every shard in this process unless SHARD_IDS names some: SHARD_COUNT unset takes
    Discord's recommended count (``GET /gateway/bot``), as many connections as it says."""
    if settings.shard_count is None:
        return ShardedNowPlayingBot(settings, build_services, **options)
    shard_ids = list(settings.shard_ids or range(settings.shard_count))
    return ShardedNowPlayingBot(
        settings,
        build_services,
        shard_count=settings.shard_count,
        shard_ids=shard_ids,
        **options,
    )
