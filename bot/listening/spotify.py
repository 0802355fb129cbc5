"""What /recent and /top ask Spotify, with the listening log as the fallback.

One Spotify call per command, counted into the polling budget like /np. A member linked before
the bot asked for ``user-read-recently-played`` / ``user-top-read`` (the stored grant says so,
or Spotify answers 403 ``Insufficient client scope``) gets one sentence asking them to run /link
again; their link keeps working meanwhile. On a 429 or 5xx, /recent answers from the log at
once (marked as such) and /top says when to try again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bot.errors import (
    BotError,
    DecryptionError,
    LinkBroken,
    MemberSpotifyLimit,
    NotLinked,
    SpotifyDailyLimit,
    SpotifyForbidden,
    SpotifyMissingScope,
    SpotifyRateLimited,
    SpotifyUnauthorized,
    SpotifyUnavailable,
    back_at,
)
from bot.listening.log import ListeningLog
from bot.members.spotify import MemberSpotify
from bot.spotify.api import TOP_ITEMS_LIMIT
from bot.spotify.auth import RECENTLY_PLAYED_SCOPE, TOP_READ_SCOPE, has_scope
from bot.spotify.models import PlayedTrack, TimeRange, TopItems, TopKind

log = logging.getLogger(__name__)


RECENT_LIMIT = 10
TOP_PERIODS: dict[str, TimeRange] = {
    "month": "short_term",
    "half-year": "medium_term",
    "all-time": "long_term",
}
RELINK_HINT = "Run /link again to let me read your Spotify history (your link keeps working)."
FROM_LOG_BUSY = "Spotify is busy, so this is what I logged myself."
LINK_HINT = "Link your Spotify account with /link to see everything you played."


@dataclass(frozen=True, slots=True)
class RecentTrack:
    name: str
    artists: tuple[str, ...]
    url: str | None
    at: float  # Unix time: Spotify's played_at, or the start of a logged play


@dataclass(frozen=True, slots=True)
class RecentAnswer:
    tracks: tuple[RecentTrack, ...]
    source: Literal["spotify", "log"]
    note: str | None = None  # one sentence under the list (why it is the log, the /link hint)


def wait_words(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{math.ceil(seconds / 60)} minutes"
    return f"{math.ceil(seconds / 3600)} hours"


class SpotifyListening:
    """/recent and /top: Spotify first, the listening log when Spotify cannot answer."""

    def __init__(self, spotify: MemberSpotify, history: ListeningLog) -> None:
        self._spotify = spotify
        self._history = history

    async def recent(
        self,
        member_id: int,
        *,
        is_self: bool,
        guild_id: int | None = None,
        asker: int | None = None,
    ) -> RecentAnswer:
        """The member's last 10 tracks: Spotify's recently-played when the link allows it,
        else the listening log. Asked about someone else in a server (``guild_id``), the log
        answers only when the member was seen there."""
        seen_in = None if is_self else guild_id

        async def from_log(note: str | None) -> RecentAnswer:
            return await self._from_log(member_id, note, seen_in)

        granted = await self._spotify.granted(member_id)
        if granted is None:
            return await from_log(LINK_HINT if is_self else None)
        if not has_scope(granted, RECENTLY_PLAYED_SCOPE):
            return await from_log(RELINK_HINT if is_self else None)
        api = self._spotify.api

        async def request(token: str) -> Sequence[PlayedTrack]:
            return await api.recently_played(token, limit=RECENT_LIMIT)

        try:
            played = await self._spotify.call(member_id, request, asker=asker)
        except SpotifyMissingScope:
            return await from_log(RELINK_HINT if is_self else None)
        except SpotifyDailyLimit as exc:
            note = f"The bot's daily Spotify limit is used up until {back_at(exc.until)}, so "
            return await from_log(note + "this is what I logged myself.")
        except MemberSpotifyLimit as exc:
            return await from_log(exc.user_message + " Here is what I logged myself.")
        except (SpotifyRateLimited, SpotifyUnavailable) as exc:
            log.info("/recent: Spotify unavailable for member %s (%s)", member_id, exc)
            return await from_log(FROM_LOG_BUSY)
        except (LinkBroken, DecryptionError, SpotifyForbidden, SpotifyUnauthorized) as exc:
            # About someone else, say nothing about why; about yourself, what to do.
            return await from_log(exc.user_message if is_self else None)
        except NotLinked:
            return await from_log(None)
        self._history.gaps.absorb_soon(member_id, played)
        tracks = tuple(
            RecentTrack(
                name=item.track.name,
                artists=tuple(a.name for a in item.track.artists),
                url=item.track.url,
                at=item.played_at,
            )
            for item in played[:RECENT_LIMIT]
        )
        return RecentAnswer(tracks, "spotify")

    async def _from_log(
        self, member_id: int, note: str | None, seen_in: int | None
    ) -> RecentAnswer:
        plays = await self._history.recent(member_id, RECENT_LIMIT, seen_in=seen_in)
        tracks = tuple(
            RecentTrack(
                name=play.track_name,
                artists=play.artists,
                url=f"https://open.spotify.com/track/{play.track_id}",
                at=play.started_at,
            )
            for play in plays
        )
        return RecentAnswer(tracks, "log", note)

    async def top(
        self,
        member_id: int,
        kind: TopKind,
        period: str,
        *,
        is_self: bool,
        limit: int = TOP_ITEMS_LIMIT,
        command: str = "/top",
        asker: int | None = None,
    ) -> TopItems:
        """The member's top ``limit`` (10; at most 50) from Spotify. Raises BotError with the
        words for the member; ``command`` is what a 429 answer asks them to run again."""
        time_range = TOP_PERIODS[period]
        granted = await self._spotify.granted(member_id)
        if granted is None:
            if is_self:
                raise NotLinked()
            raise BotError(user_message=NO_TOP_FOR_OTHERS)
        if not has_scope(granted, TOP_READ_SCOPE):
            raise BotError(user_message=RELINK_HINT if is_self else NO_TOP_FOR_OTHERS)
        api = self._spotify.api

        async def request(token: str) -> TopItems:
            return await api.top_items(token, kind, time_range, limit=limit)

        try:
            return await self._spotify.call(member_id, request, asker=asker)
        except SpotifyMissingScope as exc:
            raise BotError(user_message=RELINK_HINT if is_self else NO_TOP_FOR_OTHERS) from exc
        except SpotifyDailyLimit as exc:
            raise BotError(
                user_message="The bot's daily Spotify limit is used up: try "
                f"{command} again at {back_at(exc.until)}."
            ) from exc
        except SpotifyRateLimited as exc:
            raise BotError(
                user_message=f"Spotify asks me to slow down: try {command} again in "
                f"{wait_words(exc.retry_after)}."
            ) from exc
        except (LinkBroken, DecryptionError, SpotifyForbidden, SpotifyUnauthorized) as exc:
            if is_self:
                raise
            raise BotError(user_message=NO_TOP_FOR_OTHERS) from exc


NO_TOP_FOR_OTHERS = (
    "I can't show their top list: it needs a Spotify link that allows it. "
    "They can run /link to connect one."
)
