"""PostgreSQL through an asyncpg pool (several processes sharing one bot).

Queries arrive written for both engines with ``?`` placeholders; they are rewritten to ``$1,
$2, ...`` once and cached. A write transaction first takes a transaction-scoped advisory lock,
so writers are serialised across every process exactly as SQLite's ``BEGIN IMMEDIATE`` does:
the storage layer's read-then-write transactions need no engine-specific locking. Reads run
on any pooled connection without that lock.

The schema version lives in a one-row table ``nowplaying_schema`` (created with the first
migration); migrations run under an advisory lock of their own, so processes starting together
apply each one exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import asyncpg

from bot.storage.engines import Row

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    AnyConnection: TypeAlias = asyncpg.Connection | PoolConnectionProxy[Any]

# pg_advisory_xact_lock keys (any bigint); named so other features pick their own.
WRITE_LOCK_KEY: Final = 0x6E70_0001  # every write transaction
MIGRATION_LOCK_KEY: Final = 0x6E70_0002
SCHEMA_TABLE: Final = "nowplaying_schema"
# Locks held across a Spotify call (token refresh) keep a connection each: room for them.
POOL_MAX_SIZE: Final = 20
CONNECT_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 2.0
LISTEN_RETRY_SECONDS: Final = 1.0
LOCK_WATCH_SECONDS: Final = 5.0  # how often a held try_lock connection is asked whether it lives


@functools.lru_cache(maxsize=1024)
def to_numbered_placeholders(sql: str) -> str:
    """``?`` -> ``$1``, ``$2``, ... outside string literals, quoted names and comments."""
    out: list[str] = []
    number = 0
    index = 0
    length = len(sql)
    while index < length:
        char = sql[index]
        if char in ("'", '"'):
            end = sql.find(char, index + 1)
            while end != -1 and end + 1 < length and sql[end + 1] == char:  # doubled quote
                end = sql.find(char, end + 2)
            end = length - 1 if end == -1 else end
            out.append(sql[index : end + 1])
            index = end + 1
            continue
        if sql.startswith("--", index):
            end = sql.find("\n", index)
            end = length if end == -1 else end
            out.append(sql[index:end])
            index = end
            continue
        if char == "?":
            number += 1
            out.append(f"${number}")
        else:
            out.append(char)
        index += 1
    return "".join(out)


def rows_changed(status: str) -> int:
    """asyncpg returns the command tag (``UPDATE 3``, ``INSERT 0 1``); the count is last."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresTransaction:
    __slots__ = ("_connection",)

    def __init__(self, connection: AnyConnection) -> None:
        self._connection = connection

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> int:
        status = await self._connection.execute(to_numbered_placeholders(sql), *parameters)
        return rows_changed(status)

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> int:
        # One prepared statement, one round trip per row: asyncpg's executemany would be one
        # round trip in all but reports no row counts, and callers count what was inserted.
        statement = await self._connection.prepare(to_numbered_placeholders(sql))
        changed = 0
        for row in rows:
            await statement.fetch(*row)
            changed += rows_changed(statement.get_statusmsg() or "")
        return changed

    async def fetchone(self, sql: str, parameters: Iterable[Any] = ()) -> Row | None:
        row: asyncpg.Record | None = await self._connection.fetchrow(
            to_numbered_placeholders(sql), *parameters
        )
        return row

    async def fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]:
        return list(await self._connection.fetch(to_numbered_placeholders(sql), *parameters))

    async def schema_version(self) -> int:
        return await get_schema_version(self._connection)

    async def set_schema_version(self, version: int) -> None:
        await set_schema_version(self._connection, version)


async def _has_schema_table(connection: AnyConnection) -> bool:
    # pg_class as of this statement, not to_regclass: that answers from the session's catalog
    # cache, which misses a table another process created after this transaction began (when
    # the session looked the name up before, as the migration runner does outside its lock).
    return bool(
        await connection.fetchval(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace "
            "WHERE c.relname = $1 AND n.nspname = ANY (current_schemas(false)))",
            SCHEMA_TABLE,
        )
    )


