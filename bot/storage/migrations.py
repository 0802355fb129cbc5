"""The numbered migrations (for SQLite and PostgreSQL) and opening the SQLite database: file
and folder permissions, PRAGMAs, migrations by ``PRAGMA user_version``.

Migrations are numbered by ``PRAGMA user_version``: migration ``n`` (1-based) takes a database
from version ``n - 1`` to ``n``. Each runs in its own ``BEGIN IMMEDIATE`` transaction together
with the version bump, and the version is read again inside that transaction, so two processes
opening the same file at once apply each migration exactly once. Never edit a released
migration: append a new one.

PostgreSQL runs the same migrations (``Migration.postgresql``) from
``bot.storage.engines.postgresql``. All SQL of the project lives in ``bot/storage/``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiosqlite

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS: Final = 5000
FILE_MODE: Final = 0o600
FOLDER_MODE: Final = 0o700
MEMORY_PATH: Final = ":memory:"


class SchemaVersionError(RuntimeError):
    """The database was written by a newer version of the bot than this one."""


@dataclass(frozen=True, slots=True)
class Migration:
    """``statements`` for SQLite, ``postgresql`` for PostgreSQL: the same tables, columns,
    keys and indexes in each engine's types (INTEGER ids -> BIGINT, REAL -> DOUBLE PRECISION,
    BLOB -> BYTEA)."""

    version: int
    description: str
    statements: tuple[str, ...]
    postgresql: tuple[str, ...] = ()


# Statements deliberately have no IF NOT EXISTS: re-running a migration must fail loudly.
MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        version=1,
        description="linked accounts and OAuth link states",
        statements=(
            """
            CREATE TABLE linked_accounts (
                discord_user_id    INTEGER PRIMARY KEY,
                spotify_account_id TEXT    NOT NULL UNIQUE,
                spotify_user_id    TEXT    NOT NULL,
                display_name       TEXT    NOT NULL,
                refresh_token      BLOB,
                scopes             TEXT    NOT NULL DEFAULT '',
                linked_at          REAL    NOT NULL,
                status             TEXT    NOT NULL DEFAULT 'active'
                                   CHECK (status IN ('active', 'broken'))
            )
            """,
            """
            CREATE TABLE link_states (
                state_hash      BLOB    PRIMARY KEY,
                discord_user_id INTEGER NOT NULL,
                created_at      REAL    NOT NULL,
                expires_at      REAL    NOT NULL,
                used_at         REAL
            ) WITHOUT ROWID
            """,
            # purge_link_states deletes by when a state finished: used, or else expired.
            "CREATE INDEX link_states_finished_at ON link_states (coalesce(used_at, expires_at))",
        ),
        postgresql=(
            """
            CREATE TABLE linked_accounts (
                discord_user_id    BIGINT           PRIMARY KEY,
                spotify_account_id TEXT             NOT NULL UNIQUE,
                spotify_user_id    TEXT             NOT NULL,
                display_name       TEXT             NOT NULL,
                refresh_token      BYTEA,
                scopes             TEXT             NOT NULL DEFAULT '',
                linked_at          DOUBLE PRECISION NOT NULL,
                status             TEXT             NOT NULL DEFAULT 'active'
                                   CHECK (status IN ('active', 'broken'))
            )
            """,
            """
            CREATE TABLE link_states (
                state_hash      BYTEA            PRIMARY KEY,
                discord_user_id BIGINT           NOT NULL,
                created_at      DOUBLE PRECISION NOT NULL,
                expires_at      DOUBLE PRECISION NOT NULL,
                used_at         DOUBLE PRECISION
            )
            """,
            "CREATE INDEX link_states_finished_at ON link_states ((coalesce(used_at, expires_at)))",
        ),
    ),
    Migration(
        version=2,
        description="auto-post: guild settings, member opt-in, last posts",
        statements=(
            """
            CREATE TABLE guild_settings (
                guild_id         INTEGER PRIMARY KEY,
                music_channel_id INTEGER,
                autopost_notice  TEXT,
                updated_at       REAL    NOT NULL
            )
            """,
            """
            CREATE TABLE member_settings (
                discord_user_id INTEGER PRIMARY KEY,
                autopost_opt_in INTEGER CHECK (autopost_opt_in IN (0, 1)),
                updated_at      REAL    NOT NULL
            )
            """,
            """
            CREATE TABLE last_posts (
                discord_user_id INTEGER NOT NULL,
                channel_id      INTEGER NOT NULL,
                item_key        TEXT    NOT NULL,
                message_id      INTEGER NOT NULL,
                posted_at       REAL    NOT NULL,
                PRIMARY KEY (discord_user_id, channel_id)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX last_posts_channel_id ON last_posts (channel_id)",
        ),
        postgresql=(
            """
            CREATE TABLE guild_settings (
                guild_id         BIGINT           PRIMARY KEY,
                music_channel_id BIGINT,
                autopost_notice  TEXT,
                updated_at       DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE member_settings (
                discord_user_id BIGINT           PRIMARY KEY,
                autopost_opt_in INTEGER CHECK (autopost_opt_in IN (0, 1)),
                updated_at      DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE last_posts (
                discord_user_id BIGINT           NOT NULL,
                channel_id      BIGINT           NOT NULL,
                item_key        TEXT             NOT NULL,
                message_id      BIGINT           NOT NULL,
                posted_at       DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (discord_user_id, channel_id)
            )
            """,
            "CREATE INDEX last_posts_channel_id ON last_posts (channel_id)",
        ),
    ),
    Migration(
        version=3,
        description="privacy: visibility per member, auto-post opt-in per server",
        statements=(
            # Its own table: /unlink forgets member_settings, but a member who chose private
            # stays private (their presence could otherwise show up again).
            """
            CREATE TABLE member_privacy (
                discord_user_id INTEGER PRIMARY KEY,
                visibility      TEXT    NOT NULL CHECK (visibility IN ('server', 'private')),
                updated_at      REAL    NOT NULL
            )
            """,
            # member_settings.autopost_opt_in (the choice made before it was per server) stays
            # as the fallback for every server without a row here.
            """
            CREATE TABLE member_guild_settings (
                discord_user_id INTEGER NOT NULL,
                guild_id        INTEGER NOT NULL,
                autopost_opt_in INTEGER NOT NULL CHECK (autopost_opt_in IN (0, 1)),
                updated_at      REAL    NOT NULL,
                PRIMARY KEY (discord_user_id, guild_id)
            ) WITHOUT ROWID
            """,
        ),
        postgresql=(
            """
            CREATE TABLE member_privacy (
                discord_user_id BIGINT           PRIMARY KEY,
                visibility      TEXT             NOT NULL
                                CHECK (visibility IN ('server', 'private')),
                updated_at      DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE member_guild_settings (
                discord_user_id BIGINT           NOT NULL,
                guild_id        BIGINT           NOT NULL,
                autopost_opt_in INTEGER          NOT NULL CHECK (autopost_opt_in IN (0, 1)),
                updated_at      DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (discord_user_id, guild_id)
            )
            """,
        ),
    ),
    Migration(
        version=4,
        description="link flow: who asked, each state's outcome, links waiting for Spotify",
        statements=(
            # Shown on the success page: the Discord account the Spotify account is linked to.
            "ALTER TABLE link_states ADD COLUMN discord_name TEXT",
            # The state itself, encrypted for the member: /link re-sends it during its cooldown.
            "ALTER TABLE link_states ADD COLUMN sealed_state BLOB",
            # NULL while the callback works; then linked, renewed, pending, taken or failed.
            "ALTER TABLE link_states ADD COLUMN outcome TEXT",
            # The one-time result page: a hash of its token, the names it shows, when it was seen.
            "ALTER TABLE link_states ADD COLUMN result_hash BLOB",
            "ALTER TABLE link_states ADD COLUMN spotify_name TEXT",
            "ALTER TABLE link_states ADD COLUMN result_shown_at REAL",
            "CREATE INDEX link_states_member ON link_states (discord_user_id, created_at)",
            "CREATE UNIQUE INDEX link_states_result ON link_states (result_hash)",
            # A code exchanged while Spotify held the Web API: the grant waits here, encrypted
            # for the member, until the link can be completed.
            """
            CREATE TABLE pending_links (
                discord_user_id INTEGER PRIMARY KEY,
                state_hash      BLOB    NOT NULL,
                sealed_grant    BLOB    NOT NULL,
                discord_name    TEXT,
                created_at      REAL    NOT NULL
            )
            """,
        ),
        postgresql=(
            "ALTER TABLE link_states ADD COLUMN discord_name TEXT",
            "ALTER TABLE link_states ADD COLUMN sealed_state BYTEA",
            "ALTER TABLE link_states ADD COLUMN outcome TEXT",
            "ALTER TABLE link_states ADD COLUMN result_hash BYTEA",
            "ALTER TABLE link_states ADD COLUMN spotify_name TEXT",
            "ALTER TABLE link_states ADD COLUMN result_shown_at DOUBLE PRECISION",
            "CREATE INDEX link_states_member ON link_states (discord_user_id, created_at)",
            "CREATE UNIQUE INDEX link_states_result ON link_states (result_hash)",
            """
            CREATE TABLE pending_links (
                discord_user_id BIGINT           PRIMARY KEY,
                state_hash      BYTEA            NOT NULL,
                sealed_grant    BYTEA            NOT NULL,
                discord_name    TEXT,
                created_at      DOUBLE PRECISION NOT NULL
            )
            """,
        ),
    ),
    Migration(
        version=5,
        description="embed colours picked from album art, by image id",
        statements=(
            """
            CREATE TABLE image_colours (
                image_key TEXT    PRIMARY KEY,
                colour    INTEGER NOT NULL CHECK (colour BETWEEN 0 AND 16777215),
                picked_at REAL    NOT NULL
            ) WITHOUT ROWID
            """,
        ),
        postgresql=(
            """
            CREATE TABLE image_colours (
                image_key TEXT             PRIMARY KEY,
                colour    INTEGER          NOT NULL CHECK (colour BETWEEN 0 AND 16777215),
                picked_at DOUBLE PRECISION NOT NULL
            )
            """,
        ),
    ),
    Migration(
        version=6,
        description="listening log: plays and the servers each member was seen in",
        statements=(
            # One row per play: the member, the track and when it started. Names are kept as
            # they were then, so the log reads without a Spotify call. ``artist`` is the first
            # artist (what /recap counts); ``artists`` every name, joined with "; ".
            """
            CREATE TABLE plays (
                id              INTEGER PRIMARY KEY,
                discord_user_id INTEGER NOT NULL,
                track_id        TEXT    NOT NULL,
                started_at      REAL    NOT NULL,
                track_name      TEXT    NOT NULL,
                artist          TEXT    NOT NULL,
                artists         TEXT    NOT NULL,
                album_id        TEXT,
                album_name      TEXT,
                image_url       TEXT,
                duration_ms     INTEGER NOT NULL,
                source          TEXT    NOT NULL
            )
            """,
            # A member's history, the duplicate check (member, track near a start time) and
            # /recap: per member, a range of start times covering the track, artist and album,
            # so the aggregate reads only the visible members' rows and never the table.
            "CREATE INDEX plays_member_cover ON plays "
            "(discord_user_id, started_at, track_id, artist, album_id)",
            # Retention deletes by start time.
            "CREATE INDEX plays_started ON plays (started_at)",
            """
            CREATE TABLE listening_guilds (
                guild_id        INTEGER NOT NULL,
                discord_user_id INTEGER NOT NULL,
                seen_at         REAL    NOT NULL,
                PRIMARY KEY (guild_id, discord_user_id)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX listening_guilds_member ON listening_guilds (discord_user_id)",
        ),
        postgresql=(
            """
            CREATE TABLE plays (
                id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                discord_user_id BIGINT           NOT NULL,
                track_id        TEXT             NOT NULL,
                started_at      DOUBLE PRECISION NOT NULL,
                track_name      TEXT             NOT NULL,
                artist          TEXT             NOT NULL,
                artists         TEXT             NOT NULL,
                album_id        TEXT,
                album_name      TEXT,
                image_url       TEXT,
                duration_ms     BIGINT           NOT NULL,
                source          TEXT             NOT NULL
            )
            """,
            "CREATE INDEX plays_member_cover ON plays "
            "(discord_user_id, started_at, track_id, artist, album_id)",
            "CREATE INDEX plays_started ON plays (started_at)",
            """
            CREATE TABLE listening_guilds (
                guild_id        BIGINT           NOT NULL,
                discord_user_id BIGINT           NOT NULL,
                seen_at         DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (guild_id, discord_user_id)
            )
            """,
            "CREATE INDEX listening_guilds_member ON listening_guilds (discord_user_id)",
        ),
    ),
    Migration(
        version=7,
        description="auto-post outbox: posts any process may send, once (Discord's nonce)",
        statements=(
            # One row per auto-post to send. ``nonce`` goes to Discord with enforce_nonce, so
            # a post sent twice (a sender died after sending, before marking it) lands once.
            # A sender claims a row until ``claimed_until``; ``message_id`` is set once sent,
            # ``failure`` when Discord refused the channel for good.
            """
            CREATE TABLE autopost_outbox (
                nonce         TEXT    PRIMARY KEY,
                channel_id    INTEGER NOT NULL,
                payload       TEXT    NOT NULL,
                created_at    REAL    NOT NULL,
                claimed_until REAL    NOT NULL DEFAULT 0,
                message_id    INTEGER,
                failure       TEXT
            ) WITHOUT ROWID
            """,
            "CREATE INDEX autopost_outbox_created ON autopost_outbox (created_at)",
        ),
        postgresql=(
            """
            CREATE TABLE autopost_outbox (
                nonce         TEXT             PRIMARY KEY,
                channel_id    BIGINT           NOT NULL,
                payload       TEXT             NOT NULL,
                created_at    DOUBLE PRECISION NOT NULL,
                claimed_until DOUBLE PRECISION NOT NULL DEFAULT 0,
                message_id    BIGINT,
                failure       TEXT
            )
            """,
            "CREATE INDEX autopost_outbox_created ON autopost_outbox (created_at)",
        ),
    ),
)

LATEST_SCHEMA_VERSION: Final = len(MIGRATIONS)

assert all(m.version == n for n, m in enumerate(MIGRATIONS, start=1)), "migrations misnumbered"
assert all(m.postgresql for m in MIGRATIONS), "every migration needs its PostgreSQL statements"


def is_memory_path(path: Path | str) -> bool:
    return str(path) == MEMORY_PATH


def prepare_database_file(path: Path) -> None:
    """Create the folder (0700) and an empty file (0600) when missing; tighten the file to 0600.

    Doing this before SQLite opens the file means the database never exists with looser
    permissions, and SQLite gives the -wal and -shm files the main file's mode.
    """
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=FOLDER_MODE)
        except FileExistsError:  # created concurrently: fine, and not ours to chmod
            continue
        os.chmod(folder, FOLDER_MODE)  # the umask may have stripped more than we asked
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    os.close(fd)
    secure_database_files(path)


def secure_database_files(path: Path) -> None:
    """chmod the database and its -wal / -shm companions (when present) to 0600."""
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            os.chmod(candidate, FILE_MODE)
        except FileNotFoundError:
            continue
        except PermissionError:
            log.warning("could not restrict permissions of %s to 0600 (not its owner)", candidate)


async def get_schema_version(connection: aiosqlite.Connection) -> int:
    async with connection.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def _journal_mode(connection: aiosqlite.Connection, statement: str) -> str:
    async with connection.execute(statement) as cursor:
        row = await cursor.fetchone()
    return str(row[0]).lower() if row is not None else ""


async def _enable_wal(connection: aiosqlite.Connection) -> str:
    """Switch to WAL (persistent in the file) and return the journal mode now in force.

    Switching needs an exclusive lock, and SQLite answers "database is locked" at once instead
    of calling the busy handler when another connection is opening the same new file, so this
    retries for up to the busy timeout.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            if await _journal_mode(connection, "PRAGMA journal_mode") == "wal":
                return "wal"
            return await _journal_mode(connection, "PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


async def _configure(connection: aiosqlite.Connection, *, memory: bool) -> None:
    # busy_timeout first: switching to WAL may have to wait for another process.
    for pragma in (
        f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
        "PRAGMA foreign_keys = ON",
        "PRAGMA synchronous = NORMAL",
        # Zero what is deleted or overwritten (replaced refresh tokens): no old ciphertext
        # lingers in free space. Some builds default to it; others do not.
        "PRAGMA secure_delete = ON",
    ):
        async with connection.execute(pragma):
            pass
    if memory:
        return
    mode = await _enable_wal(connection)
    if mode != "wal":
        log.warning("SQLite refused WAL journal mode (got %r); concurrency will suffer", mode)


async def migrate(connection: aiosqlite.Connection, target_version: int | None = None) -> list[int]:
    """Apply pending migrations up to ``target_version`` (None: the latest); return them.

    The connection must be in autocommit mode (``isolation_level=None``), as ``open_database``
    makes it. Raises SchemaVersionError when the file is newer than this code knows.
    """
    if target_version is None:
        target_version = LATEST_SCHEMA_VERSION
    if not 0 <= target_version <= LATEST_SCHEMA_VERSION:
        raise ValueError(f"target_version must be between 0 and {LATEST_SCHEMA_VERSION}")
    current = await get_schema_version(connection)
    if current > LATEST_SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database is at schema version {current}, newer than this bot supports "
            f"({LATEST_SCHEMA_VERSION}); upgrade the bot or restore a matching backup"
        )
    applied: list[int] = []
    for migration in MIGRATIONS[current:target_version]:
        try:
            async with connection.execute("BEGIN IMMEDIATE"):
                pass
            # Another process may have migrated while we waited for the write lock.
            if await get_schema_version(connection) >= migration.version:
                await connection.rollback()
                continue
            for statement in migration.statements:
                async with connection.execute(statement):
                    pass
            # PRAGMA arguments cannot be bound; the value is our own int.
            async with connection.execute(f"PRAGMA user_version = {int(migration.version)}"):
                pass
            await connection.commit()
        except BaseException:
            await connection.rollback()
            raise
        log.info(
            "database migrated to schema version %d (%s)",
            migration.version,
            migration.description,
        )
        applied.append(migration.version)
    return applied


async def open_database(
    path: Path | str, *, run_migrations: bool = True, target_version: int | None = None
) -> aiosqlite.Connection:
    """Open (creating when missing) and configure the database.

    Migrates to ``target_version`` (None: the latest) unless ``run_migrations`` is False
    (tests use that to look at a file as it is). ``":memory:"`` opens a private in-memory
    database (no file, no WAL). The connection is in autocommit mode: callers wrap changes in
    explicit ``BEGIN IMMEDIATE`` transactions.
    """
    memory = is_memory_path(path)
    file_path = Path(path)
    if not memory:
        prepare_database_file(file_path)
    connection = await aiosqlite.connect(
        MEMORY_PATH if memory else str(file_path), isolation_level=None
    )
    try:
        await _configure(connection, memory=memory)
        if run_migrations:
            await migrate(connection, target_version)
    except BaseException:
        await connection.close()
        raise
    if not memory:
        secure_database_files(file_path)
    return connection


async def create_database_at_version(path: Path | str, version: int) -> None:
    """Create (or migrate) a database file up to exactly ``version`` and close it.

    For tests of upgrades from every earlier schema version.
    """
    if is_memory_path(path):
        raise ValueError("an in-memory database disappears on close; pass a file path")
    connection = await open_database(path, target_version=version)
    await connection.close()


__all__ = [
    "LATEST_SCHEMA_VERSION",
    "MIGRATIONS",
    "Migration",
    "SchemaVersionError",
    "create_database_at_version",
    "get_schema_version",
    "migrate",
    "open_database",
    "prepare_database_file",
    "secure_database_files",
]
