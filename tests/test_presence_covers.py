"""Presence covers: nobody is polled while a Discord presence covers them, in this process or
in another (bot.autopost.coverage.PresenceCoverage), relayed over NOTIFY between processes
(bot.shards.presence.PresenceCoverRelay); a cover that is not announced again expires."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from bot.autopost.coverage import PresenceCoverage
from bot.autopost.roster import Roster
from bot.autopost.scheduler import PollScheduler
from bot.shards.presence import COVERS_CHANNEL, PresenceCoverRelay, guild_filter
from bot.storage import Storage
from tests.helpers import eventually
from tests.peek import is_covered

ALICE = 800000000000000001
BOB = 800000000000000002


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Polling:
    """One process's roster (who is followed, who is polled) and its presence covers."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock if clock is not None else Clock()
        self.scheduler = PollScheduler()
        self.roster = Roster(self.scheduler, asyncio.Event(), membership_ttl=60, clock=self.clock)
        self.coverage = PresenceCoverage(self.roster, clock=self.clock)
        self.heard: list[tuple[int, bool]] = []
        self.coverage.add_listener(lambda member, covered: self.heard.append((member, covered)))

    def polled(self, member_id: int) -> bool:
        return member_id in self.scheduler


async def test_a_member_is_polled_again_only_when_the_last_cover_ends() -> None:
    clock = Clock()
    process = Polling(clock)
    process.roster.follow(ALICE)
    assert process.polled(ALICE)

    process.coverage.cover(ALICE)  # this process's presence
    process.coverage.cover(ALICE, "other", until=clock.now + 15)
    assert not process.polled(ALICE)
    process.coverage.uncover(ALICE)
    assert not process.polled(ALICE)  # the other process still covers them
    process.coverage.uncover(ALICE, "other")
    assert process.polled(ALICE)
    # Only the covers of this process's own presences are told (what the relay announces).
    assert process.heard == [(ALICE, True), (ALICE, False)]


async def test_a_cover_from_another_process_expires_unless_announced_again() -> None:
    clock = Clock()
    process = Polling(clock)
    for member in (ALICE, BOB):
        process.roster.follow(member)
        process.coverage.cover(member, "other", until=clock.now + 15)
    clock.now += 10
    process.coverage.cover(BOB, "other", until=clock.now + 15)  # announced again
    assert process.coverage.expire() == []
    clock.now += 6
    assert process.coverage.expire() == [ALICE]
    assert process.polled(ALICE)
    assert not process.polled(BOB)
    process.coverage.uncover_all_from("other")  # it said it stopped
    assert process.polled(BOB)
    assert process.coverage.here() == []
    assert process.heard == []


async def test_a_process_that_takes_over_polling_skips_the_covered_members() -> None:
    """Covers are kept by every process, leader or not: one that starts following (takes
    over polling) does not schedule a member another process covers."""
    clock = Clock()
    process = Polling(clock)
    process.coverage.cover(ALICE, "other", until=clock.now + 15)
    process.roster.follow(ALICE)  # what a new leader does for every linked member
    process.roster.follow(BOB)
    assert not process.polled(ALICE)
    assert process.polled(BOB)
    clock.now += 16
    assert process.coverage.expire() == [ALICE]
    assert process.polled(ALICE)


async def test_a_forgotten_member_keeps_no_cover() -> None:
    process = Polling()
    process.roster.follow(ALICE)
    process.coverage.cover(ALICE)
    process.coverage.forget(ALICE)
    assert not is_covered(process.coverage, ALICE)
    assert process.heard == [(ALICE, True), (ALICE, False)]


def test_presences_are_posted_in_the_guilds_of_this_process_shards() -> None:
    assert guild_filter(None, None) is None  # every shard here
    assert guild_filter(2, (0, 1)) is None
    serves = guild_filter(2, (1,))
    assert serves is not None
    assert serves(700000000000000001 + (1 << 22)) == ((700000000000000001 >> 22) % 2 == 0)
    assert serves((5 << 22) + 123)
    assert not serves((4 << 22) + 123)


# --- the relay, between two processes on one PostgreSQL ----------------------------------------


