"""Every encrypted value the database holds, whichever table it is in: what key rotation
re-encrypts and what ``check`` counts.

Each value was sealed by ``bot.crypto.TokenCipher`` for one member (the owner's Discord id is
in the associated data), so a value is always read with its owner. A new encrypted column is
added to ``SEALED_COLUMNS``; ``tests/test_storage.py`` compares the list with the schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from bot.storage.base import Store


@dataclass(frozen=True, slots=True)
class SealedColumn:
    """An encrypted column: its table, the column naming its row, the owner's column, and the
    schema version that added it (``check`` reads older databases as they are)."""

    table: str
    column: str
    row_key: str
    since: int
    owner: str = "discord_user_id"


SEALED_COLUMNS: Final[tuple[SealedColumn, ...]] = (
    SealedColumn("linked_accounts", "refresh_token", "discord_user_id", since=1),
    # A code exchanged while Spotify held the Web API: the member's refresh and access tokens.
    SealedColumn("pending_links", "sealed_grant", "discord_user_id", since=4),
    # The OAuth state /link hands out again within its cooldown.
    SealedColumn("link_states", "sealed_state", "state_hash", since=4),
)


@dataclass(frozen=True, slots=True)
class SealedValue:
    """One stored encrypted value, where it is and whose it is."""

    column: SealedColumn
    row: object  # the value of ``column.row_key``
    owner_id: int
    blob: bytes = field(repr=False)


class SealedStore(Store):
    """Reading and rewriting every encrypted value (key rotation, ``check``)."""

    async def list_sealed(self, schema_version: int | None = None) -> list[SealedValue]:
        """Every stored encrypted value, column by column (of a database at
        ``schema_version``, when it is not the latest)."""
        values: list[SealedValue] = []
        for sealed in SEALED_COLUMNS:
            if schema_version is not None and sealed.since > schema_version:
                continue
            rows = await self._db.fetchall(
                f"SELECT {sealed.row_key}, {sealed.owner}, {sealed.column} "  # noqa: S608
                f"FROM {sealed.table} WHERE {sealed.column} IS NOT NULL "
                f"ORDER BY {sealed.owner}, {sealed.row_key}"
            )
            values.extend(SealedValue(sealed, row[0], int(row[1]), bytes(row[2])) for row in rows)
        return values

    async def replace_sealed(self, updates: Sequence[tuple[SealedValue, bytes]]) -> int:
        """Write each value's new blob in one transaction; return the values changed.

        A value changes only while it still holds the blob read before (``SealedValue.blob``):
        a token the running bot refreshed meanwhile is never overwritten by a stale one.
        """
        if not updates:
            return 0
        changed = 0
        async with self._db.transaction() as tx:
            for value, blob in updates:
                sealed = value.column
                changed += await tx.execute(
                    f"UPDATE {sealed.table} SET {sealed.column} = ? "  # noqa: S608
                    f"WHERE {sealed.row_key} = ? AND {sealed.column} = ?",
                    (blob, value.row, value.blob),
                )
        return changed


__all__ = ["SEALED_COLUMNS", "SealedColumn", "SealedStore", "SealedValue"]
