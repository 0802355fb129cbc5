"""Calls to Spotify on a member's behalf, for commands and for the listening log.

Every such call goes through :meth:`MemberSpotify.call`: counted toward the 30-second request
budget (never waiting for it), and for a command the asking member's fair use checked first
(``bot.spotify.fair_use``), before any token refresh. /np, /recent, /top and /chart share it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from typing import TypeVar

from bot.errors import NotLinked, SpotifyMissingScope
from bot.members.tokens import TokenManager
from bot.spotify.api import SpotifyApi
from bot.spotify.auth import RECENTLY_PLAYED_SCOPE, has_scope
from bot.spotify.fair_use import FairUse
from bot.spotify.http import Purpose
from bot.spotify.models import PlayedTrack
from bot.storage import LinksStore

T = TypeVar("T")


class MemberSpotify:
    """Calls to Spotify on a member's behalf: the scopes their grant allows (read before any
    call), each call counted toward the Spotify budget, never waiting for it."""

    def __init__(
        self,
        tokens: TokenManager,
        api: SpotifyApi,
        storage: LinksStore,
        *,
        on_request: Callable[[float], None] | None = None,
        fair_use: FairUse | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens, self.api, self._storage = tokens, api, storage
        self._on_request, self._fair_use, self._clock = on_request, fair_use, clock

    async def granted(self, member_id: int) -> str | None:
        """The stored grant's scopes, or None when the member has no working link."""
        link = await self._storage.get_link(member_id)
        return link.scopes if link is not None and link.status == "active" else None

    async def call(
        self,
        member_id: int,
        request: Callable[[str], Awaitable[T]],
        *,
        purpose: Purpose = "command",
        asker: int | None = None,
    ) -> T:
        """``request(access_token)`` for the member, a Web API call made for ``purpose``,
        counted; a command's asker (default: the member) has their fair use checked first,
        before any token refresh."""
        gate = self._fair_use if purpose == "command" else None
        with nullcontext() if gate is None else gate.command(member_id if asker is None else asker):
            if self._on_request is not None:
                self._on_request(self._clock())
            return await self._tokens.call(member_id, request, purpose=purpose)

    async def recently_played(
        self, member_id: int, after_ms: int | None = None
    ) -> Sequence[PlayedTrack]:
        """For the log's gap filling: raises SpotifyMissingScope without asking Spotify when
        the stored grant lacks the scope."""
        granted = await self.granted(member_id)
        if granted is None:
            raise NotLinked()
        if not has_scope(granted, RECENTLY_PLAYED_SCOPE):
            raise SpotifyMissingScope("the link predates user-read-recently-played")

        async def request(token: str) -> Sequence[PlayedTrack]:
            return await self.api.recently_played(
                token, after_ms=after_ms, purpose="recently_played"
            )

        return await self.call(member_id, request, purpose="recently_played")


__all__ = ["MemberSpotify"]
