"""Every query of the bot, behind one aiosqlite connection.

Concurrency: one ``asyncio.Lock`` guards the connection, so a coroutine never runs a statement
inside another coroutine's transaction. Every change runs in ``BEGIN IMMEDIATE … COMMIT``
(rolled back on any error), which also serialises writers in other processes through SQLite's
write lock and ``busy_timeout``. Reads are single statements under the same lock.

Timestamps are floats of Unix time (``time.time()``). Refresh tokens arrive and leave here
already encrypted (``bot.crypto.TokenCipher``); this module never sees plaintext.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import aiosqlite

from bot import db

log = logging.getLogger(__name__)

LinkStatus = Literal["active", "broken"]
LinkStateStatus = Literal["ok", "unknown", "expired", "used"]
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


@dataclass(frozen=True, slots=True)
class GuildSettings:
    guild_id: int
    music_channel_id: int | None
    autopost_notice: str | None


@dataclass(frozen=True, slots=True)
class LastPost:
    discord_user_id: int
    channel_id: int
    item_key: str
    message_id: int
    posted_at: float


def hash_link_state(state: str) -> bytes:
    """Only this digest is stored: a leaked database cannot complete someone's link."""
    return hashlib.sha256(state.encode("utf-8")).digest()


_ACCOUNT_COLUMNS: Final = (
    "discord_user_id, spotify_account_id, spotify_user_id, display_name, "
    "refresh_token, scopes, linked_at, status"
)


def _account_from_row(row: sqlite3.Row) -> LinkedAccount:
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


def _last_post_from_row(row: sqlite3.Row) -> LastPost:
    return LastPost(
        discord_user_id=int(row[0]),
        channel_id=int(row[1]),
        item_key=str(row[2]),
        message_id=int(row[3]),
        posted_at=float(row[4]),
    )


class _Transaction:
    """The statements a coroutine may run while it holds the lock inside BEGIN IMMEDIATE."""

    __slots__ = ("_connection",)

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        async with self._connection.execute(sql, tuple(parameters)) as cursor:
            return max(cursor.rowcount, 0)

    async def fetchone(self, sql: str, parameters: Iterable[Any] = ()) -> sqlite3.Row | None:
        async with self._connection.execute(sql, tuple(parameters)) as cursor:
            return await cursor.fetchone()


