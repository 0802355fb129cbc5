"""What every store is built on: ``Handle``, the engine with the transaction and fetch helpers
every store uses, and ``Store``, a concern's queries over that handle."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

from bot.storage.engines import Database, Dialect, Row, Transaction


def upsert_by_member(table: str, columns: str) -> str:
    """INSERT one row of ``columns`` (comma-separated, the member's id first); a row the member
    already has takes every other column from the new one."""
    names = [name.strip() for name in columns.split(",")]
    updates = ", ".join(f"{name} = excluded.{name}" for name in names[1:])
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(names))}) "  # noqa: S608
        f"ON CONFLICT (discord_user_id) DO UPDATE SET {updates}"
    )


class Handle:
    """The engine as the stores use it: write transactions (serialised with every other writer
    in every process, rolled back on any error) and single-statement reads."""

    __slots__ = ("_database",)

    def __init__(self, database: Database) -> None:
        self._database = database

    @property
    def dialect(self) -> Dialect:
        return self._database.dialect

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        return self._database.transaction()

    async def fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]:
        return await self._database.fetchall(sql, parameters)

    async def read_heavy(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]:
        """A read that may take seconds, kept out of the way of the quick ones."""
        return await self._database.read_heavy(sql, parameters)

    async def fetchone(self, sql: str, parameters: Iterable[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, parameters)
        return rows[0] if rows else None

    async def write(self, sql: str, parameters: Iterable[Any] = ()) -> int:
        """One statement in its own write transaction; the number of rows it changed."""
        async with self.transaction() as tx:
            return await tx.execute(sql, parameters)


class Store:
    """One concern's SQL and records, run through the handle every store shares."""

    def __init__(self, db: Handle) -> None:
        self._db = db
