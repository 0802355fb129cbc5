"""Every query of the bot, written once for SQLite and PostgreSQL (``bot.backends``).

Queries use ``?`` placeholders and the SQL both engines share. Every change runs in a write
transaction of the backend (rolled back on any error) that serialises writers across every
process sharing the database, so a read-then-write inside one never races; reads are single
statements.

Timestamps are floats of Unix time (``time.time()``). Refresh tokens arrive and leave here
already encrypted (``bot.crypto.TokenCipher``); this module never sees plaintext.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

from bot.backends import Database, Row, Transaction, is_postgresql_url
from bot.backends.sqlite import SqliteDatabase

log = logging.getLogger(__name__)

LinkStatus = Literal["active", "broken"]
LinkStateStatus = Literal["ok", "unknown", "expired", "used"]
Visibility = Literal["server", "private"]
VISIBILITIES: Final[tuple[Visibility, ...]] = ("server", "private")
LINK_STATUSES: Final[tuple[LinkStatus, ...]] = ("active", "broken")
DEFAULT_LINK_STATE_TTL: Final = 600.0
DEFAULT_KEEP_USED_STATES_FOR: Final = 86400.0


@dataclass(frozen=True, slots=True)
class LinkedAccount:
    discord_user_id: int
    spotify_account_id: str
    spotify_user_id: str
    display_name: str
    refresh_token: bytes | None = field(repr=False)  # encrypted; None once the link broke
    scopes: str
    linked_at: float
    status: LinkStatus = "active"


@dataclass(frozen=True, slots=True)
class LinkStateResult:
    """``ok``: consumed now. ``used``: consumed before. ``expired``/``unknown``: refuse.

    ``discord_user_id`` is the member who asked for the link (None only for ``unknown``).
    """

    status: LinkStateStatus
    discord_user_id: int | None
    # What the callback that used the state made of it (None while it still works, or never
    # finished), and the member's Discord name as /link saw it.
    outcome: str | None = None
    discord_name: str | None = None


class SpotifyAccountTaken(Exception):
    """The Spotify account is linked to another member; nothing was written."""


@dataclass(frozen=True, slots=True)
class RecentLinkState:
    """A member's newest state that still works (for /link's cooldown)."""

    sealed_state: bytes | None = field(repr=False)
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class LinkResultView:
    """A result page. The names are there on the first view only (``first_view``)."""

    discord_user_id: int
    outcome: str
    first_view: bool
    spotify_name: str | None
    discord_name: str | None


@dataclass(frozen=True, slots=True)
class PendingLink:
    """A code exchanged while Spotify held the Web API; the grant is encrypted for the member."""

    discord_user_id: int
    state_hash: bytes
    sealed_grant: bytes = field(repr=False)
    discord_name: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class GuildSettings:
    guild_id: int
    music_channel_id: int | None
    autopost_notice: str | None


@dataclass(frozen=True, slots=True)
class OutboxPost:
    """An auto-post waiting in the outbox (``payload``: the message as JSON)."""

    nonce: str
    channel_id: int
    payload: str
    created_at: float
    message_id: int | None = None
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class LastPost:
    discord_user_id: int
    channel_id: int
    item_key: str
    message_id: int
    posted_at: float


@dataclass(frozen=True, slots=True)
class Play:
    """One play in the listening log. ``artists`` in Spotify's order (the first is the one
    /recap counts); ``started_at`` is Unix time."""

    discord_user_id: int
    track_id: str
    started_at: float
    track_name: str
    artists: tuple[str, ...]
    duration_ms: int
    source: str
    album_id: str | None = None
    album_name: str | None = None
    image_url: str | None = None


@dataclass(frozen=True, slots=True)
class RecapEntry:
    """A track (``key`` is its id) or an artist (``key`` is the name) and its play count."""

    key: str
    name: str
    plays: int
    artists: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecapAlbum:
    """An album of a recap: plays of its tracks, names and cover from its latest play."""

    album_id: str
    name: str
    artist: str
    image_url: str | None
    plays: int


@dataclass(frozen=True, slots=True)
class Recap:
    tracks: tuple[RecapEntry, ...]
    artists: tuple[RecapEntry, ...]
    listeners: int
    plays: int
    albums: tuple[RecapAlbum, ...] = ()


ARTIST_SEPARATOR: Final = "; "
_PLAY_COLUMNS: Final = (
    "discord_user_id, track_id, started_at, track_name, artist, artists, album_id, album_name, "
    "image_url, duration_ms, source"
)
PRUNE_BATCH: Final = 5000


def _play_from_row(row: Row) -> Play:
    return Play(
        discord_user_id=int(row[0]),
        track_id=str(row[1]),
        started_at=float(row[2]),
        track_name=str(row[3]),
        artists=tuple(name for name in str(row[5]).split(ARTIST_SEPARATOR) if name),
        album_id=str(row[6]) if row[6] is not None else None,
        album_name=str(row[7]) if row[7] is not None else None,
        image_url=str(row[8]) if row[8] is not None else None,
        duration_ms=int(row[9]),
        source=str(row[10]),
    )


def _play_values(play: Play) -> tuple[Any, ...]:
    """The values of ``_PLAY_COLUMNS`` for a play."""
    artists = ARTIST_SEPARATOR.join(name.replace(ARTIST_SEPARATOR, ";") for name in play.artists)
    return (
        play.discord_user_id,
        play.track_id,
        play.started_at,
        play.track_name,
        play.artists[0] if play.artists else "",
        artists,
        play.album_id,
        play.album_name,
        play.image_url,
        play.duration_ms,
        play.source,
    )


def hash_link_state(state: str) -> bytes:
    """Only this digest is stored: a leaked database cannot complete someone's link."""
    return hashlib.sha256(state.encode("utf-8")).digest()


