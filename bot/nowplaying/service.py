"""Interactive "what is this member playing?" (/np): one Spotify call, the token refreshed if
needed, checked against the daily budget first and counted toward the 30-second budget without
ever waiting for either."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext

from bot.members.tokens import TokenManager
from bot.spotify.api import SpotifyApi
from bot.spotify.fair_use import FairUse
from bot.spotify.models import CurrentlyPlaying


class PlaybackService:
    """Interactive "what is this member playing?": one Spotify call, refreshed token if needed."""

    def __init__(
        self,
        tokens: TokenManager,
        api: SpotifyApi,
        *,
        on_request: Callable[[float], None] | None = None,
        fair_use: FairUse | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens, self._api, self._on_request = tokens, api, on_request
        self._fair_use, self._clock = fair_use, clock
        self._listeners: list[Callable[[int, CurrentlyPlaying], None]] = []

    def add_listener(self, listener: Callable[[int, CurrentlyPlaying], None]) -> None:
        """``listener(member, answer)`` hears every answer (the listening log); must not block."""
        self._listeners.append(listener)

    async def now_playing(
        self, discord_user_id: int, *, asker: int | None = None
    ) -> CurrentlyPlaying:
        """What ``discord_user_id`` plays, asked by ``asker`` (default: themselves): the asker's
        fair use is checked before any token refresh, and counted."""
        asking = discord_user_id if asker is None else asker
        with nullcontext() if self._fair_use is None else self._fair_use.command(asking):
            if self._on_request is not None:
                # Interactive calls count toward the app-wide budget but never wait for it.
                self._on_request(self._clock())
            current = await self._tokens.call(discord_user_id, self._api.currently_playing)
        for listener in self._listeners:
            listener(discord_user_id, current)
        return current
