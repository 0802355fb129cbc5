"""Linking a member's Spotify account: one code path for the web callback and the paste modal.

``LinkService.start`` makes a single-use state bound to the member (at most
``MAX_STATES_PER_MEMBER`` per member; within ``LINK_COOLDOWN_SECONDS`` of the last one, that one
is handed out again) and returns the authorize URL. ``LinkService.complete`` takes the
callback's query (from the browser, or pasted into the Discord modal) and either stores the
link or raises ``LinkFailure`` (``bot.linking.words`` says it to the member).

Rules (docs/linking.md explains them for self-hosters):
* a Spotify account linked to another member is never moved (``taken``, 409);
* a state is consumed once; a second request with it waits for the first one's outcome and
  reports it without naming any account;
* a 429 of the accounts service uses up nothing (the state is released); a Web API hold does
  not stop the code exchange: the grant waits, encrypted, in ``pending_links`` and
  :class:`~bot.linking.completion.PendingLinkCompleter` finishes the link when the hold ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import parse_qsl

from bot.crypto import TokenCipher
from bot.errors import (
    BotError,
    DecryptionError,
    InvalidClient,
    InvalidGrant,
    SpotifyAuthError,
    SpotifyError,
    SpotifyNotRegistered,
    SpotifyRateLimited,
)
from bot.linking.words import LinkFailure, Outcome, linked_words
from bot.members.events import MemberEvents
from bot.members.tokens import TokenManager
from bot.spotify.api import SpotifyApi
from bot.spotify.auth import SpotifyAuth
from bot.spotify.models import SpotifyUser, TokenGrant
from bot.storage import (
    HasLinks,
    HasLinkStates,
    LinkedAccount,
    LinkResultView,
    PendingLink,
    SpotifyAccountTaken,
    hash_link_state,
)

log = logging.getLogger(__name__)

STATE_TTL_SECONDS = 600.0
LINK_COOLDOWN_SECONDS = 30.0  # /link again within this hands out the same, still-valid link
MAX_STATES_PER_MEMBER = 3  # older states of the member stop working
RESULT_NAMES_SECONDS = 600.0  # the result page names the accounts once, within this time
# A second request with a state another request is using waits this long for its outcome.
CONCURRENT_WAIT_SECONDS = 20.0
CONCURRENT_POLL_SECONDS = 0.05
MAX_WAITERS = 50
# A pasted address longer than this is not a callback URL; refuse before parsing it.
MAX_PASTE_LENGTH = 4000

LinkKind = Literal["linked", "renewed"]
LinkSource = Literal["web", "paste", "later"]
# Called with (member id, words for them) when a link finished without them watching.
NoticeCallback = Callable[[int, str], Awaitable[None]]


class LinkBusy(BotError):
    user_message = "The bot's database is busy right now. Please run /link again in a moment."


@dataclass(frozen=True, slots=True)
class LinkStart:
    """``reused``: inside the cooldown, the member's still-valid link was handed out again."""

    authorize_url: str
    reused: bool
    expires_at: float  # Unix time


@dataclass(frozen=True, slots=True)
class LinkResult:
    """A link that completed (``linked``/``renewed``) or waits for Spotify (``pending``).

    ``result_token`` opens the one-time result page that names both accounts.
    """

    discord_user_id: int
    outcome: Literal["linked", "renewed", "pending"]
    display_name: str = ""
    spotify_user_id: str = ""
    result_token: str | None = None
    retry_after: float = 0.0  # pending: seconds until Spotify lets the bot finish


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


def seal_grant(cipher: TokenCipher, user_id: int, grant: TokenGrant, now: float) -> bytes:
    """A grant as an encrypted blob bound to the member (``now`` is Unix time)."""
    payload = {
        "access_token": grant.access_token,
        "refresh_token": grant.refresh_token,
        "scope": grant.scope,
        "expires_at": now + grant.expires_in,
    }
    return cipher.encrypt(user_id, json.dumps(payload))


class LinkStorage(HasLinkStates, HasLinks, Protocol):
    """What linking uses of ``bot.storage.Storage``: the link flow's states and pending links,
    and the links (to read one, and to forget a member on /unlink)."""