_ACCOUNT_COLUMNS: Final = (
    "discord_user_id, spotify_account_id, spotify_user_id, display_name, "
    "refresh_token, scopes, linked_at, status"
)
_PENDING_COLUMNS: Final = "discord_user_id, state_hash, sealed_grant, discord_name, created_at"


def _upsert_by_member(table: str, columns: str) -> str:
    """INSERT one row of ``columns`` (comma-separated, the member's id first); a row the member
    already has takes every other column from the new one."""
    names = [name.strip() for name in columns.split(",")]
    updates = ", ".join(f"{name} = excluded.{name}" for name in names[1:])
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(names))}) "  # noqa: S608
        f"ON CONFLICT (discord_user_id) DO UPDATE SET {updates}"
    )


def _account_from_row(row: Row) -> LinkedAccount:
    status = str(row[7])
    if status not in LINK_STATUSES:  # the CHECK constraint makes this unreachable
        raise ValueError(f"unexpected link status {status!r}")
    token = row[4]
    return LinkedAccount(
        discord_user_id=int(row[0]),
        spotify_account_id=str(row[1]),
        spotify_user_id=str(row[2]),
        display_name=str(row[3]),
        refresh_token=bytes(token) if token is not None else None,
        scopes=str(row[5]),
        linked_at=float(row[6]),
        status=status,
    )


def _last_post_from_row(row: Row) -> LastPost:
    return LastPost(
        discord_user_id=int(row[0]),
        channel_id=int(row[1]),
        item_key=str(row[2]),
        message_id=int(row[3]),
        posted_at=float(row[4]),
    )


