"""Spotify's budget is the app's: the interactive requests of a process that does not poll
count in the polling process's budget (bot.shards.SharedRequestCount, over NOTIFY)."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.shards import SharedRequestCount
from bot.storage import Storage

pytestmark = pytest.mark.postgresql


async def test_requests_of_a_follower_count_at_the_leader(postgres_database: str) -> None:
    leader_storage = await Storage.open(postgres_database)
    follower_storage = await Storage.open(postgres_database)
    counted: dict[str, list[int]] = {"leader": [], "follower": []}
    arrived = asyncio.Event()

    def at_leader(_now: float, count: int) -> None:
        counted["leader"].append(count)
        if sum(counted["leader"]) >= 6:
            arrived.set()

    leader = SharedRequestCount(
        leader_storage, at_leader, lambda: True, clock=time.monotonic, flush_every=0.05
    )
    follower = SharedRequestCount(
        follower_storage,
        lambda _now, count: counted["follower"].append(count),
        lambda: False,
        clock=time.monotonic,
        flush_every=0.05,
    )
    try:
        async with leader.listening(), follower.listening():
            leader.note_request(time.monotonic())  # the leader's own /np
            for _ in range(5):  # five /np in the other process, sent as one count
                follower.note_request(time.monotonic())
            await asyncio.wait_for(arrived.wait(), 10)
            assert sum(counted["leader"]) == 6
            assert leader.received == 5
            assert sum(counted["follower"]) == 5  # counted where they were made, too
            assert follower.received == 0  # a process that does not poll ignores counts
    finally:
        await leader.close()
        await follower.close()
        await leader_storage.close()
        await follower_storage.close()
