"""The one migration runner, for both engines.

``migrate`` brings a database to the latest schema version (or to ``target_version``): each
pending migration of ``bot.storage.migrations`` runs in its own write transaction together with
the version bump, and the version is read again inside that transaction, so several processes
opening the same database at once apply each migration exactly once. A failed migration rolls
back alone (the earlier ones stay). A database newer than the code is refused
(``SchemaVersionError``): this bot would not know its tables.

The engines differ only in where the version lives (``bot.storage.engines.Migratable``): SQLite's
``PRAGMA user_version``, PostgreSQL's one-row ``nowplaying_schema`` table.

To change the schema, add a migration file (see ``bot.storage.migrations``); nothing here changes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bot.storage import migrations
from bot.storage.engines import Database, Dialect, Migratable, SchemaTransaction, is_postgresql_url
from bot.storage.migrations import Migration, SchemaVersionError

log = logging.getLogger(__name__)


def _pending(current: int, target: int) -> bool:
    """Whether a database at ``current`` still needs a migration to reach ``target``."""
    latest = migrations.LATEST_SCHEMA_VERSION
    if current > latest:
        raise SchemaVersionError(
            f"the database is at schema version {current}, newer than this bot supports "
            f"({latest}); upgrade the bot or restore a matching backup"
        )
    return current < target


async def apply_migration(tx: SchemaTransaction, migration: Migration, dialect: Dialect) -> None:
    """Run one migration's statements for ``dialect`` and record its version, inside ``tx``."""
    for statement in migration.statements(dialect):
        await tx.execute(statement)
    await tx.set_schema_version(migration.version)


async def migrate(database: Migratable, target_version: int | None = None) -> list[int]:
    """Apply pending migrations up to ``target_version`` (None: the latest); return them.

    Raises SchemaVersionError when the database is newer than this code knows.
    """
    latest = migrations.LATEST_SCHEMA_VERSION
    target = latest if target_version is None else target_version
    if not 0 <= target <= latest:
        raise ValueError(f"target_version must be between 0 and {latest}")
    applied: list[int] = []
    current = await database.schema_version()
    while _pending(current, target):
        async with database.schema_transaction() as tx:
            # Another process may have migrated while this one waited for the lock.
            current = await tx.schema_version()
            if not _pending(current, target):
                break
            migration = migrations.MIGRATIONS[current]
            await apply_migration(tx, migration, database.dialect)
        log.info(
            "database migrated to schema version %d (%s)",
            migration.version,
            migration.description,
        )
        applied.append(migration.version)
        current = migration.version
    return applied


async def open_engine(path_or_url: Path | str) -> Database:
    """The engine for a ``postgresql://`` URL or an SQLite file (or ``":memory:"``), opened
    as it is (not migrated)."""
    if isinstance(path_or_url, str) and is_postgresql_url(path_or_url):
        from bot.storage.engines.postgresql import PostgresDatabase  # asyncpg only when used

        return await PostgresDatabase.open(path_or_url)
    from bot.storage.engines.sqlite import SqliteDatabase

    return await SqliteDatabase.open(path_or_url)


async def open_migrated(
    path_or_url: Path | str, target_version: int | None = None
) -> tuple[Database, tuple[int, ...]]:
    """Open the database (:func:`open_engine`) and migrate it; return it with
    the versions this call applied. Closed again when migrating fails."""
    database = await open_engine(path_or_url)
    try:
        applied = await migrate(database, target_version)
    except BaseException:
        await database.close()
        raise
    return database, tuple(applied)


__all__ = [
    "apply_migration",
    "migrate",
    "open_migrated",
]
