"""Interactive "what is this member playing?" (/np): one Spotify call through
:class:`~bot.members.spotify.MemberSpotify` (the token refreshed if needed, the asker's fair use
checked first, counted toward the 30-second budget without ever waiting for it)."""

from __future__ import annotations

from collections.abc import Callable

from bot.members.spotify import MemberSpotify
from bot.spotify.models import CurrentlyPlaying


class PlaybackService:
    """Interactive "what is this member playing?": one Spotify call, refreshed token if needed."""

    def __init__(self, spotify: MemberSpotify) -> None:
        self._spotify = spotify
        self._listeners: list[Callable[[int, CurrentlyPlaying], None]] = []

    def add_listener(self, listener: Callable[[int, CurrentlyPlaying], None]) -> None:
        """``listener(member, answer)`` hears every answer (the listening log); must not block."""
        self._listeners.append(listener)

    async def now_playing(
        self, discord_user_id: int, *, asker: int | None = None
    ) -> CurrentlyPlaying:
        """What ``discord_user_id`` plays, asked by ``asker`` (default: themselves): the asker's
        fair use is checked before any token refresh, and counted."""
        current = await self._spotify.call(
            discord_user_id, self._spotify.api.currently_playing, asker=asker
        )
        for listener in self._listeners:
            listener(discord_user_id, current)
        return current