class LinkService:
    def __init__(
        self,
        storage: LinkStorage,
        auth: SpotifyAuth,
        api: SpotifyApi,
        tokens: TokenManager,
        cipher: TokenCipher,
        events: MemberEvents,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage, self._auth, self._api = storage, auth, api
        self._tokens, self._cipher, self._clock = tokens, cipher, clock
        self._events = events
        self._on_notice: list[NoticeCallback] = []
        self._on_pending: list[Callable[[], None]] = []
        self._waiters = 0  # requests waiting for another request's outcome

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def add_notice_listener(self, callback: NoticeCallback) -> None:
        """Called with words for a member who is not watching a page: their link finished
        (or failed) after a Spotify hold, or was made in the browser (the bot DMs them)."""
        self._on_notice.append(callback)

    def add_pending_listener(self, callback: Callable[[], None]) -> None:
        """Called when a grant starts waiting for the Web API hold (wakes the completer)."""
        self._on_pending.append(callback)

    # --- /link and /unlink ---------------------------------------------------------------

    async def start(self, discord_user_id: int, discord_name: str | None = None) -> LinkStart:
        """The member's authorize URL: the last one again inside the cooldown, otherwise a
        fresh single-use state (256 random bits); only the newest few states keep working."""
        now = self._clock()
        try:
            recent = await self._storage.link_states.recent_link_state(
                discord_user_id, created_since=now - LINK_COOLDOWN_SECONDS, now=now
            )
            if recent is not None and recent.sealed_state is not None:
                try:
                    state = self._cipher.decrypt(discord_user_id, recent.sealed_state)
                except DecryptionError:
                    pass  # the keys changed since: hand out a new one
                else:
                    return LinkStart(self._authorize_url(state), True, recent.expires_at)
            state = secrets.token_urlsafe(32)
            await self._storage.link_states.create_link_state(
                state,
                discord_user_id,
                now=now,
                ttl=STATE_TTL_SECONDS,
                discord_name=discord_name,
                sealed_state=self._cipher.encrypt(discord_user_id, state),
                keep_per_member=MAX_STATES_PER_MEMBER,
            )
            await self._storage.link_states.purge_link_states(now=now)
        except sqlite3.OperationalError as exc:  # another process holds the write lock
            raise LinkBusy(f"could not create a link state: {exc}") from exc
        return LinkStart(self._authorize_url(state), False, now + STATE_TTL_SECONDS)

    def _authorize_url(self, state: str) -> str:
        # show_dialog: Spotify shows whose account is being linked, even to a returning user.
        return self._auth.authorize_url(state, show_dialog=True)

    async def unlink(self, discord_user_id: int) -> bool:
        """Forget the member's tokens and settings. True when there was anything to forget."""
        existed = await self._storage.links.delete_member(discord_user_id)
        await self._events.emit("unlinked", discord_user_id)
        if existed:
            log.info("Member %s unlinked", discord_user_id)
        return existed

    async def current_link(self, discord_user_id: int) -> LinkedAccount | None:
        link = await self._storage.links.get_link(discord_user_id)
        return link if link is not None and link.status == "active" else None

    async def open_result(self, token: str) -> LinkResultView | None:
        """The one-time result page (names on the first view only)."""
        return await self._storage.link_states.open_link_result(
            token, now=self._clock(), names_for=RESULT_NAMES_SECONDS
        )

    # --- the callback ----------------------------------------------------------------------

    async def complete(
        self, query: Mapping[str, str], *, pasted_by: int | None = None
    ) -> LinkResult:
        """Finish a link from the callback's query parameters. Raises LinkFailure."""
        state = (query.get("state") or "").strip()
        error = (query.get("error") or "").strip()
        code = (query.get("code") or "").strip()
        if not state:
            raise LinkFailure("denied" if error else "missing", reason="state")
        if not error and not code:
            # Checked before the state is used up: a member who pasted a cut-off address can
            # still paste the whole one.
            raise LinkFailure("missing", reason="code")

        peeked = await self._storage.link_states.peek_link_state(state, now=self._clock())
        owner = peeked.discord_user_id
        if pasted_by is not None and owner is not None and owner != pasted_by:
            # Refuse before consuming, so the real owner's link keeps working.
            raise LinkFailure("wrong_member")
        held = self._auth.hold_remaining()
        if peeked.status == "ok" and not error and held > 0:
            # Nothing used up: the same address works later.
            raise LinkFailure("rate_limited", retry_after=held)

        consumed = await self._storage.link_states.consume_link_state(state, now=self._clock())
        if consumed.status == "unknown" or consumed.discord_user_id is None:
            raise LinkFailure("unknown_state")
        if consumed.status == "used":
            outcome_of_use = consumed.outcome or await self._wait_for_outcome(state)
            raise LinkFailure("used_state", outcome=outcome_of_use)
        if consumed.status == "expired":
            raise LinkFailure("expired_state")
        digest = hash_link_state(state)
        outcome: Outcome | None = "failed"  # None: nothing to record
        try:
            if error:
                raise LinkFailure("denied")
            result = await self._exchange_and_link(
                consumed.discord_user_id,
                code,
                digest,
                consumed.discord_name,
                "web" if pasted_by is None else "paste",
            )
            # linked and renewed recorded their result page already.
            outcome = "pending" if result.outcome == "pending" else None
            return result
        except LinkFailure as failure:
            if failure.kind == "taken":
                outcome = "taken"
            elif failure.kind == "rate_limited":
                outcome = None
                await self._storage.link_states.release_link_state(state)
            raise
        finally:
            if outcome is not None:
                await self._storage.link_states.finish_link_state(digest, outcome)

    async def _exchange_and_link(
        self,
        user_id: int,
        code: str,
        state_hash: bytes,
        discord_name: str | None,
        source: LinkSource,
    ) -> LinkResult:
        try:
            grant = await self._auth.exchange_code(code)
        except SpotifyRateLimited as exc:
            # Spotify did nothing with the code: it and the state stay usable.
            raise LinkFailure("rate_limited", retry_after=exc.retry_after) from exc
        except SpotifyError as exc:
            raise _spotify_failure(exc) from exc
        if grant.refresh_token is None:
            raise _spotify_failure(SpotifyError("the code exchange gave no refresh token"))
        try:
            user = await self._api.me(grant.access_token)
        except SpotifyRateLimited as exc:
            await self._storage.link_states.save_pending_link(
                PendingLink(
                    discord_user_id=user_id,
                    state_hash=state_hash,
                    sealed_grant=seal_grant(self._cipher, user_id, grant, self._clock()),
                    discord_name=discord_name,
                    created_at=self._clock(),
                )
            )
            log.info("Member %s's link waits for Spotify's Web API hold to end", user_id)
            for wake in self._on_pending:
                wake()
            return LinkResult(user_id, "pending", retry_after=exc.retry_after)
        except SpotifyError as exc:
            raise _spotify_failure(exc) from exc
        return await self.store(user_id, user, grant, state_hash, source)

    async def store(
        self,
        user_id: int,
        user: SpotifyUser,
        grant: TokenGrant,
        state_hash: bytes,
        source: LinkSource,
    ) -> LinkResult:
        """Store a link unless the Spotify account is another member's; tell the listeners."""
        try:
            kind = await self._tokens.store_new_link(user_id, user, grant)
        except SpotifyAccountTaken:
            log.info("Member %s tried to link a Spotify account linked to another member", user_id)
            raise LinkFailure("taken") from None
        if source != "later":
            # The member linked again meanwhile: an older link still waiting for Spotify must
            # not override this one when the hold ends.
            await self._storage.link_states.delete_pending_link(user_id)
        # The result page is for the browser that is waiting; a pasted link is answered in
        # Discord, and a link finished later by DM.
        token = secrets.token_urlsafe(24) if source == "web" else None
        await self._storage.link_states.finish_link_state(
            state_hash,
            kind,
            result_token=token,
            spotify_name=user.display_name if token is not None else None,
        )
        log.info("Member %s %s a Spotify account", user_id, kind)
        await self._events.emit("linked", user_id)
        if source != "paste":  # the modal's own answer says it
            await self.notify(user_id, linked_words(user.display_name, kind))
        return LinkResult(user_id, kind, user.display_name, user.id, result_token=token)

    async def notify(self, user_id: int, text: str) -> None:
        for callback in self._on_notice:
            try:
                await callback(user_id, text)
            except Exception:
                log.exception("A notice listener failed for member %s", user_id)

    async def _wait_for_outcome(self, state: str) -> str | None:
        """Another request is using this state: wait (bounded) for what it comes to. At most
        ``MAX_WAITERS`` requests wait at once; any more are answered at once."""
        if self._waiters >= MAX_WAITERS:
            return None
        self._waiters += 1
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + CONCURRENT_WAIT_SECONDS
            delay = CONCURRENT_POLL_SECONDS
            while loop.time() < deadline:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                outcome = await self._storage.link_states.link_state_outcome(state)
                if outcome is not None:
                    return outcome
            return None
        finally:
            self._waiters -= 1


# --- what a Spotify error means for a link -----------------------------------------------


def _spotify_failure(exc: SpotifyError) -> LinkFailure:
    if isinstance(exc, SpotifyNotRegistered):
        return LinkFailure("not_registered")
    if isinstance(exc, InvalidGrant):
        return LinkFailure("exchange_failed", reason="code")
    if isinstance(exc, InvalidClient):
        log.error("Spotify rejected the client id/secret while linking: %s", exc)
        return LinkFailure("bad_config")
    if isinstance(exc, SpotifyAuthError):
        log.warning("Spotify refused a code exchange: %s", exc.error)
        return LinkFailure("exchange_failed", reason="mismatch")
    log.warning("Spotify failed during a link: %s", exc)
    return LinkFailure("spotify_down")
