"""Start-up and shutdown in one place.

``Application`` builds every service whole before any bot exists (resources first: the HTTP
session, the database, the cipher, Spotify; then the services; then the web server), hands
them to the starter, which builds the bot with them and connects it in the background, and
closes everything in reverse order, whatever stopped the bot. Each feature wires the events
it listens to in one function of its own (``follow_members``, ``feed_listening_log``...).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp

from bot.aio.signals import stop_on_signals
from bot.aio.tasks import cancel_and_wait
from bot.autopost.config import AutopostConfig, SchedulerConfig
from bot.autopost.discord_side import DiscordPySide
from bot.autopost.leadership import Leadership
from bot.autopost.outbox import OutboxDiscordSide, OutboxSender
from bot.autopost.scheduler import PollScheduler
from bot.autopost.service import AutopostService
from bot.client import NowPlayingBot
from bot.config import Settings
from bot.crypto import TokenCipher
from bot.errors import StartupError
from bot.gateway.connect import DiscordStarter, fetch_gateway_info, point_discord_at
from bot.gateway.connection import DiscordConnection
from bot.gateway.direct_messages import DirectMessages
from bot.gateway.members import GuildMembers
from bot.linking.completion import PendingLinkCompleter
from bot.linking.service import LinkService
from bot.listening.chart import TopChart
from bot.listening.log import ListeningLog, feed_listening_log
from bot.listening.recap import RecapPictures
from bot.listening.server import ServerListening
from bot.listening.spotify import SpotifyListening
from bot.logs import SecretMasker
from bot.members.events import MemberEvents
from bot.members.privacy import PrivacyService
from bot.members.spotify import MemberSpotify
from bot.members.tokens import TokenManager
from bot.metrics import Metrics
from bot.nowplaying.renderer import NowPlayingRenderer
from bot.nowplaying.service import PlaybackService
from bot.nowplaying.status import spotify_activity
from bot.pictures.charts import ChartRenderer
from bot.pictures.colours import CoverColours
from bot.pictures.images import ImageFetcher
from bot.services import Services
from bot.shards import (
    IDENTIFY_INTERVAL,
    IdentifyGate,
    MemberChangeRelay,
    SharedRequestCount,
    SharedSpotifyHold,
)
from bot.shards.budget import BudgetSync
from bot.shards.presence import PresenceCoverRelay, guild_filter
from bot.spotify.api import SpotifyApi
from bot.spotify.auth import SpotifyAuth
from bot.spotify.budget import DailyBudget
from bot.spotify.credentials import report_refused_credentials
from bot.spotify.fair_use import FairUse, FairUseLimits
from bot.spotify.http import SpotifySender
from bot.spotify.models import CurrentlyPlaying
from bot.storage import Storage
from bot.storage.connect import open_storage
from bot.storage.secrets import report_unreadable_secrets
from bot.web.access import runner_options
from bot.web.connections import WebListener, connection_limit
from bot.web.server import WebDependencies, create_app

log = logging.getLogger(__name__)

# discord.py names the tasks that run slash commands and component/modal callbacks so.
INTERACTION_TASK_PREFIXES = ("CommandTree-invoker", "discord-ui-")
INTERACTION_DRAIN_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class StartOptions:
    """How this start differs from the defaults (the command line, tests, benchmarks)."""

    masker: SecretMasker | None = None  # learns secrets that appear at run time
    autopost: AutopostConfig | None = None  # None: the defaults with SPOTIFY_REQUEST_BUDGET
    command: str = "nowplaying-bot"  # how the self-hoster runs the CLI, named in log hints
    identify_interval: float = IDENTIFY_INTERVAL  # seconds an IDENTIFY keeps its bucket
    fair_use: FairUseLimits = field(default_factory=FairUseLimits)  # benches of one path lift it
    bot_options: dict[str, Any] = field(default_factory=dict)  # for discord.py's constructor


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
        fair_use: FairUseLimits | None = None,
        **bot_options: Any,
    ) -> None:
        self.settings = settings
        self._options = StartOptions(
            masker,
            autopost_config,
            command,
            identify_interval,
            fair_use or FairUseLimits(),
            dict(bot_options),
        )
        self._stack = contextlib.AsyncExitStack()
        self.services: Services
        self.web_port: int = settings.web_port
        self.web: WebListener | None = None  # the web server, once it listens
        self._bot_task: asyncio.Task[None] | None = None

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

    @property
    def bot(self) -> NowPlayingBot:
        """The current bot (the starter builds it as soon as Discord says which intents)."""
        bot = self.services.discord.bot
        assert isinstance(bot, NowPlayingBot), "the bot is built once the starter runs"
        return bot

    # --- start-up ------------------------------------------------------------------------

    async def _start(self) -> None:
        session = await self._stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        )
        storage = await open_storage(self.settings)
        self._stack.push_async_callback(storage.close)
        self.services = await self._build_services(session, storage)
        await self._share_with_other_processes()
        await self._serve_web()
        self._connect_discord(session)
        await self._start_background_work()

    async def _build_services(self, session: aiohttp.ClientSession, storage: Storage) -> Services:
        settings, options, stack = self.settings, self._options, self._stack
        cipher = TokenCipher(settings.token_encryption_keys)
        await report_unreadable_secrets(storage.sealed, cipher, options.command)
        metrics = Metrics() if settings.metrics_enabled else None
        budget = DailyBudget(settings.spotify_daily_budget)
        sender = SpotifySender(
            session, on_response=metrics.spotify_response if metrics else None, budget=budget
        )
        # Every process's count, and a hold kept from before a restart, before any call.
        budget_sync = BudgetSync(
            storage.spotify_budget, budget, sender, client_id=settings.spotify_client_id
        )
        await stack.enter_async_context(budget_sync.running())
        auth = SpotifyAuth(
            sender,
            client_id=settings.spotify_client_id,
            client_secret=settings.spotify_client_secret,
            redirect_uri=settings.spotify_redirect_uri,
            accounts_base=settings.spotify_accounts_base,
        )
        # A wrong id or secret shows in the log now, not at a member's first /link.
        check = asyncio.create_task(
            report_refused_credentials(auth, settings.spotify_client_id), name="spotify-check"
        )
        stack.push_async_callback(cancel_and_wait, [check])
        api = SpotifyApi(sender, api_base=settings.spotify_api_base)
        events = MemberEvents()
        discord = DiscordConnection()

        tokens = TokenManager(
            storage, cipher, auth, on_refresh=metrics.token_refresh if metrics else None
        )
        tokens.follow_members(events)
        if options.masker is not None:
            tokens.register_secret_listener(options.masker.add_secret)
        privacy = PrivacyService(storage.privacy, events)
        await privacy.start()
        links = LinkService(storage, auth, api, tokens, cipher, events)
        links.add_notice_listener(DirectMessages(discord).send)
        completer = PendingLinkCompleter(
            storage.link_states, cipher, auth, api, links, hold_remaining=sender.hold_remaining
        )

        autopost_config = options.autopost or AutopostConfig(
            scheduler=SchedulerConfig(budget_per_window=settings.spotify_request_budget)
        )
        scheduler = PollScheduler(autopost_config.scheduler)
        leadership = Leadership(storage)
        # Interactive calls count toward the polling budget, and are never held back by it;
        # with several processes the leader's scheduler counts everyone's.
        note_request = scheduler.note_request
        if storage.dialect == "postgresql":
            shared_count = SharedRequestCount(
                storage, scheduler.note_request, lambda: leadership.is_leader, clock=time.monotonic
            )
            await stack.enter_async_context(shared_count.listening())
            stack.push_async_callback(shared_count.close)
            note_request = shared_count.note_request
        # Every call a command (or the listening log) makes for a member: one counted path.
        member_spotify = MemberSpotify(
            tokens,
            api,
            storage.links,
            on_request=note_request,
            fair_use=FairUse(budget.effective, options.fair_use),
        )
        playback = PlaybackService(member_spotify)

        images = ImageFetcher(session, image_base=settings.spotify_image_base)
        colours = CoverColours(images, storage.colours)
        stack.push_async_callback(colours.close)  # before the database closes
        charts = ChartRenderer()
        stack.callback(charts.close)
        renderer = NowPlayingRenderer(colours)

        poll_currently_playing = functools.partial(api.currently_playing, purpose="poll")

        async def poll(member_id: int) -> CurrentlyPlaying:
            return await tokens.call(member_id, poll_currently_playing, purpose="poll")

        def shows_spotify(member_id: int) -> bool:
            member = discord.cached_member(member_id)
            return member is not None and spotify_activity(member.activities) is not None

        # Posts go through the outbox: sent once, by whichever process can.
        posting_side = OutboxDiscordSide(DiscordPySide(discord), storage)
        autopost = AutopostService(
            storage,
            poll,
            posting_side,
            renderer=renderer,
            scheduler=scheduler,
            config=autopost_config,
            hold=sender,
            on_post=metrics.autopost_post_listener() if metrics is not None else None,
            on_gap=metrics.autopost_unseen_gap if metrics is not None else None,
            is_private=privacy.is_private_now,
            leadership=leadership,
            # Presences are posted by the process they arrive in, in its own guilds.
            serves_guild=guild_filter(settings.shard_count, settings.shard_ids),
            shows_spotify=shows_spotify,
            daily_allowance=budget,
        )
        autopost.follow_members(events)

        history = ListeningLog(
            storage,
            privacy,
            keep_days=settings.listening_log_days,
            recently_played=member_spotify.recently_played,
        )
        feed_listening_log(history, events, autopost, playback)
        listening = SpotifyListening(member_spotify, history)
        server_listening = ServerListening(
            history, storage.listening, privacy, GuildMembers(discord)
        )
        server_listening.follow_members(events)

        if metrics is not None:
            metrics.watch_links(events)
            await stack.enter_async_context(
                metrics.linked_members_refresher(storage.links.count_links)
            )
            metrics.set_gateway_latency_source(discord.latency)
            metrics.watch_spotify(sender.requests_in_window, sender.hold_remaining)
            metrics.watch_daily_budget(budget)
            metrics.watch_autopost_stretch(autopost.skip_check_stretch)
        return Services(
            settings=settings,
            storage=storage,
            cipher=cipher,
            spotify=sender,
            budget=budget,
            discord=discord,
            events=events,
            tokens=tokens,
            privacy=privacy,
            links=links,
            completer=completer,
            playback=playback,
            renderer=renderer,
            colours=colours,
            autopost=autopost,
            outbox=OutboxSender(storage, posting_side),
            history=history,
            server_listening=server_listening,
            listening=listening,
            top_chart=TopChart(listening, images, charts),
            recap_pictures=RecapPictures(images, charts),
            metrics=metrics,
        )

    async def _share_with_other_processes(self) -> None:
        """With PostgreSQL other processes may run the same bot: one 429 hold for all, member
        changes and presence covers told to the others."""
        services, stack = self.services, self._stack
        storage = services.storage
        if storage.dialect != "postgresql":
            return
        shared_hold = SharedSpotifyHold(storage, services.spotify)
        await stack.enter_async_context(shared_hold.listening())
        stack.push_async_callback(shared_hold.close)
        relay = MemberChangeRelay(
            storage,
            services.events,
            on_visibility=services.privacy.reload,
            on_settings=services.autopost.reload_settings,
        )
        services.autopost.add_settings_listener(relay.settings_changed)
        await stack.enter_async_context(relay.listening())
        stack.push_async_callback(relay.close)
        # The leader polls nobody a presence covers, whichever process heard it.
        covers = PresenceCoverRelay(storage, services.autopost.coverage)
        await stack.enter_async_context(covers.running())

    async def _serve_web(self) -> None:
        settings, services = self.settings, self.services
        app = create_app(
            WebDependencies(
                links=services.links,
                redirect_path=settings.redirect_path,
                database_ok=services.storage.ping,
                gateway_ok=services.discord.gateway_connected,
                spotify_state=services.budget.state,
                presence=lambda: services.discord.presence,
                metrics=services.metrics.render if services.metrics else None,
            )
        )
        # A quarter of the descriptors at most: the rest are for Discord, Spotify, the database.
        listener = WebListener(
            app, max_connections=connection_limit(), runner_options=runner_options()
        )
        self._stack.push_async_callback(listener.close)
        self.web = listener
        try:
            self.web_port = await listener.start(settings.web_host, settings.web_port)
        except OSError as exc:
            raise StartupError(
                f"WEB_PORT: cannot listen on {settings.web_host}:{settings.web_port} "
                f"({exc.strerror})"
            ) from exc
        log.info("Web server listening on %s:%s", settings.web_host, self.web_port)

    def _connect_discord(self, session: aiohttp.ClientSession) -> None:
        """Build the bot with the services and connect it in the background, retrying, while
        the web server already answers (/healthz says "degraded" until the gateway is up)."""
        settings, services, options = self.settings, self.services, self._options
        identify_gate: IdentifyGate | None = None
        if services.storage.dialect == "postgresql":  # IDENTIFY turns across the processes

            async def max_concurrency() -> int:
                info = await fetch_gateway_info(
                    session, settings.discord_api_base, settings.discord_token
                )
                return info.max_concurrency

            identify_gate = IdentifyGate(
                services.storage.named_lock, max_concurrency, interval=options.identify_interval
            )
            self._stack.push_async_callback(identify_gate.close)

        def build(presence: bool) -> NowPlayingBot:
            return NowPlayingBot(
                services, presence=presence, identify_gate=identify_gate, **options.bot_options
            )

        # The REST base now; the gateway address once /gateway/bot answers.
        point_discord_at(settings.discord_api_base, None)
        starter = DiscordStarter(
            services.discord,
            build,
            session,
            token=settings.discord_token,
            api_base=settings.discord_api_base,
            presence=settings.enable_presence,
        )
        self._stack.push_async_callback(self._close_bot)
        self._bot_task = asyncio.create_task(starter.run(), name="discord-gateway")

    async def _start_background_work(self) -> None:
        services, stack = self.services, self._stack
        await services.autopost.start()  # its loop waits for the gateway to be ready
        stack.push_async_callback(services.autopost.stop)  # before the bot and storage close
        await services.history.start()
        stack.push_async_callback(services.history.stop)
        # Sends what the outbox holds unsent, in any process.
        await stack.enter_async_context(services.outbox.listening())
        services.outbox.start()
        stack.push_async_callback(services.outbox.stop)
        # Links that waited for a Spotify hold (also from before a restart) finish now.
        services.completer.start()
        stack.push_async_callback(services.completer.stop)

    # --- shutdown ------------------------------------------------------------------------

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
        bot = self.services.discord.bot
        if bot is not None:
            await bot.close()
        if self._bot_task is not None:
            await cancel_and_wait([self._bot_task])

    async def close(self) -> None:
        await self._stack.aclose()

    async def run_until_stopped(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set (SIGINT/SIGTERM: see :func:`stop_on_signals`) or until
        the bot stops on its own."""
        with contextlib.ExitStack() as signals:
            if stop is None:
                stop = signals.enter_context(stop_on_signals())
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
                await cancel_and_wait([waiter])