async def get_schema_version(connection: AnyConnection) -> int:
    if not await _has_schema_table(connection):
        return 0
    version = await connection.fetchval(f"SELECT version FROM {SCHEMA_TABLE}")  # noqa: S608
    return int(version) if version is not None else 0


async def set_schema_version(connection: AnyConnection, version: int) -> None:
    """Inside a transaction: record ``version``, creating the one-row table the first time."""
    if not await _has_schema_table(connection):
        await connection.execute(f"CREATE TABLE {SCHEMA_TABLE} (version integer NOT NULL)")
        await connection.execute(f"INSERT INTO {SCHEMA_TABLE} VALUES (0)")  # noqa: S608
    await connection.execute(f"UPDATE {SCHEMA_TABLE} SET version = $1", version)  # noqa: S608


class PostgresDatabase:
    dialect: Literal["postgresql"] = "postgresql"

    def __init__(self, pool: asyncpg.Pool, *, max_size: int = POOL_MAX_SIZE) -> None:
        self._pool: asyncpg.Pool | None = pool
        self._lock_slots = asyncio.Semaphore(max(1, max_size // 2))
        # Heavy reads take at most a quarter of the pool: quick ones always find a connection.
        self._heavy_slots = asyncio.Semaphore(max(1, max_size // 4))

    @classmethod
    async def open(cls, url: str, *, max_size: int = POOL_MAX_SIZE) -> PostgresDatabase:
        """Connect a pool (not migrated: ``bot.storage.migrate`` does that, ``check`` only looks).

        Connection errors propagate; ``bot.storage.connect`` tells a refusal from a server
        that is not up yet."""
        pool = await asyncpg.create_pool(
            dsn=url, min_size=1, max_size=max_size, timeout=CONNECT_TIMEOUT
        )
        return cls(pool, max_size=max_size)

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("Storage is closed")
        return self._pool

    async def close(self) -> None:
        """Close the pool: connections still held (a listener, a lock) get CLOSE_TIMEOUT to be
        released, then are cut, so closing never hangs."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
        except TimeoutError:
            pool.terminate()

    @property
    def closed(self) -> bool:
        return self._pool is None

    def transaction(self) -> AbstractAsyncContextManager[PostgresTransaction]:
        return self._locked_transaction(WRITE_LOCK_KEY)

    def schema_transaction(self) -> AbstractAsyncContextManager[PostgresTransaction]:
        return self._locked_transaction(MIGRATION_LOCK_KEY)

    @asynccontextmanager
    async def _locked_transaction(self, lock_key: int) -> AsyncIterator[PostgresTransaction]:
        async with self._require_pool().acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
            yield PostgresTransaction(connection)

    async def fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]:
        return list(await self._require_pool().fetch(to_numbered_placeholders(sql), *parameters))

    async def read_heavy(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]:
        """A long read on at most a quarter of the pool's connections at once."""
        async with self._heavy_slots:
            return await self.fetchall(sql, parameters)

    async def schema_version(self) -> int:
        async with self._require_pool().acquire() as connection:
            return await get_schema_version(connection)

    async def ping(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                value = await self._require_pool().fetchval("SELECT 1")
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RuntimeError):
            return False
        return bool(value == 1)

    @asynccontextmanager
    async def scrub_freed_content(self) -> AsyncIterator[None]:
        yield

    @asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        """A session-level advisory lock on a hash of ``name``, on a connection of its own for
        the whole block: when the process dies, PostgreSQL releases it with the connection.

        At most half the pool holds locks, so the queries made inside the blocks always find a
        connection (no deadlock on an exhausted pool)."""
        async with self._lock_slots, self._require_pool().acquire() as connection:
            await connection.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", name)
            try:
                yield
            finally:
                # Released with the connection anyway (the pool's reset unlocks everything).
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await connection.execute(
                        "SELECT pg_advisory_unlock(hashtextextended($1, 0))", name
                    )

    @asynccontextmanager
    async def try_lock(self, name: str) -> AsyncIterator[asyncio.Event | None]:
        """Take the session-level advisory lock on ``name`` if it is free, on a connection of
        its own held for the block (``pg_try_advisory_lock``: never waits). Yields None when
        another session holds it; otherwise an event set when the lock may be lost (the
        connection closed or stopped answering): the holder must stop acting on it then.
        A process that dies releases the lock with its connection."""
        pool = self._require_pool()
        connection = await pool.acquire()
        lost = asyncio.Event()
        watcher: asyncio.Task[None] | None = None
        try:
            taken = await connection.fetchval(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", name
            )
            if not taken:
                yield None
                return
            # Who holds it shows in pg_stat_activity (the pool's reset clears it on release).
            await connection.execute(
                "SELECT set_config('application_name', $1, false)",
                f"nowplaying {name} pid {os.getpid()}"[:63],
            )
            connection.add_termination_listener(lambda _connection: lost.set())
            watcher = asyncio.create_task(_watch(connection, lost), name=f"lock-watch-{name}")
            yield lost
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if lost.is_set():
                with contextlib.suppress(asyncpg.InterfaceError):  # the pool closed it already
                    connection.terminate()  # whatever state it is in, it goes
            else:
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await connection.execute(
                        "SELECT pg_advisory_unlock(hashtextextended($1, 0))", name
                    )
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await pool.release(connection)

    async def notify(self, channel: str, payload: str) -> None:
        await self._require_pool().execute("SELECT pg_notify($1, $2)", channel, payload)

    @asynccontextmanager
    async def listen(self, channel: str, callback: Callable[[str], None]) -> AsyncIterator[None]:
        """LISTEN on a connection of its own for the block, listening again on a new one
        when it is lost (a server restart): notifications sent meanwhile are missed, which
        callers accept (the database holds every change; a notification only wakes)."""
        started = asyncio.Event()
        task = asyncio.create_task(self._keep_listening(channel, callback, started))
        waiter = asyncio.create_task(started.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not started.is_set():
                task.result()  # could not listen at all: raise why
            yield
        finally:
            waiter.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep_listening(
        self, channel: str, callback: Callable[[str], None], started: asyncio.Event
    ) -> None:
        def received(_connection: object, _pid: int, _channel: str, payload: object) -> None:
            callback(str(payload))

        while True:
            lost = asyncio.Event()
            try:
                async with self._require_pool().acquire() as connection:
                    connection.add_termination_listener(lambda _connection, event=lost: event.set())
                    await connection.add_listener(channel, received)
                    try:
                        started.set()
                        await lost.wait()
                    finally:
                        # Removed before the connection goes back to the pool, even a dead one.
                        with contextlib.suppress(
                            asyncpg.PostgresError, asyncpg.InterfaceError, OSError
                        ):
                            await connection.remove_listener(channel, received)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if not started.is_set():
                    raise
                log.warning("listening for %s failed (%s); trying again", channel, exc)
            if self._pool is None:
                return
            log.warning("the connection listening for %s was lost; listening again", channel)
            await asyncio.sleep(LISTEN_RETRY_SECONDS)

    async def checkpoint_truncate(self) -> bool:
        return True


async def _watch(connection: AnyConnection, lost: asyncio.Event) -> None:
    """Ask the lock's connection every LOCK_WATCH_SECONDS whether it still answers; a connection
    that does not answer within the same time may have lost its session (and the lock)."""
    while not lost.is_set():
        await asyncio.sleep(LOCK_WATCH_SECONDS)
        try:
            async with asyncio.timeout(LOCK_WATCH_SECONDS):
                await connection.fetchval("SELECT 1")
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("the connection holding a lock stopped answering (%s)", exc)
            lost.set()


__all__ = [
    "PostgresDatabase",
    "PostgresTransaction",
    "get_schema_version",
    "rows_changed",
    "set_schema_version",
    "to_numbered_placeholders",
]
