"""Everything the cogs and the web server use, built whole by ``bot.app`` before the bot
exists and handed to it: a cog gets its services from this record in ``setup``."""

from __future__ import annotations

from dataclasses import dataclass

from bot.autopost.outbox import OutboxSender
from bot.autopost.service import AutopostService
from bot.config import Settings
from bot.crypto import TokenCipher
from bot.gateway.connection import DiscordConnection
from bot.linking.completion import PendingLinkCompleter
from bot.linking.service import LinkService
from bot.listening.chart import TopChart
from bot.listening.log import ListeningLog
from bot.listening.recap import RecapPictures
from bot.listening.server import ServerListening
from bot.listening.spotify import SpotifyListening
from bot.members.events import MemberEvents
from bot.members.privacy import PrivacyService
from bot.members.tokens import TokenManager
from bot.metrics import Metrics
from bot.nowplaying.renderer import NowPlayingRenderer
from bot.nowplaying.service import PlaybackService
from bot.pictures.colours import CoverColours
from bot.spotify.budget import DailyBudget
from bot.spotify.http import SpotifySender
from bot.storage import Storage


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    storage: Storage
    cipher: TokenCipher
    spotify: SpotifySender  # the one way to Spotify: its holds and request counts
    budget: DailyBudget  # the daily Web API budget: what polling may spend (DailyAllowance)
    discord: DiscordConnection  # the current bot, for whatever talks to Discord outside a command
    events: MemberEvents
    tokens: TokenManager
    privacy: PrivacyService
    links: LinkService
    completer: PendingLinkCompleter
    playback: PlaybackService
    renderer: NowPlayingRenderer
    colours: CoverColours
    autopost: AutopostService
    outbox: OutboxSender
    history: ListeningLog
    server_listening: ServerListening  # /listening and /recap: current members only
    listening: SpotifyListening
    top_chart: TopChart
    recap_pictures: RecapPictures
    metrics: Metrics | None = None  # None when METRICS_ENABLED is off


__all__ = ["Services"]
