"""Interactive "what is this member playing?" (/np): one Spotify call, the token refreshed if
needed, checked against the daily budget first and counted toward the 30-second budget without
ever waiting for either."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.members.tokens import TokenManager
from bot.spotify.api import SpotifyApi
from bot.spotify.budget import CommandCheck
from bot.spotify.models import CurrentlyPlaying


class PlaybackService:
    """Interactive "what is this member playing?": one Spotify call, refreshed token if needed."""

    def __init__(
        self,
        tokens: TokenManager,
        api: SpotifyApi,
        *,
        on_request: Callable[[float], None] | None = None,
        before_command: CommandCheck | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens = tokens
        self._api = api
        self._on_request = on_request
        self._before_command = before_command
        self._clock = clock
        self._listeners: list[Callable[[int, CurrentlyPlaying], None]] = []

    def add_listener(self, listener: Callable[[int, CurrentlyPlaying], None]) -> None:
        """``listener(member, answer)`` hears every answer (the listening log); must not block."""
        self._listeners.append(listener)

    async def now_playing(self, discord_user_id: int) -> CurrentlyPlaying:
        if self._before_command is not None:
            self._before_command(discord_user_id)  # before any token refresh, too
        if self._on_request is not None:
            # Interactive calls count toward the app-wide budget but never wait for it.
            self._on_request(self._clock())
        current = await self._tokens.call(discord_user_id, self._api.currently_playing)
        for listener in self._listeners:
            listener(discord_user_id, current)
        return current
