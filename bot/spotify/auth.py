"""Spotify accounts service: the authorize URL and the token endpoint (code, refresh, client).

Only builds requests and reads answers; :class:`~bot.spotify.http.SpotifySender` sends them.
Token values never appear in log lines or exception messages.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from bot.errors import (
    InvalidClient,
    InvalidGrant,
    SpotifyAuthError,
    SpotifyBadResponse,
    SpotifyError,
)
from bot.spotify.http import Purpose, SpotifyRequest, SpotifyResponse, SpotifySender
from bot.spotify.models import TokenGrant

SCOPES: tuple[str, ...] = (
    "user-read-currently-playing",
    "user-read-playback-state",
    "user-read-recently-played",  # /recent, filling gaps in the listening log
    "user-top-read",  # /top
)
RECENTLY_PLAYED_SCOPE = "user-read-recently-played"
TOP_READ_SCOPE = "user-top-read"


def has_scope(granted: str, scope: str) -> bool:
    """Whether a stored grant (Spotify's space-separated ``scope``) includes ``scope``."""
    return scope in granted.split()


_AUTH_ERRORS: dict[str, type[SpotifyAuthError]] = {
    "invalid_grant": InvalidGrant,
    "invalid_client": InvalidClient,
}


class SpotifyAuth:
    def __init__(
        self,
        sender: SpotifySender,
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        accounts_base: str,
        scopes: tuple[str, ...] = SCOPES,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._sender = sender
        self._client_id = client_id
        self._redirect_uri = redirect_uri
        self._accounts_base = accounts_base.rstrip("/")
        self._scopes = scopes
        # The sender's clock by default, so TokenGrant.received_at and the token cache agree.
        self._clock = clock if clock is not None else sender.clock
        credentials = f"{client_id}:{client_secret}".encode()
        self._basic_auth = "Basic " + base64.b64encode(credentials).decode("ascii")

    def hold_remaining(self) -> float:
        """Seconds until the accounts service may be asked again (0 when it may now)."""
        return self._sender.hold_remaining("accounts")

    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock ``TokenGrant.received_at`` is measured on."""
        return self._clock

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def redirect_uri(self) -> str:
        return self._redirect_uri

    @property
    def scopes(self) -> tuple[str, ...]:
        return self._scopes

    def authorize_url(self, state: str, *, show_dialog: bool = False) -> str:
        params = {
            "client_id": self._client_id,
            "response_type": "code",
            "redirect_uri": self._redirect_uri,
            "state": state,
            "scope": " ".join(self._scopes),
        }
        if show_dialog:
            params["show_dialog"] = "true"
        return f"{self._accounts_base}/authorize?{urlencode(params, quote_via=quote)}"

    async def exchange_code(self, code: str) -> TokenGrant:
        """Trade an authorization code (single use, lives minutes) for tokens."""
        return await self._token_request(
            "token.authorization_code",
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self._redirect_uri,
            },
        )

    async def refresh(self, refresh_token: str, *, purpose: Purpose = "command") -> TokenGrant:
        """A new access token; ``refresh_token`` on the grant is None unless Spotify rotated it.

        A refresh is only worth it just before a Web API call: while the Web API would refuse
        the ``purpose`` it is for (a hold, the daily budget spent), this raises what that call
        would (SpotifyRateLimited, SpotifyDailyLimit) and asks nothing."""
        self._sender.admit(purpose)
        return await self._token_request(
            "token.refresh_token",
            {"grant_type": "refresh_token", "refresh_token": refresh_token},
            purpose=purpose,
        )

    async def client_credentials(self) -> TokenGrant:
        """An app-only token: proves the client id and secret are accepted (``bot check``)."""
        return await self._token_request(
            "token.client_credentials", {"grant_type": "client_credentials"}
        )

    async def _token_request(
        self, endpoint: str, form: Mapping[str, str], *, purpose: Purpose = "linking"
    ) -> TokenGrant:
        request = SpotifyRequest(
            method="POST",
            url=f"{self._accounts_base}/api/token",
            endpoint=endpoint,
            headers={"Authorization": self._basic_auth, "Accept": "application/json"},
            data=form,
            idempotent=False,
            service="accounts",
            purpose=purpose,
        )
        response = await self._sender.send(request)
        received_at = self._clock()
        if response.status != 200:
            raise _token_error(response)
        return _parse_grant(response.json(), received_at=received_at, endpoint=endpoint)


def _token_error(response: SpotifyResponse) -> SpotifyError:
    payload = response.json_or_none()
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        error: str = payload["error"]
        description = payload.get("error_description")
        cls = _AUTH_ERRORS.get(error, SpotifyAuthError)
        return cls(
            error,
            description if isinstance(description, str) else "",
            status=response.status,
        )
    return SpotifyBadResponse(
        f"{response.endpoint}: HTTP {response.status} without an OAuth error body",
        status=response.status,
    )


def _parse_grant(payload: Any, *, received_at: float, endpoint: str) -> TokenGrant:
    if not isinstance(payload, dict):
        raise SpotifyBadResponse(f"{endpoint}: token answer is not a JSON object", status=200)
    access_token = payload.get("access_token")
    expires_in = payload.get("expires_in")
    if not isinstance(access_token, str) or not access_token:
        raise SpotifyBadResponse(f"{endpoint}: token answer has no access_token", status=200)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
        expires_in = 3600  # Spotify always says 3600; a missing value should not break links
    refresh_token = payload.get("refresh_token")
    scope = payload.get("scope")
    return TokenGrant(
        access_token=access_token,
        expires_in=int(expires_in),
        scope=scope if isinstance(scope, str) else "",
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        received_at=received_at,
    )
