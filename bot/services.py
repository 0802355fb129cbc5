"""The services the cogs use, built once in ``bot.app`` and handed to each cog's constructor."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.config import Settings
from bot.crypto import TokenCipher
from bot.linking.service import LinkService
from bot.metrics import Metrics
from bot.pictures.charts import ChartRenderer
from bot.pictures.colours import CoverColours
from bot.pictures.images import ImageFetcher
from bot.privacy import PrivacyService
from bot.spotify.api import SpotifyApi
from bot.spotify.models import CurrentlyPlaying
from bot.storage import Storage
from bot.tokens import TokenManager

if TYPE_CHECKING:
    from bot.autopost.service import AutopostService
    from bot.listening.log import ListeningLog
    from bot.listening.spotify import SpotifyListening


class PlaybackService:
    """Interactive "what is this member playing?": one Spotify call, refreshed token if needed."""

    def __init__(
        self,
        tokens: TokenManager,
        api: SpotifyApi,
        *,
        on_request: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens = tokens
        self._api = api
        self._on_request = on_request
        self._clock = clock
        self._listeners: list[Callable[[int, CurrentlyPlaying], None]] = []

    def add_listener(self, listener: Callable[[int, CurrentlyPlaying], None]) -> None:
        """``listener(member, answer)`` hears every answer (the listening log); must not block."""
        self._listeners.append(listener)

    async def now_playing(self, discord_user_id: int) -> CurrentlyPlaying:
        if self._on_request is not None:
            # Interactive calls count toward the app-wide budget but never wait for it.
            self._on_request(self._clock())
        current = await self._tokens.call(discord_user_id, self._api.currently_playing)
        for listener in self._listeners:
            listener(discord_user_id, current)
        return current


@dataclass(slots=True)
class Services:
    settings: Settings
    storage: Storage
    cipher: TokenCipher
    tokens: TokenManager
    links: LinkService
    playback: PlaybackService
    autopost: AutopostService
    privacy: PrivacyService
    metrics: Metrics | None = None  # None when METRICS_ENABLED is off
    images: ImageFetcher | None = None  # album art from Spotify's CDN (charts, colours)
    colours: CoverColours | None = None  # embed colours picked from album art
    charts: ChartRenderer | None = None  # chart pictures, rendered off the event loop
    history: ListeningLog | None = None  # the listening log (bot.app)
    listening: SpotifyListening | None = None  # /recent and /top (bot.app)