class Storage:
    """The bot's database. Open with ``await Storage.open(path_or_url)`` or ``async with``.

    ``path_or_url``: an SQLite file (or ``":memory:"``), or a ``postgresql://`` URL.
    """

    def __init__(self, database: Database) -> None:
        self._database = database

    @classmethod
    async def open(cls, path_or_url: Path | str) -> Storage:
        """Open (creating the SQLite folder and file when missing) and migrate to the latest."""
        if isinstance(path_or_url, str) and is_postgresql_url(path_or_url):
            from bot.backends.postgresql import PostgresDatabase  # asyncpg only when used

            return cls(await PostgresDatabase.open(path_or_url))
        return cls(await SqliteDatabase.open(path_or_url))

    @property
    def database(self) -> Database:
        return self._database

    @property
    def dialect(self) -> str:
        return self._database.dialect

    @property
    def applied_migrations(self) -> tuple[int, ...]:
        return self._database.applied_migrations

    async def close(self) -> None:
        """Close the connection after any running transaction finishes. Idempotent."""
        await self._database.close()

    @property
    def closed(self) -> bool:
        return self._database.closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Storage {self.dialect} {'closed' if self.closed else 'open'}>"

    # --- plumbing ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Transaction]:
        async with self._database.transaction() as tx:
            yield tx

    async def _fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]:
        return await self._database.fetchall(sql, parameters)

    async def _fetchone(self, sql: str, parameters: Iterable[Any] = ()) -> Row | None:
        rows = await self._fetchall(sql, parameters)
        return rows[0] if rows else None

    async def _write(self, sql: str, parameters: Iterable[Any] = ()) -> int:
        async with self._transaction() as tx:
            return await tx.execute(sql, parameters)

    # --- health --------------------------------------------------------------------------------

    async def schema_version(self) -> int:
        return await self._database.schema_version()

    async def ping(self, timeout: float = 2.0) -> bool:
        """True when a trivial query answers within ``timeout`` seconds (for /healthz)."""
        return await self._database.ping(timeout)

    # --- linked accounts -----------------------------------------------------------------------

    async def get_link(self, user_id: int) -> LinkedAccount | None:
        row = await self._fetchone(
            f"SELECT {_ACCOUNT_COLUMNS} FROM linked_accounts WHERE discord_user_id = ?",  # noqa: S608
            (user_id,),
        )
        return _account_from_row(row) if row is not None else None

    async def save_link(self, account: LinkedAccount) -> Literal["linked", "renewed"]:
        """Insert or replace the member's link; "renewed" when it was already this account.

        A Spotify account belongs to one member at most and is never moved: when it is linked
        to another member, nothing is written and SpotifyAccountTaken is raised.
        """
        if account.status not in LINK_STATUSES:
            raise ValueError(f"status must be one of {LINK_STATUSES}")
        async with self._transaction() as tx:
            owner = await tx.fetchone(
                "SELECT discord_user_id, status FROM linked_accounts WHERE spotify_account_id = ?",
                (account.spotify_account_id,),
            )
            if owner is not None and int(owner[0]) != account.discord_user_id:
                raise SpotifyAccountTaken("the Spotify account is linked to another member")
            await tx.execute(
                _upsert_by_member("linked_accounts", _ACCOUNT_COLUMNS),
                (
                    account.discord_user_id,
                    account.spotify_account_id,
                    account.spotify_user_id,
                    account.display_name,
                    account.refresh_token,
                    account.scopes,
                    account.linked_at,
                    account.status,
                ),
            )
        # Renewed: the same working link again. A broken one coming back is linked anew.
        return "renewed" if owner is not None and owner[1] == "active" else "linked"

    async def spotify_account_owner(self, spotify_account_id: str) -> int | None:
        """The member a Spotify account is linked to, if any."""
        row = await self._fetchone(
            "SELECT discord_user_id FROM linked_accounts WHERE spotify_account_id = ?",
            (spotify_account_id,),
        )
        return int(row[0]) if row is not None else None

    async def update_refresh_token(self, user_id: int, encrypted: bytes) -> None:
        """Store a rotated refresh token. Does nothing when the member is no longer linked."""
        await self._write(
            "UPDATE linked_accounts SET refresh_token = ? WHERE discord_user_id = ?",
            (encrypted, user_id),
        )

    async def mark_link_broken(self, user_id: int) -> None:
        """Forget the refresh token and flag the link, keeping who it was for the member."""
        await self._write(
            "UPDATE linked_accounts SET refresh_token = NULL, status = 'broken' "
            "WHERE discord_user_id = ?",
            (user_id,),
        )

    async def delete_member(self, user_id: int) -> bool:
        """Forget everything about a member (link, settings, last posts, pending link states).

        The privacy choice (``member_privacy``) stays: a private member who unlinks must not
        become visible through their Discord status. Returns True when anything was stored.
        """
        async with self._transaction() as tx:
            removed = 0
            for table in (
                "linked_accounts",
                "member_settings",
                "member_guild_settings",
                "last_posts",
                "link_states",
                "pending_links",
            ):
                removed += await tx.execute(
                    f"DELETE FROM {table} WHERE discord_user_id = ?",  # noqa: S608
                    (user_id,),
                )
            # The listening log goes too; it alone is not "anything to unlink". So does an
            # explicit "server" choice (the default anyway): it would keep logging their
            # Discord status. A "private" choice stays.
            for table in ("plays", "listening_guilds"):
                await tx.execute(
                    f"DELETE FROM {table} WHERE discord_user_id = ?",  # noqa: S608
                    (user_id,),
                )
            await tx.execute(
                "DELETE FROM member_privacy WHERE discord_user_id = ? AND visibility = 'server'",
                (user_id,),
            )
        return removed > 0

    async def count_links(self, status: str = "active") -> int:
        row = await self._fetchone(
            "SELECT COUNT(*) FROM linked_accounts WHERE status = ?", (status,)
        )
        return int(row[0]) if row is not None else 0

    async def list_active_user_ids(self) -> list[int]:
        rows = await self._fetchall(
            "SELECT discord_user_id FROM linked_accounts WHERE status = 'active' "
            "ORDER BY discord_user_id"
        )
        return [int(row[0]) for row in rows]

    async def list_encrypted_secrets(self) -> list[tuple[int, bytes]]:
        """Every stored refresh token as (discord user id, encrypted blob)."""
        rows = await self._fetchall(
            "SELECT discord_user_id, refresh_token FROM linked_accounts "
            "WHERE refresh_token IS NOT NULL ORDER BY discord_user_id"
        )
        return [(int(row[0]), bytes(row[1])) for row in rows]

    async def replace_encrypted_secrets(
        self,
        updates: Sequence[tuple[int, bytes]],
        *,
        expected: Mapping[int, bytes] | None = None,
    ) -> int:
        """Write new encrypted refresh tokens in one transaction; return the rows changed.

        With ``expected`` (user id -> the blob read before), a row changes only while it still
        holds that blob, so a token refreshed meanwhile is never overwritten by a stale one.
        """
        if not updates:
            return 0
        changed = 0
        async with self._transaction() as tx:
            for user_id, blob in updates:
                if expected is None:
                    changed += await tx.execute(
                        "UPDATE linked_accounts SET refresh_token = ? WHERE discord_user_id = ?",
                        (blob, user_id),
                    )
                elif user_id in expected:
                    changed += await tx.execute(
                        "UPDATE linked_accounts SET refresh_token = ? "
                        "WHERE discord_user_id = ? AND refresh_token = ?",
                        (blob, user_id, expected[user_id]),
                    )
        return changed

    @asynccontextmanager
    async def secure_delete(self) -> AsyncIterator[None]:
        """Within the block, content that statements free or overwrite is zeroed in the file
        (SQLite's ``PRAGMA secure_delete``), so replaced secrets leave no copy in free space."""
        async with self._database.scrub_freed_content():
            yield

    def member_lock(self, user_id: int) -> AbstractAsyncContextManager[None]:
        """Held while a member's refresh token is read, refreshed and stored: across every
        process sharing the database, so a rotated refresh token is never lost to a race."""
        return self._database.lock(f"member:{int(user_id)}")

    def named_lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """A lock across every process sharing the database (e.g. IDENTIFY turns)."""
        return self._database.lock(name)

    def try_named_lock(self, name: str) -> AbstractAsyncContextManager[asyncio.Event | None]:
        """Take a lock across every process sharing the database only if it is free: yields
        None when another process holds it, else an event set when it may have been lost
        (the database connection holding it went away). SQLite: always taken, never lost."""
        return self._database.try_lock(name)

    async def notify(self, channel: str, payload: str) -> None:
        """Wake the other processes sharing the database (nothing to do on SQLite)."""
        await self._database.notify(channel, payload)

    def listen(
        self, channel: str, callback: Callable[[str], None]
    ) -> AbstractAsyncContextManager[None]:
        return self._database.listen(channel, callback)

    async def checkpoint_truncate(self) -> bool:
        """SQLite: copy the WAL into the database and truncate it to zero bytes, so no old page
        image survives in the ``-wal`` file. False when another connection kept it busy."""
        return await self._database.checkpoint_truncate()

    # --- OAuth link states ---------------------------------------------------------------------

    async def create_link_state(
        self,
        state: str,
        user_id: int,
        *,
        now: float,
        ttl: float = DEFAULT_LINK_STATE_TTL,
        discord_name: str | None = None,
        sealed_state: bytes | None = None,
        keep_per_member: int | None = None,
    ) -> None:
        """Remember an OAuth ``state`` (only its SHA-256) for ``user_id`` until ``now + ttl``.

        With ``keep_per_member``, the member's older states beyond that many are deleted in
        the same transaction (they stop working).
        """
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        async with self._transaction() as tx:
            await tx.execute(
                "INSERT INTO link_states (state_hash, discord_user_id, created_at, expires_at, "
                "discord_name, sealed_state) VALUES (?, ?, ?, ?, ?, ?)",
                (hash_link_state(state), user_id, now, now + ttl, discord_name, sealed_state),
            )
            if keep_per_member is not None:
                await tx.execute(
                    "DELETE FROM link_states WHERE discord_user_id = ? AND state_hash NOT IN "
                    "(SELECT state_hash FROM link_states WHERE discord_user_id = ? "
                    "ORDER BY created_at DESC, state_hash LIMIT ?)",
                    (user_id, user_id, max(keep_per_member, 1)),
                )

    async def recent_link_state(
        self, user_id: int, *, created_since: float, now: float
    ) -> RecentLinkState | None:
        """The member's newest unused, unexpired state created at ``created_since`` or later."""
        row = await self._fetchone(
            "SELECT sealed_state, created_at, expires_at FROM link_states "
            "WHERE discord_user_id = ? AND used_at IS NULL AND created_at >= ? AND expires_at > ? "
            "ORDER BY created_at DESC LIMIT 1",
            (user_id, created_since, now),
        )
        if row is None:
            return None
        return RecentLinkState(
            sealed_state=bytes(row[0]) if row[0] is not None else None,
            created_at=float(row[1]),
            expires_at=float(row[2]),
        )

    async def count_link_states(self, user_id: int | None = None) -> int:
        if user_id is None:
            row = await self._fetchone("SELECT COUNT(*) FROM link_states")
        else:
            row = await self._fetchone(
                "SELECT COUNT(*) FROM link_states WHERE discord_user_id = ?", (user_id,)
            )
        return int(row[0]) if row is not None else 0

    async def consume_link_state(self, state: str, *, now: float) -> LinkStateResult:
        """Atomically use a state once.

        ``ok`` (marked used now) or ``used`` (consumed before, e.g. a page reload) carry the
        member; ``expired`` carries the member too; ``unknown`` carries None. A used state
        reports ``used`` even after it expired, as long as it is kept (see purge_link_states).
        """
        digest = hash_link_state(state)
        async with self._transaction() as tx:
            row = await tx.fetchone(
                "SELECT discord_user_id, expires_at, used_at, outcome, discord_name "
                "FROM link_states WHERE state_hash = ?",
                (digest,),
            )
            if row is None:
                return LinkStateResult("unknown", None)
            owner = int(row[0])
            outcome = str(row[3]) if row[3] is not None else None
            name = str(row[4]) if row[4] is not None else None
            if row[2] is not None:
                return LinkStateResult("used", owner, outcome)
            if now >= float(row[1]):
                return LinkStateResult("expired", owner)
            await tx.execute(
                "UPDATE link_states SET used_at = ? WHERE state_hash = ?", (now, digest)
            )
        return LinkStateResult("ok", owner, discord_name=name)

    async def peek_link_state(self, state: str, *, now: float) -> LinkStateResult:
        """What ``consume_link_state`` would answer, without consuming anything."""
        row = await self._fetchone(
            "SELECT discord_user_id, expires_at, used_at, outcome FROM link_states "
            "WHERE state_hash = ?",
            (hash_link_state(state),),
        )
        if row is None:
            return LinkStateResult("unknown", None)
        owner = int(row[0])
        if row[2] is not None:
            return LinkStateResult("used", owner, str(row[3]) if row[3] is not None else None)
        if now >= float(row[1]):
            return LinkStateResult("expired", owner)
        return LinkStateResult("ok", owner)

    async def release_link_state(self, state: str) -> None:
        """Make a consumed state usable again (Spotify refused to do anything with it yet)."""
        await self._write(
            "UPDATE link_states SET used_at = NULL, outcome = NULL WHERE state_hash = ?",
            (hash_link_state(state),),
        )

    async def finish_link_state(
        self,
        state_hash: bytes,
        outcome: str,
        *,
        result_token: str | None = None,
        spotify_name: str | None = None,
    ) -> None:
        """Record what a used state came to; with ``result_token``, its one-time result page.

        Without one, the member's name is erased: nothing will show it.
        """
        await self._write(
            "UPDATE link_states SET outcome = ?, result_hash = ?, spotify_name = ?, "
            "discord_name = CASE WHEN ? THEN discord_name END "
            "WHERE state_hash = ?",
            (
                outcome,
                hash_link_state(result_token) if result_token is not None else None,
                spotify_name,
                result_token is not None,
                state_hash,
            ),
        )

    async def link_state_outcome(self, state: str) -> str | None:
        row = await self._fetchone(
            "SELECT outcome FROM link_states WHERE state_hash = ?", (hash_link_state(state),)
        )
        return str(row[0]) if row is not None and row[0] is not None else None

    async def open_link_result(
        self, token: str, *, now: float, names_for: float
    ) -> LinkResultView | None:
        """A result page by its token. The names come with the first view only, and only
        within ``names_for`` seconds of the link; they are erased once shown."""
        digest = hash_link_state(token)
        async with self._transaction() as tx:
            row = await tx.fetchone(
                "SELECT discord_user_id, outcome, result_shown_at, spotify_name, discord_name, "
                "used_at FROM link_states WHERE result_hash = ?",
                (digest,),
            )
            if row is None or row[1] is None:
                return None
            first_view = row[2] is None and now - float(row[5] or 0.0) <= names_for
            if row[2] is None:
                await tx.execute(
                    "UPDATE link_states SET result_shown_at = ?, spotify_name = NULL, "
                    "discord_name = NULL WHERE result_hash = ?",
                    (now, digest),
                )
        return LinkResultView(
            discord_user_id=int(row[0]),
            outcome=str(row[1]),
            first_view=first_view,
            spotify_name=str(row[3]) if first_view and row[3] is not None else None,
            discord_name=str(row[4]) if first_view and row[4] is not None else None,
        )

    # --- links waiting for Spotify's Web API hold to end ----------------------------------------

    async def save_pending_link(self, pending: PendingLink) -> None:
        """Keep a member's exchanged grant (one per member: the newest wins)."""
        await self._write(
            _upsert_by_member("pending_links", _PENDING_COLUMNS),
            (
                pending.discord_user_id,
                pending.state_hash,
                pending.sealed_grant,
                pending.discord_name,
                pending.created_at,
            ),
        )

    async def list_pending_links(self) -> list[PendingLink]:
        rows = await self._fetchall(
            "SELECT discord_user_id, state_hash, sealed_grant, discord_name, created_at "
            "FROM pending_links ORDER BY created_at"
        )
        return [
            PendingLink(
                discord_user_id=int(row[0]),
                state_hash=bytes(row[1]),
                sealed_grant=bytes(row[2]),
                discord_name=str(row[3]) if row[3] is not None else None,
                created_at=float(row[4]),
            )
            for row in rows
        ]

    async def delete_pending_link(self, user_id: int, state_hash: bytes | None = None) -> bool:
        """Forget a member's pending link; with ``state_hash``, only that one (not a newer one
        that replaced it meanwhile)."""
        if state_hash is None:
            removed = await self._write(
                "DELETE FROM pending_links WHERE discord_user_id = ?", (user_id,)
            )
        else:
            removed = await self._write(
                "DELETE FROM pending_links WHERE discord_user_id = ? AND state_hash = ?",
                (user_id, state_hash),
            )
        return removed > 0

    async def purge_link_states(
        self, *, now: float, keep_used_for: float = DEFAULT_KEEP_USED_STATES_FOR
    ) -> int:
        """Delete states that finished (were used, or expired unused) ``keep_used_for`` ago.

        Finished states are kept a while so that a reloaded or late callback page can say
        "already used" or "expired" instead of "unknown link". Returns how many were deleted.
        """
        return await self._write(
            "DELETE FROM link_states WHERE coalesce(used_at, expires_at) <= ?",
            (now - keep_used_for,),
        )

    # --- guild settings ------------------------------------------------------------------------

    async def get_guild_settings(self, guild_id: int) -> GuildSettings | None:
        row = await self._fetchone(
            "SELECT guild_id, music_channel_id, autopost_notice FROM guild_settings "
            "WHERE guild_id = ?",
            (guild_id,),
        )
        if row is None:
            return None
        return GuildSettings(
            guild_id=int(row[0]),
            music_channel_id=int(row[1]) if row[1] is not None else None,
            autopost_notice=str(row[2]) if row[2] is not None else None,
        )

    async def _set_channel(
        self, guild_id: int, channel_id: int | None, notice: str | None, now: float
    ) -> None:
        async with self._transaction() as tx:
            previous = await tx.fetchone(
                "SELECT music_channel_id FROM guild_settings WHERE guild_id = ?", (guild_id,)
            )
            await tx.execute(
                """
                INSERT INTO guild_settings (guild_id, music_channel_id, autopost_notice, updated_at)
                VALUES (?, ?, ?, ?)
                ON CONFLICT (guild_id) DO UPDATE SET
                    music_channel_id = excluded.music_channel_id,
                    autopost_notice = excluded.autopost_notice,
                    updated_at = excluded.updated_at
                """,
                (guild_id, channel_id, notice, now),
            )
            # Posts in a channel the guild no longer uses must not suppress future posts there.
            if previous is not None and previous[0] is not None and previous[0] != channel_id:
                await tx.execute("DELETE FROM last_posts WHERE channel_id = ?", (previous[0],))

    async def set_music_channel(
        self, guild_id: int, channel_id: int | None, *, now: float | None = None
    ) -> None:
        """Set (or with None, unset) the guild's auto-post channel; clears any notice.

        When the channel changes, the last-post records of the previous channel are dropped.
        """
        await self._set_channel(guild_id, channel_id, None, time.time() if now is None else now)

    async def disable_autopost(
        self, guild_id: int, notice: str, *, now: float | None = None
    ) -> None:
        """Stop auto-posting in the guild and keep ``notice`` for the admin to read."""
        await self._set_channel(guild_id, None, notice, time.time() if now is None else now)

    async def clear_autopost_notice(self, guild_id: int) -> None:
        await self._write(
            "UPDATE guild_settings SET autopost_notice = NULL WHERE guild_id = ?", (guild_id,)
        )

    async def list_music_channels(self) -> dict[int, int]:
        """guild id -> auto-post channel id, for every guild that has one."""
        rows = await self._fetchall(
            "SELECT guild_id, music_channel_id FROM guild_settings "
            "WHERE music_channel_id IS NOT NULL ORDER BY guild_id"
        )
        return {int(row[0]): int(row[1]) for row in rows}

    # --- member settings -----------------------------------------------------------------------

    async def get_autopost_opt_in(self, user_id: int) -> bool | None:
        """True/False as the member chose; None when they never chose (callers apply the
        default: linked members in, presence-only members out)."""
        row = await self._fetchone(
            "SELECT autopost_opt_in FROM member_settings WHERE discord_user_id = ?", (user_id,)
        )
        if row is None or row[0] is None:
            return None
        return bool(row[0])

    async def set_autopost_opt_in(
        self, user_id: int, enabled: bool, *, now: float | None = None
    ) -> None:
        await self._write(
            """
            INSERT INTO member_settings (discord_user_id, autopost_opt_in, updated_at)
            VALUES (?, ?, ?)
            ON CONFLICT (discord_user_id) DO UPDATE SET
                autopost_opt_in = excluded.autopost_opt_in,
                updated_at = excluded.updated_at
            """,
            (user_id, int(bool(enabled)), time.time() if now is None else now),
        )

    async def get_guild_autopost_opt_in(self, user_id: int, guild_id: int) -> bool | None:
        """The member's auto-post choice in one server: the choice made there, else the choice
        made before it was per server (it applies everywhere until changed), else None."""
        row = await self._fetchone(
            """
            SELECT coalesce(
                (SELECT autopost_opt_in FROM member_guild_settings
                 WHERE discord_user_id = ? AND guild_id = ?),
                (SELECT autopost_opt_in FROM member_settings WHERE discord_user_id = ?)
            )
            """,
            (user_id, guild_id, user_id),
        )
        if row is None or row[0] is None:
            return None
        return bool(row[0])

    async def set_guild_autopost_opt_in(
        self, user_id: int, guild_id: int, enabled: bool, *, now: float | None = None
    ) -> None:
        """``/autopost me`` in one server; other servers keep their own (or the old) choice."""
        await self._write(
            """
            INSERT INTO member_guild_settings (discord_user_id, guild_id, autopost_opt_in,
                                               updated_at)
            VALUES (?, ?, ?, ?)
            ON CONFLICT (discord_user_id, guild_id) DO UPDATE SET
                autopost_opt_in = excluded.autopost_opt_in,
                updated_at = excluded.updated_at
            """,
            (user_id, guild_id, int(bool(enabled)), time.time() if now is None else now),
        )

    async def get_autopost_opt_in_anywhere(self, user_id: int) -> bool | None:
        """Summary over every server: True when the member opted in somewhere (here or before
        it was per server), False when they opted out before it was per server and in
        nowhere since, None otherwise (the default of each server applies)."""
        row = await self._fetchone(
            """
            SELECT
                (SELECT max(autopost_opt_in) FROM member_guild_settings
                 WHERE discord_user_id = ?),
                (SELECT autopost_opt_in FROM member_settings WHERE discord_user_id = ?)
            """,
            (user_id, user_id),
        )
        per_guild = row[0] if row is not None else None
        fallback = row[1] if row is not None else None
        if per_guild == 1 or fallback == 1:
            return True
        if fallback == 0:
            return False
        return None

    async def list_autopost_opted_in_user_ids(self) -> set[int]:
        """Every member who opted in somewhere (per server, or before it was per server)."""
        rows = await self._fetchall(
            "SELECT discord_user_id FROM member_guild_settings WHERE autopost_opt_in = 1 "
            "UNION SELECT discord_user_id FROM member_settings WHERE autopost_opt_in = 1"
        )
        return {int(row[0]) for row in rows}

    # --- privacy -------------------------------------------------------------------------------

    async def get_visibility_choice(self, user_id: int) -> Visibility | None:
        """The visibility the member chose with /privacy, or None when they never chose."""
        row = await self._fetchone(
            "SELECT visibility FROM member_privacy WHERE discord_user_id = ?", (user_id,)
        )
        if row is None:
            return None
        value = str(row[0])
        return "private" if value == "private" else "server"

    async def get_visibility(self, user_id: int) -> Visibility:
        """``"server"`` (the default: members of a shared server see you) or ``"private"``."""
        return await self.get_visibility_choice(user_id) or "server"

    async def set_visibility(
        self, user_id: int, value: Visibility, *, now: float | None = None
    ) -> None:
        """Store the member's choice. Choosing ``private`` also forgets the auto-poster's record
        of what they last played (``last_posts``) in the same transaction."""
        if value not in VISIBILITIES:
            raise ValueError(f"visibility must be one of {VISIBILITIES}")
        async with self._transaction() as tx:
            await tx.execute(
                """
                INSERT INTO member_privacy (discord_user_id, visibility, updated_at)
                VALUES (?, ?, ?)
                ON CONFLICT (discord_user_id) DO UPDATE SET
                    visibility = excluded.visibility,
                    updated_at = excluded.updated_at
                """,
                (user_id, value, time.time() if now is None else now),
            )
            if value == "private":
                await tx.execute("DELETE FROM last_posts WHERE discord_user_id = ?", (user_id,))

    async def list_explicit_server_user_ids(self) -> set[int]:
        """Members who chose ``server`` with /privacy (rather than never choosing)."""
        rows = await self._fetchall(
            "SELECT discord_user_id FROM member_privacy WHERE visibility = 'server'"
        )
        return {int(row[0]) for row in rows}

    async def list_private_user_ids(self) -> set[int]:
        """Every member whose visibility is ``private``."""
        rows = await self._fetchall(
            "SELECT discord_user_id FROM member_privacy WHERE visibility = 'private'"
        )
        return {int(row[0]) for row in rows}

    # --- auto-post last posts ------------------------------------------------------------------

    async def get_last_post(self, user_id: int, channel_id: int) -> LastPost | None:
        row = await self._fetchone(
            "SELECT discord_user_id, channel_id, item_key, message_id, posted_at "
            "FROM last_posts WHERE discord_user_id = ? AND channel_id = ?",
            (user_id, channel_id),
        )
        return _last_post_from_row(row) if row is not None else None

    async def record_post(self, post: LastPost) -> None:
        await self._write(
            """
            INSERT INTO last_posts (discord_user_id, channel_id, item_key, message_id, posted_at)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (discord_user_id, channel_id) DO UPDATE SET
                item_key = excluded.item_key,
                message_id = excluded.message_id,
                posted_at = excluded.posted_at
            """,
            (post.discord_user_id, post.channel_id, post.item_key, post.message_id, post.posted_at),
        )

    # --- auto-post outbox -----------------------------------------------------------------

    async def outbox_put(self, post: OutboxPost) -> None:
        """Queue a post; a nonce already queued keeps its row (the same post, once)."""
        await self._write(
            "INSERT INTO autopost_outbox (nonce, channel_id, payload, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (nonce) DO NOTHING",
            (post.nonce, post.channel_id, post.payload, post.created_at),
        )

    async def outbox_claim(
        self, now: float, lease: float, *, nonce: str | None = None, limit: int = 10
    ) -> list[OutboxPost]:
        """Claim unsent rows nobody holds (oldest first; one ``nonce`` only when given) until
        ``now + lease``: the claimer sends them. Rows another session locked are skipped."""
        where = "message_id IS NULL AND failure IS NULL AND claimed_until <= ?"
        parameters: list[Any] = [now]
        if nonce is not None:
            where += " AND nonce = ?"
            parameters.append(nonce)
        skip = " FOR UPDATE SKIP LOCKED" if self.dialect == "postgresql" else ""
        async with self._transaction() as tx:
            rows = await tx.fetchall(
                "SELECT nonce, channel_id, payload, created_at FROM autopost_outbox "  # noqa: S608
                f"WHERE {where} ORDER BY created_at LIMIT ?{skip}",
                (*parameters, limit),
            )
            await tx.executemany(
                "UPDATE autopost_outbox SET claimed_until = ? WHERE nonce = ?",
                [(now + lease, row[0]) for row in rows],
            )
        return [OutboxPost(row[0], int(row[1]), row[2], float(row[3])) for row in rows]

    async def outbox_release(self, nonce: str) -> None:
        """Sending failed in a way that may pass: any sender may try again now."""
        await self._write(
            "UPDATE autopost_outbox SET claimed_until = 0 WHERE nonce = ? AND message_id IS NULL",
            (nonce,),
        )

    async def outbox_sent(self, nonce: str, message_id: int) -> None:
        await self._write(
            "UPDATE autopost_outbox SET message_id = ? WHERE nonce = ?", (message_id, nonce)
        )

    async def outbox_failed(self, nonce: str, failure: str) -> None:
        await self._write(
            "UPDATE autopost_outbox SET failure = ? WHERE nonce = ?", (failure, nonce)
        )

    async def outbox_get(self, nonce: str) -> OutboxPost | None:
        row = await self._fetchone(
            "SELECT nonce, channel_id, payload, created_at, message_id, failure "
            "FROM autopost_outbox WHERE nonce = ?",
            (nonce,),
        )
        if row is None:
            return None
        message_id = None if row[4] is None else int(row[4])
        return OutboxPost(row[0], int(row[1]), row[2], float(row[3]), message_id, row[5])

    async def outbox_prune(self, before: float) -> int:
        """Drop rows queued before ``before`` (sent, failed, or too old to be worth sending)."""
        return await self._write("DELETE FROM autopost_outbox WHERE created_at < ?", (before,))

    async def load_last_posts(self) -> list[LastPost]:
        rows = await self._fetchall(
            "SELECT discord_user_id, channel_id, item_key, message_id, posted_at "
            "FROM last_posts ORDER BY channel_id, discord_user_id"
        )
        return [_last_post_from_row(row) for row in rows]

    # --- embed colours from album art ----------------------------------------------------------

    async def get_image_colour(self, image_key: str) -> int | None:
        row = await self._fetchone(
            "SELECT colour FROM image_colours WHERE image_key = ?", (image_key,)
        )
        return int(row[0]) if row is not None else None

    async def save_image_colour(
        self, image_key: str, colour: int, *, now: float | None = None
    ) -> None:
        await self._write(
            """
            INSERT INTO image_colours (image_key, colour, picked_at) VALUES (?, ?, ?)
            ON CONFLICT (image_key) DO UPDATE SET
                colour = excluded.colour,
                picked_at = excluded.picked_at
            """,
            (image_key, colour, time.time() if now is None else now),
        )

    # --- listening log -------------------------------------------------------------------------

    async def record_play(self, play: Play, *, match_from: float, match_to: float) -> bool:
        """Insert ``play`` unless the member already has a play of that track that started
        between ``match_from`` and ``match_to`` (the caller's rule for "the same play").

        The check and the insert share one transaction, so two sources (or two processes)
        recording the same play at once leave one row. True when a row was inserted.
        """
        async with self._transaction() as tx:
            existing = await tx.fetchone(
                "SELECT 1 FROM plays WHERE discord_user_id = ? AND started_at BETWEEN ? AND ? "
                "AND track_id = ? LIMIT 1",
                (play.discord_user_id, match_from, match_to, play.track_id),
            )
            if existing is not None:
                return False
            await tx.execute(
                f"INSERT INTO plays ({_PLAY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                _play_values(play),
            )
        return True

    async def record_plays(self, batch: Sequence[tuple[Play, float, float]]) -> int:
        """:meth:`record_play` for many plays in one transaction: each ``(play, match_from,
        match_to)`` is inserted unless a matching play exists (earlier rows of the batch
        included). SQLite does the whole batch in one round trip. Returns how many were
        inserted."""
        if not batch:
            return 0
        async with self._transaction() as tx:
            if self.dialect == "sqlite":
                rows = [
                    (*_play_values(play), play.discord_user_id, low, high, play.track_id)
                    for play, low, high in batch
                ]
                return await tx.executemany(
                    f"INSERT INTO plays ({_PLAY_COLUMNS}) "  # noqa: S608
                    "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM "
                    "plays WHERE discord_user_id = ? AND started_at BETWEEN ? AND ? "
                    "AND track_id = ?)",
                    rows,
                )
            inserted = 0
            for play, low, high in batch:
                existing = await tx.fetchone(
                    "SELECT 1 FROM plays WHERE discord_user_id = ? AND started_at BETWEEN ? "
                    "AND ? AND track_id = ? LIMIT 1",
                    (play.discord_user_id, low, high, play.track_id),
                )
                if existing is None:
                    inserted += await tx.execute(
                        f"INSERT INTO plays ({_PLAY_COLUMNS}) "  # noqa: S608
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        _play_values(play),
                    )
            return inserted

    async def recent_plays(self, user_id: int, *, limit: int = 10) -> list[Play]:
        """The member's latest plays, newest first."""
        rows = await self._fetchall(
            f"SELECT {_PLAY_COLUMNS} FROM plays WHERE discord_user_id = ? "  # noqa: S608
            "ORDER BY started_at DESC LIMIT ?",
            (user_id, limit),
        )
        return [_play_from_row(row) for row in rows]

    async def latest_play_at(self, user_id: int) -> float | None:
        row = await self._fetchone(
            "SELECT max(started_at) FROM plays WHERE discord_user_id = ?", (user_id,)
        )
        return float(row[0]) if row is not None and row[0] is not None else None

    async def delete_plays(self, user_id: int) -> int:
        """Forget the member's listening log (and where they were seen); return the plays."""
        async with self._transaction() as tx:
            removed = await tx.execute("DELETE FROM plays WHERE discord_user_id = ?", (user_id,))
            await tx.execute("DELETE FROM listening_guilds WHERE discord_user_id = ?", (user_id,))
        return removed

    async def prune_plays(self, *, before: float, batch: int = PRUNE_BATCH) -> int:
        """Delete plays that started before ``before``, ``batch`` rows per transaction so a
        large prune never holds the write lock for long. Returns how many were deleted."""
        total = 0
        while True:
            removed = await self._write(
                "DELETE FROM plays WHERE id IN (SELECT id FROM plays WHERE started_at < ? LIMIT ?)",
                (before, batch),
            )
            total += removed
            if removed < batch:
                return total
            await asyncio.sleep(0)  # let other queries in between batches

    async def count_plays(self) -> int:
        row = await self._fetchone("SELECT count(*) FROM plays")
        return int(row[0]) if row is not None else 0

    async def note_listening_guild(self, guild_id: int, user_id: int, *, now: float) -> None:
        """Remember that the member was seen in the server (their plays count there)."""
        await self._write(
            """
            INSERT INTO listening_guilds (guild_id, discord_user_id, seen_at) VALUES (?, ?, ?)
            ON CONFLICT (guild_id, discord_user_id) DO UPDATE SET seen_at = excluded.seen_at
            """,
            (guild_id, user_id, now),
        )

    async def forget_listening_guild(self, guild_id: int, user_id: int) -> None:
        await self._write(
            "DELETE FROM listening_guilds WHERE guild_id = ? AND discord_user_id = ?",
            (guild_id, user_id),
        )

    async def list_listening_guilds(self) -> list[tuple[int, int]]:
        """Every (guild id, member id) pair the log knows."""
        rows = await self._fetchall("SELECT guild_id, discord_user_id FROM listening_guilds")
        return [(int(row[0]), int(row[1])) for row in rows]

    async def recap(
        self, member_ids: Iterable[int], *, since: float, limit: int = 10, albums: int = 9
    ) -> Recap:
        """The most-played tracks and artists of these members since ``since``, with how many
        of them listened.

        One pass over the per-member covering index (each visible member's range of start
        times) counts plays per track; the artists' totals are summed from those counts.
        """
        members = sorted(set(member_ids))
        if not members:
            return Recap(tracks=(), artists=(), listeners=0, plays=0)
        marks = ", ".join("?" for _ in members)
        # SQLite: name the per-member covering index (its planner may pick the time index).
        hint = "INDEXED BY plays_member_cover " if self.dialect == "sqlite" else ""
        where = f"discord_user_id IN ({marks}) AND started_at >= ?"
        # One seek per member in the per-member index: far cheaper than a DISTINCT pass.
        listeners = await self._fetchall(
            f"SELECT count(DISTINCT discord_user_id) FROM plays {hint}WHERE {where}",  # noqa: S608
            (*members, since),
        )
        per_track = await self._fetchall(
            "SELECT track_id, max(artist), count(*), max(id), max(album_id) FROM plays "  # noqa: S608
            f"{hint}WHERE {where} GROUP BY track_id",
            (*members, since),
        )
        per_track.sort(key=lambda row: (-int(row[2]), str(row[0])))
        top = per_track[:limit]
        by_album: dict[str, list[int]] = {}  # album id -> [plays, latest play id]
        for row in per_track:
            if row[4] is not None:
                entry = by_album.setdefault(str(row[4]), [0, 0])
                entry[0] += int(row[2])
                entry[1] = max(entry[1], int(row[3]))
        top_albums = sorted(by_album.items(), key=lambda item: (-item[1][0], item[0]))
        top_albums = top_albums[:albums]
        names: dict[int, Row] = {}
        wanted = [int(row[3]) for row in top] + [entry[1] for _, entry in top_albums]
        if wanted:
            rows = await self._fetchall(
                "SELECT id, track_name, artists, album_name, image_url FROM plays "  # noqa: S608
                f"WHERE id IN ({', '.join('?' for _ in wanted)})",
                wanted,
            )
            names = {int(row[0]): row for row in rows}
        by_artist: dict[str, int] = {}
        for row in per_track:
            artist = str(row[1])
            if artist:
                by_artist[artist] = by_artist.get(artist, 0) + int(row[2])
        tracks = []
        for row in top:
            named = names.get(int(row[3]))
            name, artists = (str(named[1]), str(named[2])) if named else (str(row[0]), "")
            tracks.append(
                RecapEntry(
                    key=str(row[0]),
                    name=name,
                    plays=int(row[2]),
                    artists=tuple(a for a in artists.split(ARTIST_SEPARATOR) if a),
                )
            )
        top_artists = sorted(by_artist.items(), key=lambda item: (-item[1], item[0]))[:limit]
        album_entries = []
        for album_id, (plays, play_id) in top_albums:
            named = names.get(play_id)
            if named is None:
                continue
            album_entries.append(
                RecapAlbum(
                    album_id=album_id,
                    name=str(named[3]) if named[3] is not None else str(named[1]),
                    artist=str(named[2]).split(ARTIST_SEPARATOR)[0],
                    image_url=str(named[4]) if named[4] is not None else None,
                    plays=plays,
                )
            )
        return Recap(
            tracks=tuple(tracks),
            artists=tuple(RecapEntry(key=a, name=a, plays=n) for a, n in top_artists),
            listeners=int(listeners[0][0]) if listeners else 0,
            plays=sum(int(row[2]) for row in per_track),
            albums=tuple(album_entries),
        )


__all__ = [
    "GuildSettings",
    "LastPost",
    "LinkResultView",
    "LinkStateResult",
    "LinkStatus",
    "LinkedAccount",
    "OutboxPost",
    "PendingLink",
    "Play",
    "Recap",
    "RecapAlbum",
    "RecapEntry",
    "RecentLinkState",
    "SpotifyAccountTaken",
    "Storage",
    "Visibility",
    "hash_link_state",
]
