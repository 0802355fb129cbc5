"""The thin layer under ``bot.storage``: one ``Database`` interface, two engines.

``bot.storage`` writes every query once, in the SQL both engines share (``?`` placeholders,
``INSERT ... ON CONFLICT ... DO UPDATE``, ``RETURNING``); a backend runs it: SQLite through one
aiosqlite connection, PostgreSQL through an asyncpg pool (``?`` becomes ``$n``). Each backend
gives write transactions the same meaning: one writer at a time across every process sharing
the database (SQLite's ``BEGIN IMMEDIATE``; on PostgreSQL a transaction-scoped advisory lock), so
a read-then-write inside a transaction never races another process.

The engines differ in where the schema version lives (SQLite's ``PRAGMA user_version``, a
one-row ``nowplaying_schema`` table on PostgreSQL): ``Migratable`` is what the one migration
runner (``bot.storage.migrate``) needs of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgresql"]


class Row(Protocol):
    """A result row: both sqlite3.Row and asyncpg.Record are indexed by column position."""

    def __getitem__(self, key: int, /) -> Any: ...

    def __len__(self) -> int: ...


class Transaction(Protocol):
    """The statements a coroutine may run inside one write transaction."""

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> int:
        """Run one statement for every row; return the number of rows changed in all."""
        ...

    async def fetchone(self, sql: str, parameters: Iterable[Any] = ()) -> Row | None: ...

    async def fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]: ...


class SchemaTransaction(Transaction, Protocol):
    """A write transaction that also reads and sets the schema version."""

    async def schema_version(self) -> int: ...

    async def set_schema_version(self, version: int) -> None: ...


class Migratable(Protocol):
    """What the migration runner needs from an engine."""

    @property
    def dialect(self) -> Dialect: ...

    async def schema_version(self) -> int:
        """The version the database is at (0: nothing applied yet), read outside a transaction."""
        ...

    def schema_transaction(self) -> AbstractAsyncContextManager[SchemaTransaction]:
        """A write transaction in which one migration runs and the version is bumped; it
        serialises with every other process migrating the database (SQLite's ``BEGIN
        IMMEDIATE``, a transaction-scoped advisory lock on PostgreSQL). Rolled back on error."""
        ...


class Database(Migratable, Protocol):
    """What ``bot.storage.Storage`` needs from an engine."""

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """A write transaction (serialised with every other writer); rolled back on error."""
        ...

    async def fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]: ...

    async def read_heavy(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]:
        """A read that may take seconds (the listening log's aggregations): on a connection of
        its own (SQLite) or on a bounded share of the pool (PostgreSQL), so a member's
        /privacy or /link never waits behind it."""
        ...

    async def ping(self, timeout: float) -> bool: ...

    def scrub_freed_content(self) -> AbstractAsyncContextManager[None]:
        """Within the block, content freed or overwritten leaves no copy on disk (SQLite's
        ``secure_delete``); PostgreSQL's VACUUM owns that, so there it does nothing."""
        ...

    async def checkpoint_truncate(self) -> bool: ...

    async def notify(self, channel: str, payload: str) -> None:
        """Wake the other processes listening on ``channel`` (PostgreSQL NOTIFY); SQLite serves
        one process: nothing to do."""
        ...

    def listen(
        self, channel: str, callback: Callable[[str], None]
    ) -> AbstractAsyncContextManager[None]:
        """Within the block, ``callback(payload)`` runs for each notification on ``channel``."""
        ...

    def try_lock(self, name: str) -> AbstractAsyncContextManager[asyncio.Event | None]:
        """A lock across processes taken only if free: None, or an event set when it is lost."""
        ...

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Held by one holder at a time across every process sharing the database (PostgreSQL's
        advisory lock on ``name``); SQLite serves one process, so there only within it."""
        ...

    async def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...


def is_postgresql_url(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


__all__ = [
    "Database",
    "Dialect",
    "Migratable",
    "Row",
    "SchemaTransaction",
    "Transaction",
    "is_postgresql_url",
]
