"""The daily Spotify budget in the database: one count and one hold for every process, kept
across restarts.

``DailyBudget`` counts and decides in memory; :class:`BudgetSync` writes what this process
counted every ``SYNC_SECONDS`` (per minute, by service and purpose: added to every process's
rows) and reads back the rows of the last 24 hours and the quota state, so the budget answers
from a count at most a few seconds old without a query per call. A QUOTA_EXCEEDED is written
at once: a restart, or another process, sends nothing before the hold ends (each process holds
its sender until then; ``SharedSpotifyHold`` tells the others sooner on PostgreSQL). Rows that
left every window are pruned hourly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

from bot.aio.tasks import cancel_and_wait
from bot.spotify.budget import DailyBudget, QuotaState
from bot.spotify.http import PURPOSES, SERVICES, SpotifySender
from bot.spotify.rolling import CallRow, minute_of, oldest_minute
from bot.storage import CallCountRow, SpotifyBudgetStore, SpotifyQuota

log = logging.getLogger(__name__)

SYNC_SECONDS: Final = 2.0
# Other processes only add to the last minutes (their writes are a few seconds old): those are
# read back every sync, the whole day once a minute (a write that failed and came late).
RECENT_MINUTES: Final = 2
FULL_READ_SECONDS: Final = 60.0
PRUNE_SECONDS: Final = 3_600.0


class BudgetSync:
    """Writes this process's counts and refusals; reads every process's back."""

    def __init__(
        self,
        store: SpotifyBudgetStore,
        budget: DailyBudget,
        sender: SpotifySender,
        *,
        client_id: str,
        interval: float = SYNC_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store, self._budget, self._sender = store, budget, sender
        self._client_id, self._interval, self._clock = client_id, interval, clock
        self._wake = asyncio.Event()
        self._refusal: QuotaState | None = None
        self._read_all_at = self._pruned_at = 0.0
        budget.add_refusal_listener(self._refused)

    async def load(self) -> None:
        """Before anything is sent: every process's count, and a hold kept from before."""
        await self._read()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Loaded first (:meth:`load`), then synced in the background for the block; the
        last counts are written at its end."""
        await self.load()
        task = asyncio.create_task(self._run(), name="spotify-daily-budget")
        try:
            yield
        finally:
            await cancel_and_wait([task])
            try:
                await self._write()
            except Exception as exc:  # the database is going away: a few seconds of counts
                log.warning("could not write the last Spotify calls counted (%s)", exc)

    def _refused(self, state: QuotaState) -> None:
        self._refusal = state
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
            except Exception as exc:  # the database is away: memory counts on meanwhile
                log.warning("could not keep the Spotify daily budget in the database (%s)", exc)

    async def sync(self) -> None:
        """Write what this process counted (and a refusal), then read every process's back."""
        await self._write()
        await self._read()
        now = self._clock()
        if now - self._pruned_at >= PRUNE_SECONDS:
            self._pruned_at = now
            await self._store.prune_calls(oldest_minute(now) - 1)

    async def _write(self) -> None:
        refusal, self._refusal = self._refusal, None
        now = self._clock()
        if refusal is not None:
            try:
                await self._store.save_refusal(self._client_id, _stored(refusal, now))
            except Exception:
                self._refusal = self._refusal or refusal
                raise
        rows = self._budget.counts.take_pending()
        if not rows:
            return
        since = self._budget.quota.counting_since
        try:
            await self._store.add_calls(
                self._client_id, rows, counting_since=now if since is None else since
            )
        except Exception:
            self._budget.counts.put_back(rows)
            raise

    async def _read(self) -> None:
        now = self._clock()
        since: int | None = minute_of(now) - RECENT_MINUTES
        if now - self._read_all_at >= FULL_READ_SECONDS:
            self._read_all_at, since = now, None
        await read_daily_budget(self._store, self._client_id, self._budget, now, since=since)
        end = self._budget.hold_end(now)
        if end > now:  # from a restart, or another process: no call before it ends
            self._sender.extend_hold("api", end - now, quota_exceeded=True)


async def read_daily_budget(
    store: SpotifyBudgetStore,
    client_id: str,
    budget: DailyBudget,
    now: float,
    *,
    since: int | None = None,
) -> None:
    """Load ``budget`` with what the database holds for ``client_id``: the last 24 hours, or
    the minutes from ``since`` on (also ``check``)."""
    rows = await store.calls_since(client_id, oldest_minute(now) if since is None else since)
    stored = await store.quota(client_id)
    quota = QuotaState()
    if stored is not None:
        quota = QuotaState(
            stored.counting_since, stored.hold_until, stored.learned_budget, stored.learned_at
        )
    budget.load(_known(rows), quota, since=since)


def _stored(state: QuotaState, now: float) -> SpotifyQuota:
    return SpotifyQuota(
        now if state.counting_since is None else state.counting_since,
        state.hold_until,
        state.learned,
        state.learned_at,
    )


def _known(rows: list[CallCountRow]) -> list[CallRow]:
    """The rows this version knows how to count (a newer one may add purposes)."""
    known: list[CallRow] = []
    for minute, service, purpose, calls in rows:
        kind = next((s for s in SERVICES if s == service), None)
        why = next((p for p in PURPOSES if p == purpose), None)
        if kind is not None and why is not None:
            known.append((minute, kind, why, calls))
    return known


__all__ = ["PRUNE_SECONDS", "SYNC_SECONDS", "BudgetSync", "read_daily_budget"]
