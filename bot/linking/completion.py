"""Finishing links whose code was exchanged while Spotify held the Web API (a 429).

The callback kept the grant, encrypted for the member, in ``pending_links``. This task waits
until the Web API hold is over, then does what the callback could not: ``/me``, the ownership
check (a Spotify account linked to another member is never moved) and the DM. Pending rows
survive a restart: the task looks at the table when it starts and whenever a new one arrives.
Several processes may run it: a row is claimed by deleting it, so each link completes once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from bot.aio.tasks import cancel_and_wait
from bot.crypto import TokenCipher
from bot.errors import (
    DecryptionError,
    InvalidGrant,
    SpotifyBadResponse,
    SpotifyForbidden,
    SpotifyRateLimited,
    SpotifyUnauthorized,
)
from bot.linking.service import LinkService
from bot.linking.words import LinkFailure, failure_words
from bot.spotify.api import SpotifyApi
from bot.spotify.auth import SpotifyAuth
from bot.spotify.http import SpotifyService
from bot.spotify.models import TokenGrant
from bot.storage import LinkStatesStore, PendingLink

log = logging.getLogger(__name__)

RETRY_SECONDS = 30.0  # after a transient failure (Spotify down, database busy)
PENDING_TOKEN_MARGIN_SECONDS = 120.0  # a kept access token this close to expiry is refreshed first


class _Permanent(Exception):
    """This pending link can never complete; ``words`` tell the member why."""

    def __init__(self, words: str) -> None:
        super().__init__(words)
        self.words = words


class PendingLinkCompleter:
    def __init__(
        self,
        storage: LinkStatesStore,
        cipher: TokenCipher,
        auth: SpotifyAuth,
        api: SpotifyApi,
        links: LinkService,
        *,
        hold_remaining: Callable[[SpotifyService], float],
        clock: Callable[[], float] = time.time,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._storage, self._cipher, self._auth = storage, cipher, auth
        self._api, self._links, self._hold_remaining = api, links, hold_remaining
        self._clock, self._retry_seconds = clock, retry_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        links.add_pending_listener(self.wake)

    def wake(self) -> None:
        """A new pending link arrived (or the caller knows the hold changed): look again."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pending-link-completer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task])

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = await self._pass()
            except Exception:
                log.exception("Could not look at the links waiting for Spotify")
                delay = self._retry_seconds
            if delay is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def _pass(self) -> float | None:
        """Try every pending link once; how long to wait before the next pass (None: until
        woken)."""
        pending = await self._storage.list_pending_links()
        if not pending:
            return None
        held = self._hold_remaining("api")
        if held > 0:
            return held
        delay: float | None = None
        for item in pending:
            try:
                await self.complete_one(item)
            except SpotifyRateLimited as exc:
                return max(exc.retry_after, 0.05)  # held again: the rest waits too
            except Exception as exc:
                log.warning(
                    "Member %s's waiting link could not be finished yet (%s); trying again",
                    item.discord_user_id,
                    type(exc).__name__,
                )
                delay = self._retry_seconds
        return delay

    async def complete_one(self, item: PendingLink) -> None:
        """Finish one pending link. Raises on transient failures (the row stays)."""
        user_id = item.discord_user_id
        try:
            grant = await self._fresh_grant(item)
            try:
                user = await self._api.me(grant.access_token)
            except SpotifyUnauthorized:
                grant = await self._refreshed(grant.refresh_token or "")
                user = await self._api.me(grant.access_token)
        except _Permanent as permanent:
            await self._give_up(item, permanent.words)
            return
        except SpotifyForbidden:
            await self._give_up(
                item,
                "Spotify refused this bot access to your account (is it on the bot's Spotify "
                "app allow-list?). Ask the bot owner, then run /link again.",
            )
            return
        if not await self._storage.delete_pending_link(user_id, item.state_hash):
            return  # another process finished it, or a newer one replaced it
        try:
            await self._links.store(user_id, user, grant, item.state_hash, "later")
        except LinkFailure as failure:  # the account is linked to another member
            await self._storage.finish_link_state(item.state_hash, "taken")
            words = failure_words(failure)
            await self._links.notify(
                user_id, f"Your Spotify link was not completed. **{words.title}.** {words.message}"
            )

    async def _fresh_grant(self, item: PendingLink) -> TokenGrant:
        try:
            payload: Any = json.loads(self._cipher.decrypt(item.discord_user_id, item.sealed_grant))
            access_token = str(payload["access_token"])
            refresh_token = str(payload["refresh_token"])
            scope = str(payload.get("scope") or "")
            expires_at = float(payload["expires_at"])
        except (DecryptionError, ValueError, KeyError, TypeError) as exc:
            log.error("A waiting link of member %s cannot be read (%s)", item.discord_user_id, exc)
            raise _Permanent(
                "The bot could not finish linking your Spotify account. Please run /link again."
            ) from exc
        left = expires_at - self._clock()
        if left <= PENDING_TOKEN_MARGIN_SECONDS:
            return await self._refreshed(refresh_token)
        return TokenGrant(access_token, int(left), scope, refresh_token, self._auth.clock())

    async def _refreshed(self, refresh_token: str) -> TokenGrant:
        try:
            grant = await self._auth.refresh(refresh_token, purpose="linking")
        except (InvalidGrant, SpotifyBadResponse) as exc:
            raise _Permanent(
                "Spotify no longer accepts the sign-in you approved earlier (it was revoked). "
                "Please run /link again."
            ) from exc
        if grant.refresh_token is None:  # Spotify kept the refresh token: so do we
            grant = TokenGrant(
                grant.access_token, grant.expires_in, grant.scope, refresh_token, grant.received_at
            )
        return grant

    async def _give_up(self, item: PendingLink, words: str) -> None:
        if await self._storage.delete_pending_link(item.discord_user_id, item.state_hash):
            await self._storage.finish_link_state(item.state_hash, "failed")
            await self._links.notify(
                item.discord_user_id, f"Your Spotify link was not completed. {words}"
            )