class Storage:
    """The bot's database. Open with ``await Storage.open(path)`` or ``async with``."""

    def __init__(
        self, connection: aiosqlite.Connection, *, applied_migrations: Sequence[int] = ()
    ) -> None:
        self._connection: aiosqlite.Connection | None = connection
        self._lock = asyncio.Lock()
        self.applied_migrations: tuple[int, ...] = tuple(applied_migrations)

    @classmethod
    async def open(cls, path: Path | str) -> Storage:
        """Open (creating folder and file when missing) and migrate to the latest schema."""
        connection = await db.open_database(path, run_migrations=False)
        try:
            applied = await db.migrate(connection)
        except BaseException:
            await connection.close()
            raise
        if not db.is_memory_path(path):
            db.secure_database_files(Path(path))
        return cls(connection, applied_migrations=applied)

    async def close(self) -> None:
        """Close the connection after any running transaction finishes. Idempotent."""
        async with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None:
                await connection.close()

    @property
    def closed(self) -> bool:
        return self._connection is None

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
        return f"<Storage {'closed' if self.closed else 'open'}>"

    # --- plumbing ------------------------------------------------------------------------------

    def _require_connection(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise RuntimeError("Storage is closed")
        return self._connection

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Transaction]:
        async with self._lock:
            connection = self._require_connection()
            try:
                async with connection.execute("BEGIN IMMEDIATE"):
                    pass
                yield _Transaction(connection)
                await connection.commit()
            except BaseException:
                # aiosqlite runs statements in order on one thread, and a cancelled await does
                # not unqueue its statement: this ROLLBACK runs after whatever was in flight
                # (BEGIN included), so no transaction outlives the lock. A no-op when none is open.
                await connection.rollback()
                raise

    async def _fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock:
            connection = self._require_connection()
            return list(await connection.execute_fetchall(sql, tuple(parameters)))

    async def _fetchone(self, sql: str, parameters: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = await self._fetchall(sql, parameters)
        return rows[0] if rows else None

    async def _write(self, sql: str, parameters: Iterable[Any] = ()) -> int:
        async with self._transaction() as tx:
            return await tx.execute(sql, parameters)

    # --- health --------------------------------------------------------------------------------

    async def schema_version(self) -> int:
        async with self._lock:
            return await db.get_schema_version(self._require_connection())

    async def ping(self, timeout: float = 2.0) -> bool:
        """True when a trivial query answers within ``timeout`` seconds (for /healthz)."""
        try:
            async with asyncio.timeout(timeout):
                row = await self._fetchone("SELECT 1")
        except (TimeoutError, sqlite3.Error, RuntimeError, ValueError):
            return False
        return row is not None and row[0] == 1

    # --- linked accounts -----------------------------------------------------------------------

    async def get_link(self, user_id: int) -> LinkedAccount | None:
        row = await self._fetchone(
            f"SELECT {_ACCOUNT_COLUMNS} FROM linked_accounts WHERE discord_user_id = ?",  # noqa: S608
            (user_id,),
        )
        return _account_from_row(row) if row is not None else None

    async def save_link(self, account: LinkedAccount) -> None:
        """Insert or replace the member's link.

        A Spotify account belongs to one member at most: when it is linked to another member,
        that member's link row is removed in the same transaction.
        """
        if account.status not in LINK_STATUSES:
            raise ValueError(f"status must be one of {LINK_STATUSES}")
        async with self._transaction() as tx:
            moved = await tx.execute(
                "DELETE FROM linked_accounts WHERE spotify_account_id = ? AND discord_user_id != ?",
                (account.spotify_account_id, account.discord_user_id),
            )
            await tx.execute(
                f"""
                INSERT INTO linked_accounts ({_ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (discord_user_id) DO UPDATE SET
                    spotify_account_id = excluded.spotify_account_id,
                    spotify_user_id = excluded.spotify_user_id,
                    display_name = excluded.display_name,
                    refresh_token = excluded.refresh_token,
                    scopes = excluded.scopes,
                    linked_at = excluded.linked_at,
                    status = excluded.status
                """,  # noqa: S608
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
        if moved:
            log.info("a Spotify account moved to another member; the previous link was removed")

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

        Returns True when anything was stored.
        """
        async with self._transaction() as tx:
            removed = 0
            for table in ("linked_accounts", "member_settings", "last_posts", "link_states"):
                removed += await tx.execute(
                    f"DELETE FROM {table} WHERE discord_user_id = ?",  # noqa: S608
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

    # --- OAuth link states ---------------------------------------------------------------------

    async def create_link_state(
        self, state: str, user_id: int, *, now: float, ttl: float = DEFAULT_LINK_STATE_TTL
    ) -> None:
        """Remember an OAuth ``state`` (only its SHA-256) for ``user_id`` until ``now + ttl``."""
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        await self._write(
            "INSERT INTO link_states (state_hash, discord_user_id, created_at, expires_at) "
            "VALUES (?, ?, ?, ?)",
            (hash_link_state(state), user_id, now, now + ttl),
        )

    async def consume_link_state(self, state: str, *, now: float) -> LinkStateResult:
        """Atomically use a state once.

        ``ok`` (marked used now) or ``used`` (consumed before, e.g. a page reload) carry the
        member; ``expired`` carries the member too; ``unknown`` carries None. A used state
        reports ``used`` even after it expired, as long as it is kept (see purge_link_states).
        """
        digest = hash_link_state(state)
        async with self._transaction() as tx:
            row = await tx.fetchone(
                "SELECT discord_user_id, expires_at, used_at FROM link_states WHERE state_hash = ?",
                (digest,),
            )
            if row is None:
                return LinkStateResult("unknown", None)
            owner = int(row[0])
            if row[2] is not None:
                return LinkStateResult("used", owner)
            if now >= float(row[1]):
                return LinkStateResult("expired", owner)
            await tx.execute(
                "UPDATE link_states SET used_at = ? WHERE state_hash = ?", (now, digest)
            )
        return LinkStateResult("ok", owner)

    async def get_link_state_owner(self, state: str) -> int | None:
        """Who asked for ``state`` (whatever its status), without consuming it; None if unknown.

        Lets a pasted callback address be refused for the wrong member before it is used up.
        """
        row = await self._fetchone(
            "SELECT discord_user_id FROM link_states WHERE state_hash = ?",
            (hash_link_state(state),),
        )
        return int(row[0]) if row is not None else None

    async def purge_link_states(
        self, *, now: float, keep_used_for: float = DEFAULT_KEEP_USED_STATES_FOR
    ) -> int:
        """Delete states that finished (were used, or expired unused) ``keep_used_for`` ago.

        Finished states are kept a while so that a reloaded or late callback page can say
        "already linked" or "expired" instead of "unknown link". Returns how many were deleted.
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

    async def load_last_posts(self) -> list[LastPost]:
        rows = await self._fetchall(
            "SELECT discord_user_id, channel_id, item_key, message_id, posted_at "
            "FROM last_posts ORDER BY channel_id, discord_user_id"
        )
        return [_last_post_from_row(row) for row in rows]


__all__ = [
    "GuildSettings",
    "LastPost",
    "LinkStateResult",
    "LinkStatus",
    "LinkedAccount",
    "Storage",
    "hash_link_state",
]
