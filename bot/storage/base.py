"""The plumbing every part of ``Storage`` shares: the engine, transactions, health, locks and
notifications across processes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bot.storage.engines import Database, Row, Transaction
from bot.storage.migrate import open_migrated

log = logging.getLogger(__name__)


def upsert_by_member(table: str, columns: str) -> str:
    """INSERT one row of ``columns`` (comma-separated, the member's id first); a row the member
    already has takes every other column from the new one."""
    names = [name.strip() for name in columns.split(",")]
    updates = ", ".join(f"{name} = excluded.{name}" for name in names[1:])
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(names))}) "  # noqa: S608
        f"ON CONFLICT (discord_user_id) DO UPDATE SET {updates}"
    )


class StorageBase:
    """The plumbing every part of ``Storage`` shares: the engine, transactions, health, locks and
    notifications across processes."""

    def __init__(self, database: Database, *, applied_migrations: tuple[int, ...] = ()) -> None:
        self._database = database
        self._applied_migrations = applied_migrations

    @classmethod
    async def open(cls, path_or_url: Path | str) -> Self:
        """Open (creating the SQLite folder and file when missing) and migrate to the latest."""
        database, applied = await open_migrated(path_or_url)
        return cls(database, applied_migrations=applied)

    @property
    def database(self) -> Database:
        return self._database

    @property
    def dialect(self) -> str:
        return self._database.dialect

    @property
    def applied_migrations(self) -> tuple[int, ...]:
        """The migrations that opening this database applied (none when it was current)."""
        return self._applied_migrations

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
