"""Start-up and shutdown in one place: settings -> session, database, cipher, services,
web server and bot; everything is closed in reverse order, whatever stopped the bot."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import sqlite3
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import aiohttp
import discord
from aiohttp import web

from bot.autopost.config import AutopostConfig, SchedulerConfig
from bot.autopost.discord_side import DiscordPySide
from bot.autopost.outbox import OutboxDiscordSide, OutboxSender
from bot.autopost.ports import PostAction
from bot.autopost.scheduler import PollScheduler
from bot.autopost.service import AutopostService
from bot.config import Settings
from bot.crypto import TokenCipher
from bot.errors import StartupError
from bot.gateway.client import NowPlayingBot, create_bot
from bot.gateway.connect import DiscordStarter, point_discord_at
from bot.linking.completion import PendingLinkCompleter
from bot.linking.service import LinkService
from bot.listening.log import AutopostFeed, ListeningLog
from bot.listening.spotify import SpotifyListening
from bot.logs import SecretMasker
from bot.metrics import Metrics
from bot.nowplaying.renderer import NowPlayingRenderer
from bot.pictures.charts import ChartRenderer
from bot.pictures.colours import CoverColours
from bot.pictures.images import ImageFetcher
from bot.privacy import PrivacyService
from bot.services import PlaybackService, Services
from bot.shards import (
    IDENTIFY_INTERVAL,
    IdentifyGate,
    MemberChangeRelay,
    SharedRequestCount,
    SharedSpotifyHold,
)
from bot.shards.presence import PresenceCoverRelay, guild_filter
from bot.spotify.api import SpotifyApi
from bot.spotify.auth import SpotifyAuth
from bot.spotify.http import SpotifySender
from bot.spotify.models import CurrentlyPlaying
from bot.storage import Storage
from bot.storage.connect import DatabaseRefused, connect_with_retry
from bot.storage.migrations import SchemaVersionError
from bot.storage.secrets import report_unreadable_secrets
from bot.tokens import TokenManager
from bot.web.access import runner_options
from bot.web.server import WebDependencies, create_app

log = logging.getLogger(__name__)

# discord.py names the tasks that run slash commands and component/modal callbacks so.
INTERACTION_TASK_PREFIXES = ("CommandTree-invoker", "discord-ui-")
INTERACTION_DRAIN_SECONDS = 3.0


class DatabaseSettingRejected(StartupError):
    """The database refused DATABASE_URL (user, password, database name): a bad setting."""

    exit_status = 2


class Application:
    """Owns every resource. ``async with Application(settings):`` starts the web server and
    connects the bot; leaving the block shuts everything down cleanly."""

    def __init__(
        self,
        settings: Settings,
        *,
        masker: SecretMasker | None = None,
        autopost_config: AutopostConfig | None = None,
        command: str = "nowplaying-bot",
        identify_interval: float = IDENTIFY_INTERVAL,
        **bot_options: Any,
    ) -> None:
        self.settings = settings
        # Seconds an IDENTIFY keeps its bucket across processes (Discord: 5; tests: shorter).
        self.identify_interval = identify_interval
        self.masker = masker
        self.command = command  # how the self-hoster runs the CLI, named in log hints
        # Default: the scheduler's defaults with SPOTIFY_REQUEST_BUDGET; tests pass short intervals.
        self.autopost_config = autopost_config or AutopostConfig(
            scheduler=SchedulerConfig(budget_per_window=settings.spotify_request_budget)
        )
        self._bot_options = bot_options
        self._stack = contextlib.AsyncExitStack()
        self._bot_task: asyncio.Task[None] | None = None
        self.bot: NowPlayingBot
        self.services: Services
        self.web_runner: web.AppRunner
        self.web_port: int = settings.web_port
        self.outbox_sender: OutboxSender | None = None
        self.spotify_sender: SpotifySender
        self._note_request: Callable[[float], None] = lambda _now: None

    async def __aenter__(self) -> Application:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _start(self) -> None:
        settings = self.settings
        session = await self._stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        )
        storage = await _open_storage(settings)
        self._stack.push_async_callback(storage.close)
        images = ImageFetcher(session, image_base=settings.spotify_image_base)
        colours = CoverColours(images, storage.colours)
        self._stack.push_async_callback(colours.close)  # before the database closes
        charts = ChartRenderer()
        self._stack.callback(charts.close)
        cipher = TokenCipher(settings.token_encryption_keys)
        await report_unreadable_secrets(storage.links, cipher, self.command)
        metrics = Metrics() if settings.metrics_enabled else None
        sender = SpotifySender(session, on_response=metrics.spotify_response if metrics else None)
        self.spotify_sender = sender
        if storage.dialect == "postgresql":  # a 429 to one process holds them all
            shared_hold = SharedSpotifyHold(storage, sender)
            await self._stack.enter_async_context(shared_hold.listening())
            self._stack.push_async_callback(shared_hold.close)
        auth = SpotifyAuth(
            sender,
            client_id=settings.spotify_client_id,
            client_secret=settings.spotify_client_secret,
            redirect_uri=settings.spotify_redirect_uri,
            accounts_base=settings.spotify_accounts_base,
        )
        api = SpotifyApi(sender, api_base=settings.spotify_api_base)
        tokens = TokenManager(
            storage, cipher, auth, on_refresh=metrics.token_refresh if metrics else None
        )
        if self.masker is not None:
            tokens.register_secret_listener(self.masker.add_secret)
        links = LinkService(
            storage, auth, api, tokens, cipher, hold_remaining=sender.hold_remaining
        )
        completer = PendingLinkCompleter(
            storage.link_states, cipher, auth, api, links, hold_remaining=sender.hold_remaining
        )
        links.add_pending_listener(completer.wake)
        scheduler = PollScheduler(self.autopost_config.scheduler)
        # Interactive /np counts toward the polling budget, and is never held back by it.
        note_request = scheduler.note_request
        shared_count: SharedRequestCount | None = None
        if storage.dialect == "postgresql":  # the budget is the app's, whichever process asks

            def leads() -> bool:
                autopost = getattr(self, "services", None)
                return autopost is not None and autopost.autopost.leadership.is_leader

            shared_count = SharedRequestCount(
                storage, scheduler.note_request, leads, clock=time.monotonic
            )
            await self._stack.enter_async_context(shared_count.listening())
            self._stack.push_async_callback(shared_count.close)
            note_request = shared_count.note_request
        self._note_request = note_request
        playback = PlaybackService(tokens, api, on_request=note_request)
        if metrics is not None:
            metrics.watch_links(links)
            await self._stack.enter_async_context(
                metrics.linked_members_refresher(storage.links.count_links)
            )
        privacy = PrivacyService(storage.privacy)
        await privacy.start()

        async def poll(member_id: int) -> CurrentlyPlaying:
            return await tokens.call(member_id, api.currently_playing)

        def build_services(client: discord.Client) -> Services:
            """Every service, whole, before the bot loads a cog (the auto-poster posts
            through the bot's own connection)."""
            # Posts go through the outbox (sent once, by whichever process can).
            outbox = OutboxDiscordSide(DiscordPySide(client), storage)
            self.outbox_sender = OutboxSender(storage, outbox)
            autopost = AutopostService(
                storage,
                poll,
                outbox,
                scheduler=scheduler,
                config=self.autopost_config,
                hold=sender,
                on_post=_autopost_metrics(metrics) if metrics is not None else None,
                on_gap=metrics.autopost_unseen_gap if metrics is not None else None,
                is_private=privacy.is_private_now,
                renderer=NowPlayingRenderer(colours),
                # Presences are posted by the process they arrive in, in its own guilds.
                serves_guild=guild_filter(settings.shard_count, settings.shard_ids),
            )
            return Services(
                settings=settings,
                storage=storage,
                cipher=cipher,
                tokens=tokens,
                links=links,
                playback=playback,
                autopost=autopost,
                privacy=privacy,
                metrics=metrics,
                images=images,
                colours=colours,
                charts=charts,
            )

        # The REST base now; the gateway address once /gateway/bot answers (bot.gateway.connect).
        point_discord_at(settings.discord_api_base, None)

        self.bot = create_bot(settings, build_services, **self._bot_options)
        self.services = self.bot.services
        autopost = self.services.autopost
        if storage.dialect == "postgresql":  # other processes may share this bot
            gate = IdentifyGate(
                storage.named_lock, self._max_concurrency, interval=self.identify_interval
            )
            self.bot.identify_gate = gate
            self._stack.push_async_callback(gate.close)
        self._stack.push_async_callback(self._close_bot)
        if metrics is not None:
            self.bot.command_outcome_hook = metrics.command_completed
            metrics.set_gateway_latency_source(lambda: self.bot.latency)
            metrics.watch_spotify(sender.requests_in_window, sender.hold_remaining)
            metrics.watch_autopost_stretch(autopost.skip_check_stretch)
        self._stack.push_async_callback(autopost.stop)  # stops before the bot and storage close
        links.add_linked_listener(autopost.member_linked)
        links.add_unlinked_listener(autopost.member_unlinked)
        privacy.add_private_listener(autopost.member_went_private)
        privacy.add_server_listener(autopost.member_went_public)
        if storage.dialect == "postgresql":  # other processes may share this bot

            def unlinked_elsewhere(member_id: int) -> None:
                tokens.forget(member_id)
                autopost.member_unlinked(member_id)

            relay = MemberChangeRelay(
                storage,
                on_linked=autopost.member_linked,
                on_unlinked=unlinked_elsewhere,
                on_visibility=privacy.reload,
                on_settings=autopost.reload_settings,
            )
            autopost.add_settings_listener(relay.settings_changed)
            links.add_linked_listener(relay.linked)
            links.add_unlinked_listener(relay.unlinked)
            privacy.add_private_listener(relay.visibility_changed)
            privacy.add_server_listener(relay.visibility_changed)
            await self._stack.enter_async_context(relay.listening())
            self._stack.push_async_callback(relay.close)
            # The leader polls nobody a presence covers, whichever process heard it.
            covers = PresenceCoverRelay(storage, autopost.coverage)
            await self._stack.enter_async_context(covers.running())
        await self._start_listening_log(storage, tokens, api, scheduler, autopost)

        app = create_app(
            WebDependencies(
                links=links,
                redirect_path=settings.redirect_path,
                database_ok=storage.ping,
                gateway_ok=self.bot.gateway_connected,
                metrics=metrics.render if metrics else None,
            )
        )
        self.web_runner = web.AppRunner(app, handle_signals=False, **runner_options())
        await self.web_runner.setup()
        self._stack.push_async_callback(self.web_runner.cleanup)
        site = web.TCPSite(self.web_runner, settings.web_host, settings.web_port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"WEB_PORT: cannot listen on {settings.web_host}:{settings.web_port} "
                f"({exc.strerror})"
            ) from exc
        self.web_port = _bound_port(self.web_runner, settings.web_port)
        log.info("Web server listening on %s:%s", settings.web_host, self.web_port)

        # Discord may not be reachable yet: log in and connect in the background, retrying,
        # while the web server already answers (/healthz says "degraded" until the gateway is up).
        starter = DiscordStarter(
            self.bot, session, token=settings.discord_token, api_base=settings.discord_api_base
        )
        self._bot_task = asyncio.create_task(starter.run(), name="discord-gateway")
        await autopost.start()  # its loop waits for the gateway to be ready
        if self.outbox_sender is not None:  # sends what the outbox holds unsent, in any process
            await self._stack.enter_async_context(self.outbox_sender.listening())
            self.outbox_sender.start()
            self._stack.push_async_callback(self.outbox_sender.stop)
        # Links that waited for a Spotify hold (also from before a restart) finish now.
        completer.start()
        self._stack.push_async_callback(completer.stop)

    async def _max_concurrency(self) -> int:
        """How many sessions Discord lets the bot start per 5 s (``/gateway/bot``)."""
        _, _, limits = await self.bot.http.get_bot_gateway()
        return int(limits.get("max_concurrency", 1))

    async def _start_listening_log(
        self,
        storage: Storage,
        tokens: TokenManager,
        api: SpotifyApi,
        scheduler: PollScheduler,
        autopost: AutopostService,
    ) -> ListeningLog:
        """The listening log, fed by every source that observes a play (see bot.listening.log)."""
        services = self.services

        async def recently_played(member_id: int, after_ms: int | None) -> Any:
            return await listening.recently_played(member_id, after_ms)

        history = ListeningLog(
            storage,
            services.privacy,
            keep_days=self.settings.listening_log_days,
            recently_played=recently_played,
        )
        listening = SpotifyListening(
            tokens, api, storage.links, history, on_request=self._note_request
        )
        services.history = history
        services.listening = listening
        feed = AutopostFeed(history)
        autopost.add_play_listener(feed.on_play)
        autopost.add_gap_listener(feed.on_gap)
        services.playback.add_listener(feed.on_np)
        services.links.add_unlinked_listener(history.member_unlinked)
        services.links.add_linked_listener(history.member_linked)
        services.privacy.add_private_listener(history.member_went_private)
        services.privacy.add_server_listener(history.member_went_public)
        await history.start()
        self._stack.push_async_callback(history.stop)
        return history

    @property
    def bot_task(self) -> asyncio.Task[None] | None:
        return self._bot_task

    async def _close_bot(self) -> None:
        # Let commands, buttons and modals already running answer their member (and finish
        # their own follow-ups) before the HTTP session goes away; then close the gateway.
        running = [
            task
            for task in asyncio.all_tasks()
            if task.get_name().startswith(INTERACTION_TASK_PREFIXES) and not task.done()
        ]
        if running:
            await asyncio.wait(running, timeout=INTERACTION_DRAIN_SECONDS)
        await self.bot.close()
        if self._bot_task is not None:
            if not self._bot_task.done():
                self._bot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._bot_task

    async def close(self) -> None:
        await self._stack.aclose()

    async def run_until_stopped(self) -> None:
        """Run until SIGINT/SIGTERM or until the bot stops on its own."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.create_task(stop.wait())
        try:
            tasks: list[asyncio.Task[Any]] = [waiter]
            if self._bot_task is not None:
                tasks.append(self._bot_task)
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                log.info("Shutting down")
            elif self._bot_task is not None and self._bot_task.exception() is not None:
                raise self._bot_task.exception()  # type: ignore[misc]
        finally:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.remove_signal_handler(sig)


async def _open_storage(settings: Settings) -> Storage:
    """SQLite: open the file. PostgreSQL: keep trying while the server cannot be reached."""
    if settings.database_url is not None:
        shown = settings.database_shown
        try:
            return await connect_with_retry(
                lambda: Storage.open(settings.database_target), shown_url=shown
            )
        except DatabaseRefused as exc:
            raise DatabaseSettingRejected(str(exc)) from exc
        except SchemaVersionError as exc:
            raise StartupError(
                f"DATABASE_URL: {shown} was written by a newer version of the bot; upgrade the "
                "bot (or restore a backup)"
            ) from exc
    try:
        return await Storage.open(settings.database_path)
    except SchemaVersionError as exc:
        raise StartupError(
            f"DATABASE_PATH: {settings.database_path} was written by a newer version of the "
            "bot; upgrade the bot (or restore a backup)"
        ) from exc
    except (OSError, sqlite3.Error) as exc:
        raise StartupError(f"DATABASE_PATH: cannot open {settings.database_path} ({exc})") from exc


def _autopost_metrics(metrics: Metrics) -> Callable[[PostAction, float], None]:
    def on_post(action: PostAction, lag: float) -> None:
        metrics.autopost_post(action)
        if not math.isnan(lag):
            metrics.observe_autopost_lag(lag)

    return on_post


def _bound_port(runner: web.AppRunner, fallback: int) -> int:
    for site_address in runner.addresses:
        if isinstance(site_address, tuple) and len(site_address) >= 2:
            return int(site_address[1])
    return fallback
