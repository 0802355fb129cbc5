"""``migrate-db``: copy an SQLite install into an empty PostgreSQL database.

The copy reads the SQLite file inside one ``BEGIN IMMEDIATE`` transaction (a consistent
snapshot that no other writer can change meanwhile) and writes PostgreSQL inside one transaction:
the schema (the same numbered migrations, applied as ``bot.storage.migrate`` applies them), every
row of every table with binary COPY (streamed ``COPY_BATCH`` rows at a time, so memory stays
flat however large the listening log is), identity sequences moved past the copied ids, and the row
counts compared table by table before COMMIT. Anything wrong rolls everything back, so the
target is either a complete copy or untouched. A target that already has any of the bot's
tables is refused. Secrets are copied as the stored ciphertext: nothing here holds a key, so
nothing can be decrypted.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from bot.storage import migrations as db
from bot.storage.engines import postgresql
from bot.storage.engines.sqlite import SqliteDatabase, get_schema_version
from bot.storage.migrate import apply_migration, migrate

log = logging.getLogger(__name__)

COPY_BATCH = 5000  # rows read from SQLite (and held in memory) at a time


class TransferRefused(Exception):
    """The copy cannot start or did not verify; one line for the self-hoster."""


@dataclass(frozen=True, slots=True)
class TransferReport:
    rows_by_table: dict[str, int]
    schema_version: int

    @property
    def total_rows(self) -> int:
        return sum(self.rows_by_table.values())


def _coercer(data_type: str) -> Callable[[Any], Any]:
    """SQLite keeps whatever a column was given; binary COPY wants the column's exact type."""
    if data_type in ("bigint", "integer", "smallint"):
        return int
    if data_type in ("double precision", "real", "numeric"):
        return float
    if data_type == "bytea":
        return lambda value: bytes(value) if not isinstance(value, str) else value.encode()
    return str


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _sqlite_tables(connection: aiosqlite.Connection) -> list[str]:
    rows = await connection.execute_fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    )
    return [str(row[0]) for row in rows]


async def _target_tables(connection: asyncpg.Connection) -> set[str]:
    rows = await connection.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    )
    return {str(row[0]) for row in rows}


async def _column_types(connection: asyncpg.Connection, table: str) -> dict[str, str]:
    rows = await connection.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = $1",
        table,
    )
    return {str(row[0]): str(row[1]) for row in rows}


async def _reset_identities(connection: asyncpg.Connection) -> None:
    """Every identity or serial column continues after the largest copied id."""
    rows = await connection.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() "
        "AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')"
    )
    for table, column in rows:
        quoted_table, quoted_column = _quoted(str(table)), _quoted(str(column))
        await connection.execute(
            f"SELECT setval(pg_get_serial_sequence($1, $2), "  # noqa: S608
            f"coalesce((SELECT max({quoted_column}) FROM {quoted_table}), 0) + 1, false)",
            quoted_table,
            str(column),
        )


async def copy_sqlite_to_postgresql(
    source: Path, target_url: str, *, password: str | None = None
) -> TransferReport:
    """Copy everything; raise TransferRefused (target untouched) when it cannot or did not
    verify. The caller checked that ``source`` is an existing file. ``password`` is used when
    the URL carries none (asyncpg also reads PGPASSWORD from the environment itself)."""
    sqlite = await SqliteDatabase.open(source)
    try:
        await migrate(sqlite)  # brings it to the latest schema first
        sqlite_connection = sqlite.connection
        target = await asyncpg.connect(
            target_url, password=password, timeout=postgresql.CONNECT_TIMEOUT
        )
        try:
            # The write lock for the whole copy: a bot still running cannot change the file
            # under us (it waits), and what we read is one consistent snapshot.
            async with sqlite_connection.execute("BEGIN IMMEDIATE"):
                pass
            try:
                return await _copy(sqlite_connection, target)
            finally:
                await sqlite_connection.rollback()
        finally:
            await target.close()
    finally:
        await sqlite.close()


async def _copy(source: aiosqlite.Connection, target: asyncpg.Connection) -> TransferReport:
    version = await get_schema_version(source)
    tables = await _sqlite_tables(source)
    existing = await _target_tables(target)
    ours = existing & {*tables, postgresql.SCHEMA_TABLE}
    if ours:
        raise TransferRefused(
            "the target database already has the bot's tables ("
            + ", ".join(sorted(ours))
            + "); migrate-db only copies into a database that has none of them"
        )
    counts: dict[str, int] = {}
    async with target.transaction():
        schema = postgresql.PostgresTransaction(target)
        for migration in db.MIGRATIONS[:version]:
            await apply_migration(schema, migration, "postgresql")
        created = await _target_tables(target)
        missing = set(tables) - created
        if missing:
            raise TransferRefused(
                "these SQLite tables have no PostgreSQL counterpart: " + ", ".join(sorted(missing))
            )
        for table in tables:
            counts[table] = await _copy_table(source, target, table)
        await _reset_identities(target)
        for table, expected in counts.items():
            copied = await target.fetchval(f"SELECT count(*) FROM {_quoted(table)}")  # noqa: S608
            if copied != expected:
                raise TransferRefused(
                    f"row counts differ for {table}: {expected} in SQLite, {copied} copied; "
                    "nothing was kept"
                )
    return TransferReport(rows_by_table=counts, schema_version=version)


async def _copy_table(source: aiosqlite.Connection, target: asyncpg.Connection, table: str) -> int:
    info = await source.execute_fetchall(f"PRAGMA table_info({_quoted(table)})")
    columns = [str(row[1]) for row in info]
    types = await _column_types(target, table)
    unknown = [column for column in columns if column not in types]
    if unknown:
        raise TransferRefused(
            f"{table} has columns PostgreSQL's schema does not: {', '.join(unknown)}"
        )
    coercers = [_coercer(types[column]) for column in columns]
    selected = ", ".join(_quoted(column) for column in columns)
    copied = 0

    async def records() -> AsyncIterator[tuple[Any, ...]]:
        # A batch at a time: a million plays never sit in memory at once.
        nonlocal copied
        async with source.execute(f"SELECT {selected} FROM {_quoted(table)}") as cursor:  # noqa: S608
            while batch := list(await cursor.fetchmany(COPY_BATCH)):
                for row in batch:
                    yield tuple(
                        None if value is None else coerce(value)
                        for value, coerce in zip(row, coercers, strict=True)
                    )
                copied += len(batch)

    expected = await source.execute_fetchall(f"SELECT count(*) FROM {_quoted(table)}")  # noqa: S608
    await target.copy_records_to_table(table, records=records(), columns=columns)
    log.info("copied %s: %d rows", table, copied)
    return int(next(iter(expected))[0])


__all__ = ["TransferRefused", "TransferReport", "copy_sqlite_to_postgresql"]
