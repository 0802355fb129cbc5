"""Linking a member's Spotify account: one code path for the web callback and the paste modal.

``LinkService.start`` makes a single-use state bound to the member and returns the authorize
URL. ``LinkService.complete`` takes the callback's query (from the browser, or pasted into the
Discord modal) and either stores the link or raises ``LinkFailure`` with words for the member.
Nothing is stored unless every step succeeded.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

from bot.errors import (
    InvalidClient,
    InvalidGrant,
    SpotifyAuthError,
    SpotifyError,
    SpotifyNotRegistered,
    SpotifyRateLimited,
)
from bot.spotify.api import SpotifyApi
from bot.spotify.auth import SpotifyAuth
from bot.spotify.models import SpotifyUser
from bot.storage import LinkedAccount, Storage
from bot.tokens import TokenManager

log = logging.getLogger(__name__)

STATE_TTL_SECONDS = 600.0
# A pasted address longer than this is not a callback URL; refuse before parsing it.
MAX_PASTE_LENGTH = 4000
# Spotify refresh tokens stop working 6 months after the member authorized; refreshing does
# not extend that (docs/spotify.md). Remind members in the last two weeks.
REFRESH_TOKEN_LIFETIME_DAYS = 182
EXPIRY_WARNING_DAYS = 14

FailureKind = Literal[
    "denied",
    "missing",
    "unknown_state",
    "expired_state",
    "used_state",
    "wrong_member",
    "exchange_failed",
    "not_registered",
    "rate_limited",
    "spotify_down",
    "bad_config",
]

LinkSource = Literal["web", "paste"]
# Called with (member id, Spotify user, where the link completed).
LinkedCallback = Callable[[int, SpotifyUser, LinkSource], Awaitable[None]]


class LinkFailure(Exception):
    """A link attempt failed; ``title``/``message`` are plain words for the member."""

    def __init__(self, kind: FailureKind, title: str, message: str, status: int = 400) -> None:
        super().__init__(f"{kind}: {title}")
        self.kind = kind
        self.title = title
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class LinkResult:
    """``already_linked`` is True for a reload of a callback URL that already did its work."""

    discord_user_id: int
    display_name: str
    spotify_user_id: str
    already_linked: bool = False


def parse_pasted_address(text: str) -> dict[str, str]:
    """Accept the full redirected URL, a path with its query, or just the query."""
    cleaned = text.strip().strip("<>").strip()
    if len(cleaned) > MAX_PASTE_LENGTH:
        return {}
    # The fragment goes first: it may itself hold a "?" (everything after "#" is the fragment).
    cleaned = cleaned.split("#", 1)[0]
    if "?" in cleaned:
        cleaned = cleaned.split("?", 1)[1]
    return dict(parse_qsl(cleaned, keep_blank_values=False))


def expiry_reminder(linked_at: float, now: float) -> str | None:
    """Words for a member whose link runs out soon (or None): Spotify ends it 6 months after
    they authorized, however often the bot refreshes."""
    days_left = REFRESH_TOKEN_LIFETIME_DAYS - (now - linked_at) / 86400
    if days_left > EXPIRY_WARNING_DAYS:
        return None
    when = "within a day" if days_left <= 1 else f"in {math.ceil(days_left)} days"
    return (
        f"Heads-up: Spotify ends your link {when} (links last six months). "
        "Run /link to renew it; it takes a few seconds."
    )


_RELINK = "Run /link in Discord to get a fresh link."


class LinkService:
    def __init__(
        self,
        storage: Storage,
        auth: SpotifyAuth,
        api: SpotifyApi,
        tokens: TokenManager,
        *,
        clock: Callable[[], float] = time.time,
        state_ttl: float = STATE_TTL_SECONDS,
    ) -> None:
        self._storage = storage
        self._auth = auth
        self._api = api
        self._tokens = tokens
        self._clock = clock
        self._state_ttl = state_ttl
        self._on_linked: list[LinkedCallback] = []
        self._on_unlinked: list[Callable[[int], None]] = []

    def add_linked_listener(self, callback: LinkedCallback) -> None:
        """Called after a link is stored (the bot DMs "linked as ..."); failures are logged."""
        self._on_linked.append(callback)

    async def start(self, discord_user_id: int) -> str:
        """A fresh single-use state (256 random bits) bound to the member; the authorize URL."""
        state = secrets.token_urlsafe(32)
        now = self._clock()
        await self._storage.create_link_state(state, discord_user_id, now=now, ttl=self._state_ttl)
        await self._storage.purge_link_states(now=now)
        return self._auth.authorize_url(state)

    def add_unlinked_listener(self, callback: Callable[[int], None]) -> None:
        """Called right after a member unlinks (auto-posting stops following them)."""
        self._on_unlinked.append(callback)

    async def unlink(self, discord_user_id: int) -> bool:
        """Forget the member's tokens and settings. True when there was anything to forget."""
        existed = await self._storage.delete_member(discord_user_id)
        self._tokens.forget(discord_user_id)
        for callback in self._on_unlinked:
            callback(discord_user_id)
        if existed:
            log.info("Member %s unlinked", discord_user_id)
        return existed

    async def current_link(self, discord_user_id: int) -> LinkedAccount | None:
        link = await self._storage.get_link(discord_user_id)
        return link if link is not None and link.status == "active" else None

    async def complete(
        self, query: Mapping[str, str], *, pasted_by: int | None = None
    ) -> LinkResult:
        """Finish a link from the callback's query parameters. Raises LinkFailure."""
        state = (query.get("state") or "").strip()
        error = (query.get("error") or "").strip()
        code = (query.get("code") or "").strip()
        if not state:
            if error:
                raise self._denied()
            raise LinkFailure(
                "missing",
                "This link is incomplete",
                "The address is missing part of what Spotify sends back. " + _RELINK,
            )
        if not error and not code:
            # Checked before the state is used up: a member who pasted a cut-off address can
            # still paste the whole one.
            raise LinkFailure(
                "missing",
                "This link is incomplete",
                "Spotify did not send an authorization code. Paste the whole address from "
                "your browser's address bar, or run /link in Discord to get a fresh link.",
            )

        if pasted_by is not None:
            owner = await self._storage.get_link_state_owner(state)
            if owner is not None and owner != pasted_by:
                # Refuse before consuming, so the real owner's link keeps working.
                raise LinkFailure(
                    "wrong_member",
                    "This link belongs to someone else",
                    "Each /link address works only for the member who asked for it. " + _RELINK,
                    status=403,
                )

        outcome = await self._storage.consume_link_state(state, now=self._clock())
        if outcome.status == "unknown" or outcome.discord_user_id is None:
            raise LinkFailure(
                "unknown_state",
                "This link is not valid",
                "The bot does not recognise this sign-in attempt. " + _RELINK,
            )
        user_id = outcome.discord_user_id
        if outcome.status == "used":
            link = await self.current_link(user_id)
            if link is not None:
                return LinkResult(
                    user_id, link.display_name, link.spotify_user_id, already_linked=True
                )
            raise LinkFailure(
                "used_state",
                "This link was already used",
                "Each sign-in link works once. " + _RELINK,
                status=410,
            )
        if outcome.status == "expired":
            raise LinkFailure(
                "expired_state",
                "This link has expired",
                "Sign-in links are valid for 10 minutes. " + _RELINK,
                status=410,
            )
        if error:
            raise self._denied()

        try:
            grant = await self._auth.exchange_code(code)
            user = await self._api.me(grant.access_token)
        except SpotifyNotRegistered as exc:
            raise LinkFailure(
                "not_registered",
                "Your Spotify account is not allowed yet",
                "This bot's Spotify app is in development mode, which only works for accounts "
                "the bot owner has added to its allow-list. Ask the bot owner to add your "
                "Spotify email address in the Spotify developer dashboard, then run /link again.",
                status=403,
            ) from exc
        except InvalidGrant as exc:
            raise LinkFailure(
                "exchange_failed",
                "Spotify did not accept this sign-in",
                "The authorization code was already used or has expired. " + _RELINK,
            ) from exc
        except InvalidClient as exc:
            log.error("Spotify rejected the client id/secret while linking: %s", exc)
            raise LinkFailure(
                "bad_config",
                "The bot is not set up correctly",
                "Spotify rejected the bot's app credentials. Please tell the bot owner.",
                status=400,
            ) from exc
        except SpotifyRateLimited as exc:
            raise LinkFailure(
                "rate_limited",
                "Spotify asks us to slow down",
                f"Please try /link again in {max(1, round(exc.retry_after))} s.",
                status=429,
            ) from exc
        except SpotifyAuthError as exc:
            log.warning("Spotify refused a code exchange: %s", exc.error)
            raise LinkFailure(
                "exchange_failed",
                "Spotify did not accept this sign-in",
                "Something did not match on Spotify's side. " + _RELINK,
            ) from exc
        except SpotifyError as exc:
            log.warning("Spotify failed during a link: %s", exc)
            raise LinkFailure(
                "spotify_down",
                "Spotify is not answering right now",
                "Nothing was saved. Please run /link again in a minute.",
                status=424,
            ) from exc

        await self._tokens.store_new_link(user_id, user, grant)
        log.info("Member %s linked a Spotify account", user_id)
        for callback in self._on_linked:
            try:
                await callback(user_id, user, "web" if pasted_by is None else "paste")
            except Exception:
                log.exception("A link listener failed for member %s", user_id)
        return LinkResult(user_id, user.display_name, user.id)

    @staticmethod
    def _denied() -> LinkFailure:
        return LinkFailure(
            "denied",
            "Linking was cancelled",
            "You chose not to give the bot access on Spotify, so nothing was linked. "
            "If that was a mistake, run /link again.",
            status=403,
        )
