"""Members' access tokens: a memory-only cache, one refresh at a time per member.

* A token counts as expired 60 s early; expiry is computed from the local receive time.
* One ``asyncio.Lock`` per member with a second check inside it, so a crowd of concurrent
  requests for one member causes exactly one refresh (and a rotated refresh token is never
  lost to a race). A member's lock exists only while someone waits on it. Processes sharing
  a PostgreSQL database also take the storage's per-member lock around each refresh.
* A refresh answer without a refresh token keeps the stored one; a new one replaces it,
  encrypted. ``invalid_grant`` marks the link broken and raises :class:`LinkBroken`.
* :meth:`TokenManager.call` retries a Web API call once, with a fresh token, after a 401.

Token values never reach a log line; every value seen is announced to the secret listeners
(the log-masking filter) before anything else can log it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from bot.aio.keyed_locks import KeyedLocks, LockEntry
from bot.crypto import TokenCipher
from bot.errors import InvalidGrant, LinkBroken, NotLinked, SpotifyBadResponse, SpotifyUnauthorized
from bot.members.events import MemberEvents
from bot.spotify.auth import SpotifyAuth
from bot.spotify.http import Purpose
from bot.spotify.models import SpotifyUser, TokenGrant
from bot.storage import HasLinks, LinkedAccount

log = logging.getLogger(__name__)

T = TypeVar("T")
EARLY_REFRESH_SECONDS = 60.0
# The cache drops expired tokens whenever it doubles past this size: it holds at most
# max(SWEEP_MIN_ENTRIES, 2 x the members whose token is still valid), about 300 bytes each.
SWEEP_MIN_ENTRIES = 1024
SecretListener = Callable[[str], None]
# Called after every refresh with its outcome: "ok", "invalid_grant" or "error" (metrics).
RefreshHook = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class _CachedToken:
    access_token: str
    expires_at: float  # on the manager's clock
    spotify_account_id: str


class _LockEntry(LockEntry):
    """A member's refresh lock, dropped when nobody holds or awaits it."""

    __slots__ = ("forgotten",)

    def __init__(self) -> None:
        super().__init__()
        self.forgotten = False  # forget() ran while a refresh was in flight


class TokenStorage(HasLinks, Protocol):
    """What the token manager uses of ``bot.storage.Storage``: the links, and the per-member
    lock across processes around each refresh."""

    def member_lock(self, user_id: int) -> AbstractAsyncContextManager[None]: ...


