"""The daily budget of Spotify Web API calls: the calls per minute of every process, and what
Spotify's QUOTA_EXCEEDED left (the hold, the budget learned), per Spotify client id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.storage.base import Store

# (minute, service, purpose, calls): minute is Unix time // 60.
CallCountRow = tuple[int, str, str, int]


@dataclass(frozen=True, slots=True)
class SpotifyQuota:
    """What is kept beside the counts (Unix times)."""

    counting_since: float
    hold_until: float = 0.0
    learned_budget: int | None = None
    learned_at: float | None = None


class SpotifyBudgetStore(Store):
    """Spotify calls per minute and the quota state, per client id."""

    async def add_calls(
        self, client_id: str, rows: Sequence[CallCountRow], *, counting_since: float
    ) -> None:
        """Add this process's calls to every process's; the first write says since when."""
        async with self._db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO spotify_calls (client_id, minute, service, purpose, calls) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (client_id, minute, service, purpose) "
                "DO UPDATE SET calls = spotify_calls.calls + excluded.calls",
                [(client_id, *row) for row in rows],
            )
            await tx.execute(
                "INSERT INTO spotify_quota (client_id, counting_since) VALUES (?, ?) "
                "ON CONFLICT (client_id) DO NOTHING",
                (client_id, counting_since),
            )

    async def calls_since(self, client_id: str, minute: int) -> list[CallCountRow]:
        rows = await self._db.fetchall(
            "SELECT minute, service, purpose, calls FROM spotify_calls "
            "WHERE client_id = ? AND minute >= ?",
            (client_id, minute),
        )
        return [(int(row[0]), str(row[1]), str(row[2]), int(row[3])) for row in rows]

    async def quota(self, client_id: str) -> SpotifyQuota | None:
        row = await self._db.fetchone(
            "SELECT counting_since, hold_until, learned_budget, learned_at FROM spotify_quota "
            "WHERE client_id = ?",
            (client_id,),
        )
        if row is None:
            return None
        return SpotifyQuota(
            float(row[0]),
            float(row[1]),
            None if row[2] is None else int(row[2]),
            None if row[3] is None else float(row[3]),
        )

    async def save_refusal(self, client_id: str, quota: SpotifyQuota) -> None:
        """Spotify answered QUOTA_EXCEEDED: the hold (never shortened) and what was learned."""
        await self._db.write(
            "INSERT INTO spotify_quota "
            "(client_id, counting_since, hold_until, learned_budget, learned_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE SET "
            "hold_until = CASE WHEN excluded.hold_until > spotify_quota.hold_until "
            "THEN excluded.hold_until ELSE spotify_quota.hold_until END, "
            "learned_budget = excluded.learned_budget, learned_at = excluded.learned_at",
            (
                client_id,
                quota.counting_since,
                quota.hold_until,
                quota.learned_budget,
                quota.learned_at,
            ),
        )

    async def prune_calls(self, before_minute: int) -> int:
        """Drop the counts that left every window (all client ids)."""
        return await self._db.write("DELETE FROM spotify_calls WHERE minute < ?", (before_minute,))

    async def forget(self, client_id: str) -> int:
        """``check --reset-spotify-budget``: the counts, the hold and what was learned."""
        async with self._db.transaction() as tx:
            calls = await tx.execute("DELETE FROM spotify_calls WHERE client_id = ?", (client_id,))
            quota = await tx.execute("DELETE FROM spotify_quota WHERE client_id = ?", (client_id,))
        return calls + quota
