"""Spotify Web API endpoints the bot uses. Each builds a request and maps the answer.

Errors come from one status table (:func:`raise_for_status`); the sender has already turned
429 into SpotifyRateLimited and exhausted 5xx into SpotifyUnavailable. Access tokens travel
only in the Authorization header, which the request keeps out of its ``repr``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.errors import (
    SpotifyBadResponse,
    SpotifyError,
    SpotifyForbidden,
    SpotifyMissingScope,
    SpotifyNotRegistered,
    SpotifyUnauthorized,
)
from bot.spotify.http import Purpose, SpotifyRequest, SpotifyResponse, SpotifySender
from bot.spotify.models import (
    CurrentlyPlaying,
    NothingPlaying,
    PlayedTrack,
    SpotifyUser,
    TimeRange,
    TopItems,
    TopKind,
    parse_currently_playing,
    parse_recently_played,
    parse_top_items,
    parse_user,
)

RECENTLY_PLAYED_LIMIT = 50  # Spotify's maximum (and all it keeps)
TOP_ITEMS_LIMIT = 10

_STATUS_ERRORS: dict[int, type[SpotifyError]] = {
    400: SpotifyBadResponse,  # we sent something Spotify did not understand
    401: SpotifyUnauthorized,
    403: SpotifyForbidden,
    404: SpotifyBadResponse,
}


def _error_message(response: SpotifyResponse) -> str:
    payload = response.json_or_none()
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return response.text()[:200]


def raise_for_status(response: SpotifyResponse) -> None:
    """Raise the SpotifyError for a non-2xx Web API answer; return on 2xx."""
    status = response.status
    if 200 <= status < 300:
        return
    message = f"{response.endpoint}: HTTP {status}: {_error_message(response)}"
    if status == 403 and not isinstance(response.json_or_none(), dict):
        # The allow-list refusal is plain text, not JSON: permanent until the owner acts.
        raise SpotifyNotRegistered(message, status=status)
    if status == 403 and "scope" in _error_message(response).lower():
        # "Insufficient client scope": the link predates a scope; it still works otherwise.
        raise SpotifyMissingScope(message, status=status)
    raise _STATUS_ERRORS.get(status, SpotifyError)(message, status=status)


class SpotifyApi:
    def __init__(
        self,
        sender: SpotifySender,
        *,
        api_base: str,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._sender = sender
        self._api_base = api_base.rstrip("/")
        self._wall_clock = wall_clock

    def _get(
        self,
        endpoint: str,
        path: str,
        access_token: str,
        params: dict[str, str] | None = None,
        *,
        purpose: Purpose,
    ) -> SpotifyRequest:
        return SpotifyRequest(
            method="GET",
            url=f"{self._api_base}{path}",
            endpoint=endpoint,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            params=params,
            purpose=purpose,
        )

    async def me(self, access_token: str, *, purpose: Purpose = "linking") -> SpotifyUser:
        response = await self._sender.send(self._get("me", "/me", access_token, purpose=purpose))
        raise_for_status(response)
        return parse_user(response.json())

    async def currently_playing(
        self, access_token: str, *, purpose: Purpose = "command"
    ) -> CurrentlyPlaying:
        request = self._get(
            "currently_playing",
            "/me/player/currently-playing",
            access_token,
            {"additional_types": "episode"},
            purpose=purpose,
        )
        response = await self._sender.send(request)
        raise_for_status(response)
        received_at = self._wall_clock()
        if response.status == 204 or not response.body.strip():
            # Nothing playing, no device, a private session, or Spotify's odd empty answer.
            return NothingPlaying(received_at=received_at)
        return parse_currently_playing(response.json(), received_at=received_at)

    async def recently_played(
        self,
        access_token: str,
        *,
        after_ms: int | None = None,
        limit: int = RECENTLY_PLAYED_LIMIT,
        purpose: Purpose = "command",
    ) -> tuple[PlayedTrack, ...]:
        """The member's last played tracks (newest first); ``after_ms`` keeps only plays after
        that Unix time in milliseconds."""
        params = {"limit": str(max(1, min(limit, RECENTLY_PLAYED_LIMIT)))}
        if after_ms is not None:
            params["after"] = str(max(0, after_ms))
        request = self._get(
            "recently_played",
            "/me/player/recently-played",
            access_token,
            params,
            purpose=purpose,
        )
        response = await self._sender.send(request)
        raise_for_status(response)
        return parse_recently_played(response.json())

    async def top_items(
        self,
        access_token: str,
        kind: TopKind,
        time_range: TimeRange,
        *,
        limit: int = TOP_ITEMS_LIMIT,
        purpose: Purpose = "command",
    ) -> TopItems:
        request = self._get(
            f"top_{kind}",
            f"/me/top/{kind}",
            access_token,
            {"time_range": time_range, "limit": str(max(1, min(limit, 50)))},
            purpose=purpose,
        )
        response = await self._sender.send(request)
        raise_for_status(response)
        return parse_top_items(response.json(), kind, time_range)
