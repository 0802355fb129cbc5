"""SQLite through one aiosqlite connection (the embedded default), and opening its file.

One ``asyncio.Lock`` guards the connection, so a coroutine never runs a statement inside another
coroutine's transaction. Every change runs in ``BEGIN IMMEDIATE ... COMMIT`` (rolled back on any
error), which also serialises writers in other processes through SQLite's write lock and
``busy_timeout``. Reads are single statements under the same lock.

Heavy reads (the listening log's aggregations over a million plays, seconds long) run on a
second, read-only connection of their own, opened when first needed: aiosqlite runs one
connection's statements in order on one thread, so on the main connection a /privacy would
wait behind a /recap. WAL lets that reader see a consistent snapshot while writers go on.

Opening creates the folder (0700) and the file (0600) when missing, tightens an existing file
and its ``-wal``/``-shm`` companions to 0600, and sets the PRAGMAs (``busy_timeout``, foreign
keys, ``synchronous = NORMAL``, ``secure_delete``, WAL). The schema version is
``PRAGMA user_version``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote

import aiosqlite

from bot.aio.keyed_locks import KeyedLocks, LockEntry
from bot.storage.engines import Row

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS: Final = 5000
FILE_MODE: Final = 0o600
FOLDER_MODE: Final = 0o700
MEMORY_PATH: Final = ":memory:"


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


async def open_connection(path: Path | str) -> aiosqlite.Connection:
    """Open (creating when missing) and configure the database, as it is (not migrated).

    ``":memory:"`` opens a private in-memory database (no file, no WAL). The connection is in
    autocommit mode: changes run in explicit ``BEGIN IMMEDIATE`` transactions.
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
    except BaseException:
        await connection.close()
        raise
    if not memory:
        secure_database_files(file_path)
    return connection


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

    async def schema_version(self) -> int:
        return await get_schema_version(self._connection)

    async def set_schema_version(self, version: int) -> None:
        # PRAGMA arguments cannot be bound; the value is our own int.
        async with self._connection.execute(f"PRAGMA user_version = {int(version)}"):
            pass


async def open_reader(path: Path) -> aiosqlite.Connection:
    """A read-only connection to an existing database file (``query_only`` as well)."""
    connection = await aiosqlite.connect(
        f"file:{quote(str(path))}?mode=ro", uri=True, isolation_level=None
    )
    try:
        for pragma in (f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}", "PRAGMA query_only = ON"):
            async with connection.execute(pragma):
                pass
    except BaseException:
        await connection.close()
        raise
    return connection


class SqliteDatabase:
    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, connection: aiosqlite.Connection, *, path: Path | None = None) -> None:
        self._connection: aiosqlite.Connection | None = connection
        self._lock = asyncio.Lock()
        self._named_locks: KeyedLocks[str, LockEntry] = KeyedLocks(LockEntry)
        self._path = path  # None: in memory, heavy reads share the one connection
        self._reader: aiosqlite.Connection | None = None
        self._reader_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str) -> SqliteDatabase:
        """Open (creating folder and file when missing; see ``open_connection``)."""
        connection = await open_connection(path)
        return cls(connection, path=None if is_memory_path(path) else Path(path))

    @property
    def connection(self) -> aiosqlite.Connection:
        """The one connection (tests trace its statements)."""
        return self._require_connection()

    def _require_connection(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise RuntimeError("Storage is closed")
        return self._connection

    async def close(self) -> None:
        async with self._reader_lock:
            reader, self._reader = self._reader, None
            if reader is not None:
                await reader.close()
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

    def schema_transaction(self) -> AbstractAsyncContextManager[SqliteTransaction]:
        """Migrations run in a write transaction like any other (it reads and sets the version)."""
        return self.transaction()

    async def fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]:
        async with self._lock:
            connection = self._require_connection()
            return list(await connection.execute_fetchall(sql, tuple(parameters)))

    async def read_heavy(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]:
        """A long read on the read-only connection (one at a time), never in the way of the
        main connection's writes and quick reads."""
        if self._path is None:
            return await self.fetchall(sql, parameters)
        async with self._reader_lock:
            self._require_connection()  # closed: no new reader
            if self._reader is None:
                self._reader = await open_reader(self._path)
            return list(await self._reader.execute_fetchall(sql, tuple(parameters)))

    async def schema_version(self) -> int:
        async with self._lock:
            return await get_schema_version(self._require_connection())

    async def ping(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                rows = await self.fetchall("SELECT 1")
        except (TimeoutError, sqlite3.Error, RuntimeError, ValueError):
            return False
        return bool(rows) and rows[0][0] == 1

    @asynccontextmanager
    async def scrub_freed_content(self) -> AsyncIterator[None]:
        """``PRAGMA secure_delete`` for the block. Connections opened by ``open_connection``
        have it on already; this makes sure, then restores what was set."""
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


__all__ = [
    "BUSY_TIMEOUT_MS",
    "SqliteDatabase",
    "SqliteTransaction",
    "get_schema_version",
    "is_memory_path",
    "open_connection",
    "open_reader",
    "prepare_database_file",
    "secure_database_files",
]