@asynccontextmanager
async def relays(
    database_url: str, count: int, *, announce_every: float = 60.0, ttl: float = 60.0
) -> AsyncIterator[list[tuple[Polling, Storage, AsyncExitStack]]]:
    async with AsyncExitStack() as stack:
        processes = []
        for _ in range(count):
            polling = Polling(time.monotonic)
            storage = await Storage.open(database_url)
            stack.push_async_callback(storage.close)
            own = AsyncExitStack()
            relay = PresenceCoverRelay(
                storage, polling.coverage, announce_every=announce_every, ttl=ttl
            )
            await own.enter_async_context(relay.running())
            stack.push_async_callback(own.aclose)
            processes.append((polling, storage, own))
        yield processes


@pytest.mark.postgresql
async def test_covers_reach_the_other_process_and_end_there(postgres_database: str) -> None:
    async with relays(postgres_database, 2) as [(here, _, _), (leader, _, _)]:
        leader.roster.follow(ALICE)
        here.roster.follow(ALICE)
        here.coverage.cover(ALICE)
        await eventually(lambda: not leader.polled(ALICE))
        here.coverage.uncover(ALICE)
        await eventually(lambda: leader.polled(ALICE))
        assert not is_covered(leader.coverage, ALICE)


@pytest.mark.postgresql
async def test_a_process_that_stops_cleanly_ends_its_covers_at_once(
    postgres_database: str,
) -> None:
    async with relays(postgres_database, 2) as [(here, _, own), (leader, _, _)]:
        leader.roster.follow(ALICE)
        here.coverage.cover(ALICE)
        await eventually(lambda: is_covered(leader.coverage, ALICE))
        await own.aclose()  # says "gone"
        await eventually(lambda: leader.polled(ALICE), timeout=2)


@pytest.mark.postgresql
async def test_covers_of_a_silent_process_expire(postgres_database: str) -> None:
    """A process killed mid-cover sends nothing more: its covers last ``ttl`` after its last
    announcement; a live process's announcements keep theirs."""
    async with relays(postgres_database, 2, announce_every=0.1, ttl=0.5) as [
        (here, _, _),
        (leader, storage, _),
    ]:
        for member in (ALICE, BOB):
            leader.roster.follow(member)
        here.coverage.cover(BOB)  # a live process covers Bob
        # What a process announced before it was killed (kill -9: no "gone" follows).
        await storage.notify(COVERS_CHANNEL, f"deadbeefdeadbeef:cover:{ALICE}")
        await eventually(lambda: not leader.polled(ALICE) and not leader.polled(BOB))
        await eventually(lambda: leader.polled(ALICE), timeout=3)
        await asyncio.sleep(1.0)  # twice the ttl: Bob's cover is announced again meanwhile
        assert not leader.polled(BOB)


@pytest.mark.postgresql
async def test_a_starting_process_learns_the_covers_at_once(postgres_database: str) -> None:
    """It asks when it starts; the others announce then, not only every ``announce_every``."""
    async with relays(postgres_database, 1) as [(here, _, _)]:
        here.roster.follow(ALICE)
        here.coverage.cover(ALICE)
        await asyncio.sleep(0.1)
        async with relays(postgres_database, 1) as [(newcomer, _, _)]:
            await eventually(lambda: is_covered(newcomer.coverage, ALICE), timeout=2)


@pytest.mark.postgresql
async def test_malformed_cover_notifications_are_ignored(postgres_database: str) -> None:
    async with relays(postgres_database, 1) as [(leader, storage, _)]:
        leader.roster.follow(ALICE)
        for payload in (
            "garbage",
            f"other:cover:{ALICE},x",
            f"other:cover:-{ALICE}",
            f"other:nonsense:{ALICE}",
            f":cover:{ALICE}",
            f"other:cover:{ALICE},²",  # str.isdigit says yes; int() raises
            f"other:cover:{ALICE},{'1' * 21}",  # no Discord id is that long
        ):
            await storage.notify(COVERS_CHANNEL, payload)
        await storage.notify(COVERS_CHANNEL, f"other:cover:{BOB}")  # well formed: the last
        await eventually(lambda: is_covered(leader.coverage, BOB))
        assert leader.polled(ALICE)
        assert not is_covered(leader.coverage, ALICE)
