"""The daily budget in the database, on both engines: every process's count, a hold that
survives a restart, old rows pruned (``bot.shards.budget``, ``bot.storage.spotify_budget``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.errors import SpotifyDailyLimit
from bot.shards.budget import BudgetSync
from bot.spotify.budget import DailyBudget
from bot.spotify.http import SpotifySender
from bot.storage import SpotifyQuota, Storage
from tests.helpers import ManualClock

NOW = 1_750_000_040.0
CLIENT = "client-a"


class Process:
    """One bot process's view: its own database handle, budget, sender and sync."""

    def __init__(self, storage: Storage, session: aiohttp.ClientSession, wall: ManualClock):
        self.storage = storage
        self.budget = DailyBudget(600, clock=wall)
        self.sender = SpotifySender(session, wall_clock=wall, budget=self.budget)
        self.sync = BudgetSync(
            storage.spotify_budget, self.budget, self.sender, client_id=CLIENT, clock=wall
        )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


async def test_every_process_counts_into_one_budget(
    database_target: str | Path, session: aiohttp.ClientSession
) -> None:
    wall = ManualClock(NOW)
    async with (
        await Storage.open(database_target) as first_db,
        await Storage.open(database_target) as second_db,
    ):
        first, second = Process(first_db, session, wall), Process(second_db, session, wall)
        for _ in range(300):
            first.budget.count("api", "poll")
        first.budget.count("accounts", "poll")
        second.budget.count("api", "command")
        await first.sync.sync()
        await second.sync.sync()
        await first.sync.sync()
        for process in (first, second):
            assert process.budget.calls_by_purpose() == {"poll": 300, "command": 1}
            assert process.budget.calls_by_purpose("accounts") == {"poll": 1}
            assert process.budget.polling_left() == 600 - 90 - 301
        # A restart reads the count back: it does not start from zero.
        restarted = Process(first_db, session, wall)
        await restarted.sync.load()
        assert restarted.budget.polling_left() == 600 - 90 - 301
        assert restarted.budget.quota.counting_since == NOW


async def test_a_quota_hold_is_written_at_once_and_holds_a_restarted_process(
    database_target: str | Path, session: aiohttp.ClientSession
) -> None:
    wall = ManualClock(NOW)
    async with await Storage.open(database_target) as storage:
        before = Process(storage, session, wall)
        async with before.sync.running():
            before.budget.count("api", "command")
            until = before.budget.quota_exceeded(48_925)

            for _ in range(500):  # written at once, not at the next 2 s sync: within 5 s
                stored = await storage.spotify_budget.quota(CLIENT)
                if stored is not None:
                    break
                await asyncio.sleep(0.01)
        assert stored == SpotifyQuota(NOW, NOW + 48_925, None, None)
        wall.advance(600)  # restarted ten minutes later
        after = Process(storage, session, wall)
        await after.sync.load()
        assert after.sender.hold_quota_exceeded
        assert after.sender.hold_remaining() == pytest.approx(48_925 - 600, abs=1)
        with pytest.raises(SpotifyDailyLimit) as held:
            after.sender.admit("command")
        assert held.value.until == pytest.approx(until)
        assert after.budget.polling_left() == 0


async def test_old_rows_are_pruned_and_unknown_purposes_ignored(
    database_target: str | Path, session: aiohttp.ClientSession
) -> None:
    wall = ManualClock(NOW)
    minute = int(NOW // 60)
    async with await Storage.open(database_target) as storage:
        store = storage.spotify_budget
        await store.add_calls(
            CLIENT,
            [(minute - 2 * 1440, "api", "poll", 5), (minute, "api", "a-newer-purpose", 7)],
            counting_since=NOW - 3 * 86_400,
        )
        await store.add_calls("another-app", [(minute, "api", "poll", 9)], counting_since=NOW)
        process = Process(storage, session, wall)
        await process.sync.sync()  # prunes at its first run
        assert process.budget.calls_by_purpose() == {}
        assert await store.calls_since(CLIENT, 0) == [(minute, "api", "a-newer-purpose", 7)]
        assert await store.calls_since("another-app", 0) == [(minute, "api", "poll", 9)]
        assert await store.forget(CLIENT) == 2
        assert await store.calls_since("another-app", 0) == [(minute, "api", "poll", 9)]


async def test_the_last_minutes_are_read_back_every_sync_the_whole_day_every_minute(
    database_target: str | Path, session: aiohttp.ClientSession
) -> None:
    wall = ManualClock(NOW)
    minute = int(NOW // 60)
    async with (
        await Storage.open(database_target) as first_db,
        await Storage.open(database_target) as second_db,
    ):
        first, second = Process(first_db, session, wall), Process(second_db, session, wall)
        await second.sync.sync()  # the whole day, once
        for _ in range(3):
            first.budget.count("api", "poll")
        await first.sync.sync()
        await second.sync.sync()  # the last minutes: the new calls
        assert second.budget.calls_by_purpose() == {"poll": 3}
        # A write that failed and came late, for a minute an hour ago.
        await first_db.spotify_budget.add_calls(
            CLIENT, [(minute - 60, "api", "command", 5)], counting_since=NOW
        )
        await second.sync.sync()
        assert second.budget.calls_by_purpose() == {"poll": 3}
        wall.advance(60)
        await second.sync.sync()
        assert second.budget.calls_by_purpose() == {"poll": 3, "command": 5}
        assert second.budget.polling_left() == 600 - 90 - 8