class TokenManager:
    def __init__(
        self,
        storage: TokenStorage,
        cipher: TokenCipher,
        auth: SpotifyAuth,
        *,
        clock: Callable[[], float] | None = None,
        early_refresh: float = EARLY_REFRESH_SECONDS,
        on_refresh: RefreshHook | None = None,
    ) -> None:
        self._storage = storage
        self._cipher = cipher
        self._auth = auth
        # TokenGrant.received_at comes from the auth client's clock; expiry must use the same.
        self._clock = clock if clock is not None else auth.clock
        self._early_refresh = early_refresh
        self._cache: dict[int, _CachedToken] = {}
        self._sweep_at = SWEEP_MIN_ENTRIES
        self._locks: KeyedLocks[int, _LockEntry] = KeyedLocks(_LockEntry)
        self._secret_listeners: list[SecretListener] = []
        self._on_refresh = on_refresh

    # --- secrets for the log filter -------------------------------------------------------

    def register_secret_listener(self, listener: SecretListener) -> None:
        """``listener(value)`` is called with every access and refresh token value seen."""
        self._secret_listeners.append(listener)

    def _announce(self, *values: str | None) -> None:
        for value in values:
            if not value:
                continue
            for listener in self._secret_listeners:
                try:
                    listener(value)
                except Exception:  # the masker failing must not break a member's request
                    log.exception("secret listener failed")

    def _report_refresh(self, outcome: str) -> None:
        if self._on_refresh is None:
            return
        try:
            self._on_refresh(outcome)
        except Exception:  # a metrics bug must not break a member's request
            log.exception("on_refresh hook failed")

    # --- cache and locks ------------------------------------------------------------------

    def _fresh(self, user_id: int) -> _CachedToken | None:
        cached = self._cache.get(user_id)
        if cached is not None and self._clock() < cached.expires_at - self._early_refresh:
            return cached
        return None

    def _remember(self, user_id: int, token: _CachedToken) -> None:
        self._cache[user_id] = token
        if len(self._cache) > self._sweep_at:
            now = self._clock()
            for other_id in [k for k, v in self._cache.items() if v.expires_at <= now]:
                del self._cache[other_id]
            self._sweep_at = max(SWEEP_MIN_ENTRIES, 2 * len(self._cache))

    def follow_members(self, events: MemberEvents) -> None:
        """A member who unlinks (here or in another process) has no token to keep."""
        events.on("unlinked", self.forget)

    def forget(self, user_id: int) -> None:
        """Drop the member's cached token (unlink); an in-flight refresh will not re-cache."""
        self._cache.pop(user_id, None)
        entry = self._locks.get(user_id)
        if entry is not None:
            entry.forgotten = True

    # --- public API -----------------------------------------------------------------------

    async def access_token(
        self, user_id: int, *, force_refresh: bool = False, purpose: Purpose = "command"
    ) -> str:
        """A usable access token for the member, for a Web API call made for ``purpose``.
        Raises NotLinked or LinkBroken.

        Spotify errors of the refresh (SpotifyUnavailable, SpotifyRateLimited, InvalidClient)
        propagate unchanged; DecryptionError too (the keys changed: not the member's fault).
        No refresh is asked while the Web API would refuse that call (a hold, the daily budget
        spent): the refusal is raised instead.
        """
        if not force_refresh:
            cached = self._fresh(user_id)
            if cached is not None:
                return cached.access_token
        return await self._refreshed_token(
            user_id, rejected=None, force=force_refresh, purpose=purpose
        )

    async def call(
        self, user_id: int, fn: Callable[[str], Awaitable[T]], *, purpose: Purpose = "command"
    ) -> T:
        """Run ``fn(access_token)``, a Web API call made for ``purpose``; after a 401,
        refresh once and retry exactly once."""
        token = await self.access_token(user_id, purpose=purpose)
        try:
            return await fn(token)
        except SpotifyUnauthorized:
            log.info("spotify rejected the access token of member %s; refreshing once", user_id)
        token = await self._refreshed_token(user_id, rejected=token, force=True, purpose=purpose)
        return await fn(token)

    async def store_new_link(
        self, user_id: int, user: SpotifyUser, grant: TokenGrant
    ) -> Literal["linked", "renewed"]:
        """Save a completed link (refresh token encrypted) and cache its access token.

        Raises SpotifyAccountTaken (nothing stored, nothing cached) when the Spotify account is
        linked to another member: a link is never moved.
        """
        self._announce(grant.access_token, grant.refresh_token)
        if grant.refresh_token is None:
            raise SpotifyBadResponse("the code exchange answered without a refresh token")
        account = LinkedAccount(
            discord_user_id=user_id,
            spotify_account_id=user.account_id,
            spotify_user_id=user.id,
            display_name=user.display_name,
            refresh_token=self._cipher.encrypt(user_id, grant.refresh_token),
            scopes=grant.scope,
            linked_at=time.time(),
            status="active",
        )
        async with self._locks.hold(user_id) as entry:
            kind = await self._storage.links.save_link(account)
            entry.forgotten = False
            self._remember(
                user_id,
                _CachedToken(
                    grant.access_token, grant.received_at + grant.expires_in, user.account_id
                ),
            )
        return kind

    # --- refreshing -----------------------------------------------------------------------

    async def _refreshed_token(
        self, user_id: int, *, rejected: str | None, force: bool, purpose: Purpose
    ) -> str:
        async with self._locks.hold(user_id) as entry:
            # Second check inside the lock: whoever held it before us may have refreshed.
            cached = self._fresh(user_id)
            if cached is not None:
                if not force:
                    return cached.access_token
                if rejected is not None and cached.access_token != rejected:
                    return cached.access_token  # someone refreshed after our token failed
            # Other processes sharing the database refresh this member too: read, refresh and
            # store the refresh token under a lock they honour as well.
            async with self._storage.member_lock(user_id):
                return await self._refresh(user_id, entry, purpose)

    async def _refresh(self, user_id: int, entry: _LockEntry, purpose: Purpose) -> str:
        entry.forgotten = False
        link = await self._storage.links.get_link(user_id)
        if link is None:
            self._cache.pop(user_id, None)
            raise NotLinked(f"member {user_id} has no Spotify link")
        if link.status != "active" or link.refresh_token is None:
            self._cache.pop(user_id, None)
            raise LinkBroken(f"the Spotify link of member {user_id} is broken")
        refresh_token = self._cipher.decrypt(user_id, link.refresh_token)
        self._announce(refresh_token)
        try:
            grant = await self._auth.refresh(refresh_token, purpose=purpose)
        except InvalidGrant as exc:
            self._cache.pop(user_id, None)
            await self._storage.links.mark_link_broken(user_id)
            self._report_refresh("invalid_grant")  # after the write: metrics recount links
            log.info(
                "spotify refused the refresh token of member %s (%s); link marked broken",
                user_id,
                exc.description or exc.error,
            )
            raise LinkBroken(f"refresh refused for member {user_id}: {exc.description}") from exc
        except Exception:
            self._report_refresh("error")
            raise
        self._report_refresh("ok")
        self._announce(grant.access_token, grant.refresh_token)
        if entry.forgotten:
            # Unlinked while we were refreshing: do not bring the member's token back.
            raise NotLinked(f"member {user_id} unlinked during a token refresh")
        if grant.refresh_token is not None and grant.refresh_token != refresh_token:
            encrypted = self._cipher.encrypt(user_id, grant.refresh_token)
            await self._storage.links.update_refresh_token(user_id, encrypted)
        self._remember(
            user_id,
            _CachedToken(
                grant.access_token, grant.received_at + grant.expires_in, link.spotify_account_id
            ),
        )
        return grant.access_token
