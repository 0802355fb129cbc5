"""The auto-poster's two listeners for the listening log: every observation, from any source,
before the posting rules; and a stretch a poll found nobody watched, in Unix time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.autopost.observations import Observation, RecordResult
from bot.autopost.service import AutopostService
from bot.nowplaying.renderer import NowPlayingRenderer
from bot.spotify.models import CurrentlyPlaying, NothingPlaying, Playback, Track
from bot.storage import Storage
from tests.fakes.discord_side import FakeDiscordSide
from tests.helpers import ManualClock, linked_account

ALICE = 21
PRESENCE_ONLY = 22
GUILD = 300
MUSIC = 301


class OnePollScheduler:
    """Hands out each added member once; every answer reports an unwatched stretch."""

    def __init__(self, unseen_since: float) -> None:
        self.unseen_since = unseen_since
        self.members: set[int] = set()
        self.due: list[int] = []

    def add(self, member_id: int, now: float) -> float:
        self.members.add(member_id)
        self.due.append(member_id)
        return now

    def remove(self, member_id: int) -> bool:
        self.members.discard(member_id)
        return True

    def __contains__(self, member_id: object) -> bool:
        return member_id in self.members

    def __len__(self) -> int:
        return len(self.members)

    def pop_due(self, now: float, limit: int | None = None) -> list[int]:
        due, self.due = self.due, []
        return due

    def next_wakeup(self, now: float) -> float | None:
        return None

    def record(self, member_id: int, observation: Observation, now: float) -> RecordResult:
        return RecordResult(now + 60, self.unseen_since)

    def hold_all_until(self, until: float) -> None:
        return None

    def stretch(self, now: float) -> float:
        return 1.0


@pytest.fixture
async def storage() -> AsyncIterator[Storage]:
    async with await Storage.open(":memory:") as opened:
        await opened.links.save_link(linked_account(ALICE))
        await opened.settings.set_music_channel(GUILD, MUSIC)
        yield opened


async def test_a_poll_reports_what_it_saw_and_the_unwatched_stretch(storage: Storage) -> None:
    monotonic = ManualClock(500.0)
    wall = ManualClock(1_800_000_000.0)
    plays: list[tuple[int, CurrentlyPlaying, str]] = []
    gaps: list[tuple[int, float]] = []
    polled = asyncio.Event()

    async def fetch(member_id: int) -> CurrentlyPlaying:
        polled.set()
        return NothingPlaying(received_at=wall())

    service = AutopostService(
        storage,
        fetch,
        FakeDiscordSide(members={GUILD: {ALICE}}, names={ALICE: "Alice"}),
        scheduler=OnePollScheduler(unseen_since=380.0),  # 120 s before "now" (500)
        clock=monotonic,
        wall_clock=wall,
        renderer=NowPlayingRenderer(None),
    )
    service.add_play_listener(lambda m, p, s: plays.append((m, p, s)))
    service.add_gap_listener(lambda m, since: gaps.append((m, since)))
    await service.start()
    try:
        await asyncio.wait_for(polled.wait(), 5)

        async def heard() -> None:
            while not (plays and gaps):  # noqa: ASYNC110 - listeners are plain callbacks
                await asyncio.sleep(0.01)

        await asyncio.wait_for(heard(), 5)
    finally:
        await service.stop()
    assert [(m, s) for m, _, s in plays] == [(ALICE, "spotify")]
    assert gaps == [(ALICE, 1_800_000_000.0 - 120.0)]


async def test_every_observation_is_heard_even_when_nothing_is_posted(storage: Storage) -> None:
    heard: list[tuple[int, str]] = []

    async def fetch(member_id: int) -> CurrentlyPlaying:
        return NothingPlaying()

    service = AutopostService(
        storage,
        fetch,
        FakeDiscordSide(members={GUILD: {ALICE}}, names={ALICE: "Alice"}),
        scheduler=OnePollScheduler(0.0),
        renderer=NowPlayingRenderer(None),
    )
    service.add_play_listener(lambda m, p, s: heard.append((m, s)))

    def broken(member_id: int, playback: CurrentlyPlaying, source: str) -> None:
        raise RuntimeError("a listener's bug")

    service.add_play_listener(broken)  # logged, and posting goes on
    song = Track(name="Song", uri="spotify:track:x", duration_ms=1000, id="x")
    await service.observe(PRESENCE_ONLY, Playback("track", song, True, 0), source="presence")
    await service.observe(ALICE, Playback("track", song, False, 0), source="spotify")
    assert heard == [(PRESENCE_ONLY, "presence"), (ALICE, "spotify")]
