"""SQLite through one aiosqlite connection (the embedded default).

One ``asyncio.Lock`` guards the connection, so a coroutine never runs a statement inside another
coroutine's transaction. Every change runs in ``BEGIN IMMEDIATE ... COMMIT`` (rolled back on any
error), which also serialises writers in other processes through SQLite's write lock and
``busy_timeout``. Reads are single statements under the same lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from bot.aio.keyed_locks import KeyedLocks, LockEntry
from bot.storage import migrations as db
from bot.storage.engines import Row


class SqliteTransaction:
    """The statements a coroutine may run while it holds the lock inside BEGIN IMMEDIATE."""

    __slots__ = ("_connection",)

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> int:
        async with self._connection.execute(sql, tuple(parameters)) as cursor:
            return max(cursor.rowcount, 0)

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> int:
        async with self._connection.executemany(sql, [tuple(row) for row in rows]) as cursor:
            return max(cursor.rowcount, 0)

    async def fetchone(self, sql: str, parameters: Iterable[Any] = ()) -> Row | None:
        async with self._connection.execute(sql, tuple(parameters)) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
        return row

    async def fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]:
        return list(await self._connection.execute_fetchall(sql, tuple(parameters)))


class SqliteDatabase:
    dialect: Literal["sqlite"] = "sqlite"

    def __init__(
        self, connection: aiosqlite.Connection, *, applied_migrations: Sequence[int] = ()
    ) -> None:
        self._connection: aiosqlite.Connection | None = connection
        self._lock = asyncio.Lock()
        self._named_locks: KeyedLocks[str, LockEntry] = KeyedLocks(LockEntry)
        self.applied_migrations: tuple[int, ...] = tuple(applied_migrations)

    @classmethod
    async def open(cls, path: Path | str) -> SqliteDatabase:
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

    @property
    def connection(self) -> aiosqlite.Connection:
        """The one connection (tests trace its statements)."""
        return self._require_connection()

    def _require_connection(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise RuntimeError("Storage is closed")
        return self._connection

    async def close(self) -> None:
        async with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None:
                await connection.close()

    @property
    def closed(self) -> bool:
        return self._connection is None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        async with self._lock:
            connection = self._require_connection()
            try:
                async with connection.execute("BEGIN IMMEDIATE"):
                    pass
                yield SqliteTransaction(connection)
                await connection.commit()
            except BaseException:
                # aiosqlite runs statements in order on one thread, and a cancelled await does
                # not unqueue its statement: this ROLLBACK runs after whatever was in flight
                # (BEGIN included), so no transaction outlives the lock. A no-op when none is open.
                await connection.rollback()
                raise

    async def fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]:
        async with self._lock:
            connection = self._require_connection()
            return list(await connection.execute_fetchall(sql, tuple(parameters)))

    async def schema_version(self) -> int:
        async with self._lock:
            return await db.get_schema_version(self._require_connection())

    async def ping(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                rows = await self.fetchall("SELECT 1")
        except (TimeoutError, sqlite3.Error, RuntimeError, ValueError):
            return False
        return bool(rows) and rows[0][0] == 1

    @asynccontextmanager
    async def scrub_freed_content(self) -> AsyncIterator[None]:
        """``PRAGMA secure_delete`` for the block. Connections opened by ``bot.db`` have it on
        already; this makes sure, then restores what was set."""
        async with self._lock:
            connection = self._require_connection()
            async with connection.execute("PRAGMA secure_delete") as cursor:
                row = await cursor.fetchone()
            previous = int(row[0]) if row is not None else 0
            async with connection.execute("PRAGMA secure_delete = ON"):
                pass
        try:
            yield
        finally:
            async with self._lock:
                if self._connection is not None and previous != 1:
                    # PRAGMA arguments cannot be bound; the value is our own int.
                    async with self._connection.execute(f"PRAGMA secure_delete = {previous}"):
                        pass

    @asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        # One process owns an SQLite database: an in-process lock is the whole story.
        async with self._named_locks.hold(name):
            yield

    @asynccontextmanager
    async def try_lock(self, name: str) -> AsyncIterator[asyncio.Event | None]:
        # One process owns an SQLite database: it always holds what it tries (an event that
        # is never set: the lock cannot be lost).
        yield asyncio.Event()

    async def notify(self, channel: str, payload: str) -> None:
        return None

    @asynccontextmanager
    async def listen(self, channel: str, callback: Callable[[str], None]) -> AsyncIterator[None]:
        yield

    async def checkpoint_truncate(self) -> bool:
        """Copy the WAL into the database and truncate it to zero bytes, so no old page image
        survives in the ``-wal`` file. False when another connection kept it busy."""
        rows = await self.fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
        return not rows or int(rows[0][0]) == 0


__all__ = ["SqliteDatabase", "SqliteTransaction"]
